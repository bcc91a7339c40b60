"""gateway.manscdp.ptz: PTZCmd bytes, builders and the PROTOCOL.md §3.7 vectors."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.manscdp import (
    PTZ_ACTIONS,
    ManscdpError,
    PtzCmd,
    focus_iris,
    from_action,
    preset,
    ptz_move,
    ptz_stop,
)

# Every vector of the §3.7 table (address 1), with the builder call that must produce it.
VECTORS = [
    ("stop", ptz_stop(), "A50F0100000000B5"),
    ("right 0x80", ptz_move(pan=1, pan_speed=0x80), "A50F010180000036"),
    ("left 0x80", ptz_move(pan=-1, pan_speed=0x80), "A50F010280000037"),
    ("down 0x80", ptz_move(tilt=-1, tilt_speed=0x80), "A50F010400800039"),
    ("up 0x80", ptz_move(tilt=1, tilt_speed=0x80), "A50F01080080003D"),
    (
        "up-left 0x80/0x80",
        ptz_move(pan=-1, tilt=1, pan_speed=0x80, tilt_speed=0x80),
        "A50F010A808000BF",
    ),
    ("set preset 3", preset("set", 3), "A50F018100030039"),
    ("zoom in, speed 5", ptz_move(zoom=1, zoom_speed=5), "A50F011000005015"),
    ("zoom out, speed 5", ptz_move(zoom=-1, zoom_speed=5), "A50F012000005025"),
    (
        "right 0x40 + zoom in 3",
        ptz_move(pan=1, zoom=1, pan_speed=0x40, zoom_speed=3),
        "A50F011140003036",
    ),
    ("focus far 0x20", focus_iris(focus=1, focus_speed=0x20), "A50F014120000016"),
    ("iris open 0x20", focus_iris(iris=1, iris_speed=0x20), "A50F014400200019"),
    ("stop FI", focus_iris(), "A50F0140000000F5"),
    ("call preset 3", preset("call", 3), "A50F01820003003A"),
    ("delete preset 3", preset("delete", 3), "A50F01830003003B"),
]


@pytest.mark.parametrize(("action", "cmd", "expected"), VECTORS, ids=[v[0] for v in VECTORS])
def test_protocol_vectors(action: str, cmd: PtzCmd, expected: str) -> None:
    assert cmd.encode() == expected
    assert PtzCmd.decode(expected) == cmd
    assert PtzCmd.decode(expected.lower()) == cmd


@pytest.mark.parametrize(
    ("action", "speed", "expected"),
    [
        ("stop", 0x80, "A50F0100000000B5"),
        ("right", 0x80, "A50F010180000036"),
        ("left", 0x80, "A50F010280000037"),
        ("down", 0x80, "A50F010400800039"),
        ("up", 0x80, "A50F01080080003D"),
        ("upleft", 0x80, "A50F010A808000BF"),
        ("zoomin", 0x50, "A50F011000005015"),
        ("zoomout", 0x50, "A50F012000005025"),
        ("focusfar", 0x20, "A50F014120000016"),
        ("irisopen", 0x20, "A50F014400200019"),
        ("UpLeft ", 0x80, "A50F010A808000BF"),
    ],
)
def test_from_action_matches_vectors(action: str, speed: int, expected: str) -> None:
    assert from_action(action, speed).encode() == expected


def test_every_action_is_understood_and_distinct() -> None:
    codes = {from_action(action, 0x30).instruction for action in PTZ_ACTIONS}
    assert len(codes) == len(PTZ_ACTIONS)
    assert set(PTZ_ACTIONS) >= {"upright", "downleft", "downright", "focusnear", "irisclose"}
    assert from_action("downright", 0x10).instruction == 0x05
    assert from_action("upright", 0x10).instruction == 0x09
    assert from_action("downleft", 0x10).instruction == 0x06
    assert from_action("focusnear", 0x10).instruction == 0x42
    assert from_action("irisclose", 0x10).instruction == 0x48


def test_zoom_speed_is_the_high_nibble_but_never_zero_for_a_moving_zoom() -> None:
    assert from_action("zoomin", 0xFF).zoom_speed == 0x0F
    assert from_action("zoomin", 5).zoom_speed == 1
    assert from_action("zoomin", 0).zoom_speed == 0


def test_stop_flags() -> None:
    assert ptz_stop().is_stop
    assert focus_iris().is_stop
    assert not from_action("left").is_stop


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: from_action("spin", 1), "unknown PTZ action"),
        (lambda: from_action("left", 256), "speed"),
        (lambda: preset("set", 0), "preset number"),
        (lambda: preset("set", 256), "preset number"),
        (lambda: preset("jump", 1), "preset op"),  # type: ignore[arg-type]  # bad on purpose
        (lambda: ptz_move(pan=2), "pan"),  # type: ignore[arg-type]  # bad on purpose
        (lambda: PtzCmd(address=4096), "address"),
        (lambda: PtzCmd(zoom_speed=16), "zoom speed"),
        (lambda: PtzCmd(data1=-1), "data1"),
    ],
)
def test_builder_errors(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ManscdpError, match=message):
        call()


def test_address_uses_byte_7_low_nibble() -> None:
    cmd = PtzCmd(address=0x123, instruction=0x01, data1=0x80)
    raw = cmd.to_bytes()
    assert raw[2] == 0x23
    assert raw[6] == 0x01
    assert PtzCmd.decode(cmd.encode()).address == 0x123


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A50F0100000000B", "16 hex digits"),
        ("A50F0100000000B5FF", "16 hex digits"),
        ("A50F01000000ZZB5", "not hex"),
        ("A40F0100000000B4", "header"),
        ("A51F0100000000C5", "version"),
        ("A50F0100000000B6", "checksum"),
        # Old wvp checksum: zoom speed added unshifted (§3.7); must not pass.
        ("A50F0110000050CA", "checksum"),
        ("Ａ50F0100000000B5", "16 hex digits"),
    ],
)
def test_decode_rejects(text: str, message: str) -> None:
    with pytest.raises(ManscdpError, match=message):
        PtzCmd.decode(text)


def test_decode_tolerates_surrounding_whitespace() -> None:
    assert PtzCmd.decode("  A50F0100000000B5\r\n") == ptz_stop()


commands = st.builds(
    PtzCmd,
    address=st.integers(0, 0xFFF),
    instruction=st.integers(0, 0xFF),
    data1=st.integers(0, 0xFF),
    data2=st.integers(0, 0xFF),
    zoom_speed=st.integers(0, 0xF),
)


@given(commands)
def test_round_trip_and_checksum(cmd: PtzCmd) -> None:
    text = cmd.encode()
    assert len(text) == 16 and text == text.upper()
    raw = bytes.fromhex(text)
    assert raw[:2] == b"\xa5\x0f"
    assert raw[7] == sum(raw[:7]) % 256
    assert raw[6] >> 4 == cmd.zoom_speed
    assert PtzCmd.decode(text) == cmd


@given(commands, st.integers(0, 7), st.integers(1, 255))
def test_any_corrupted_byte_is_rejected(cmd: PtzCmd, index: int, delta: int) -> None:
    raw = bytearray(cmd.to_bytes())
    raw[index] = (raw[index] + delta) % 256
    with pytest.raises(ManscdpError):
        PtzCmd.decode(raw.hex())


@given(st.text(max_size=20))
def test_decode_arbitrary_text_raises_only_manscdp_error(text: str) -> None:
    with contextlib.suppress(ManscdpError):
        PtzCmd.decode(text)
