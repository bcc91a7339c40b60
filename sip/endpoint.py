"""The SIP endpoint: transports <-> parser <-> transaction layer <-> transaction user.

This is the asyncio shell around the sans-I/O cores. It owns the one timer handle of the
transaction layer (re-armed only when ``next_deadline()`` changes), maps a ``SipError`` raised
by the request handler to its response once, answers unparseable requests with 400 when their
routing headers can be salvaged (else drops them), and turns client transactions into awaitable
futures. It knows nothing of GB/T 28181.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from sip.errors import SipError, SipParseError
from sip.message import Request, Response, make_response, parse_message
from sip.transaction import (
    AckTimedOut,
    ResponseReceived,
    StrayResponse,
    TimerConfig,
    TransactionLayer,
    TransactionTimedOut,
)
from sip.transport import Target, TransportConfig, Transports
from sip.uri import NameAddr, SipUri

__all__ = ["EndpointObserver", "RequestHandler", "SipEndpoint", "new_branch", "new_tag"]

log = logging.getLogger("gbgw.sip.endpoint")

RequestHandler = Callable[[Request, Target], Response | None]
"""Called for each new request; returns the response now, or None to answer later."""


def new_branch() -> str:
    """A fresh RFC 3261 branch with the magic cookie."""
    return "z9hG4bK" + secrets.token_hex(8)


def new_tag() -> str:
    """A fresh From/To tag."""
    return secrets.token_hex(6)


class EndpointObserver(Protocol):
    """Counters the endpoint reports to (the gateway wires Prometheus behind it)."""

    def request(self, method: str, direction: str) -> None: ...
    def response(self, status: int, direction: str) -> None: ...
    def malformed(self, reason: str, target: Target) -> None: ...


class _NullObserver:
    def request(self, method: str, direction: str) -> None:
        pass

    def response(self, status: int, direction: str) -> None:
        pass

    def malformed(self, reason: str, target: Target) -> None:
        pass


@dataclass(frozen=True, slots=True)
class _Pending:
    future: asyncio.Future[Response]
    on_provisional: Callable[[Response], None] | None


class SipEndpoint:
    """One SIP endpoint: listens, dispatches requests, sends requests and responses."""

    def __init__(
        self,
        transport_config: TransportConfig,
        handler: RequestHandler,
        *,
        advertise: str = "",
        user_agent: str = "gbgw",
        timers: TimerConfig | None = None,
        observer: EndpointObserver | None = None,
        max_transactions: int = 100_000,
    ) -> None:
        self.transport_config = transport_config
        self.handler = handler
        self.advertise = advertise
        self.user_agent = user_agent
        self.observer: EndpointObserver = observer or _NullObserver()
        self.layer = TransactionLayer(timers or TimerConfig(), max_transactions=max_transactions)
        self.transports: Transports | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pending: dict[str, _Pending] = {}
        self._local_ip_cache: dict[str, str] = {}
        self.on_stray_response: Callable[[Response], None] | None = None
        self.on_ack_timeout: Callable[[Request, Response], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the transports."""
        self._loop = asyncio.get_running_loop()
        self.transports = Transports(self.transport_config, self._on_bytes, self._on_framing_error)
        await self.transports.start()

    async def close(self) -> None:
        """Close sockets, cancel timers and fail pending requests."""
        if self._timer is not None:
            self._timer.cancel()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.cancel()
        self._pending.clear()
        if self.transports is not None:
            await self.transports.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (after start)."""
        assert self._loop is not None, "endpoint not started"
        return self._loop

    # -- input -----------------------------------------------------------------------------

    def _on_bytes(self, data: bytes, target: Target) -> None:
        reliable = target[0] != "udp"
        try:
            msg = parse_message(data, stream=reliable)
        except SipParseError as exc:
            self._reject_malformed(exc, target)
            return
        now = self.loop.time()
        if isinstance(msg, Response):
            self.observer.response(msg.status, "in")
            self.layer.receive_response(msg, now)
            self._pump()
            return
        self.observer.request(msg.method, "in")
        if msg.lossy:
            self.observer.malformed("lossy header text", target)
        _stamp_via(msg, target)
        request = self.layer.receive_request(msg, target, reliable, now)
        if request is not None:
            self._dispatch(request, target)
        self._pump()

    def _on_framing_error(self, exc: SipParseError, data: bytes, target: Target) -> None:
        self._reject_malformed(exc, target)

    def _reject_malformed(self, exc: SipParseError, target: Target) -> None:
        self.observer.malformed(exc.reason, target)
        log.debug("malformed SIP from %s:%s:%d: %s", *target, exc.reason)
        partial = exc.partial
        if isinstance(partial, Request) and partial.method != "ACK":
            _stamp_via(partial, target)
            resp = make_response(partial, exc.status, to_tag=new_tag())
            resp.headers.add("Warning", f'399 gbgw "{_warning_text(exc.reason)}"')
            self._send_direct(resp, target)

    def _dispatch(self, request: Request, target: Target) -> None:
        try:
            response = self.handler(request, target)
        except SipError as exc:
            response = make_response(request, exc.status, to_tag=new_tag(), headers=exc.headers)
            if exc.reason:
                response.headers.add("Warning", f'399 gbgw "{_warning_text(exc.reason)}"')
        except Exception:
            log.exception("request handler failed for %s %s", request.method, request.call_id)
            response = make_response(request, 500, to_tag=new_tag())
        if response is not None and request.method != "ACK":
            self.send_response(response)

    # -- output ----------------------------------------------------------------------------

    def send_response(self, response: Response) -> None:
        """Send a response through its server transaction (retransmitted as needed)."""
        self._finish_response(response)
        self.layer.send_response(response, self.loop.time())
        self._pump()

    def _finish_response(self, response: Response) -> None:
        if "Server" not in response.headers:
            response.headers.add("Server", self.user_agent)
        self.observer.response(response.status, "out")

    def _send_direct(self, message: Request | Response, target: Target) -> None:
        if isinstance(message, Response):
            self._finish_response(message)
        if self.transports is not None:
            self.transports.send(message.serialize(), target, connect=False)

    def send_stateless(self, message: Request | Response, target: Target) -> None:
        """Send without a transaction (ACK for a 2xx, CANCEL replies)."""
        if isinstance(message, Request):
            self.observer.request(message.method, "out")
        self._send_direct(message, target)

    def request(
        self,
        request: Request,
        target: Target,
        *,
        on_provisional: Callable[[Response], None] | None = None,
    ) -> asyncio.Future[Response]:
        """Send a request in a client transaction; the future gets the final response.

        A transaction timeout resolves to a synthesised 408; no exception is raised for SIP
        outcomes, so callers branch on ``status``.
        """
        fut: asyncio.Future[Response] = self.loop.create_future()
        reliable = target[0] != "udp"
        key = self.layer.send_request(request, target, reliable, self.loop.time())
        self._pending[key] = _Pending(fut, on_provisional)
        self.observer.request(request.method, "out")
        self._pump()
        return fut

    def build_request(
        self,
        method: str,
        uri: SipUri,
        target: Target,
        *,
        from_: NameAddr,
        to: NameAddr,
        call_id: str | None = None,
        cseq: int = 1,
        contact_user: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A new request with Via (our address for ``target``), tags, Call-ID and CSeq."""
        host, port = self.local_address(target)
        via = self.via_for(target)
        frm = from_ if from_.tag is not None else from_.with_tag(new_tag())
        h: list[tuple[str, str]] = [
            ("Via", via),
            ("From", str(frm)),
            ("To", str(to)),
            ("Call-ID", call_id or f"{secrets.token_hex(10)}@{host}"),
            ("CSeq", f"{cseq} {method}"),
            ("Max-Forwards", "70"),
        ]
        if contact_user is not None:
            h.append(("Contact", f"<sip:{contact_user}@{_hostport(host, port)}>"))
        h.append(("User-Agent", self.user_agent))
        h.extend(headers)
        if content_type is not None:
            h.append(("Content-Type", content_type))
        return Request(method, uri, h, body)

    def via_for(self, target: Target) -> str:
        """A top Via for a new request to ``target`` (fresh branch, rport asked)."""
        host, port = self.local_address(target)
        return f"SIP/2.0/{target[0].upper()} {_hostport(host, port)};rport;branch={new_branch()}"

    def local_address(self, target: Target) -> tuple[str, int]:
        """The address and port we advertise to ``target`` (Via, Contact, SDP)."""
        assert self.transports is not None
        bound = (
            (self.transports.udp_address if target[0] == "udp" else self.transports.tcp_address)
            or self.transports.udp_address
            or self.transports.tcp_address
        )
        assert bound is not None
        host = self.advertise or bound[0]
        if host in ("0.0.0.0", "::"):
            host = self._route_ip(target[1])
        return host, bound[1]

    def _route_ip(self, remote: str) -> str:
        ip = self._local_ip_cache.get(remote)
        if ip is None:
            family = socket.AF_INET6 if ":" in remote else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                try:
                    s.connect((remote, 9))
                    ip = s.getsockname()[0]
                except OSError:
                    ip = "127.0.0.1"
            if len(self._local_ip_cache) > 10_000:
                self._local_ip_cache.clear()
            self._local_ip_cache[remote] = ip
        return ip

    # -- the pump: send queued bytes, deliver events, re-arm the timer ---------------------

    def _pump(self) -> None:
        layer = self.layer
        transports = self.transports
        for message, dest in layer.datagrams_to_send():
            if transports is None:
                break
            target: Target = dest  # type: ignore[assignment]  # we only ever pass Targets
            transports.send(message.serialize(), target)
        while (event := layer.next_event()) is not None:
            match event:
                case ResponseReceived(key=key, response=response):
                    pending = self._pending.get(key)
                    if pending is None:
                        continue
                    if response.status < 200:
                        if pending.on_provisional is not None:
                            pending.on_provisional(response)
                        continue
                    del self._pending[key]
                    if not pending.future.done():
                        pending.future.set_result(response)
                case TransactionTimedOut(key=key, request=request):
                    pending = self._pending.pop(key, None)
                    if pending is not None and not pending.future.done():
                        pending.future.set_result(make_response(request, 408))
                case StrayResponse(response=response):
                    if self.on_stray_response is not None:
                        self.on_stray_response(response)
                case AckTimedOut(request=request, response=response):
                    if self.on_ack_timeout is not None:
                        self.on_ack_timeout(request, response)
                case _:
                    pass
        deadline = layer.next_deadline()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = deadline
            if deadline is not None:
                self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        due = self._timer_at or 0.0
        self._timer = None
        self._timer_at = None
        # uvloop rounds timers to milliseconds and may fire a hair early: never spin.
        self.layer.handle_timer(max(self.loop.time(), due))
        self._pump()


def _hostport(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _warning_text(reason: str) -> str:
    return "".join(c for c in reason[:120] if c.isprintable() and c not in '"\\')


def _stamp_via(request: Request, target: Target) -> None:
    """RFC 3261 §18.2.1 received= and RFC 3581 rport=: record where the request came from."""
    try:
        via = request.top_via
    except SipParseError:
        return
    updates: dict[str, str | None] = {}
    if via.host != target[1]:
        updates["received"] = target[1]
    if via.param("rport") is not None:
        updates["received"] = target[1]
        updates["rport"] = str(target[2])
    if not updates:
        return
    vias = request.headers.get_all("Via")
    request.headers.remove("Via")
    request.headers.insert(0, "Via", str(via.with_params(**updates)))
    for i, v in enumerate(vias[1:], start=1):
        request.headers.insert(i, "Via", v)
