"""Client transactions: INVITE (RFC 3261 §17.1.1) and non-INVITE (RFC 3261 §17.1.2).

Public names are re-exported by ``sip.transaction``; import them from there.
"""

from __future__ import annotations

from collections.abc import Hashable

from sip._transaction_base import (
    DEFAULT_TIMERS,
    MAGIC_COOKIE,
    ResponseReceived,
    StrayResponse,
    TimerConfig,
    Transaction,
    TransactionState,
    TransactionTimedOut,
    client_key,
    make_ack,
    make_cancel,
)
from sip.message import Request, Response

__all__ = ["InviteClientTransaction", "NonInviteClientTransaction"]

_S = TransactionState


def _checked_key(request: Request) -> str:
    branch = request.top_via.branch
    if branch is None or not branch.startswith(MAGIC_COOKIE):
        # RFC 3261 §8.1.1.7: a UAC we write always uses the magic cookie.
        raise ValueError(f"{request.method} needs a top Via branch starting with {MAGIC_COOKIE}")
    return client_key(request)


class InviteClientTransaction(Transaction):
    """RFC 3261 §17.1.1 (Figure 5): Calling, Proceeding, Completed; a 2xx terminates it.

    Creating it queues the INVITE. Timer A (UDP only) starts at T1 and doubles without a cap;
    Timer B (64·T1) ends Calling. A non-2xx final is ACKed here (§17.1.1.3) and Timer D
    absorbs its retransmissions. Proceeding has no RFC timer; ``timers.timer_c`` is a backstop
    that cancels the INVITE like a proxy's Timer C (§16.8), and 64·T1 after a CANCEL with no
    final the transaction gives up (§9.1).
    """

    __slots__ = ("_ack", "_cancel_due", "_cancel_wanted", "_cancelling")

    def __init__(
        self,
        request: Request,
        dest: Hashable,
        reliable: bool,
        now: float,
        timers: TimerConfig = DEFAULT_TIMERS,
    ) -> None:
        if request.method != "INVITE":
            raise ValueError(f"not an INVITE: {request.method}")
        t = timers
        super().__init__(_checked_key(request), request, dest, reliable, t, _S.CALLING)
        self._ack: Request | None = None
        self._cancel_wanted = False  # the TU asked; waiting for a provisional (§9.1)
        self._cancel_due = False  # a CANCEL is ready for take_cancel()
        self._cancelling = False  # CANCEL issued; the 64·T1 wait for a final runs
        self._send(request)
        self._start_retransmit(now, t.t1)  # RFC 3261 §17.1.1.2: Timer A = T1
        self._end_at = now + t.timeout  # Timer B = 64·T1

    def receive_response(self, response: Response, now: float) -> None:
        """Feed a response whose branch and CSeq method match (RFC 3261 §17.1.3)."""
        status = response.status
        state = self.state
        if state in (_S.CALLING, _S.PROCEEDING):
            if status < 200:
                self.state = _S.PROCEEDING
                self._retx_at = None  # §17.1.1.2: no retransmission once Proceeding
                if self._cancel_wanted and not self._cancelling:
                    self._start_cancel(now)
                elif not self._cancelling and (state is _S.CALLING or status > 100):
                    self._end_at = now + self.timers.timer_c  # §16.7: reset on 101-199
                self._events.append(ResponseReceived(self.key, self.request, response))
            elif status < 300:
                self._events.append(ResponseReceived(self.key, self.request, response))
                self._terminate()
            else:
                # §17.1.1.3: the transaction ACKs a non-2xx final itself
                self._ack = make_ack(self.request, response)
                self._send(self._ack)
                self.state = _S.COMPLETED
                self._events.append(ResponseReceived(self.key, self.request, response))
                self._linger(now, self.timers.timer_d)
        elif state is _S.COMPLETED:
            if status >= 300 and self._ack is not None:
                self._resend(self._ack)  # a retransmitted final: ACK again, TU not told
                self._absorbed += 1
            elif 200 <= status < 300:
                self._events.append(StrayResponse(response))
            else:
                self._absorbed += 1
        else:
            self._absorbed += 1

    def cancel(self, now: float) -> None:
        """RFC 3261 §9.1: CANCEL once a provisional has arrived; no effect after a final."""
        if self.state is _S.CALLING:
            self._cancel_wanted = True
        elif self.state is _S.PROCEEDING and not self._cancelling:
            self._start_cancel(now)

    def take_cancel(self) -> Request | None:
        """The CANCEL to send in its own non-INVITE transaction, once, when one is due."""
        due = self._cancel_due and self.state is _S.PROCEEDING
        self._cancel_due = False
        return make_cancel(self.request) if due else None

    def _start_cancel(self, now: float) -> None:
        self._cancelling = self._cancel_due = True
        self._cancel_wanted = False
        self._end_at = now + self.timers.timeout  # §9.1: give up 64·T1 after the CANCEL

    def _on_retransmit_timer(self, now: float) -> None:
        if self.state is _S.CALLING:
            self._resend(self.request)  # §17.1.1.2: Timer A doubles, no cap
            self._rearm_retransmit(now, 2 * self._interval)
        else:
            self._retx_at = None

    def _on_end_timer(self, now: float) -> None:
        if self.state is _S.PROCEEDING and not self._cancelling:
            self._start_cancel(now)  # the Timer C backstop
        elif self.state is _S.COMPLETED:
            self._terminate()  # Timer D
        else:
            # Timer B in Calling, or no final 64·T1 after our CANCEL (§9.1)
            self._events.append(TransactionTimedOut(self.key, self.request))
            self._terminate()


class NonInviteClientTransaction(Transaction):
    """RFC 3261 §17.1.2 (Figure 6): Trying, Proceeding, Completed.

    Creating it queues the request. Timer E (UDP only) starts at T1 and doubles up to T2;
    in Proceeding it fires every T2. Timer F (64·T1) times it out; Timer K (T4 on UDP, zero
    on reliable transports) absorbs final retransmissions.
    """

    __slots__ = ()

    def __init__(
        self,
        request: Request,
        dest: Hashable,
        reliable: bool,
        now: float,
        timers: TimerConfig = DEFAULT_TIMERS,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"{request.method} has no non-INVITE client transaction")
        t = timers
        super().__init__(_checked_key(request), request, dest, reliable, t, _S.TRYING)
        self._send(request)
        self._start_retransmit(now, t.t1)  # RFC 3261 §17.1.2.2: Timer E = T1
        self._end_at = now + t.timeout  # Timer F = 64·T1

    def receive_response(self, response: Response, now: float) -> None:
        """Feed a response whose branch and CSeq method match (RFC 3261 §17.1.3)."""
        if self.state not in (_S.TRYING, _S.PROCEEDING):
            self._absorbed += 1  # Completed: §17.1.2.2 absorbs final retransmissions
            return
        self._events.append(ResponseReceived(self.key, self.request, response))
        if response.status < 200:
            self.state = _S.PROCEEDING  # the pending Timer E stays; later ones are T2
        else:
            self.state = _S.COMPLETED
            self._linger(now, self.timers.t4)  # Timer K

    def _on_retransmit_timer(self, now: float) -> None:
        self._resend(self.request)
        if self.state is _S.TRYING:
            # §17.1.2.2: Timer E doubles up to T2
            self._rearm_retransmit(now, min(2 * self._interval, self.timers.t2))
        else:
            self._rearm_retransmit(now, self.timers.t2)  # Proceeding: every T2

    def _on_end_timer(self, now: float) -> None:
        if self.state is not _S.COMPLETED:
            self._events.append(TransactionTimedOut(self.key, self.request))  # Timer F
        self._terminate()  # Timer K
