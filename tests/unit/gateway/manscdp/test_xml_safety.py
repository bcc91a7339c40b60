"""Hostile bodies (peers/bad_inputs 10-14, 19): refused with 400, quickly, never expanded."""

from __future__ import annotations

import time
from pathlib import Path

import defusedxml
import defusedxml.ElementTree
import pytest

from gateway.manscdp import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    CatalogResponse,
    Keepalive,
    ManscdpError,
    decode,
)

DATA = Path(__file__).parents[3] / "data" / "manscdp"
CAMERA = "34020000001320000001"


def keepalive(extra: str = "", *, prolog: str = '<?xml version="1.0" encoding="GB2312"?>') -> str:
    return (
        f"{prolog}\r\n<Notify><CmdType>Keepalive</CmdType><SN>1</SN>"
        f"<DeviceID>{CAMERA}</DeviceID><Status>OK</Status>{extra}</Notify>"
    )


def refused(data: bytes, status: int = 400) -> ManscdpError:
    start = time.perf_counter()
    with pytest.raises(ManscdpError) as info:
        decode(data)
    assert time.perf_counter() - start < 0.5
    assert info.value.status == status
    return info.value


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad_xml_bomb_billion_laughs.xml", "declarations are forbidden"),
        ("bad_xml_external_entity.xml", "declarations are forbidden"),
        ("bad_xml_deep_nesting.xml", "nesting deeper"),
        ("bad_sn_overflow_bad_device_id.xml", "SN"),
    ],
)
def test_bad_inputs_are_400(name: str, reason: str) -> None:
    data = (DATA / name).read_bytes()
    assert reason in refused(data).reason


def test_bad_input_19_device_id_alone_is_also_400() -> None:
    data = (DATA / "bad_sn_overflow_bad_device_id.xml").read_bytes()
    data = data.replace(b"999999999999999999999999999999", b"1")
    assert "DeviceID" in refused(data).reason


def test_bad_input_13_invalid_utf8_is_replaced_not_fatal() -> None:
    msg, _ = decode((DATA / "bad_invalid_utf8_body.xml").read_bytes())
    assert isinstance(msg, Keepalive)
    assert msg.device_id == CAMERA and msg.status.startswith("O")


def test_bad_input_14_invalid_gb2312_lands_with_replacement() -> None:
    msg, _ = decode((DATA / "bad_invalid_gb2312_catalog.xml").read_bytes())
    assert isinstance(msg, CatalogResponse)
    (item,) = msg.items
    assert item.device_id == "34020000001310000001"
    assert item.name.startswith("东门") and "\ufffd" in item.name


@pytest.mark.parametrize(
    "body",
    [
        '<!DOCTYPE Notify SYSTEM "http://example.invalid/x.dtd">',
        "<!DOCTYPE Notify []>",
        '<!DOCTYPE Notify [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>',
        '<!DOCTYPE Notify [<!ENTITY x "y">]>',
        '<!DOCTYPE Notify [<!ENTITY x SYSTEM "file:///etc/passwd" NDATA png>]>',
        "<!-- <!DOCTYPE sneaky> -->",
    ],
)
def test_any_markup_declaration_is_refused(body: str) -> None:
    text = keepalive().replace("<Notify>", f"{body}\r\n<Notify>", 1)
    refused(text.encode())


def test_entity_reference_without_dtd_is_a_parse_error() -> None:
    assert "malformed" in refused(keepalive("<Info>&x;</Info>").encode()).reason


def test_predefined_entities_char_refs_comments_and_cdata_are_fine() -> None:
    xml = keepalive().replace(
        "<Status>OK</Status>",
        "<!-- hi --><Status><![CDATA[O]]>&#x4B;</Status><?pi x?>",
    )
    msg, _ = decode(xml.encode())
    assert isinstance(msg, Keepalive) and msg.status == "OK"


def test_depth_limit_is_exact() -> None:
    # Root is level 1; Info is level 2, so k nested <a> reach level 2 + k.
    ok = "<Info>" + "<a>" * (MAX_DEPTH - 2) + "</a>" * (MAX_DEPTH - 2) + "</Info>"
    assert isinstance(decode(keepalive(ok).encode())[0], Keepalive)
    deep = "<Info>" + "<a>" * (MAX_DEPTH - 1) + "</a>" * (MAX_DEPTH - 1) + "</Info>"
    refused(keepalive(deep).encode())


def test_deep_nesting_by_interleaving_is_caught_too() -> None:
    # Never more than two start tags in a row, still 40 levels deep.
    nested = "".join("<a><b/>" for _ in range(40)) + "</a>" * 40
    refused(keepalive(nested).encode())


def test_oversize_is_400_before_parsing() -> None:
    padding = " " * (MAX_BODY_BYTES + 1 - len(keepalive().encode()))
    exact = keepalive().replace("<Status>", f"{padding[:-1]}<Status>").encode()
    assert len(exact) == MAX_BODY_BYTES
    assert isinstance(decode(exact)[0], Keepalive)
    data = keepalive().replace("<Status>", f"{padding}<Status>").encode()
    assert len(data) == MAX_BODY_BYTES + 1
    assert "exceeds" in refused(data).reason
    refused(b"<" * 10_000_000)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00",
        b"   ",
        b"not xml",
        b"<Notify>",
        b"<?xml version='1.0'",
        b"<Notify></Response>",
        b"<Notify/><Notify/>",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        keepalive(prolog="").encode()[:-5],
        keepalive().encode("utf-16"),
    ],
)
def test_garbage_is_400(data: bytes) -> None:
    refused(data)


def test_gb2312_declared_bytes_do_not_reach_expat_undecoded() -> None:
    # expat refuses multi-byte declared charsets; decode() strips the declaration.
    data = keepalive().replace("OK", "正常").encode("gb2312")
    msg, encoding = decode(data)
    assert isinstance(msg, Keepalive) and msg.status == "正常"
    assert encoding == "GB2312"


@pytest.mark.parametrize(
    "name",
    ["bad_xml_bomb_billion_laughs.xml", "bad_xml_external_entity.xml"],
)
def test_defusedxml_agrees(name: str) -> None:
    # Oracle: what the pre-parse check refuses, defusedxml refuses as well.
    text = (DATA / name).read_bytes().decode("gb18030").split("?>", 1)[1]
    with pytest.raises(defusedxml.DefusedXmlException):
        defusedxml.ElementTree.fromstring(text, forbid_dtd=True)


def test_control_characters_in_names_are_dropped_on_a_second_attempt() -> None:
    body = (
        "<Response><CmdType>Catalog</CmdType><SN>1</SN>"
        f"<DeviceID>{CAMERA}</DeviceID><SumNum>1</SumNum><DeviceList Num='1'>"
        "<Item><DeviceID>34020000001310000001</DeviceID><Name>东门\x00\x00\x1f</Name></Item>"
        "</DeviceList></Response>"
    ).encode("gb2312")
    msg, _ = decode(body)
    assert isinstance(msg, CatalogResponse) and msg.items[0].name == "东门"


def test_dropping_controls_cannot_smuggle_a_doctype() -> None:
    text = keepalive().replace("<Notify>", '<\x00!DOCTYPE Notify [<!ENTITY x "y">]>\r\n<Notify>')
    assert "declarations are forbidden" in refused(text.encode()).reason
    text = keepalive().replace("<Notify>", "<\x00!DOCTYPE Notify>\r\n<Notify>")
    assert "declarations are forbidden" in refused(text.encode()).reason
