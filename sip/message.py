"""SIP messages: parse and serialise (RFC 3261 §7, §20, §25), sans-I/O.

Theory of operation
-------------------
``parse_message(data)`` takes one datagram or one framed stream message (see ``StreamFramer``)
and returns a ``Request`` or ``Response``. Header names are kept as sent, but looked up through
a canonical key, so compact forms (``i``, ``v``, ``l`` ...) and any case work. Headers that
RFC 3261 allows to be comma-joined (Via, Contact, Route ...) are split into one entry per value,
and folded lines are unfolded, so ``parse(serialise(m)) == m`` holds for every message this
module builds. Typed views (``via``, ``from_``, ``cseq`` ...) are parsed on first use and
cached until the headers change.

Rules:
- Every input has a limit (``MAX_MESSAGE``, ``MAX_HEADERS``, ``MAX_LINE``); going past one is a
  ``SipParseError`` whose ``status`` the endpoint sends back (or drops the message when no
  response can be built, as for a garbage start line).
- The parser never raises anything but ``SipParseError`` on any input bytes.
- Header text that is not valid UTF-8 is kept byte for byte (surrogate escapes) and the message
  is flagged ``lossy``, so the gateway can count it without refusing a device whose
  User-Agent is GB2312.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from sip.errors import SipParseError
from sip.uri import NameAddr, SipUri, format_params, parse_params, split_quoted

__all__ = [
    "MAX_HEADERS",
    "MAX_LINE",
    "MAX_MESSAGE",
    "CSeq",
    "Headers",
    "Request",
    "Response",
    "StreamFramer",
    "Via",
    "make_response",
    "parse_message",
    "reason_phrase",
]

MAX_MESSAGE = 65536  # bytes, start line to end of body
MAX_HEADERS = 100  # header fields after splitting comma-joined values
MAX_LINE = 16384  # bytes in one (unfolded) header field

_COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "f": "From",
    "t": "To",
    "v": "Via",
    "l": "Content-Length",
    "c": "Content-Type",
    "e": "Content-Encoding",
    "k": "Supported",
    "s": "Subject",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "x": "Session-Expires",
}
_CANONICAL = {
    n.lower(): n
    for n in (
        "Accept",
        "Allow",
        "Allow-Events",
        "Authorization",
        "Call-ID",
        "Contact",
        "Content-Encoding",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Event",
        "Expires",
        "From",
        "Max-Forwards",
        "Min-Expires",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Record-Route",
        "Require",
        "Route",
        "Server",
        "Subject",
        "Subscription-State",
        "Supported",
        "To",
        "User-Agent",
        "Via",
        "WWW-Authenticate",
    )
}
# Headers whose values may be comma-joined on one line (RFC 3261 §7.3.1). Not the auth ones.
_LIST_HEADERS = frozenset(
    k.lower()
    for k in (
        "Via",
        "Contact",
        "Route",
        "Record-Route",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow-Events",
    )
)
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6]\d\d) ?(.*)$")
_REQUEST_LINE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+) (\S+) SIP/2\.0$")
_VIA_SENT = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(.+)$", re.IGNORECASE)
_REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    513: "Message Too Large",
    603: "Decline",
}

T = TypeVar("T")


def reason_phrase(status: int) -> str:
    """The standard reason phrase for ``status``."""
    return _REASONS.get(status, "Unknown")


def _key(name: str) -> str:
    low = name.lower()
    full = _COMPACT.get(low)
    return full.lower() if full is not None else low


def _canonical_name(name: str) -> str:
    low = name.lower()
    full = _COMPACT.get(low)
    if full is not None:
        return full
    return _CANONICAL.get(low, name)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=...;rport``."""

    transport: str
    host: str
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one Via value."""
        m = _VIA_SENT.match(text.strip())
        if m is None:
            raise SipParseError(f"bad Via: {text[:80]!r}")
        sent_by, semi, ptext = m.group(2).partition(";")
        sent_by = sent_by.strip()
        host, port = _split_hostport(sent_by)
        return cls(m.group(1).upper(), host, port, parse_params(ptext) if semi else ())

    def param(self, name: str) -> str | None:
        """A Via parameter's value ('' for a flag), or None when absent."""
        lname = name.lower()
        for k, v in self.params:
            if k.lower() == lname:
                return v if v is not None else ""
        return None

    @property
    def branch(self) -> str | None:
        """The branch parameter (transaction id)."""
        return self.param("branch")

    def with_params(self, **updates: str | None) -> Via:
        """A copy with the named parameters set (added at the end when new)."""
        params = list(self.params)
        for name, value in updates.items():
            for i, (k, _) in enumerate(params):
                if k.lower() == name.lower():
                    params[i] = (k, value)
                    break
            else:
                params.append((name, value))
        return Via(self.transport, self.host, self.port, tuple(params))

    def __str__(self) -> str:
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {hp}{format_params(self.params)}"


def _split_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"bad host {text[:80]!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"bad host {text[:80]!r}")
        ptext = rest[1:] if rest else ""
    else:
        host, _, ptext = text.partition(":")
    if not host or any(c in host for c in ' \t<>"@'):
        raise SipParseError(f"bad host {text[:80]!r}")
    if not ptext:
        return host, None
    if not ptext.isdigit() or not 0 < int(ptext) <= 65535:
        raise SipParseError(f"bad port in {text[:80]!r}")
    return host, int(ptext)


@dataclass(frozen=True, slots=True)
class CSeq:
    """``CSeq: 2 REGISTER``."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse a CSeq value; the number must fit 32 bits (RFC 3261 §8.1.1.5)."""
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or not _TOKEN.match(parts[1]):
            raise SipParseError(f"bad CSeq: {text[:80]!r}")
        seq = int(parts[0])
        if seq >= 2**32:
            raise SipParseError(f"CSeq out of range: {text[:80]!r}")
        return cls(seq, parts[1].upper())

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


class Headers:
    """An ordered multi-map of header fields with case-insensitive, compact-aware lookup."""

    __slots__ = ("_cache", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = [
            (_key(n), _canonical_name(n), v) for n, v in items
        ]
        self._cache: dict[str, object] = {}

    def get(self, name: str) -> str | None:
        """The first value of ``name``, or None."""
        k = _key(name)
        for key, _, value in self._items:
            if key == k:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """All values of ``name`` in order."""
        k = _key(name)
        return [v for key, _, v in self._items if key == k]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for _, n, v in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def _semantic(self) -> list[tuple[str, str]]:
        """Fields compared by message equality: Content-Length is derived from the body."""
        return [(k, v) for k, _, v in self._items if k != "content-length"]

    def add(self, name: str, value: str) -> None:
        """Append a field."""
        self._items.append((_key(name), _canonical_name(name), value))
        self._cache.clear()

    def insert(self, index: int, name: str, value: str) -> None:
        """Insert a field at ``index`` (e.g. a Via at the top)."""
        self._items.insert(index, (_key(name), _canonical_name(name), value))
        self._cache.clear()

    def set(self, name: str, value: str) -> None:
        """Replace every field of ``name`` by one, kept at the first one's place."""
        k = _key(name)
        for i, (key, _, _) in enumerate(self._items):
            if key == k:
                self._items[i] = (k, _canonical_name(name), value)
                self._items[i + 1 :] = [it for it in self._items[i + 1 :] if it[0] != k]
                break
        else:
            self._items.append((k, _canonical_name(name), value))
        self._cache.clear()

    def remove(self, name: str) -> None:
        """Remove every field of ``name``."""
        k = _key(name)
        self._items = [it for it in self._items if it[0] != k]
        self._cache.clear()

    def copy(self) -> Headers:
        """A shallow copy."""
        h = Headers()
        h._items = list(self._items)
        return h

    def typed(self, name: str, parse: Callable[[str], T]) -> T:
        """The first value parsed with ``parse``, cached; SipParseError when absent or bad."""
        key = "1:" + name
        hit = self._cache.get(key)
        if hit is None:
            raw = self.get(name)
            if raw is None:
                raise SipParseError(f"missing {name} header")
            hit = parse(raw)
            self._cache[key] = hit
        return hit  # type: ignore[return-value]  # cache holds what parse returned

    def typed_all(self, name: str, parse: Callable[[str], T]) -> list[T]:
        """All values parsed with ``parse``, cached."""
        key = "*:" + name
        hit = self._cache.get(key)
        if hit is None:
            hit = [parse(v) for v in self.get_all(name)]
            self._cache[key] = hit
        return hit  # type: ignore[return-value]  # cache holds what parse returned


class _Message:
    """Typed accessors shared by requests and responses."""

    __slots__ = ("body", "headers", "lossy")

    headers: Headers
    body: bytes
    lossy: bool

    @property
    def via(self) -> list[Via]:
        """All Via values, top first."""
        return self.headers.typed_all("Via", Via.parse)

    @property
    def top_via(self) -> Via:
        """The topmost Via (SipParseError if none)."""
        return self.headers.typed("Via", Via.parse)

    @property
    def from_(self) -> NameAddr:
        """The From header."""
        return self.headers.typed("From", NameAddr.parse)

    @property
    def to(self) -> NameAddr:
        """The To header."""
        return self.headers.typed("To", NameAddr.parse)

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        return self.headers.typed("Call-ID", _parse_call_id)

    @property
    def cseq(self) -> CSeq:
        """The CSeq."""
        return self.headers.typed("CSeq", CSeq.parse)

    @property
    def contact(self) -> list[NameAddr]:
        """Contact values (empty for none or ``*``)."""
        return [c for c in self.headers.typed_all("Contact", _parse_contact) if c is not None]

    @property
    def expires(self) -> int | None:
        """The Expires header as seconds, or None."""
        raw = self.headers.get("Expires")
        if raw is None:
            return None
        return self.headers.typed("Expires", _parse_delta)

    @property
    def content_type(self) -> str | None:
        """Content-Type, lower-cased, without parameters."""
        raw = self.headers.get("Content-Type")
        return None if raw is None else raw.split(";", 1)[0].strip().lower()

    def _head_lines(self) -> list[str]:
        lines: list[str] = []
        have_length = False
        for key, name, value in self.headers._items:
            if key == "content-length":
                if have_length:
                    continue
                have_length = True
                value = str(len(self.body))
            lines.append(f"{name}: {value}")
        if not have_length:
            lines.append(f"Content-Length: {len(self.body)}")
        return lines

    def serialize(self) -> bytes:
        """The wire form; Content-Length always matches the body."""
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        return self.serialize()


class Request(_Message):
    """A SIP request."""

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: SipUri,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        lossy: bool = False,
    ) -> None:
        self.method = method
        self.uri = uri
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body
        self.lossy = lossy

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.method, self.uri, self.headers._semantic(), self.body) == (
            other.method,
            other.uri,
            other.headers._semantic(),
            other.body,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"

    def serialize(self) -> bytes:
        """The wire form; Content-Length always matches the body."""
        head = f"{self.method} {self.uri} SIP/2.0\r\n" + "\r\n".join(self._head_lines())
        return head.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + self.body


class Response(_Message):
    """A SIP response."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        lossy: bool = False,
    ) -> None:
        self.status = status
        self.reason = reason if reason is not None else reason_phrase(status)
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body
        self.lossy = lossy

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (self.status, self.reason, self.headers._semantic(), self.body) == (
            other.status,
            other.reason,
            other.headers._semantic(),
            other.body,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"

    def serialize(self) -> bytes:
        """The wire form; Content-Length always matches the body."""
        head = f"SIP/2.0 {self.status} {self.reason}\r\n" + "\r\n".join(self._head_lines())
        return head.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + self.body


def _parse_call_id(text: str) -> str:
    value = text.strip()
    if not value or any(c.isspace() for c in value):
        raise SipParseError(f"bad Call-ID: {text[:80]!r}")
    return value


def _parse_contact(text: str) -> NameAddr | None:
    if text.strip() == "*":
        return None
    return NameAddr.parse(text)


def _parse_delta(text: str) -> int:
    value = text.strip()
    if not value.isdigit() or len(value) > 10:
        raise SipParseError(f"bad delta-seconds: {text[:80]!r}")
    return min(int(value), 2**32 - 1)


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split at the blank line; accept bare LF line ends as well as CRLF."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf < 0 and lf < 0:
        return data, b""
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return data[:lf], data[lf + 2 :]
    return data[:crlf], data[crlf + 4 :]


def parse_message(
    data: bytes,
    *,
    max_size: int = MAX_MESSAGE,
    max_headers: int = MAX_HEADERS,
    stream: bool = False,
) -> Request | Response:
    """Parse one message; raise SipParseError (with a status hint) on any defect.

    On a datagram a Content-Length shorter than the body truncates it and a longer one is an
    error (RFC 3261 §18.3); without Content-Length the body is the rest of the datagram.
    """
    if len(data) > max_size:
        err = SipParseError(f"message of {len(data)} bytes exceeds {max_size}", status=513)
        err.partial = _salvage(data[:8192])
        raise err
    data = data.lstrip(b"\r\n")
    try:
        return _parse(data, max_headers, stream)
    except SipParseError as exc:
        if exc.partial is None:
            exc.partial = _salvage(data[:8192])
        raise


_SALVAGE = ("via", "from", "to", "call-id", "cseq")


def _salvage(data: bytes) -> Request | None:
    """Best effort: the routing headers of a broken request, so a 400 can be sent back."""
    lines = data.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    r = _REQUEST_LINE.match(lines[0].strip())
    if r is None:
        return None
    items = []
    for line in lines[1:]:
        if not line:
            break
        name, colon, value = line.partition(":")
        if colon and _key(name.strip()) in _SALVAGE and "\x00" not in value and len(value) < 1024:
            items.append((name.strip(), value.strip()))
    req = Request(r.group(1).upper(), SipUri("invalid"), items)
    try:
        req.top_via  # noqa: B018
    except SipParseError:
        return None
    return req


def _parse(data: bytes, max_headers: int, stream: bool) -> Request | Response:
    head_b, body = _split_head(data)
    if b"\x00" in head_b:
        raise SipParseError("NUL byte in message head")
    lossy = False
    if head_b.isascii():
        head = head_b.decode("ascii")
    else:
        try:
            head = head_b.decode("utf-8")
        except UnicodeDecodeError:
            head = head_b.decode("utf-8", "surrogateescape")
            lossy = True
    lines = head.replace("\r\n", "\n").split("\n")
    start = lines[0].strip()
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        if len(line) > MAX_LINE:
            raise SipParseError(f"header line longer than {MAX_LINE} bytes")
        if line[:1] in (" ", "\t"):
            if not fields:
                raise SipParseError("continuation line before any header")
            name, value = fields[-1]
            value = f"{value} {line.strip()}"
            if len(value) > MAX_LINE:
                raise SipParseError(f"header longer than {MAX_LINE} bytes")
            fields[-1] = (name, value)
            continue
        if not line:
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _TOKEN.match(name):
            raise SipParseError(f"bad header line: {line[:80]!r}")
        fields.append((name, value.strip()))
    items: list[tuple[str, str]] = []
    for name, value in fields:
        if _key(name) in _LIST_HEADERS and "," in value:
            items.extend((name, v.strip()) for v in split_quoted(value, ",") if v.strip())
        else:
            items.append((name, value))
        if len(items) > max_headers:
            raise SipParseError(f"more than {max_headers} header fields", status=513)
    headers = Headers(items)
    msg: Request | Response
    m = _STATUS_LINE.match(start)
    if m is not None:
        msg = Response(int(m.group(1)), m.group(2), headers, b"", lossy=lossy)
    else:
        r = _REQUEST_LINE.match(start)
        if r is None:
            raise SipParseError(f"bad start line: {start[:80]!r}")
        try:
            uri = SipUri.parse(r.group(2))
        except SipParseError as exc:
            err = SipParseError(f"bad Request-URI: {exc.reason}", status=exc.status)
            err.partial = Request(r.group(1).upper(), SipUri("invalid"), headers)
            raise err from None
        msg = Request(r.group(1).upper(), uri, headers, b"", lossy=lossy)
    msg.body = _frame_body(headers, body, stream)
    try:
        _validate(msg)
    except SipParseError as exc:
        exc.partial = msg
        raise
    return msg


def _frame_body(headers: Headers, body: bytes, stream: bool) -> bytes:
    raw = headers.get("Content-Length")
    if raw is None:
        return b"" if stream else body
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 9:
        raise SipParseError(f"bad Content-Length: {raw[:40]!r}")
    length = int(raw)
    if length > len(body):
        raise SipParseError(f"Content-Length {length} exceeds the {len(body)} body bytes")
    return body[:length]


def _validate(msg: Request | Response) -> None:
    """Check the mandatory headers (RFC 3261 §8.1.1) parse, so handlers can trust them."""
    if not msg.via:
        raise SipParseError("missing Via header")
    msg.top_via  # noqa: B018  # parse and cache
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    msg.call_id  # noqa: B018
    cseq = msg.cseq
    if isinstance(msg, Request) and cseq.method != msg.method and msg.method != "ACK":
        raise SipParseError(f"CSeq method {cseq.method} does not match {msg.method}")
    if isinstance(msg, Request) and msg.method == "ACK" and cseq.method != "ACK":
        raise SipParseError(f"CSeq method {cseq.method} does not match ACK")
    if msg.headers.get("Expires") is not None:
        msg.expires  # noqa: B018
    if msg.headers.get("Max-Forwards") is not None:
        mf = msg.headers.get("Max-Forwards") or ""
        if not mf.strip().isdigit() or int(mf.strip()) > 255:
            raise SipParseError(f"bad Max-Forwards: {mf[:40]!r}")
    msg.contact  # noqa: B018


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` (RFC 3261 §8.2.6): Via, From, To, Call-ID, CSeq copied."""
    h = Headers()
    for name, value in request.headers:
        k = _key(name)
        if k in ("via", "from", "call-id", "cseq"):
            h.add(name, value)
        elif k == "to":
            if to_tag is not None and status > 100:
                try:
                    to = request.to
                except SipParseError:
                    to = None
                if to is not None and to.tag is None:
                    value = str(to.with_tag(to_tag))
            h.add(name, value)
    for name, value in headers:
        h.add(name, value)
    return Response(status, reason, h, body)


class StreamFramer:
    """Cuts a TCP byte stream into whole messages by Content-Length (RFC 3261 §18.3).

    ``feed()`` bytes, then call ``next_message()`` until it returns None. A framing error
    (head over the size limit, bad Content-Length) raises SipParseError: the stream cannot be
    resynchronised, so the caller answers if it can and closes the connection. CRLF keep-alive
    pings between messages (RFC 5626 §3.5.1) are skipped and counted in ``pings``.
    """

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._max = max_message
        self.pings = 0

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a message."""
        return len(self._buf)

    def next_message(self) -> bytes | None:
        """The next complete message's bytes, or None when more data is needed."""
        buf = self._buf
        skip = 0
        while skip < len(buf) and buf[skip] in (13, 10):
            skip += 1
        if skip:
            if skip >= 4 or b"\r\n\r\n" in buf[:skip]:
                self.pings += 1
            del buf[:skip]
        if not buf:
            return None
        end = buf.find(b"\r\n\r\n")
        sep = 4
        lf = buf.find(b"\n\n", 0, end if end >= 0 else len(buf))
        if lf >= 0 and (end < 0 or lf < end):
            end, sep = lf, 2
        if end < 0:
            if len(buf) > self._max:
                raise SipParseError(f"message head exceeds {self._max} bytes", status=513)
            return None
        head = bytes(buf[:end])
        length = 0
        for m in re.finditer(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", head):
            raw = m.group(1).strip()
            if not raw.isdigit() or len(raw) > 9:
                raise SipParseError(f"bad Content-Length: {raw[:40]!r}")
            length = int(raw)
            break
        total = end + sep + length
        if total > self._max:
            raise SipParseError(f"message of {total} bytes exceeds {self._max}", status=513)
        if len(buf) < total:
            return None
        out = bytes(buf[:total])
        del buf[:total]
        return out
