"""HTTP digest authentication for SIP (RFC 2617, RFC 7616, RFC 3261 §22), sans-I/O."""

# Rules:
# - No sockets, no clock, no SIP message classes: inputs are header value strings and a
#   caller-supplied `now` (seconds on the caller's monotonic clock, i.e. `loop.time()`).
# - Every input from the wire is bounded; bad input raises `DigestParseError` (a ValueError).
#
# Theory of operation (server side, used by the registrar):
#   1. No Authorization -> `DigestVerifier.challenge(now)` builds the WWW-Authenticate value.
#      Its nonce is stateless: issue time + random + truncated HMAC (see `NonceManager`), so
#      no per-device nonce table is needed and a forged or garbled nonce is simply INVALID.
#   2. Authorization -> `DigestCredentials.from_header` (400 on DigestParseError); the
#      registrar looks the password up (From-user device ID first, then `creds.username`) and
#      calls `DigestVerifier.verify`, which returns an `AuthResult` carrying the SIP status.
#   3. PROTOCOL §2.2 interop: the formula follows the Authorization header (qop present ->
#      RFC 2617, absent -> RFC 2069), `nc`, `uri`, `username` and `realm` are hashed exactly
#      as sent, and only MD5 is accepted from devices.
#   4. Replay: after the digest verifies, `NonceCounter` requires a strictly increasing `nc`
#      per nonce (RFC 7616 §3.4.3 style) for qop credentials.
# Client side (gateway registering upstream): `build_authorization` answers a challenge.

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

__all__ = [
    "MAX_HEADER_CHARS",
    "MAX_PARAMS",
    "AuthResult",
    "DigestCredentials",
    "DigestError",
    "DigestParseError",
    "DigestVerifier",
    "NonceCounter",
    "NonceManager",
    "NonceState",
    "UnsupportedDigestError",
    "build_authorization",
    "compute_response",
    "parse_digest_params",
]

MAX_HEADER_CHARS = 4096
"""Longest digest header value accepted, in characters."""
MAX_PARAMS = 32
"""Most `k=v` parameters accepted in one digest header value."""


class DigestError(ValueError):
    """Base class of the digest errors."""


class DigestParseError(DigestError):
    """A digest header value (or a parameter in it) is malformed."""


class UnsupportedDigestError(DigestError):
    """An algorithm or qop that this module cannot compute."""


# RFC 7230 §3.2.6 token, quoted-string (qdtext / quoted-pair, obs-text allowed).
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*)"'
# Unquoted values are looser than a token: some devices send `uri=sip:a@b:5060` or base64
# nonces unquoted. Anything visible except `"` and `,` is taken.
_BARE = r'([^\x00-\x20",\x7f]+)'
_SCHEME_RE = re.compile(rf"[ \t]*({_TOKEN})[ \t]+")
_PARAM_RE = re.compile(rf"[ \t,]*({_TOKEN})[ \t]*=[ \t]*(?:{_QUOTED}|{_BARE})[ \t]*(?:,|\Z)")
_TAIL_RE = re.compile(r"[ \t,]*\Z")  # empty list elements are allowed (RFC 7230 §7)
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
# Characters that may not appear in any parsed or serialised value: controls except HTAB,
# and lone surrogates (not encodable as UTF-8, so never from a well-formed header).
_BAD_CHAR_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
_NC_RE = re.compile(r"[0-9A-Fa-f]{1,8}")


def parse_digest_params(value: str) -> dict[str, str]:
    """Parse `Digest k=v, k="q"` into {lower-case key: unquoted value}; bounded."""
    if len(value) > MAX_HEADER_CHARS:
        raise DigestParseError(f"digest header longer than {MAX_HEADER_CHARS} characters")
    if _BAD_CHAR_RE.search(value) is not None:
        raise DigestParseError("control character or surrogate in digest header")
    m = _SCHEME_RE.match(value)
    if m is None or m.group(1).lower() != "digest":
        raise DigestParseError("not a Digest header")
    params: dict[str, str] = {}
    pos = m.end()
    while _TAIL_RE.match(value, pos) is None:
        m = _PARAM_RE.match(value, pos)
        if m is None:
            raise DigestParseError(f"bad digest parameter at offset {pos}")
        key, quoted, bare = m.group(1).lower(), m.group(2), m.group(3)
        if key in params:
            raise DigestParseError(f"duplicate digest parameter {key!r}")
        if len(params) == MAX_PARAMS:
            raise DigestParseError(f"more than {MAX_PARAMS} digest parameters")
        params[key] = bare if quoted is None else _UNESCAPE_RE.sub(r"\1", quoted)
        pos = m.end()
    if not params:
        raise DigestParseError("Digest header without parameters")
    return params


def _quote(name: str, value: str) -> str:
    """Render `name="value"` with RFC 7230 backslash escapes; refuse header injection."""
    if _BAD_CHAR_RE.search(value) is not None:
        raise DigestError(f"control character or surrogate in {name}")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """Digest credentials of an `Authorization` header, every value as sent (unquoted)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str = field(repr=False)  # derived from the password: never logged
    algorithm: str | None = None
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and _BAD_CHAR_RE.search(v) is not None:
                raise DigestParseError(f"control character or surrogate in {f.name}")
        if self.qop is not None:
            if self.nc is None or self.cnonce is None:
                raise DigestParseError("qop without nc or cnonce")
            if _NC_RE.fullmatch(self.nc) is None:
                raise DigestParseError("nc is not 1-8 hex digits")

    @property
    def nc_value(self) -> int | None:
        """The nonce count as an integer; None without qop (RFC 2069 has no nc)."""
        if self.qop is None or self.nc is None:
            return None
        return int(self.nc, 16)

    @classmethod
    def from_header(cls, value: str) -> DigestCredentials:
        """Parse an `Authorization` value; raises DigestParseError if malformed."""
        p = parse_digest_params(value)
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
        if missing:
            raise DigestParseError(f"digest credentials lack {', '.join(missing)}")
        required = (p["username"], p["realm"], p["nonce"], p["uri"], p["response"])
        return cls(*required, *(p.get(k) for k in ("algorithm", "qop", "nc", "cnonce", "opaque")))


# Upper-cased algorithm name -> hashlib name (RFC 7616 §6.1; SHA-512-256 left out).
_ALGORITHMS = {"MD5": "md5", "MD5-SESS": "md5", "SHA-256": "sha256", "SHA-256-SESS": "sha256"}


def _hex(hash_name: str, text: str) -> str:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DigestError("digest input is not encodable as UTF-8") from exc
    return hashlib.new(hash_name, data).hexdigest()


def compute_response(
    *,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    algorithm: str = "MD5",
) -> str:
    """Digest `response` (lower-case hex): RFC 2617 with qop, RFC 2069 without."""
    name = algorithm.upper()
    hash_name = _ALGORITHMS.get(name)
    if hash_name is None:
        raise UnsupportedDigestError(f"digest algorithm {algorithm!r}")
    ha1 = _hex(hash_name, f"{username}:{realm}:{password}")
    if name.endswith("-SESS"):
        if cnonce is None:
            raise DigestError(f"{algorithm} needs a cnonce")
        ha1 = _hex(hash_name, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _hex(hash_name, f"{method}:{uri}")
    if qop is None:
        return _hex(hash_name, f"{ha1}:{nonce}:{ha2}")
    if qop.lower() != "auth":
        raise UnsupportedDigestError(f"qop {qop!r} (only auth)")
    if nc is None or cnonce is None:
        raise DigestError("qop=auth needs nc and cnonce")
    return _hex(hash_name, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def build_authorization(
    challenge_params: Mapping[str, str],
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int,
) -> str:
    """`Authorization` value answering parsed WWW-Authenticate params (qop=auth if offered)."""
    realm, nonce = challenge_params.get("realm"), challenge_params.get("nonce")
    if realm is None or nonce is None:
        raise DigestParseError("digest challenge lacks realm or nonce")
    algorithm = challenge_params.get("algorithm")
    offered = challenge_params.get("qop")
    qop: str | None = None
    if offered is not None:
        if "auth" not in {o.strip().lower() for o in offered.split(",")}:
            raise UnsupportedDigestError(f"challenge qop {offered!r} does not offer auth")
        qop = "auth"
    if not 0 < nc <= 0xFFFFFFFF:
        raise DigestError("nc must be in 1..0xffffffff")
    nc_text = f"{nc:08x}"
    response = compute_response(
        username=username,
        realm=realm,
        password=password,
        method=method,
        uri=uri,
        nonce=nonce,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
        algorithm=algorithm or "MD5",
    )
    fixed = {"username": username, "realm": realm, "nonce": nonce, "uri": uri}
    parts = [*(_quote(k, v) for k, v in fixed.items()), f'response="{response}"']
    if algorithm is not None:  # validated by compute_response, so a plain token
        parts.append(f"algorithm={algorithm}")
    if qop is not None:
        parts += [_quote("cnonce", cnonce), f"qop={qop}", f"nc={nc_text}"]
    elif (algorithm or "").upper().endswith("-SESS"):
        parts.append(_quote("cnonce", cnonce))
    if "opaque" in challenge_params:
        parts.append(_quote("opaque", challenge_params["opaque"]))
    return "Digest " + ",".join(parts)


class NonceState(enum.Enum):
    """What `NonceManager.check` found."""

    VALID = "valid"
    STALE = "stale"  # ours, older than the lifetime: re-challenge with stale=true
    INVALID = "invalid"  # forged, garbled, another secret or another clock epoch


# Nonce = hex(issued_at (8-byte IEEE double) || random (4) || HMAC-SHA256[:12]) = 48 hex
# digits. Hex and 48 characters because embedded devices copy the nonce into small fixed
# buffers; 96 MAC bits are plenty against online forgery within a 5-minute lifetime.
_NONCE_BODY = 12
_NONCE_MAC = 12
_NONCE_RE = re.compile(r"[0-9a-f]{48}")


class NonceManager:
    """Stateless nonces carrying their issue time (caller's monotonic seconds) and an HMAC.

    Nothing is stored. After a process restart, nonces issued before it are INVALID when
    the secret is per-process (the composition root draws it with `secrets.token_bytes` at
    start-up unless one is configured), and usually also after a reboot (the monotonic clock
    restarts, so they look issued in the future). Either way the device just gets a fresh
    401 and re-registers. With a configured secret and no reboot, old nonces stay VALID for
    their lifetime, but their nc history (`NonceCounter`) is lost: a captured request can be
    replayed until the nonce goes stale.
    """

    __slots__ = ("_lifetime", "_secret")

    def __init__(self, secret: bytes, lifetime: float = 300.0) -> None:
        if len(secret) < 16:
            raise ValueError("nonce secret must be at least 16 bytes")
        if not (math.isfinite(lifetime) and lifetime > 0):
            raise ValueError("nonce lifetime must be a positive number of seconds")
        self._secret = secret
        self._lifetime = lifetime

    @property
    def lifetime(self) -> float:
        """Seconds a nonce stays VALID after `issue`."""
        return self._lifetime

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, b"gbgw-nonce-v1:" + body, "sha256").digest()[:_NONCE_MAC]

    def issue(self, now: float) -> str:
        """A new nonce stamped with `now` (caller's monotonic seconds)."""
        if not math.isfinite(now):
            raise ValueError("now must be finite")
        body = struct.pack(">d", now) + secrets.token_bytes(_NONCE_BODY - 8)
        return (body + self._mac(body)).hex()

    def check(self, nonce: str, now: float) -> NonceState:
        """Whether `nonce` is ours and younger than the lifetime at `now`."""
        if len(nonce) != 2 * (_NONCE_BODY + _NONCE_MAC) or _NONCE_RE.fullmatch(nonce) is None:
            return NonceState.INVALID
        raw = bytes.fromhex(nonce)
        body, mac = raw[:_NONCE_BODY], raw[_NONCE_BODY:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return NonceState.INVALID
        (issued,) = struct.unpack(">d", body[:8])
        age: float = now - issued
        if age < 0:  # issued on another clock epoch (reboot with a configured secret)
            return NonceState.INVALID
        return NonceState.VALID if age <= self._lifetime else NonceState.STALE


class NonceCounter:
    """Bounded per-nonce record of the highest accepted nc (RFC 7616 §3.4.3 replay check).

    An entry lives `lifetime` seconds from the first nc seen for its nonce; the nonce was
    VALID then, so it is STALE (and never reaches the counter) by the time the entry expires.
    Entries sit in first-seen order, which is also expiry order: expired ones are purged from
    the front, and on overflow the oldest (closest to expiry) is evicted rather than the
    least recently used. An evicted nonce's nc history is forgotten, so a captured request
    on it could be replayed until it goes stale; only verified credentials create entries,
    so this takes more than `max_entries` authenticated nonces within one lifetime.
    """

    __slots__ = ("_entries", "_lifetime", "_max_entries")

    def __init__(self, lifetime: float = 300.0, max_entries: int = 100_000) -> None:
        if not (math.isfinite(lifetime) and lifetime > 0) or max_entries < 1:
            raise ValueError("lifetime and max_entries must be positive")
        self._lifetime = lifetime
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()  # nc, expires_at

    @property
    def lifetime(self) -> float:
        """Seconds an entry is kept after the first nc for its nonce."""
        return self._lifetime

    def __len__(self) -> int:
        return len(self._entries)

    def accept(self, nonce: str, nc: int, now: float) -> bool:
        """Record `nc` for `nonce`; False if it is not above the last accepted nc (replay)."""
        while self._entries:
            first = next(iter(self._entries.values()))
            if first[1] > now:
                break
            self._entries.popitem(last=False)
        entry = self._entries.get(nonce)
        if entry is not None:
            if nc <= entry[0]:
                return False
            self._entries[nonce] = (nc, entry[1])  # keeps its (expiry) position
            return True
        if len(self._entries) >= self._max_entries:
            self._entries.popitem(last=False)
        self._entries[nonce] = (nc, now + self._lifetime)
        return True


class AuthResult(enum.Enum):
    """Outcome of `DigestVerifier.verify`; the value doubles as a metric label."""

    OK = "ok"
    STALE = "stale"  # digest right, nonce expired: 401 with stale=true
    BAD_NONCE = "bad_nonce"  # not our nonce (forged, pre-restart): 401, fresh nonce
    # nc not above the last accepted one. 401 with stale=true rather than 403: the digest
    # was right, so this is a sloppy device (or a replay gaining nothing from a new nonce).
    REPLAY = "replay"
    BAD_RESPONSE = "bad_response"  # wrong password (or method/uri): 403 "wrong password"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"  # not MD5, or qop other than auth: 403
    MALFORMED = "malformed"  # unparsable Authorization: 400

    @property
    def status(self) -> int:
        """SIP status code to answer with (200 for OK)."""
        if self in (AuthResult.BAD_RESPONSE, AuthResult.UNSUPPORTED_ALGORITHM):
            return 403
        return {AuthResult.OK: 200, AuthResult.MALFORMED: 400}.get(self, 401)

    @property
    def stale(self) -> bool:
        """Whether the 401 challenge should carry stale=true."""
        return self in (AuthResult.STALE, AuthResult.REPLAY)


class DigestVerifier:
    """Server-side digest for one realm: builds challenges, verifies credentials."""

    __slots__ = ("_counter", "_nonces", "_realm_param")

    def __init__(self, realm: str, nonces: NonceManager, counter: NonceCounter) -> None:
        if counter.lifetime < nonces.lifetime:
            raise ValueError("NonceCounter must remember nonces for their whole lifetime")
        self._realm_param = _quote("realm", realm)
        self._nonces = nonces
        self._counter = counter

    def challenge(self, now: float, stale: bool = False) -> str:
        """`WWW-Authenticate` value with a fresh nonce (MD5, qop=auth, optional stale=true)."""
        value = f'Digest {self._realm_param},nonce="{self._nonces.issue(now)}"'
        value += ',qop="auth",algorithm=MD5'
        if stale:
            value += ",stale=true"
        return value

    def verify(
        self,
        authorization: str | DigestCredentials,
        *,
        method: str,
        password: str,
        now: float,
    ) -> AuthResult:
        """Check an `Authorization` value (or pre-parsed credentials) against `password`."""
        if isinstance(authorization, DigestCredentials):
            creds = authorization
        else:
            try:
                creds = DigestCredentials.from_header(authorization)
            except DigestParseError:
                return AuthResult.MALFORMED
        # PROTOCOL §2.2: missing, MD5 and "MD5" (unquoted by the parser) mean MD5.
        if creds.algorithm is not None and creds.algorithm.upper() != "MD5":
            return AuthResult.UNSUPPORTED_ALGORITHM
        if creds.qop is not None and creds.qop.lower() != "auth":
            return AuthResult.UNSUPPORTED_ALGORITHM
        state = self._nonces.check(creds.nonce, now)
        if state is NonceState.INVALID:
            return AuthResult.BAD_NONCE
        # Hash what the device sent: its username, realm, uri (sipp and many devices put
        # the server's ip:port there, not the Request-URI) and nc spelling. The uri is not
        # compared with the Request-URI: devices differ too often (PROTOCOL §2.2).
        expected = compute_response(
            username=creds.username,
            realm=creds.realm,
            password=password,
            method=method,
            uri=creds.uri,
            nonce=creds.nonce,
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
        )
        if not hmac.compare_digest(expected.encode(), creds.response.lower().encode()):
            return AuthResult.BAD_RESPONSE
        if state is NonceState.STALE:
            return AuthResult.STALE
        nc = creds.nc_value
        # RFC 2069 credentials (no qop) carry no nc, so nothing tells a device re-registering
        # with the same nonce from a replay: reuse is allowed until the nonce goes stale.
        if nc is not None and not self._counter.accept(creds.nonce, nc, now):
            return AuthResult.REPLAY
        return AuthResult.OK
