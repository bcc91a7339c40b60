"""SIP URIs and name-addresses (RFC 3261 §19.1, §20.10, §25.1), sans-I/O.

Only what a GB/T 28181 peer sends is modelled: ``sip:`` and ``sips:`` URIs with user, host,
port, parameters and headers, and name-addresses (``"Display" <uri>;tag=...``) as used in From,
To and Contact. Parsing is strict about structure (so a garbled Request-URI is a 400) and
lenient about characters (GB devices put odd things in users and display names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sip.errors import SipParseError

__all__ = ["NameAddr", "SipUri", "format_params", "parse_params", "split_quoted"]

# host: IPv4 / hostname, or a bracketed IPv6 reference.
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::(\d{1,5}))?$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")


def split_quoted(value: str, sep: str) -> list[str]:
    """Split ``value`` on ``sep`` outside double quotes and angle brackets."""
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == sep and depth == 0:
            out.append(value[start:i])
            start = i + 1
        i += 1
    out.append(value[start:])
    return out


def parse_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """Parse ``;a=b;c`` (leading ``;`` optional) into ordered (name, value) pairs."""
    params: list[tuple[str, str | None]] = []
    for part in split_quoted(text, ";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not name:
            raise SipParseError(f"empty parameter name in {text[:80]!r}")
        params.append((name, value.strip() if eq else None))
    return tuple(params)


def format_params(params: tuple[tuple[str, str | None], ...]) -> str:
    """Render parameters as ``;a=b;c``."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def _param(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    lname = name.lower()
    for k, v in params:
        if k.lower() == lname:
            return v if v is not None else ""
    return None


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:``/``sips:`` URI; ``port`` is None when absent."""

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    password: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a URI, raising SipParseError (status 400, or 416 for another scheme)."""
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon:
            raise SipParseError(f"URI without scheme: {text[:80]!r}")
        scheme_l = scheme.lower()
        if scheme_l not in ("sip", "sips"):
            if re.fullmatch(r"[A-Za-z][A-Za-z0-9+\-.]*", scheme):
                raise SipParseError(f"unsupported URI scheme {scheme!r}", status=416)
            raise SipParseError(f"bad URI scheme in {text[:80]!r}")
        headers: str | None = None
        if "?" in rest:
            rest, _, headers = rest.partition("?")
        # the user part may contain ';' (RFC 3261 user-unreserved), so split at the last '@'
        user: str | None = None
        password: str | None = None
        at = rest.rfind("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            if not userinfo:
                raise SipParseError(f"empty user in URI {text[:80]!r}")
            if ":" in userinfo:
                userinfo, _, password = userinfo.partition(":")
            user = userinfo
            if "@" in user or not user:
                raise SipParseError(f"bad user in URI {text[:80]!r}")
        hostport, semi, ptext = rest.partition(";")
        m = _HOST_RE.match(hostport)
        if m is None:
            raise SipParseError(f"bad host in URI {text[:80]!r}")
        host = m.group(1)
        port = int(m.group(2)) if m.group(2) else None
        if port is not None and not 0 < port <= 65535:
            raise SipParseError(f"bad port in URI {text[:80]!r}")
        params = parse_params(ptext) if semi else ()
        return cls(host, user, port, scheme_l, password, params, headers)

    def param(self, name: str) -> str | None:
        """A URI parameter's value ('' for a flag), or None when absent."""
        return _param(self.params, name)

    @property
    def hostport(self) -> str:
        """``host`` or ``host:port``."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user if self.password is None else f"{self.user}:{self.password}"
            userinfo += "@"
        tail = f"?{self.headers}" if self.headers is not None else ""
        return f"{self.scheme}:{userinfo}{self.hostport}{format_params(self.params)}{tail}"


@dataclass(frozen=True, slots=True)
class NameAddr:
    """``"display" <uri>;params`` as in From, To, Contact, Route (RFC 3261 §20)."""

    uri: SipUri
    display: str | None = None
    params: tuple[tuple[str, str | None], ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse a name-addr or addr-spec with header parameters."""
        text = text.strip()
        lt = text.find("<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError(f"unterminated '<' in {text[:80]!r}")
            display = text[:lt].strip() or None
            if display is not None and display.startswith('"'):
                if len(display) < 2 or not display.endswith('"'):
                    raise SipParseError(f"bad display name in {text[:80]!r}")
                display = display[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            uri = SipUri.parse(text[lt + 1 : gt])
            params = parse_params(text[gt + 1 :])
            return cls(uri, display, params)
        # addr-spec form: URI parameters are header parameters (RFC 3261 §20.10)
        spec, _, ptext = text.partition(";")
        return cls(SipUri.parse(spec), None, parse_params(ptext))

    def param(self, name: str) -> str | None:
        """A header parameter's value ('' for a flag), or None when absent."""
        return _param(self.params, name)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter, if any."""
        return self.param("tag")

    def with_tag(self, tag: str) -> NameAddr:
        """A copy with ``tag`` set (replacing any existing one)."""
        rest = tuple(p for p in self.params if p[0].lower() != "tag")
        return NameAddr(self.uri, self.display, (*rest, ("tag", tag)))

    def __str__(self) -> str:
        disp = ""
        if self.display is not None:
            d = self.display.replace("\\", "\\\\").replace('"', '\\"')
            disp = f'"{d}" '
        return f"{disp}<{self.uri}>{format_params(self.params)}"
