"""Transaction timers, events, keys and the shared state-machine base (RFC 3261 §17).

Public names are re-exported by ``sip.transaction``; import them from there.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

from sip.message import Headers, Request, Response

__all__ = [
    "DEFAULT_TIMERS",
    "MAGIC_COOKIE",
    "AckTimedOut",
    "Dest",
    "Outgoing",
    "ResponseReceived",
    "StrayResponse",
    "TimerConfig",
    "TransactionEvent",
    "TransactionState",
    "TransactionTerminated",
    "TransactionTimedOut",
    "Wire",
    "client_key",
    "make_ack",
    "make_cancel",
    "server_key",
]

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7: branches that start with it are unique
Dest = Hashable
"""Where a message goes: opaque to this layer, e.g. a ``(transport, host, port)`` tuple."""


class Wire:
    """A message kept only as its wire bytes: what a completed server transaction holds to
    resend for Timer J (a parsed message is ten times the size, and a registration storm keeps
    two transactions per device for 32 s). Equal to any message that serialises the same."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        """The wire bytes."""
        return self.data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Wire):
            return other.data == self.data
        if isinstance(other, Request | Response):
            return other.serialize() == self.data
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to mutable messages: unhashable

    def __repr__(self) -> str:
        return f"<Wire {self.data[:40]!r}... {len(self.data)} bytes>"


Outgoing = tuple[Request | Response | Wire, Hashable]
"""A message to send and its destination."""


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 §17 / Table 4 timer values, in seconds."""

    t1: float = 0.5
    """RTT estimate; retransmissions start at T1 (RFC 3261 §17.1.1.1)."""
    t2: float = 4.0
    """Cap of the non-INVITE and response retransmission interval (RFC 3261 §17.1.2.2)."""
    t4: float = 5.0
    """Longest time a message lingers in the network; Timers I and K (RFC 3261 §17.1.2.2)."""
    timer_d: float = 32.0
    """Timer D: INVITE client Completed wait on UDP, at least 32 s (RFC 3261 §17.1.1.2)."""
    timer_c: float = 180.0
    """Backstop for an INVITE left in Proceeding (RFC 3261 §16.6 step 11: over 3 minutes)."""

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 >= 0):
            raise ValueError(f"need 0 < t1 <= t2 and t4 >= 0, got {self}")
        if self.timer_d < 0 or self.timer_c <= 0:
            raise ValueError(f"need timer_d >= 0 and timer_c > 0, got {self}")

    @property
    def timeout(self) -> float:
        """64·T1: Timers B, F, H, J, L and the CANCEL wait (RFC 3261 §17, RFC 6026 §8.7)."""
        return 64 * self.t1


DEFAULT_TIMERS = TimerConfig()
"""RFC 3261 Table 4 defaults: T1 0.5 s, T2 4 s, T4 5 s."""


class TransactionState(enum.Enum):
    """States of RFC 3261 §17 Figures 5-8, plus RFC 6026's Accepted."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


@dataclass(frozen=True, slots=True)
class TransactionEvent:
    """Base of everything ``next_event()`` returns."""


@dataclass(frozen=True, slots=True)
class ResponseReceived(TransactionEvent):
    """A provisional or final response for a client transaction (RFC 3261 §17.1)."""

    key: str
    """The key ``send_request`` returned."""
    request: Request
    """The request the transaction sent."""
    response: Response

    def __post_init__(self) -> None:
        if not 100 <= self.response.status <= 699:
            raise ValueError(f"status {self.response.status} out of range")


@dataclass(frozen=True, slots=True)
class TransactionTimedOut(TransactionEvent):
    """Timer B or F fired, or a cancelled INVITE got no final: the TU reports a 408."""

    key: str
    request: Request


@dataclass(frozen=True, slots=True)
class AckTimedOut(TransactionEvent):
    """Our final response to an INVITE was never ACKed (Timer H, or RFC 6026 Timer L)."""

    request: Request
    """The INVITE."""
    response: Response
    """The final response that went unacknowledged."""

    def __post_init__(self) -> None:
        if self.response.status < 200:
            raise ValueError("only a final response awaits an ACK")


@dataclass(frozen=True, slots=True)
class StrayResponse(TransactionEvent):
    """A 2xx to an INVITE with no transaction left: the dialog re-ACKs (RFC 3261 §13.2.2.4)."""

    response: Response


@dataclass(frozen=True, slots=True)
class TransactionTerminated(TransactionEvent):
    """The transaction reached Terminated and left the layer (for cleanup)."""

    key: str


def _sent_by(msg: Request | Response) -> str:
    via = msg.top_via
    port = via.port if via.port is not None else (5061 if via.transport == "TLS" else 5060)
    return f"{via.host.lower()}:{port}"


def client_key(msg: Request | Response) -> str:
    """RFC 3261 §17.1.3: a client transaction is its top Via branch plus the CSeq method."""
    return f"{msg.top_via.branch or ''}/{msg.cseq.method}"


def server_key(msg: Request | Response, method: str | None = None) -> str:
    """RFC 3261 §17.2.3: branch, sent-by and method (ACK counts as INVITE).

    A branch without the magic cookie (an RFC 2543 peer) falls back to Call-ID, CSeq number,
    From tag and sent-by. ``method`` overrides the CSeq method (CANCEL looking for its INVITE).
    """
    if method is None:
        method = msg.cseq.method
    if method == "ACK":
        method = "INVITE"
    branch = msg.top_via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return f"{branch}/{method}@{_sent_by(msg)}"
    # '/' and '@' cannot occur in a token or sent-by; the Call-ID goes last since it may.
    tag = msg.from_.tag or ""
    return f"2543/{msg.cseq.seq}/{method}/{tag}@{_sent_by(msg)}/{msg.call_id}"


def _copy_route_set(request: Request, method: str) -> Headers:
    """Via (only the top), Route, Max-Forwards, From, To, Call-ID for ACK and CANCEL."""
    h = Headers()
    top = request.headers.get("Via")
    if top is None:
        raise ValueError("request without Via")
    h.add("Via", top)
    for route in request.headers.get_all("Route"):
        h.add("Route", route)
    h.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        value = request.headers.get(name)
        if value is None:
            raise ValueError(f"request without {name}")
        h.add(name, value)
    h.add("CSeq", f"{request.cseq.seq} {method}")
    return h


def make_ack(invite: Request, response: Response) -> Request:
    """RFC 3261 §17.1.1.3: the ACK for a non-2xx final (same branch, To from the response)."""
    if invite.method != "INVITE":
        raise ValueError(f"ACK only acknowledges an INVITE, not {invite.method}")
    h = _copy_route_set(invite, "ACK")
    to = response.headers.get("To")
    if to is not None:
        h.set("To", to)
    return Request("ACK", invite.uri, h)


def make_cancel(invite: Request) -> Request:
    """RFC 3261 §9.1: a CANCEL with the INVITE's Request-URI, top Via, From, To, Call-ID, CSeq."""
    if invite.method != "INVITE":
        raise ValueError(f"only an INVITE can be cancelled, not {invite.method}")
    return Request("CANCEL", invite.uri, _copy_route_set(invite, "CANCEL"))


class Transaction:
    """Shared machinery: one retransmission timer, one ending timer, output queues.

    ``timer_token`` and ``timer_deadline`` are bookkeeping owned by ``TransactionLayer``
    (which heap entry is current); a standalone transaction never reads them.
    """

    __slots__ = (
        "_absorbed",
        "_end_at",
        "_events",
        "_interval",
        "_out",
        "_retransmissions",
        "_retx_at",
        "abandoned",
        "dest",
        "key",
        "reliable",
        "request",
        "request_id",
        "state",
        "timer_deadline",
        "timer_token",
        "timers",
    )

    def __init__(
        self,
        key: str,
        request: Request,
        dest: Hashable,
        reliable: bool,
        timers: TimerConfig,
        state: TransactionState,
    ) -> None:
        self.key = key
        self.request = request
        self.request_id: tuple[str, str, int, str] | None = None
        """Set by the layer: the (Call-ID, From tag, CSeq, method) it indexes the request by."""
        self.dest = dest
        self.reliable = reliable
        self.timers = timers
        self.state = state
        self.abandoned = False
        """True when a server transaction ended because the TU never sent a final."""
        self.timer_token = -1
        self.timer_deadline: float | None = None
        self._out: list[Outgoing] = []
        self._events: deque[TransactionEvent] = deque()
        self._retx_at: float | None = None
        self._interval = 0.0
        self._end_at: float | None = None
        self._retransmissions = 0
        self._absorbed = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key} {self.state.value}>"

    @property
    def terminated(self) -> bool:
        """True once the transaction is in the Terminated state."""
        return self.state is TransactionState.TERMINATED

    def next_deadline(self) -> float | None:
        """The earliest pending timer (seconds, same clock as ``now``), or None."""
        a, b = self._retx_at, self._end_at
        if a is None:
            return b
        if b is None or a < b:
            return a
        return b

    def handle_timer(self, now: float) -> None:
        """Fire what is due at ``now``: the ending timer wins over a retransmission."""
        if self.terminated:
            return
        if self._end_at is not None and self._end_at <= now:
            self._end_at = None
            self._on_end_timer(now)
        elif self._retx_at is not None and self._retx_at <= now:
            self._on_retransmit_timer(now)

    def datagrams_to_send(self) -> list[Outgoing]:
        """Messages queued for the transport since the last call, with their destination."""
        out = self._out
        self._out = []
        return out

    def next_event(self) -> TransactionEvent | None:
        """The oldest undelivered event, or None."""
        return self._events.popleft() if self._events else None

    def take_counts(self) -> tuple[int, int]:
        """(retransmissions sent, inputs absorbed) since the last call."""
        counts = (self._retransmissions, self._absorbed)
        self._retransmissions = self._absorbed = 0
        return counts

    # -- for subclasses --------------------------------------------------------------------

    def _on_end_timer(self, now: float) -> None:
        raise NotImplementedError

    def _on_retransmit_timer(self, now: float) -> None:
        raise NotImplementedError

    def _send(self, message: Request | Response | Wire) -> None:
        self._out.append((message, self.dest))

    def _resend(self, message: Request | Response | Wire) -> None:
        self._out.append((message, self.dest))
        self._retransmissions += 1

    def _start_retransmit(self, now: float, interval: float) -> None:
        """Arm the first retransmission; RFC 3261 §17: only over an unreliable transport."""
        if self.reliable:
            self._retx_at = None
        else:
            self._interval = interval
            self._retx_at = now + interval

    def _rearm_retransmit(self, now: float, interval: float) -> None:
        """Next retransmission ``interval`` after the one that just fired (never in the past)."""
        self._interval = interval
        at = (self._retx_at if self._retx_at is not None else now) + interval
        self._retx_at = at if at > now else now + interval

    def _linger(self, now: float, duration: float) -> None:
        """Timers D/I/J/K: wait to absorb retransmissions; zero on reliable transports."""
        self._retx_at = None
        if self.reliable or duration <= 0:
            self._terminate()
        else:
            self._end_at = now + duration

    def _terminate(self) -> None:
        self.state = TransactionState.TERMINATED
        self._retx_at = self._end_at = None
        self._events.append(TransactionTerminated(self.key))
