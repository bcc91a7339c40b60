"""The SIP transaction layer (RFC 3261 §17, RFC 6026), sans-I/O.

Rules
-----
- No sockets, no event loop, no clock: every input carries ``now`` (monotonic seconds) and
  every output is pulled by the shell: ``datagrams_to_send()``, ``next_event()``,
  ``next_deadline()``, then ``handle_timer(now)`` when that deadline passes.
- Destinations are opaque hashable values handed back with the message to send.
- All state transitions live in the four per-transaction classes; this module only finds
  the transaction, drives it, and collects what it produced.

Theory of operation
-------------------
Client transactions are keyed by top Via branch plus CSeq method (RFC 3261 §17.1.3): the
string ``send_request`` returns and every ``ResponseReceived`` carries. Server transactions
are keyed by branch, sent-by and method with ACK counted as INVITE (§17.2.3), or, for an
RFC 2543 peer whose branch lacks the magic cookie, by Call-ID, CSeq number, From tag and
sent-by. A second index, (Call-ID, From tag, CSeq number, method), finds the INVITE that a
2xx's ACK (new branch) acknowledges and detects merged requests (§8.2.2.2).

Each transaction has at most two timers (a retransmission, and one that ends the state).
The layer keeps one heap of (deadline, token, transaction); a transaction's current token is
stored on it, so an entry whose token is stale is skipped when it reaches the top (lazy
invalidation, O(log n) per change). The heap is rebuilt when stale entries outnumber live
transactions, so its size stays bounded. ``handle_timer`` pops every due entry first and
then fires them, so a transaction re-armed at ``now`` waits for the next call.

Terminated transactions leave the layer at once (a ``TransactionTerminated`` event says so).
Timers D, I, J, K are zero on reliable transports; retransmissions only happen on UDP.

Beyond the RFC, nothing lives forever: an INVITE left in Proceeding is CANCELled after
``TimerConfig.timer_c`` (a proxy's Timer C, §16.8) and abandoned 64·T1 later; a server
transaction whose TU never answers is dropped after ``timer_c`` (INVITE) or 64·T1 (others).
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections import deque
from collections.abc import Hashable

from sip._transaction_base import (
    DEFAULT_TIMERS,
    MAGIC_COOKIE,
    AckTimedOut,
    Dest,
    Outgoing,
    ResponseReceived,
    StrayResponse,
    TimerConfig,
    Transaction,
    TransactionEvent,
    TransactionState,
    TransactionTerminated,
    TransactionTimedOut,
    Wire,
    client_key,
    make_ack,
    make_cancel,
    server_key,
)
from sip._transaction_client import InviteClientTransaction, NonInviteClientTransaction
from sip._transaction_server import InviteServerTransaction, NonInviteServerTransaction
from sip.message import Request, Response, make_response

__all__ = [
    "DEFAULT_TIMERS",
    "MAGIC_COOKIE",
    "OVERLOAD_RETRY_AFTER",
    "AckTimedOut",
    "ClientTransaction",
    "Dest",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "Outgoing",
    "ResponseReceived",
    "ServerTransaction",
    "StrayResponse",
    "TimerConfig",
    "Transaction",
    "TransactionEvent",
    "TransactionLayer",
    "TransactionState",
    "TransactionTerminated",
    "TransactionTimedOut",
    "Wire",
    "client_key",
    "make_ack",
    "make_cancel",
    "server_key",
]

ClientTransaction = InviteClientTransaction | NonInviteClientTransaction
ServerTransaction = InviteServerTransaction | NonInviteServerTransaction

OVERLOAD_RETRY_AFTER = 10
"""Seconds in the Retry-After of the 503 sent past ``max_transactions`` (RFC 3261 §21.5.4)."""

_STAT_NAMES = (
    "retransmissions_sent",  # requests, responses and ACKs sent again
    "absorbed",  # retransmitted requests, ACKs and responses not passed to the TU
    "merged",  # 482 for a merged request (RFC 3261 §8.2.2.2)
    "stray",  # 2xx to an INVITE with no client transaction
    "unmatched_responses",  # other responses matching no client transaction
    "timeouts",  # TransactionTimedOut and AckTimedOut events
    "overload",  # 503 for a request past max_transactions
    "abandoned",  # server transactions the TU never answered
    "dropped_responses",  # TU responses a transaction refused (e.g. after its final)
    "unsent_responses",  # TU responses with no transaction and no dest
)
_RequestId = tuple[str, str, int, str]  # Call-ID, From tag, CSeq number, method


def _request_id(msg: Request, method: str) -> _RequestId:
    return (msg.call_id, msg.from_.tag or "", msg.cseq.seq, method)


class TransactionLayer:
    """All transactions of one endpoint, with matching, timers and queues (RFC 3261 §17)."""

    def __init__(
        self, timers: TimerConfig = DEFAULT_TIMERS, max_transactions: int = 100_000
    ) -> None:
        if max_transactions < 1:
            raise ValueError("max_transactions must be positive")
        self.timers = timers
        self.max_transactions = max_transactions
        self.stats: dict[str, int] = dict.fromkeys(_STAT_NAMES, 0)
        self._clients: dict[str, ClientTransaction] = {}
        self._servers: dict[str, ServerTransaction] = {}
        self._by_request_id: dict[_RequestId, ServerTransaction] = {}
        self._heap: list[tuple[float, int, Transaction]] = []
        self._tokens = itertools.count()
        self._out: list[Outgoing] = []
        self._events: deque[TransactionEvent] = deque()

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    # -- server side -----------------------------------------------------------------------

    def receive_request(
        self, request: Request, source: Hashable, reliable: bool, now: float
    ) -> Request | None:
        """Match a request (RFC 3261 §17.2.3); return it when the TU must handle it, else None."""
        if request.method == "ACK":
            return self._receive_ack(request, now)
        key = server_key(request)
        txn = self._servers.get(key)
        if txn is not None:
            txn.receive_request(request, now)  # a retransmission
            self._collect(txn, now)
            return None
        if len(self) >= self.max_transactions and not self._cancels_live_invite(request):
            # bounded: past the cap, answer statelessly (no state kept for this request)
            self.stats["overload"] += 1
            retry = [("Retry-After", str(OVERLOAD_RETRY_AFTER))]
            self._out.append((make_response(request, 503, to_tag=_tag(), headers=retry), source))
            return None
        rid = _request_id(request, request.method)
        other = self._by_request_id.get(rid)
        new = self._new_server(request, source, reliable, now)
        new.request_id = rid
        self._servers[key] = new
        if other is not None and request.to.tag is None and request.method != "CANCEL":
            # RFC 3261 §8.2.2.2: same From tag, Call-ID and CSeq as a live transaction but
            # another branch: a forked copy that reached us twice. Answer it statefully.
            self.stats["merged"] += 1
            new.send_response(make_response(request, 482, to_tag=_tag()), now)
            self._collect(new, now)
            return None
        if other is None:
            self._by_request_id[rid] = new
        self._collect(new, now)
        return request

    def _cancels_live_invite(self, request: Request) -> bool:
        # a CANCEL frees resources, so it is let in past the cap when it matches an INVITE
        return request.method == "CANCEL" and server_key(request, "INVITE") in self._servers

    def _new_server(
        self, request: Request, source: Hashable, reliable: bool, now: float
    ) -> ServerTransaction:
        if request.method == "INVITE":
            return InviteServerTransaction(request, source, reliable, now, self.timers)
        return NonInviteServerTransaction(request, source, reliable, now, self.timers)

    def _receive_ack(self, ack: Request, now: float) -> Request | None:
        txn = self._servers.get(server_key(ack))
        if not isinstance(txn, InviteServerTransaction):
            # RFC 3261 §17.2.3 does not match an ACK for a 2xx (new branch): find the INVITE
            # by Call-ID, From tag and CSeq number. A non-compliant peer's non-2xx ACK with a
            # new branch is absorbed here too, rather than left to Timer H.
            txn_by_id = self._by_request_id.get(_request_id(ack, "INVITE"))
            if not isinstance(txn_by_id, InviteServerTransaction):
                return ack  # may belong to a dialog the TU knows
            txn = txn_by_id
        for_tu = txn.receive_ack(now)
        self._collect(txn, now)
        return ack if for_tu else None

    def find_invite_for_cancel(self, cancel: Request) -> Request | None:
        """RFC 3261 §9.2: the INVITE of the live server transaction a CANCEL matches, or None.

        A final may already have been sent; a 487 the TU then sends is dropped by the
        transaction (counted in ``stats["dropped_responses"]``).
        """
        txn = self._servers.get(server_key(cancel, "INVITE"))
        return txn.request if isinstance(txn, InviteServerTransaction) else None

    def send_response(self, response: Response, now: float, *, dest: Dest | None = None) -> None:
        """Send a TU response through its server transaction (top Via branch + CSeq method).

        With no matching transaction it is sent statelessly to ``dest``; without ``dest`` it
        is dropped and counted in ``stats["unsent_responses"]``.
        """
        if response.cseq.method == "ACK":
            self.stats["dropped_responses"] += 1  # RFC 3261 §17: an ACK is never answered
            return
        txn = self._servers.get(server_key(response))
        if txn is None:
            if dest is None:
                self.stats["unsent_responses"] += 1
            else:
                self._out.append((response, dest))
            return
        if not txn.send_response(response, now):
            self.stats["dropped_responses"] += 1
        self._collect(txn, now)

    # -- client side -----------------------------------------------------------------------

    def send_request(self, request: Request, dest: Dest, reliable: bool, now: float) -> str:
        """Start a client transaction and queue the request; return its key (RFC 3261 §17.1).

        An ACK is queued statelessly (no transaction; the key is still returned). Raise
        ValueError for a branch without the magic cookie or a key already in use.
        """
        if request.method == "ACK":
            self._out.append((request, dest))
            return client_key(request)
        txn = self._new_client(request, dest, reliable, now)
        if txn.key in self._clients:
            raise ValueError(f"client transaction {txn.key} already exists")
        self._clients[txn.key] = txn
        self._collect(txn, now)
        return txn.key

    def _new_client(
        self, request: Request, dest: Hashable, reliable: bool, now: float
    ) -> ClientTransaction:
        if request.method == "INVITE":
            return InviteClientTransaction(request, dest, reliable, now, self.timers)
        return NonInviteClientTransaction(request, dest, reliable, now, self.timers)

    def receive_response(self, response: Response, now: float) -> None:
        """Match a response by branch and CSeq method (RFC 3261 §17.1.3) and drive its txn."""
        txn = self._clients.get(client_key(response))
        if txn is not None:
            txn.receive_response(response, now)
            self._collect(txn, now)
        elif 200 <= response.status < 300 and response.cseq.method == "INVITE":
            self._emit(StrayResponse(response))  # RFC 3261 §13.2.2.4: the dialog re-ACKs
        else:
            self.stats["unmatched_responses"] += 1  # §18.1.2: silently discarded

    def cancel(self, key: str, now: float) -> None:
        """RFC 3261 §9.1: CANCEL an INVITE client txn now, or once a provisional arrives.

        The CANCEL runs in its own non-INVITE transaction (its events carry its own key). An
        unknown or finished key is ignored; a non-INVITE key raises ValueError.
        """
        txn = self._clients.get(key)
        if txn is None:
            return
        if not isinstance(txn, InviteClientTransaction):
            raise ValueError(f"only an INVITE can be cancelled, not {key}")
        txn.cancel(now)
        self._collect(txn, now)

    # -- timers and output -----------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Fire every transaction timer due at ``now`` (seconds)."""
        heap = self._heap
        due: list[Transaction] = []
        while heap and heap[0][0] <= now:
            _, token, txn = heapq.heappop(heap)
            if txn.timer_token == token:
                txn.timer_token = -1
                txn.timer_deadline = None
                due.append(txn)
        for txn in due:
            if not txn.terminated:
                txn.handle_timer(now)
                self._collect(txn, now)

    def next_deadline(self) -> float | None:
        """The earliest timer of all transactions (seconds), or None when none is armed."""
        heap = self._heap
        while heap:
            deadline, token, txn = heap[0]
            if txn.timer_token == token:
                return deadline
            heapq.heappop(heap)
        return None

    def datagrams_to_send(self) -> list[Outgoing]:
        """Messages to send with their destinations, oldest first; the queue is drained."""
        out = self._out
        self._out = []
        return out

    def next_event(self) -> TransactionEvent | None:
        """The oldest undelivered event, or None."""
        return self._events.popleft() if self._events else None

    # -- internals -------------------------------------------------------------------------

    def _emit(self, event: TransactionEvent) -> None:
        if isinstance(event, TransactionTimedOut | AckTimedOut):
            self.stats["timeouts"] += 1
        elif isinstance(event, StrayResponse):
            self.stats["stray"] += 1
        self._events.append(event)

    def _collect(self, txn: Transaction, now: float) -> None:
        """Move a transaction's output to the layer, then re-file or remove it."""
        retransmissions, absorbed = txn.take_counts()
        self.stats["retransmissions_sent"] += retransmissions
        self.stats["absorbed"] += absorbed
        self._out.extend(txn.datagrams_to_send())
        while (event := txn.next_event()) is not None:
            self._emit(event)
        if isinstance(txn, InviteClientTransaction):
            cancel = txn.take_cancel()
            if cancel is not None and client_key(cancel) not in self._clients:
                self.send_request(cancel, txn.dest, txn.reliable, now)
        if txn.terminated:
            self._remove(txn)
            return
        deadline = txn.next_deadline()
        if deadline != txn.timer_deadline:
            txn.timer_deadline = deadline
            if deadline is None:
                txn.timer_token = -1
            else:
                token = next(self._tokens)
                txn.timer_token = token
                heapq.heappush(self._heap, (deadline, token, txn))
                if len(self._heap) > 2 * len(self) + 1024:
                    self._compact()

    def _remove(self, txn: Transaction) -> None:
        txn.timer_token = -1
        txn.timer_deadline = None
        if isinstance(txn, InviteClientTransaction | NonInviteClientTransaction):
            if self._clients.get(txn.key) is txn:
                del self._clients[txn.key]
            return
        if isinstance(txn, InviteServerTransaction | NonInviteServerTransaction):
            if self._servers.get(txn.key) is txn:
                del self._servers[txn.key]
            rid = txn.request_id
            if rid is not None and self._by_request_id.get(rid) is txn:
                del self._by_request_id[rid]
            if txn.abandoned:
                self.stats["abandoned"] += 1

    def _compact(self) -> None:
        """Drop stale heap entries: O(n), amortised over the pushes that made them."""
        self._heap = [entry for entry in self._heap if entry[2].timer_token == entry[1]]
        heapq.heapify(self._heap)


def _tag() -> str:
    return secrets.token_hex(6)
