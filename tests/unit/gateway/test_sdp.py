"""gateway.sdp: PROTOCOL §4 examples, byte-exact offers and answers, tolerant parsing,
SSRC helpers, and hypothesis properties (garbage raises only SdpError; round trips)."""

from __future__ import annotations

import contextlib
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.sdp import (
    MAX_SDP_BYTES,
    RTP_AVP,
    SESSION_NAMES,
    TCP_RTP_AVP,
    SdpError,
    SessionDescription,
    SsrcAllocator,
    SsrcExhausted,
    build_answer,
    build_offer,
    make_ssrc,
    parse_sdp,
    ssrc_int,
)

GW = "34020000002000000001"
CAM = "34020000001320000001"

# PROTOCOL §4.1, as printed (LF line ends).
OFFER_41 = """v=0
o=34020000002000000001 0 0 IN IP4 192.168.1.10
s=Play
c=IN IP4 192.168.1.10
t=0 0
m=video 30000 RTP/AVP 96 97 98
a=recvonly
a=rtpmap:96 PS/90000
a=rtpmap:97 MPEG4/90000
a=rtpmap:98 H264/90000
y=0200001234
f=v/2/6/25/1/4096a///
"""

# PROTOCOL §4.2.
ANSWER_42 = """v=0
o=34020000001320000001 0 0 IN IP4 192.168.1.64
s=Play
c=IN IP4 192.168.1.64
t=0 0
m=video 15060 RTP/AVP 96
a=sendonly
a=rtpmap:96 PS/90000
y=0200001234
f=
"""


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


# ---------------------------------------------------------------- PROTOCOL examples


def test_protocol_41_offer_parses() -> None:
    sd = parse_sdp(OFFER_41)
    assert sd.origin_user == GW
    assert sd.origin_address == sd.connection_address == "192.168.1.10"
    assert sd.session_name == "Play"
    assert (sd.start_time, sd.stop_time) == (0, 0)
    assert (sd.media_kind, sd.port, sd.proto) == ("video", 30000, RTP_AVP)
    assert sd.payload_types == (96, 97, 98)
    assert dict(sd.rtpmap) == {96: "PS/90000", 97: "MPEG4/90000", 98: "H264/90000"}
    assert sd.direction == "recvonly"
    assert sd.setup is None and not sd.connection_new and not sd.is_tcp
    assert sd.ssrc == "0200001234"
    assert sd.ssrc_value == 200001234 == 0x0BEBC6D2
    assert sd.format == "v/2/6/25/1/4096a///"
    assert sd.uri is None and sd.download_speed is None and sd.extra_attributes == ()


def test_protocol_41_offer_is_what_build_offer_writes() -> None:
    sd = build_offer(GW, "192.168.1.10", 30000, "0200001234", format="v/2/6/25/1/4096a///")
    assert sd.serialize() == crlf(OFFER_41)
    assert parse_sdp(crlf(OFFER_41)) == sd


def test_protocol_42_answer_parses_and_is_what_build_answer_writes() -> None:
    sd = parse_sdp(ANSWER_42.encode())
    assert (sd.origin_user, sd.connection_address, sd.port) == (CAM, "192.168.1.64", 15060)
    assert sd.direction == "sendonly"
    assert sd.payload_types == (96,) and dict(sd.rtpmap) == {96: "PS/90000"}
    assert sd.ssrc == "0200001234" and sd.format == ""
    offer = parse_sdp(OFFER_41)
    answer = build_answer(offer, CAM, "192.168.1.64", 15060)
    assert answer.serialize() == crlf(ANSWER_42)
    assert answer == sd


def test_protocol_43_playback_offer() -> None:
    body = """v=0
o=34020000002000000001 0 0 IN IP4 192.168.1.10
s=Download
u=34020000001320000001:0
c=IN IP4 192.168.1.10
t=1714521600 1714525200
m=video 30002 RTP/AVP 96 97 98
a=recvonly
a=rtpmap:96 PS/90000
a=rtpmap:97 MPEG4/90000
a=rtpmap:98 H264/90000
a=downloadspeed:4
y=1200001235
"""
    sd = parse_sdp(body)
    assert sd.session_name == "Download"
    assert sd.uri == "34020000001320000001:0"
    assert (sd.start_time, sd.stop_time) == (1714521600, 1714525200)
    assert sd.download_speed == 4
    assert sd.ssrc == "1200001235" and sd.format is None
    built = build_offer(
        GW,
        "192.168.1.10",
        30002,
        "1200001235",
        session_name="Download",
        uri="34020000001320000001:0",
        start_time=1714521600,
        stop_time=1714525200,
        download_speed=4,
        format=None,
    )
    assert built.serialize() == crlf(body)
    answer = build_answer(sd, CAM, "192.168.1.64", 15062)
    assert answer.session_name == "Download"
    assert (answer.start_time, answer.stop_time) == (1714521600, 1714525200)  # §6.2 echo t=


# ---------------------------------------------------------------- byte-exact output


def test_tcp_passive_offer_bytes() -> None:
    sd = build_offer(GW, "10.0.0.1", 30004, "0200000001", tcp_setup="passive")
    assert sd.serialize() == (
        b"v=0\r\n"
        b"o=34020000002000000001 0 0 IN IP4 10.0.0.1\r\n"
        b"s=Play\r\n"
        b"c=IN IP4 10.0.0.1\r\n"
        b"t=0 0\r\n"
        b"m=video 30004 TCP/RTP/AVP 96 97 98\r\n"
        b"a=recvonly\r\n"
        b"a=rtpmap:96 PS/90000\r\n"
        b"a=rtpmap:97 MPEG4/90000\r\n"
        b"a=rtpmap:98 H264/90000\r\n"
        b"a=setup:passive\r\n"
        b"a=connection:new\r\n"
        b"y=0200000001\r\n"
        b"f=v/////a///\r\n"
    )
    assert bytes(sd) == sd.serialize()


def test_tcp_active_offer_and_both_answers_bytes() -> None:
    active = build_offer(GW, "10.0.0.1", 30006, "0200000002", tcp_setup="active")
    assert b"m=video 30006 TCP/RTP/AVP 96 97 98\r\n" in active.serialize()
    assert b"a=setup:active\r\na=connection:new\r\ny=0200000002\r\n" in active.serialize()
    answer = build_answer(active, CAM, "10.0.0.7", 6000)
    assert answer.serialize() == (
        b"v=0\r\n"
        b"o=34020000001320000001 0 0 IN IP4 10.0.0.7\r\n"
        b"s=Play\r\n"
        b"c=IN IP4 10.0.0.7\r\n"
        b"t=0 0\r\n"
        b"m=video 6000 TCP/RTP/AVP 96\r\n"
        b"a=sendonly\r\n"
        b"a=rtpmap:96 PS/90000\r\n"
        b"a=setup:passive\r\n"
        b"a=connection:new\r\n"
        b"y=0200000002\r\n"
        b"f=\r\n"
    )
    passive = build_offer(GW, "10.0.0.1", 30004, "0200000001", tcp_setup="passive")
    answer = build_answer(passive, CAM, "10.0.0.7", 6002)
    assert answer.setup == "active" and answer.connection_new and answer.is_tcp
    assert b"a=setup:active\r\na=connection:new\r\ny=0200000001\r\nf=\r\n" in answer.serialize()


def test_answer_to_an_upper_platform() -> None:
    """§6.2: o= is the channel, the same y=; an allocated y= when the upper sent none."""
    upper = parse_sdp(OFFER_41.replace("y=0200001234\n", ""))
    with pytest.raises(SdpError, match="no y="):
        build_answer(upper, CAM, "10.0.0.1", 40000)
    answer = build_answer(upper, CAM, "10.0.0.1", 40000, ssrc="0200000077", format=None)
    assert answer.ssrc == "0200000077" and answer.format is None
    assert answer.serialize().endswith(b"y=0200000077\r\n")


def test_answer_uses_the_offers_ps_number_and_needs_one() -> None:
    offer = parse_sdp(OFFER_41.replace("96", "100"))
    assert build_answer(offer, CAM, "10.0.0.1", 1).payload_types == (100,)
    h264_only = parse_sdp(OFFER_41.replace("96 97 98", "98").replace("a=rtpmap:96 PS/90000\n", ""))
    with pytest.raises(SdpError, match="no PS"):
        build_answer(h264_only, CAM, "10.0.0.1", 1)
    bare = parse_sdp(
        "v=0\no=a 0 0 IN IP4 1.1.1.1\ns=Play\nc=IN IP4 1.1.1.1\nm=video 5 RTP/AVP 96\n"
    )
    assert build_answer(bare, CAM, "1.1.1.2", 2, ssrc="0000000001").payload_types == (96,)


@pytest.mark.parametrize(
    ("offer_setup", "answer_setup"),
    [("passive", "active"), ("active", "passive"), ("actpass", "active"), (None, "passive")],
)
def test_answer_setup_is_the_opposite_role(offer_setup: str | None, answer_setup: str) -> None:
    body = OFFER_41.replace("RTP/AVP", "TCP/RTP/AVP")
    if offer_setup:
        body = body.replace("y=", f"a=setup:{offer_setup}\ny=")
    assert build_answer(parse_sdp(body), CAM, "1.1.1.2", 2).setup == answer_setup


def test_offer_requires_ten_digit_ssrc() -> None:
    for bad in ("200001234", "02000012345", "020000123x", "9999999999"):
        with pytest.raises(SdpError):
            build_offer(GW, "10.0.0.1", 30000, bad)
    with pytest.raises(SdpError):
        build_offer(GW, "10.0.0.1", 30000, "0200001234", tcp_setup="actpass")  # type: ignore[arg-type]
    with pytest.raises(SdpError):
        build_offer(GW, "10.0.0.1", 70000, "0200001234")


def test_ipv6_addresses() -> None:
    sd = build_offer(GW, "fd00::1", 30000, "0200001234")
    assert b"o=34020000002000000001 0 0 IN IP6 fd00::1\r\n" in sd.serialize()
    assert b"c=IN IP6 fd00::1\r\n" in sd.serialize()
    assert parse_sdp(sd.serialize()) == sd


# ---------------------------------------------------------------- tolerant input


def test_tolerates_line_ends_unknown_lines_and_vendor_attributes() -> None:
    body = (
        "v=0\r\r\n"  # a stray CR makes an empty line
        "o=34020000001320000001 0 0 IN IP4 192.168.1.64\r"
        "s=play\n"
        "i=some info\n"
        "c=IN IP4 192.168.1.64\n"
        "b=AS:4096\n"
        "t=0 0\n"
        "m=video 15060 RTP/AVP/TCP 96\n"
        "a=SENDONLY\n"
        "a=rtpmap:96 PS/90000\n"
        "a=filesize:1048576\n"
        "a=streamprofile:0\n"
        "a=setup:ACTIVE\n"
        "a=connection:new\n"
        "y=20001234   \n"
        "x=vendor line\n"
    )
    sd = parse_sdp(body.encode())
    assert sd.session_name == "Play"
    assert sd.proto == TCP_RTP_AVP and sd.setup == "active" and sd.connection_new
    assert sd.direction == "sendonly"
    assert sd.extra_attributes == ("filesize:1048576", "streamprofile:0")
    assert sd.ssrc == "20001234" and ssrc_int(sd.ssrc) == 20001234  # 8 digits
    assert sd.format is None
    again = parse_sdp(sd.serialize())
    assert again == sd
    assert b"a=filesize:1048576\r\na=streamprofile:0\r\ny=20001234\r\n" in sd.serialize()


def test_session_level_attributes_media_c_and_second_media_section() -> None:
    body = """v=0
o=x 1 2 IN IP4 10.0.0.1
s=Talk
c=IN IP4 10.0.0.1
t=0 0
a=recvonly
m=audio 8000 RTP/AVP 8
c=IN IP4 10.0.0.9
a=rtpmap:8 PCMA/8000
m=video 9000 RTP/AVP 96
c=IN IP4 10.0.0.10
a=rtpmap:96 PS/90000
a=setup:bogus
y=
"""
    sd = parse_sdp(body)
    assert (sd.media_kind, sd.port, sd.connection_address) == ("audio", 8000, "10.0.0.9")
    assert sd.direction == "recvonly" and dict(sd.rtpmap) == {8: "PCMA/8000"}
    assert (sd.origin_session_id, sd.origin_version) == ("1", "2")
    assert sd.ssrc is None


def test_wvp_senior_offer() -> None:
    body = OFFER_41.replace("96 97 98", "96 126 125 99 98 97").replace(
        "a=rtpmap:98 H264/90000\n",
        "a=rtpmap:98 H264/90000\na=rtpmap:126 H264/90000\na=rtpmap:125 H264S/90000\n"
        "a=rtpmap:99 MP4V-ES/90000\n",
    )
    sd = parse_sdp(body)
    assert sd.payload_types == (96, 126, 125, 99, 98, 97)
    assert sd.rtpmap[125] == "H264S/90000"
    assert parse_sdp(sd.serialize()) == sd


def test_missing_t_defaults_to_live() -> None:
    sd = parse_sdp("v=0\no=a 0 0 IN IP4 1.1.1.1\ns=Play\nc=IN IP4 1.1.1.1\nm=video 5 RTP/AVP 96\n")
    assert (sd.start_time, sd.stop_time) == (0, 0)
    assert sd.direction is None and dict(sd.rtpmap) == {}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("", "v=0"),
        ("o=a 0 0 IN IP4 1.1.1.1\nv=0\n", "v=0"),
        ("v=1\n", "v=0"),
        ("v=0\ns=Play\nc=IN IP4 1.1.1.1\nm=video 5 RTP/AVP 96\n", "no o="),
        ("v=0\no=a 0 0 IN IP4 1.1.1.1\nc=IN IP4 1.1.1.1\nm=video 5 RTP/AVP 96\n", "no s="),
        ("v=0\no=a 0 0 IN IP4 1.1.1.1\ns=Play\nm=video 5 RTP/AVP 96\n", "no c="),
        ("v=0\no=a 0 0 IN IP4 1.1.1.1\ns=Play\nc=IN IP4 1.1.1.1\n", "no m="),
        ("v=0\no=a 0 IN IP4 1.1.1.1\n", "o= line"),
        ("v=0\nc=IN IP4\n", "c= line"),
        ("v=0\nt=now 0\n", "t= line"),
        ("v=0\nm=video 5 RTP/AVP\n", "m= line"),
        ("v=0\nm=video x RTP/AVP 96\n", "port"),
        ("v=0\nm=video 5 RTP/SAVP 96\n", "proto"),
        ("v=0\nm=video 5 RTP/AVP PS\n", "formats"),
        ("v=0\na=rtpmap:96\n", "rtpmap"),
        ("v=0\na=downloadspeed:fast\n", "downloadspeed"),
        ("v=0\nhello\n", "x=value"),
        ("v=0\nY=1\n", "x=value"),
    ],
)
def test_garbage_raises_sdp_error(body: str, match: str) -> None:
    with pytest.raises(SdpError, match=match):
        parse_sdp(body)


@pytest.mark.parametrize("y", ["0200001", "02000012345", "02000O1234", "4294967296"])
def test_bad_y_raises(y: str) -> None:
    with pytest.raises(SdpError, match="y="):
        parse_sdp(OFFER_41.replace("0200001234", y))


def test_bounds_and_encoding() -> None:
    with pytest.raises(SdpError, match="exceeds"):
        parse_sdp(OFFER_41 + "i=" + "x" * MAX_SDP_BYTES + "\n")
    with pytest.raises(SdpError, match="lines exceeds"):
        parse_sdp(OFFER_41 + "a=x\n" * 60)
    with pytest.raises(SdpError, match="UTF-8"):
        parse_sdp(OFFER_41.encode() + b"i=\xff\n")
    with pytest.raises(SdpError, match="NUL"):
        parse_sdp(OFFER_41 + "i=a\x00b\n")
    with pytest.raises(SdpError, match="setup"):
        parse_sdp(OFFER_41 + "a=setup:sideways\n")


def test_description_is_frozen_and_validated() -> None:
    sd = parse_sdp(OFFER_41)
    with pytest.raises(TypeError):
        sd.rtpmap[99] = "H265/90000"  # type: ignore[index]
    assert hash(sd) == hash(parse_sdp(OFFER_41))
    with pytest.raises(SdpError):
        SessionDescription("a b", "1.1.1.1", "1.1.1.1", 5)
    with pytest.raises(SdpError):
        SessionDescription("a", "1.1.1.1", "1.1.1.1", 5, media_kind="text")
    with pytest.raises(SdpError):
        SessionDescription("a", "1.1.1.1", "1.1.1.1", 5, payload_types=())
    with pytest.raises(SdpError):
        SessionDescription("a", "1.1.1.1", "1.1.1.1", 5, extra_attributes=("setup:active",))
    with pytest.raises(SdpError):
        SessionDescription("a", "1.1.1.1", "1.1.1.1", 5, session_name="Play\r\nx=1")


# ---------------------------------------------------------------- SSRC helpers


def test_ssrc_int() -> None:
    assert ssrc_int("0200001234") == 200001234
    assert ssrc_int("0200001234").to_bytes(4, "big") == bytes.fromhex("0bebc6d2")  # §1.4
    assert ssrc_int("1999999999") == 1999999999
    assert ssrc_int("0000000000") == 0
    assert ssrc_int("20001234") == 20001234
    for bad in ("", "12345678901", "4294967296", "-1", "12ab", " 12"):
        with pytest.raises(SdpError):
            ssrc_int(bad)


def test_make_ssrc() -> None:
    assert make_ssrc("3402000000", 1234) == "0200001234"
    assert make_ssrc("3402000000", 1235, playback=True) == "1200001235"
    assert make_ssrc("6209000000", 7) == "0900000007"
    for domain, serial in (("3402000", 1), ("34020000ab", 1), ("3402000000", 10000)):
        with pytest.raises(ValueError):
            make_ssrc(domain, serial)


def test_allocator_round_robin_release_and_exhaustion() -> None:
    alloc = SsrcAllocator("3402000000")
    first = [alloc.allocate() for _ in range(3)]
    assert first == ["0200000001", "0200000002", "0200000003"]
    assert alloc.allocate(playback=True) == "1200000001"
    assert len(alloc) == 4 and "0200000002" in alloc
    assert alloc.release("0200000002") and not alloc.release("0200000002")
    assert alloc.allocate() == "0200000004"  # round-robin: the released one is not reused yet
    got = {alloc.allocate() for _ in range(9999 - 3)}  # the rest: 5..9999, then 2
    assert "0200000002" in got and len(alloc) == 9999 + 1
    with pytest.raises(SsrcExhausted):
        alloc.allocate()
    assert alloc.release("0200005000")
    assert alloc.allocate() == "0200005000"
    assert all(len(s) == 10 for s in got)


# ---------------------------------------------------------------- properties


@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_sdp_error(data: bytes) -> None:
    with contextlib.suppress(SdpError):
        parse_sdp(data)


@given(st.text(max_size=600))
def test_arbitrary_text_raises_only_sdp_error(text: str) -> None:
    with contextlib.suppress(SdpError):
        parse_sdp("v=0\n" + text)


_LINE_KEYS = st.sampled_from("vosuctmayfixb")


@given(st.lists(st.tuples(_LINE_KEYS, st.text(max_size=40)), max_size=30))
def test_random_sdp_shaped_lines_raise_only_sdp_error(lines: list[tuple[str, str]]) -> None:
    body = "v=0\n" + "".join(f"{k}={v}\n" for k, v in lines)
    try:
        sd = parse_sdp(body)
    except SdpError:
        return
    assert parse_sdp(sd.serialize()) == sd


@given(st.binary(max_size=40), st.integers(min_value=0, max_value=len(OFFER_41)))
def test_spliced_valid_offer_raises_only_sdp_error(junk: bytes, at: int) -> None:
    data = OFFER_41.encode()
    with contextlib.suppress(SdpError):
        parse_sdp(data[:at] + junk + data[at:])


_TOKEN = st.text(string.ascii_letters + string.digits + ".:_-/", min_size=1, max_size=20)
_TEXT = st.text(string.ascii_letters + string.digits + " ./:=-_中文", max_size=30).map(str.strip)


@st.composite
def descriptions(draw: st.DrawFn) -> SessionDescription:
    pts = draw(st.lists(st.integers(0, 127), min_size=1, max_size=6))
    extras = draw(st.lists(_TEXT.filter(bool), max_size=3))
    try:
        return SessionDescription(
            origin_user=draw(_TOKEN),
            origin_address=draw(_TOKEN),
            connection_address=draw(_TOKEN),
            port=draw(st.integers(0, 65535)),
            session_name=draw(st.sampled_from(SESSION_NAMES)),
            media_kind=draw(st.sampled_from(("video", "audio"))),
            proto=draw(st.sampled_from((RTP_AVP, TCP_RTP_AVP))),
            payload_types=tuple(pts),
            rtpmap={p: draw(_TOKEN) for p in draw(st.lists(st.sampled_from(pts), max_size=3))},
            direction=draw(st.sampled_from((None, "recvonly", "sendonly", "sendrecv"))),
            setup=draw(st.sampled_from((None, "active", "passive", "actpass"))),
            connection_new=draw(st.booleans()),
            ssrc=draw(st.none() | st.integers(0, 0xFFFFFFFF).map(lambda v: f"{v:010d}")),
            format=draw(st.none() | _TEXT),
            uri=draw(st.none() | _TOKEN),
            start_time=draw(st.integers(0, 2**40)),
            stop_time=draw(st.integers(0, 2**40)),
            download_speed=draw(st.none() | st.integers(1, 16)),
            extra_attributes=tuple(extras),
            origin_session_id=draw(st.integers(0, 2**32).map(str)),
            origin_version=draw(st.integers(0, 2**32).map(str)),
        )
    except SdpError:
        assume(False)
        raise


@given(descriptions())
def test_round_trip(sd: SessionDescription) -> None:
    data = sd.serialize()
    assert parse_sdp(data) == sd
    assert parse_sdp(data.replace(b"\r\n", b"\n")) == sd
    assert data.startswith(b"v=0\r\no=") and data.endswith(b"\r\n")
