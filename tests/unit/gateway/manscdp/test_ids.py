"""gateway.manscdp.ids: 20-digit codes (PROTOCOL.md §1)."""

from __future__ import annotations

import pytest

from gateway.manscdp import (
    ManscdpError,
    civil_code_of,
    domain_of,
    is_device_id,
    is_region_id,
    parse_device_id,
    type_code,
)


def test_parse_device_id_accepts_20_digits_and_keeps_leading_zeros() -> None:
    device_id = parse_device_id("01020000001320000001")
    assert device_id == "01020000001320000001"
    assert type_code(device_id) == "132"
    assert civil_code_of(device_id) == "01020000"
    assert domain_of(device_id) == "0102000000"


def test_layout_of_the_protocol_example() -> None:
    device_id = parse_device_id("34020000001320000001")
    assert civil_code_of(device_id) == "34020000"
    assert domain_of(device_id) == "3402000000"
    assert type_code(device_id) == "132"
    assert type_code(parse_device_id("34020000002000000001")) == "200"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "3402000000132000000",  # 19
        "340200000013200000011",  # 21
        " 34020000001320000001",
        "34020000001320000001\n",
        "3402000000132000000a",
        "٣٤٠٢٠٠٠٠٠٠١٣٢٠٠٠٠٠٠١",  # Arabic-Indic digits: isdigit() but not ASCII
        "../../etc/passwd'\";--",
        "+3402000000132000001",
    ],
)
def test_parse_device_id_rejects(value: str) -> None:
    assert not is_device_id(value)
    with pytest.raises(ManscdpError) as info:
        parse_device_id(value)
    assert info.value.status == 400


def test_long_bad_id_is_shortened_in_the_message() -> None:
    with pytest.raises(ManscdpError) as info:
        parse_device_id("9" * 10_000)
    assert len(info.value.reason) < 200


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("34", True),
        ("3402", True),
        ("340200", True),
        ("34020000", True),
        ("3", False),
        ("340200001", False),
        ("34020000001320000001", False),
        ("34a2", False),
        ("", False),
    ],
)
def test_is_region_id(value: str, expected: bool) -> None:
    assert is_region_id(value) is expected


def test_error_carries_status_and_reason() -> None:
    error = ManscdpError("nope", status=415)
    assert isinstance(error, ValueError)
    assert (error.status, error.reason, str(error)) == (415, "nope", "nope")
    assert ManscdpError("x").status == 400
    assert "415" in repr(error)
