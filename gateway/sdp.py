"""Sans-I/O SDP for GB/T 28181 media sessions (RFC 4566 as GB/T 28181 uses it, PROTOCOL §4).

Rules:
1. Exact output, tolerant input (Q-14). ``SessionDescription.serialize()`` writes the line
   order Hikvision checks: v, o, s, u, c, t, m, a..., y, f, each ending in CRLF, and offers
   carry a 10-digit ``y=``. ``parse_sdp`` accepts LF or CR line ends, unknown lines,
   attributes at session or media level, no ``t=``/``y=``/``f=``, and an 8- or 9-digit
   ``y=`` (Q-3, Q-14).
2. One media section. GB/T 28181 sessions carry one ``m=``; further sections are ignored.
3. Bounded: at most ``MAX_SDP_BYTES`` bytes and ``MAX_SDP_LINES`` lines. Anything that is not
   SDP raises ``SdpError`` (a ``ValueError``; the SIP layer answers 488), nothing else.
4. No I/O and no state beyond ``SsrcAllocator``'s set of serials in use.

The gateway builds its INVITE body with ``build_offer`` (PROTOCOL §4.1); a sender (a device,
or gbgw answering an upper platform, §6.2) answers with ``build_answer``: ``a=sendonly``,
``96 PS/90000``, the same ``y=`` and, over TCP, the opposite ``a=setup`` (RFC 4145).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

__all__ = [
    "DIRECTIONS",
    "MAX_SDP_BYTES",
    "MAX_SDP_LINES",
    "RTP_AVP",
    "SESSION_NAMES",
    "SETUPS",
    "TCP_RTP_AVP",
    "SdpError",
    "SessionDescription",
    "SsrcAllocator",
    "SsrcExhausted",
    "build_answer",
    "build_offer",
    "make_ssrc",
    "parse_sdp",
    "ssrc_int",
]

MAX_SDP_BYTES: Final = 16 * 1024
"""Largest SDP body accepted, in bytes (a GB/T 28181 SDP is about 300)."""
MAX_SDP_LINES: Final = 64
"""Most lines accepted in one SDP body (wvp's largest offer has about 20)."""
RTP_AVP: Final = "RTP/AVP"
TCP_RTP_AVP: Final = "TCP/RTP/AVP"
SESSION_NAMES: Final = ("Play", "Playback", "Download", "Talk")
DIRECTIONS: Final = ("recvonly", "sendonly", "sendrecv", "inactive")
SETUPS: Final = ("active", "passive", "actpass", "holdconn")
MAX_SSRC_SERIAL: Final = 9999

_PROTOS = {"RTP/AVP": RTP_AVP, "TCP/RTP/AVP": TCP_RTP_AVP, "RTP/AVP/TCP": TCP_RTP_AVP}
_OFFER_RTPMAP = {96: "PS/90000", 97: "MPEG4/90000", 98: "H264/90000"}
_KNOWN_ATTRIBUTES = frozenset((*DIRECTIONS, "rtpmap", "setup", "connection", "downloadspeed"))
_LINE_END = re.compile(r"\r\n|\n|\r")
_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f]")
_BAD_TOKEN = re.compile(r"[\x00-\x20\x7f]")
_DIGITS = re.compile(r"[0-9]+")


class SdpError(ValueError):
    """An SDP body that cannot be used, or a field value that cannot be written."""


class SsrcExhausted(RuntimeError):
    """All 9999 serials of a domain are in use; the caller answers 486 Busy Here."""


def _token(name: str, value: str, *, empty: bool = False) -> None:
    if not isinstance(value, str) or (not value and not empty) or _BAD_TOKEN.search(value):
        raise SdpError(f"SDP {name} {value!r} must be a non-empty token without whitespace")


def _text(name: str, value: str) -> None:
    if not isinstance(value, str) or _BAD_TEXT.search(value) or value != value.strip():
        raise SdpError(f"SDP {name} {value!r} has control characters or outer whitespace")


def _check_ssrc(value: str) -> None:
    if (
        not isinstance(value, str)
        or not 8 <= len(value) <= 10
        or not _DIGITS.fullmatch(value)
        or int(value) > 0xFFFFFFFF
    ):
        raise SdpError(f"y= {value!r} is not an SSRC of 8 to 10 digits below 2**32")


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """One GB/T 28181 SDP body: session lines, one media section, and ``y=``/``f=``."""

    origin_user: str
    """``o=`` user: the offerer's or answerer's 20-digit ID (or the channel ID, §6.2)."""
    origin_address: str
    connection_address: str
    """``c=`` address: where this side receives RTP (offer) or sends it from (answer)."""
    port: int
    """``m=`` port (0..65535)."""
    session_name: str = "Play"
    """``s=``: one of ``SESSION_NAMES`` normally; other values are kept as given."""
    media_kind: str = "video"
    """``m=`` media: ``video`` or ``audio``."""
    proto: str = RTP_AVP
    """``RTP/AVP`` (UDP) or ``TCP/RTP/AVP`` (RFC 4571); ``RTP/AVP/TCP`` is read as the latter."""
    payload_types: tuple[int, ...] = (96,)
    rtpmap: Mapping[int, str] = field(default_factory=lambda: {96: "PS/90000"}, hash=False)
    """Payload type -> ``encoding/clock`` from ``a=rtpmap`` (read-only after construction)."""
    direction: str | None = None
    """``a=recvonly`` / ``sendonly`` / ``sendrecv`` / ``inactive``, or None if absent."""
    setup: str | None = None
    """``a=setup`` (RFC 4145) for TCP: ``active``, ``passive``, ``actpass``, ``holdconn``."""
    connection_new: bool = False
    """``a=connection:new`` present."""
    ssrc: str | None = None
    """``y=`` as written: 10 digits normally, 8 or 9 tolerated (Q-14); None if absent."""
    format: str | None = None
    """``f=`` as written (``v/2/6/25/1/4096a///``; may be empty); None if absent."""
    uri: str | None = None
    """``u=`` (``channelID:param`` for playback), None if absent."""
    start_time: int = 0
    """``t=`` start, Unix seconds for playback, 0 for live."""
    stop_time: int = 0
    download_speed: int | None = None
    """``a=downloadspeed:N`` for ``s=Download``."""
    extra_attributes: tuple[str, ...] = ()
    """Other ``a=`` values, kept verbatim without ``a=`` (``filesize:N``, ``streamprofile:0``)."""
    origin_session_id: str = "0"
    origin_version: str = "0"

    def __post_init__(self) -> None:
        _token("o= user", self.origin_user)
        _token("o= session id", self.origin_session_id)
        _token("o= version", self.origin_version)
        _token("o= address", self.origin_address)
        _token("c= address", self.connection_address)
        _text("s=", self.session_name)
        if not self.session_name:
            raise SdpError("s= must not be empty")
        if self.media_kind not in ("video", "audio"):
            raise SdpError(f"m= media {self.media_kind!r} is not video or audio")
        if not isinstance(self.port, int) or not 0 <= self.port <= 0xFFFF:
            raise SdpError(f"m= port {self.port!r} is not in 0..65535")
        if self.proto not in (RTP_AVP, TCP_RTP_AVP):
            raise SdpError(f"m= proto {self.proto!r} is not RTP/AVP or TCP/RTP/AVP")
        pts = tuple(self.payload_types)
        if not pts or not all(isinstance(p, int) and 0 <= p <= 127 for p in pts):
            raise SdpError(f"m= payload types {pts!r} must be one or more of 0..127")
        object.__setattr__(self, "payload_types", pts)
        rtpmap = dict(self.rtpmap)
        for pt, encoding in rtpmap.items():
            if not isinstance(pt, int) or not 0 <= pt <= 127:
                raise SdpError(f"a=rtpmap payload type {pt!r} is not in 0..127")
            _token("a=rtpmap encoding", encoding)
        object.__setattr__(self, "rtpmap", MappingProxyType(rtpmap))
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise SdpError(f"direction {self.direction!r} is not one of {DIRECTIONS}")
        if self.setup is not None and self.setup not in SETUPS:
            raise SdpError(f"a=setup:{self.setup!r} is not one of {SETUPS}")
        if self.ssrc is not None:
            _check_ssrc(self.ssrc)
        if self.format is not None:
            _text("f=", self.format)
        if self.uri is not None:
            _token("u=", self.uri, empty=True)
        for name, t in (("start", self.start_time), ("stop", self.stop_time)):
            if not isinstance(t, int) or not 0 <= t < 1 << 64:
                raise SdpError(f"t= {name} {t!r} is not a 64-bit unsigned integer")
        if self.download_speed is not None and (
            not isinstance(self.download_speed, int) or not 1 <= self.download_speed <= 1024
        ):
            raise SdpError(f"a=downloadspeed:{self.download_speed!r} is not in 1..1024")
        extras = tuple(self.extra_attributes)
        for extra in extras:
            _text("a=", extra)
            if not extra or extra.partition(":")[0].lower() in _KNOWN_ATTRIBUTES:
                raise SdpError(f"a={extra!r} is empty or belongs in its own field")
        object.__setattr__(self, "extra_attributes", extras)

    @property
    def is_tcp(self) -> bool:
        """RTP over TCP with RFC 4571 framing (``TCP/RTP/AVP``)."""
        return self.proto == TCP_RTP_AVP

    @property
    def ssrc_value(self) -> int | None:
        """``y=`` as the RTP header's 32-bit SSRC, or None if absent."""
        return None if self.ssrc is None else int(self.ssrc)

    def serialize(self) -> bytes:
        """The body as sent: lines v, o, s, u, c, t, m, a..., y, f, each ending in CRLF."""
        lines = [
            "v=0",
            f"o={self.origin_user} {self.origin_session_id} {self.origin_version} IN "
            f"{_addrtype(self.origin_address)} {self.origin_address}",
            f"s={self.session_name}",
        ]
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        lines += [
            f"c=IN {_addrtype(self.connection_address)} {self.connection_address}",
            f"t={self.start_time} {self.stop_time}",
            f"m={self.media_kind} {self.port} {self.proto} "
            + " ".join(str(p) for p in self.payload_types),
        ]
        if self.direction is not None:
            lines.append(f"a={self.direction}")
        lines += [f"a=rtpmap:{pt} {enc}" for pt, enc in self.rtpmap.items()]
        if self.setup is not None:
            lines.append(f"a=setup:{self.setup}")
        if self.connection_new:
            lines.append("a=connection:new")
        if self.download_speed is not None:
            lines.append(f"a=downloadspeed:{self.download_speed}")
        lines += [f"a={extra}" for extra in self.extra_attributes]
        if self.ssrc is not None:
            lines.append(f"y={self.ssrc}")
        if self.format is not None:
            lines.append(f"f={self.format}")
        return ("\r\n".join(lines) + "\r\n").encode()

    def __bytes__(self) -> bytes:
        return self.serialize()


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


# ---------------------------------------------------------------- parsing


def parse_sdp(body: bytes | str) -> SessionDescription:
    """Parse an SDP body (PROTOCOL §4); raise ``SdpError`` if it is not usable SDP."""
    if len(body) > MAX_SDP_BYTES:
        raise SdpError(f"SDP body of {len(body)} bytes exceeds {MAX_SDP_BYTES}")
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(f"SDP body is not UTF-8 at byte {exc.start}") from None
    else:
        text = body
    lines = [line for line in _LINE_END.split(text) if line.strip()]
    if len(lines) > MAX_SDP_LINES:
        raise SdpError(f"SDP body of {len(lines)} lines exceeds {MAX_SDP_LINES}")
    if not lines or lines[0].strip() != "v=0":
        raise SdpError("SDP body does not start with v=0")
    p = _Parser()
    for number, line in enumerate(lines[1:], start=2):
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpError(f"SDP line {number} is not of the form x=value: {line[:40]!r}")
        if "\x00" in line:
            raise SdpError(f"SDP line {number} contains a NUL byte")
        p.line(line[0], line[2:].strip())
    return p.result()


class _Parser:
    """Accumulates fields line by line; ``result()`` checks what is mandatory."""

    def __init__(self) -> None:
        self.fields: dict[str, object] = {}
        self.session_c: str | None = None
        self.media_c: str | None = None
        self.in_media = False
        self.ignoring = False  # inside a second m= section
        self.rtpmap: dict[int, str] = {}
        self.extras: list[str] = []

    def line(self, key: str, value: str) -> None:
        f = self.fields
        if key == "m":
            if self.in_media:
                self.ignoring = True  # rule 2: only the first media section counts
            else:
                self.in_media = True
                self._media(value)
            return
        if self.ignoring and key in "ac":
            return
        if key == "o":
            parts = value.split()
            if len(parts) != 6 or parts[3] != "IN" or parts[4] not in ("IP4", "IP6"):
                raise SdpError(f"o= line {value[:60]!r} is not 'user id version IN IP4 addr'")
            f["origin_user"], f["origin_session_id"], f["origin_version"] = parts[:3]
            f["origin_address"] = parts[5]
        elif key == "s":
            f["session_name"] = next(
                (n for n in SESSION_NAMES if n.lower() == value.lower()), value
            )
        elif key == "c":
            parts = value.split()
            if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
                raise SdpError(f"c= line {value[:60]!r} is not 'IN IP4 address'")
            if self.in_media:
                self.media_c = parts[2]
            else:
                self.session_c = parts[2]
        elif key == "t":
            parts = value.split()
            if len(parts) != 2 or not all(_DIGITS.fullmatch(x) for x in parts):
                raise SdpError(f"t= line {value[:60]!r} is not two integers")
            f["start_time"], f["stop_time"] = int(parts[0]), int(parts[1])
        elif key == "u":
            f["uri"] = value
        elif key == "y":
            if value:  # an empty y= is as good as none
                f["ssrc"] = value
        elif key == "f":
            f["format"] = value
        elif key == "a":
            self._attribute(value)
        # Other lines (i=, e=, b=, k=, r=, z=, vendor lines) carry nothing gbgw uses.

    def _media(self, value: str) -> None:
        parts = value.split()
        if len(parts) < 4:
            raise SdpError(f"m= line {value[:60]!r} needs media, port, proto and formats")
        kind, port, proto, *fmts = parts
        port = port.split("/", 1)[0]  # RFC 4566 "port/count"
        if not _DIGITS.fullmatch(port) or len(port) > 5:
            raise SdpError(f"m= port {port[:20]!r} is not a number")
        norm = _PROTOS.get(proto.upper())
        if norm is None:
            raise SdpError(f"m= proto {proto[:20]!r} is not RTP/AVP or TCP/RTP/AVP")
        if not all(_DIGITS.fullmatch(x) and len(x) <= 3 for x in fmts):
            raise SdpError(f"m= formats {' '.join(fmts)[:40]!r} are not payload type numbers")
        self.fields.update(
            media_kind=kind.lower(),
            port=int(port),
            proto=norm,
            payload_types=tuple(int(x) for x in fmts),
        )

    def _attribute(self, value: str) -> None:
        name, sep, arg = value.partition(":")
        lname = name.lower()
        if not value:
            return
        if not sep and lname in DIRECTIONS:
            self.fields["direction"] = lname
        elif lname == "rtpmap" and sep:
            pt, _, encoding = arg.strip().partition(" ")
            if not _DIGITS.fullmatch(pt) or len(pt) > 3 or not encoding.strip():
                raise SdpError(f"a=rtpmap:{arg[:40]!r} is not 'payload-type encoding/clock'")
            self.rtpmap[int(pt)] = encoding.strip()
        elif lname == "setup" and sep:
            self.fields["setup"] = arg.strip().lower()
        elif lname == "connection" and sep:
            self.fields["connection_new"] = arg.strip().lower() == "new"
        elif lname == "downloadspeed" and sep:
            speed = arg.strip()
            if not _DIGITS.fullmatch(speed) or len(speed) > 4:
                raise SdpError(f"a=downloadspeed:{speed[:20]!r} is not a number")
            self.fields["download_speed"] = int(speed)
        else:
            self.extras.append(value)

    def result(self) -> SessionDescription:
        f = self.fields
        if "origin_user" not in f:
            raise SdpError("SDP has no o= line")
        if "session_name" not in f:
            raise SdpError("SDP has no s= line")
        if "port" not in f:
            raise SdpError("SDP has no m= line")
        address = self.media_c or self.session_c
        if address is None:
            raise SdpError("SDP has no c= line")
        return SessionDescription(
            connection_address=address,
            rtpmap=self.rtpmap,
            extra_attributes=tuple(self.extras),
            **f,  # type: ignore[arg-type]  # values typed per key by the line handlers
        )


# ---------------------------------------------------------------- building


def _offer_ssrc(ssrc: str) -> str:
    if not isinstance(ssrc, str) or len(ssrc) != 10:
        # Hikvision ignores an INVITE whose y= is not exactly 10 digits.
        raise SdpError(f"y= {ssrc!r} must be exactly 10 digits in what gbgw sends")
    _check_ssrc(ssrc)
    return ssrc


def build_offer(
    origin_user: str,
    address: str,
    port: int,
    ssrc: str,
    *,
    tcp_setup: Literal["passive", "active"] | None = None,
    session_name: str = "Play",
    uri: str | None = None,
    start_time: int = 0,
    stop_time: int = 0,
    download_speed: int | None = None,
    format: str | None = "v/////a///",
) -> SessionDescription:
    """The gateway's INVITE offer (PROTOCOL §4.1): receive RTP on ``address``:``port``.

    ``tcp_setup`` None means UDP; ``passive`` = gbgw listens, ``active`` = gbgw connects
    (§4.4). Payload types 96 PS, 97 MPEG4, 98 H264; ``ssrc`` must be 10 digits.
    """
    if tcp_setup not in (None, "passive", "active"):
        raise SdpError(f"tcp_setup {tcp_setup!r} is not passive, active or None")
    return SessionDescription(
        origin_user=origin_user,
        origin_address=address,
        connection_address=address,
        port=port,
        session_name=session_name,
        proto=RTP_AVP if tcp_setup is None else TCP_RTP_AVP,
        payload_types=tuple(_OFFER_RTPMAP),
        rtpmap=_OFFER_RTPMAP,
        direction="recvonly",
        setup=tcp_setup,
        connection_new=tcp_setup is not None,
        ssrc=_offer_ssrc(ssrc),
        format=format,
        uri=uri,
        start_time=start_time,
        stop_time=stop_time,
        download_speed=download_speed,
    )


def _answer_setup(offer_setup: str | None) -> str:
    """RFC 4145 §4.1: the answerer takes the other role. No ``a=setup`` means the offerer
    is active; to ``actpass`` a sender answers ``active`` (it connects)."""
    return {"active": "passive", "passive": "active", "actpass": "active"}.get(
        offer_setup or "active", "passive"
    )


def build_answer(
    offer: SessionDescription,
    origin_user: str,
    address: str,
    port: int,
    *,
    ssrc: str | None = None,
    format: str | None = "",
) -> SessionDescription:
    """A sender's 200 OK answer (PROTOCOL §4.2, §6.2): ``a=sendonly``, ``96 PS/90000`` (or
    whatever number the offer gave PS), the offer's ``y=`` unless ``ssrc`` is given, the
    offer's ``s=`` and ``t=``, and for TCP the opposite ``a=setup`` with ``a=connection:new``.
    ``address``:``port`` is where RTP comes from (UDP, TCP active) or is accepted (TCP
    passive). Raise ``SdpError`` if the offer has no PS payload or no ``y=`` is known."""
    pt = next((p for p, enc in offer.rtpmap.items() if enc.upper().startswith("PS/")), None)
    if pt is None and 96 in offer.payload_types and 96 not in offer.rtpmap:
        pt = 96  # a static-looking offer without rtpmap lines: 96 is PS in GB/T 28181
    if pt is None or pt not in offer.payload_types:
        raise SdpError("the offer has no PS payload type; a GB/T 28181 sender sends only PS")
    y = ssrc if ssrc is not None else offer.ssrc
    if y is None:
        raise SdpError("the offer has no y= and no SSRC was allocated (Q-13)")
    _check_ssrc(y)
    tcp = offer.is_tcp
    return SessionDescription(
        origin_user=origin_user,
        origin_address=address,
        connection_address=address,
        port=port,
        session_name=offer.session_name,
        media_kind=offer.media_kind,
        proto=offer.proto,
        payload_types=(pt,),
        rtpmap={pt: "PS/90000"},
        direction="sendonly",
        setup=_answer_setup(offer.setup) if tcp else None,
        connection_new=tcp,
        ssrc=y,
        format=format,
        start_time=offer.start_time,
        stop_time=offer.stop_time,
    )


# ---------------------------------------------------------------- SSRC


def ssrc_int(y: str) -> int:
    """The RTP header SSRC (uint32) for a decimal ``y=`` value (PROTOCOL §1.4)."""
    if not isinstance(y, str) or not 1 <= len(y) <= 10 or not _DIGITS.fullmatch(y):
        raise SdpError(f"y= {y!r} is not 1 to 10 decimal digits")
    value = int(y)
    if value > 0xFFFFFFFF:
        raise SdpError(f"y= {y!r} does not fit in 32 bits")
    return value


def _check_domain(domain: str) -> None:
    if not isinstance(domain, str) or len(domain) < 8 or not _DIGITS.fullmatch(domain):
        raise ValueError(f"SIP domain {domain!r} must be at least 8 digits (normally 10)")


def make_ssrc(domain: str, serial: int, playback: bool = False) -> str:
    """``D TTTTT NNNN`` (PROTOCOL §1.4): D 0 live / 1 history, TTTTT = ``domain[3:8]``."""
    _check_domain(domain)
    if not isinstance(serial, int) or not 0 <= serial <= MAX_SSRC_SERIAL:
        raise ValueError(f"SSRC serial {serial!r} is not in 0..{MAX_SSRC_SERIAL}")
    return f"{1 if playback else 0}{domain[3:8]}{serial:04d}"


class SsrcAllocator:
    """Hands out SSRCs unique among one domain's open streams: serials 1..9999, round-robin
    (a just-released SSRC is reused last, so late packets of an old stream stay foreign)."""

    def __init__(self, domain: str) -> None:
        _check_domain(domain)
        self.domain = domain
        self._in_use: set[str] = set()
        self._next = {False: 1, True: 1}  # next serial to try, per live/history prefix

    def allocate(self, *, playback: bool = False) -> str:
        """A free 10-digit SSRC; raise ``SsrcExhausted`` when all serials are in use."""
        serial = self._next[playback]
        for _ in range(MAX_SSRC_SERIAL):
            ssrc = make_ssrc(self.domain, serial, playback)
            serial = serial % MAX_SSRC_SERIAL + 1
            if ssrc not in self._in_use:
                self._in_use.add(ssrc)
                self._next[playback] = serial
                return ssrc
        raise SsrcExhausted(f"all {MAX_SSRC_SERIAL} SSRC serials of {self.domain} are in use")

    def release(self, ssrc: str) -> bool:
        """Free ``ssrc``; return False if it was not allocated here (idempotent)."""
        if ssrc in self._in_use:
            self._in_use.remove(ssrc)
            return True
        return False

    def __contains__(self, ssrc: object) -> bool:
        return ssrc in self._in_use

    def __len__(self) -> int:
        """Number of SSRCs in use."""
        return len(self._in_use)
