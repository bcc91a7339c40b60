"""sip.message: parse, serialise, limits, framing; hypothesis properties."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.errors import SipParseError
from sip.message import (
    MAX_MESSAGE,
    CSeq,
    Request,
    Response,
    StreamFramer,
    Via,
    make_response,
    parse_message,
)
from sip.uri import NameAddr, SipUri

DATA = Path(__file__).resolve().parents[2] / "data"

REGISTER = (
    b"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1843722\r\n"
    b"From: <sip:34020000001320000001@3402000000>;tag=51877102\r\n"
    b"To: <sip:34020000001320000001@3402000000>\r\n"
    b"Call-ID: 1962347781@192.168.1.64\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: <sip:34020000001320000001@192.168.1.64:5060>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def fill(raw: bytes, transport: str = "UDP") -> bytes:
    """Fill the peer kit's placeholders the way its sender does."""
    for k, v in {
        b"{{transport}}": transport.encode(),
        b"{{local}}": b"127.0.0.1:5070",
        b"{{branch}}": b"z9hG4bKtest1",
        b"{{tag}}": b"tag1",
        b"{{call_id}}": b"call1@127.0.0.1",
    }.items():
        raw = raw.replace(k, v)
    return raw


def test_register_typed_views() -> None:
    m = parse_message(REGISTER)
    assert isinstance(m, Request)
    assert m.method == "REGISTER"
    assert m.uri == SipUri("3402000000", "34020000002000000001")
    assert m.top_via == Via(
        "UDP", "192.168.1.64", 5060, (("rport", None), ("branch", "z9hG4bK1843722"))
    )
    assert m.top_via.branch == "z9hG4bK1843722"
    assert m.from_.uri.user == "34020000001320000001"
    assert m.from_.tag == "51877102"
    assert m.to.tag is None
    assert m.call_id == "1962347781@192.168.1.64"
    assert m.cseq == CSeq(1, "REGISTER")
    assert m.expires == 3600
    assert m.contact[0].uri.port == 5060
    assert m.body == b""


def test_compact_forms_case_folding_and_comma_joined_via() -> None:
    raw = (
        b"MESSAGE sip:a@b SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h1:1;branch=z9hG4bKa, SIP/2.0/TCP h2;branch=z9hG4bKb\r\n"
        b"f: <sip:x@d>;tag=1\r\nt: sip:y@d\r\ni: cid\r\ncseq: 7 MESSAGE\r\n"
        b"c: Application/MANSCDP+xml\r\nl: 3\r\n\r\nabc"
    )
    m = parse_message(raw)
    assert [v.host for v in m.via] == ["h1", "h2"]
    assert m.headers.get("CALL-ID") == "cid"
    assert m.headers.get("call-id") == m.headers.get("i")
    assert m.content_type == "application/manscdp+xml"
    assert m.body == b"abc"
    out = m.serialize()
    assert b"Via: SIP/2.0/UDP h1:1;branch=z9hG4bKa\r\nVia: SIP/2.0/TCP h2" in out
    assert parse_message(out) == m


def test_folded_header_is_unfolded() -> None:
    raw = REGISTER.replace(
        b"Max-Forwards: 70\r\n", b"Subject: a,\r\n  b\r\n\tc\r\nMax-Forwards: 70\r\n"
    )
    m = parse_message(raw)
    assert m.headers.get("Subject") == "a, b c"


def test_bare_lf_line_endings_accepted() -> None:
    m = parse_message(REGISTER.replace(b"\r\n", b"\n"))
    assert isinstance(m, Request) and m.cseq.seq == 1


def test_www_authenticate_commas_not_split() -> None:
    raw = (
        b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n"
        b'WWW-Authenticate: Digest realm="3402000000",nonce="abc",qop="auth"\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    m = parse_message(raw)
    assert isinstance(m, Response) and m.status == 401
    assert m.headers.get_all("WWW-Authenticate") == [
        'Digest realm="3402000000",nonce="abc",qop="auth"'
    ]


def test_datagram_content_length_rules() -> None:
    body = b"0123456789"
    base = REGISTER.replace(b"Content-Length: 0", b"Content-Length: %d")
    # shorter Content-Length truncates (RFC 3261 18.3)
    assert parse_message((base % 4) + body).body == b"0123"
    # longer is an error
    with pytest.raises(SipParseError) as exc:
        parse_message((base % 99) + body)
    assert exc.value.status == 400
    assert isinstance(exc.value.partial, Request)  # a 400 can still be sent


def test_make_response_copies_routing_and_adds_to_tag() -> None:
    req = parse_message(REGISTER)
    assert isinstance(req, Request)
    resp = make_response(req, 200, to_tag="abc", headers=[("Expires", "3600")])
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert resp.to.tag == "abc"
    assert resp.call_id == req.call_id and resp.cseq == req.cseq
    wire = resp.serialize()
    assert wire.startswith(b"SIP/2.0 200 OK\r\n")
    assert wire.endswith(b"Content-Length: 0\r\n\r\n")
    assert parse_message(wire) == resp


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("01_oversized_header.sip", 400),
        ("03_missing_call_id.sip", 400),
        ("04_cseq_non_numeric.sip", 400),
        ("05_cseq_method_mismatch.sip", 400),
        ("06_content_length_too_big.sip", 400),
        ("07_content_length_negative.sip", 400),
        ("08_content_length_overflow.sip", 400),
        ("17_nul_bytes_in_headers.sip", 400),
        ("18_bad_request_uri.sip", 400),
    ],
)
def test_hostile_messages_rejected_with_answerable_partial(name: str, status: int) -> None:
    raw = fill((DATA / "bad_inputs" / name).read_bytes())
    with pytest.raises(SipParseError) as exc:
        parse_message(raw)
    assert exc.value.status == status
    partial = exc.value.partial
    assert isinstance(partial, Request)
    resp = make_response(partial, status, to_tag="x")
    assert resp.top_via.branch == "z9hG4bKtest1"


@pytest.mark.parametrize("name", ["16_garbage_start_line.sip", "20_tls_hello_junk.sip"])
def test_garbage_is_dropped_without_partial(name: str) -> None:
    with pytest.raises(SipParseError) as exc:
        parse_message(fill((DATA / "bad_inputs" / name).read_bytes()))
    assert exc.value.partial is None


def test_oversized_message_is_513() -> None:
    raw = fill((DATA / "bad_inputs" / "02_many_via_headers.sip").read_bytes(), "TCP")
    assert len(raw) > MAX_MESSAGE
    with pytest.raises(SipParseError) as exc:
        parse_message(raw)
    assert exc.value.status == 513


def test_too_many_headers() -> None:
    extra = b"".join(b"X-H%d: v\r\n" % i for i in range(120))
    with pytest.raises(SipParseError) as exc:
        parse_message(REGISTER.replace(b"Max-Forwards: 70\r\n", extra))
    assert exc.value.status == 513


def test_invalid_utf8_header_is_kept_and_flagged() -> None:
    raw = fill((DATA / "bad_inputs" / "15_invalid_utf8_in_header.sip").read_bytes())
    m = parse_message(raw)
    assert m.lossy
    # byte for byte on the way out
    assert b"User-Agent: cam\xc3(\xff\xfe" in m.serialize()


# -- stream framing ------------------------------------------------------------------------


def test_stream_framer_splits_and_joins() -> None:
    msg = REGISTER.replace(b"Content-Length: 0", b"Content-Length: 5") + b"hello"
    stream = b"\r\n\r\n" + msg + msg
    for cut in range(1, len(stream)):
        f = StreamFramer()
        out = []
        for part in (stream[:cut], stream[cut:]):
            f.feed(part)
            while (m := f.next_message()) is not None:
                out.append(m)
        assert out == [msg, msg]
        assert f.buffered == 0


def test_stream_framer_limits() -> None:
    f = StreamFramer(max_message=1024)
    f.feed(b"X" * 2000)
    with pytest.raises(SipParseError):
        f.next_message()
    f = StreamFramer()
    f.feed(REGISTER.replace(b"Content-Length: 0", b"Content-Length: -17"))
    with pytest.raises(SipParseError):
        f.next_message()
    f = StreamFramer()
    f.feed(REGISTER.replace(b"Content-Length: 0", b"Content-Length: 999999"))
    with pytest.raises(SipParseError) as exc:
        f.next_message()
    assert exc.value.status == 513


# -- properties ----------------------------------------------------------------------------

token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+~",
    min_size=1,
    max_size=12,
)
digits = st.text(alphabet="0123456789", min_size=1, max_size=20)
hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){0,2}", fullmatch=True),
)
ports = st.one_of(st.none(), st.integers(1, 65535))
params = st.lists(st.tuples(token, st.one_of(st.none(), token)), max_size=3).map(tuple)
uris = st.builds(SipUri, host=hosts, user=st.one_of(st.none(), digits), port=ports, params=params)
text_value = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters=","),
    max_size=30,
).map(str.strip)


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    method = draw(st.sampled_from(["REGISTER", "MESSAGE", "INVITE", "BYE", "OPTIONS", "NOTIFY"]))
    vias = draw(
        st.lists(
            st.builds(
                Via,
                transport=st.sampled_from(["UDP", "TCP"]),
                host=hosts,
                port=ports,
                params=params.map(lambda p: (("branch", "z9hG4bKx"), *p)),
            ),
            min_size=1,
            max_size=3,
        )
    )
    headers: list[tuple[str, str]] = [("Via", str(v)) for v in vias]
    headers += [
        ("From", str(NameAddr(draw(uris), params=(("tag", draw(token)),)))),
        ("To", str(NameAddr(draw(uris)))),
        ("Call-ID", draw(token)),
        ("CSeq", f"{draw(st.integers(0, 2**32 - 1))} {method}"),
    ]
    for _ in range(draw(st.integers(0, 4))):
        headers.append((f"X-{draw(token)}", draw(text_value)))
    body = draw(st.binary(max_size=200))
    headers.append(("Content-Length", str(len(body))))
    if draw(st.booleans()):
        return Request(method, draw(uris), headers, body)
    return Response(draw(st.integers(100, 699)), draw(token), headers, body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_parse_serialise_round_trip(m: Request | Response) -> None:
    assert parse_message(m.serialize()) == m


@settings(max_examples=500)
@given(st.binary(max_size=2000))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        parse_message(data)


@settings(max_examples=300)
@given(st.integers(0, len(REGISTER)), st.binary(max_size=40))
def test_mutated_register_raises_only_parse_error(pos: int, junk: bytes) -> None:
    data = REGISTER[:pos] + junk + REGISTER[pos:]
    try:
        m = parse_message(data)
    except SipParseError:
        return
    m.serialize()


@settings(max_examples=200)
@given(st.integers(1, len(REGISTER) - 1))
def test_cut_message_on_stream_needs_more_data(cut: int) -> None:
    f = StreamFramer()
    f.feed(REGISTER[:cut])
    assert f.next_message() is None
    f.feed(REGISTER[cut:])
    assert f.next_message() == REGISTER
