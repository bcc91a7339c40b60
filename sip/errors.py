"""Typed SIP errors: cores raise them, the endpoint maps them to a response once.

``SipParseError`` is a syntax problem found by the parser (a ``ValueError``); ``SipError`` and its
subclasses are protocol outcomes that a request handler raises and ``sip.endpoint`` turns into
the response whose status the class names.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadRequest",
    "BusyHere",
    "Forbidden",
    "IntervalTooBrief",
    "NotFound",
    "ServerTimeout",
    "ServiceUnavailable",
    "SipError",
    "SipParseError",
    "Unauthorized",
    "UnsupportedMediaType",
]


class SipParseError(ValueError):
    """A message that cannot be parsed; ``status`` is the suggested response code.

    ``partial`` is set by ``parse_message`` to a Request holding whatever routing headers
    could be salvaged (Via, From, To, Call-ID, CSeq), so the edge can still answer; it is
    None when no response is possible (garbage start line, no Via).
    """

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial: object | None = None


class SipError(Exception):
    """A request that must be answered with ``status`` (and optional extra headers)."""

    status: ClassVar[int] = 500

    def __init__(self, reason: str = "", headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = headers


class BadRequest(SipError):
    """Malformed message or body."""

    status = 400


class Unauthorized(SipError):
    """Missing or stale digest credentials."""

    status = 401


class Forbidden(SipError):
    """Wrong password, locked out, or a zone boundary."""

    status = 403


class NotFound(SipError):
    """Unknown device or channel."""

    status = 404


class UnsupportedMediaType(SipError):
    """A body type or MANSCDP root we do not handle."""

    status = 415


class IntervalTooBrief(SipError):
    """Expires below the minimum (a Min-Expires header goes with it)."""

    status = 423


class BusyHere(SipError):
    """No resources (for example no RTP port) for this request."""

    status = 486


class ServiceUnavailable(SipError):
    """Overloaded: too many open transactions or dialogs."""

    status = 503


class ServerTimeout(SipError):
    """A downstream peer did not answer in time."""

    status = 504
