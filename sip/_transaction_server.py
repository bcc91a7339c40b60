"""Server transactions: INVITE (RFC 3261 §17.2.1, RFC 6026 §7.1) and non-INVITE (§17.2.2).

Public names are re-exported by ``sip.transaction``; import them from there.
"""

from __future__ import annotations

from collections.abc import Hashable

from sip._transaction_base import (
    DEFAULT_TIMERS,
    AckTimedOut,
    TimerConfig,
    Transaction,
    TransactionState,
    Wire,
    server_key,
)
from sip.message import Request, Response

__all__ = ["InviteServerTransaction", "NonInviteServerTransaction"]

_S = TransactionState


class InviteServerTransaction(Transaction):
    """RFC 3261 §17.2.1 with RFC 6026's Accepted state (Figure 7 as amended).

    Created in Proceeding by an INVITE; the TU sends 100/1xx (none is sent for it). A 2xx
    moves it to Accepted: the 2xx is resent on a T1-doubling, T2-capped schedule (UDP only,
    RFC 3261 §13.3.1.4) until the ACK is seen, and Timer L (64·T1) ends it, with
    ``AckTimedOut`` when no ACK came. A 300-699 moves it to Completed: Timer G resends it,
    Timer H (64·T1) gives up with ``AckTimedOut``, the ACK leads to Confirmed and Timer I.
    Proceeding has no RFC timer; after ``timers.timer_c`` without a final (reset by each
    101-199 sent) the transaction is dropped and flagged ``abandoned``.
    """

    __slots__ = ("_ack_seen", "_last")

    def __init__(
        self,
        request: Request,
        source: Hashable,
        reliable: bool,
        now: float,
        timers: TimerConfig = DEFAULT_TIMERS,
    ) -> None:
        if request.method != "INVITE":
            raise ValueError(f"not an INVITE: {request.method}")
        t = timers
        super().__init__(server_key(request), request, source, reliable, t, _S.PROCEEDING)
        self._last: Response | None = None
        self._ack_seen = False
        self._end_at = now + t.timer_c

    @property
    def last_response(self) -> Response | None:
        """The latest response the TU sent through this transaction."""
        return self._last

    def receive_request(self, request: Request, now: float) -> None:
        """A retransmitted INVITE: resend the latest response, if any (RFC 3261 §17.2.1)."""
        if self.state is not _S.CONFIRMED and self._last is not None:
            self._resend(self._last)
        self._absorbed += 1

    def receive_ack(self, now: float) -> bool:
        """An ACK for this INVITE; True when the TU must see it (it acknowledges a 2xx)."""
        state = self.state
        if state is _S.COMPLETED:
            self.state = _S.CONFIRMED  # §17.2.1: stop Timer G and H, start Timer I
            self._linger(now, self.timers.t4)
        elif state is _S.ACCEPTED:
            self._ack_seen = True  # RFC 6026 §7.1: ACK goes to the TU; stop resending the 2xx
            self._retx_at = None
            return True
        elif state is _S.PROCEEDING:
            return True  # not an ACK for anything we sent: let the TU judge
        self._absorbed += 1
        return False

    def send_response(self, response: Response, now: float) -> bool:
        """Send a TU response; False when the state forbids it (then nothing is sent)."""
        status = response.status
        t = self.timers
        if self.state is _S.PROCEEDING:
            self._send(response)
            self._last = response
            if status < 200:
                if status > 100:
                    self._end_at = now + t.timer_c
            elif status < 300:
                self.state = _S.ACCEPTED  # RFC 6026 §7.1
                self._start_retransmit(now, t.t1)  # RFC 3261 §13.3.1.4
                self._end_at = now + t.timeout  # Timer L
            else:
                self.state = _S.COMPLETED
                self._start_retransmit(now, t.t1)  # Timer G = T1
                self._end_at = now + t.timeout  # Timer H
            return True
        if self.state is _S.ACCEPTED and 200 <= status < 300:
            self._send(response)  # RFC 6026 §8.5: the TU's own 2xx resends pass through
            return True
        return False

    def _on_retransmit_timer(self, now: float) -> None:
        if self.state in (_S.ACCEPTED, _S.COMPLETED) and self._last is not None:
            self._resend(self._last)  # Timer G: double up to T2
            self._rearm_retransmit(now, min(2 * self._interval, self.timers.t2))
        else:
            self._retx_at = None

    def _on_end_timer(self, now: float) -> None:
        state = self.state
        if state is _S.PROCEEDING:
            self.abandoned = True
        elif state is _S.COMPLETED or (state is _S.ACCEPTED and not self._ack_seen):
            assert self._last is not None
            self._events.append(AckTimedOut(self.request, self._last))  # Timer H / L
        self._terminate()  # Timer I, Timer L after the ACK


class NonInviteServerTransaction(Transaction):
    """RFC 3261 §17.2.2 (Figure 8): Trying, Proceeding, Completed.

    Created in Trying by a request. A retransmission resends the latest response (absorbed
    in Trying). A final response starts Timer J (64·T1 on UDP, zero on reliable transports).
    With no final after 64·T1, when the client's Timer F has long fired, the transaction is
    dropped and flagged ``abandoned``.

    Memory: once the final is sent over UDP, the transaction keeps only its wire bytes (a
    ``Wire``) and lets the parsed request go: ``request`` then raises. Nothing reads it after
    the final, and a storm of registrations holds two such transactions per device for 32 s.
    """

    __slots__ = ("_last", "_request")

    def __init__(
        self,
        request: Request,
        source: Hashable,
        reliable: bool,
        now: float,
        timers: TimerConfig = DEFAULT_TIMERS,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"{request.method} has no non-INVITE server transaction")
        t = timers
        super().__init__(server_key(request), request, source, reliable, t, _S.TRYING)
        self._last: Response | Wire | None = None
        self._end_at = now + t.timeout

    @property  # the base's attribute, released after the final
    def request(self) -> Request:
        """The request; released (RuntimeError) once a final was sent over UDP."""
        if self._request is None:
            raise RuntimeError(f"{self.key}: the request was released after the final response")
        return self._request

    @request.setter
    def request(self, value: Request) -> None:
        self._request: Request | None = value

    @property
    def last_response(self) -> Response | Wire | None:
        """The latest response the TU sent through this transaction (its wire bytes once the
        transaction has completed over UDP)."""
        return self._last

    def receive_request(self, request: Request, now: float) -> None:
        """A retransmitted request: resend the latest response (RFC 3261 §17.2.2)."""
        if self._last is not None:
            self._resend(self._last)
        self._absorbed += 1

    def send_response(self, response: Response, now: float) -> bool:
        """Send a TU response; False after a final (then nothing is sent)."""
        if self.state not in (_S.TRYING, _S.PROCEEDING):
            return False
        self._send(response)
        self._last = response
        if response.status < 200:
            self.state = _S.PROCEEDING
        else:
            self.state = _S.COMPLETED
            self._linger(now, self.timers.timeout)  # Timer J
            if not self.terminated:  # lingering for retransmissions: keep bytes only
                self._last = Wire(response.serialize())
                self._request = None
        return True

    def _on_retransmit_timer(self, now: float) -> None:
        self._retx_at = None  # never armed: responses to non-INVITEs are not retransmitted

    def _on_end_timer(self, now: float) -> None:
        if self.state is not _S.COMPLETED:
            self.abandoned = True
        self._terminate()  # Timer J
