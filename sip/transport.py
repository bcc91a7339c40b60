"""asyncio SIP transports: UDP and TCP (RFC 3261 §18), the only socket owners in ``sip/``.

A transport hands complete message bytes to a sink with the peer's ``Target``
(``("udp"|"tcp", host, port)``: the packet source, which is what NAT traversal needs, RFC 3581)
and sends bytes to a Target. TCP connections are indexed by peer address and reused for
requests back to that peer (a NATed device that registered over TCP can only be reached on its
own connection); idle connections are closed; every buffer is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from sip.errors import SipParseError
from sip.message import MAX_MESSAGE, StreamFramer

__all__ = ["Target", "TransportConfig", "Transports"]

Target = tuple[str, str, int]
"""(transport, host, port): where a message came from or goes to."""

log = logging.getLogger("gbgw.sip.transport")

EPHEMERAL_BIND_ATTEMPTS = 20
"""Port 0 with UDP and TCP: tries to find a number free for both."""

MessageSink = Callable[[bytes, Target], None]
ErrorSink = Callable[[SipParseError, bytes, Target], None]


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Listening and limits; ports may be 0 (ephemeral)."""

    listen: str = "0.0.0.0"
    port: int = 5060
    transports: tuple[str, ...] = ("udp", "tcp")
    max_message: int = MAX_MESSAGE
    tcp_idle_timeout: float = 600.0  # seconds without traffic before a TCP connection closes
    tcp_max_connections: int = 20_000
    tcp_write_limit: int = 1 << 20  # bytes queued to one peer before it is cut off
    udp_rcvbuf: int = 4 << 20  # bytes; SO_RCVBUF asked for the UDP socket


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: Transports) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so no isinstance check here
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip(b"\r\n"):
            return  # keep-alive CRLF
        self.owner._deliver(data, ("udp", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)


class _Conn(asyncio.Protocol):
    """One TCP connection: frames bytes into messages by Content-Length."""

    def __init__(self, owner: Transports) -> None:
        self.owner = owner
        self.peer: tuple[str, int] = ("", 0)
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer(owner.config.max_message)
        self.last_activity = owner.loop.time()
        self.closed: asyncio.Future[None] = owner.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        if len(self.owner._conns) >= self.owner.config.tcp_max_connections:
            log.warning("tcp connection limit reached; refusing %s:%d", *self.peer)
            self.transport.abort()
            return
        old = self.owner._conns.get(self.peer)
        if old is not None and old is not self and old.transport is not None:
            old.transport.abort()
        self.owner._conns[self.peer] = self

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.owner.loop.time()
        target: Target = ("tcp", self.peer[0], self.peer[1])
        self.framer.feed(data)
        while True:
            try:
                msg = self.framer.next_message()
            except SipParseError as exc:
                # The stream cannot be resynchronised: answer if possible, then close.
                self.owner._error(exc, bytes(data[:8192]), target)
                if self.transport is not None:
                    self.transport.close()
                return
            if msg is None:
                return
            self.owner._deliver(msg, target)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.owner._conns.get(self.peer) is self:
            del self.owner._conns[self.peer]
        if not self.closed.done():
            self.closed.set_result(None)
        for cb in self.owner.on_connection_lost:
            cb(("tcp", self.peer[0], self.peer[1]))

    def send(self, data: bytes) -> bool:
        t = self.transport
        if t is None or t.is_closing():
            return False
        if t.get_write_buffer_size() > self.owner.config.tcp_write_limit:
            log.warning("tcp peer %s:%d not reading; connection cut", *self.peer)
            t.abort()
            return False
        t.write(data)
        self.last_activity = self.owner.loop.time()
        return True


class Transports:
    """Owns the UDP socket and the TCP listener and connections of one SIP endpoint."""

    def __init__(
        self,
        config: TransportConfig,
        on_message: MessageSink,
        on_error: ErrorSink,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.config = config
        self._on_message = on_message
        self._on_error = on_error
        self.loop = loop or asyncio.get_running_loop()
        self._udp: _Udp | None = None
        self._server: asyncio.Server | None = None
        self._conns: dict[tuple[str, int], _Conn] = {}
        self._connecting: dict[tuple[str, int], asyncio.Task[_Conn | None]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.on_connection_lost: list[Callable[[Target], None]] = []
        self.udp_address: tuple[str, int] | None = None
        self.tcp_address: tuple[str, int] | None = None

    async def start(self) -> None:
        """Bind the configured transports (UDP and TCP share the port number when it is 0:
        the kernel picks the UDP port, and a TCP socket that already holds that number makes
        us pick again, a bounded number of times)."""
        cfg = self.config
        both = "udp" in cfg.transports and "tcp" in cfg.transports
        for attempt in range(EPHEMERAL_BIND_ATTEMPTS if cfg.port == 0 and both else 1):
            port = await self._start_udp(cfg.port) if "udp" in cfg.transports else cfg.port
            if "tcp" in cfg.transports:
                try:
                    self._server = await self.loop.create_server(
                        lambda: _Conn(self), cfg.listen, port, reuse_address=True, backlog=1024
                    )
                except OSError:
                    if cfg.port != 0 or not both or attempt == EPHEMERAL_BIND_ATTEMPTS - 1:
                        raise
                    self._stop_udp()  # that number is taken for TCP: try another pair
                    continue
                self.tcp_address = self._server.sockets[0].getsockname()[:2]
            break
        self._arm_sweeper()

    async def _start_udp(self, port: int) -> int:
        cfg = self.config
        sock = socket.socket(
            socket.AF_INET6 if ":" in cfg.listen else socket.AF_INET, socket.SOCK_DGRAM
        )
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, cfg.udp_rcvbuf)
        try:
            sock.bind((cfg.listen, port))
        except OSError:
            sock.close()
            raise
        _, proto = await self.loop.create_datagram_endpoint(lambda: _Udp(self), sock=sock)
        self._udp = proto
        self.udp_address = sock.getsockname()[:2]
        return self.udp_address[1]

    def _stop_udp(self) -> None:
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        self._udp = None
        self.udp_address = None

    def _arm_sweeper(self) -> None:
        period = max(0.5, self.config.tcp_idle_timeout / 4)
        self._sweeper = self.loop.call_later(period, self._sweep)

    def _sweep(self) -> None:
        cutoff = self.loop.time() - self.config.tcp_idle_timeout
        for conn in list(self._conns.values()):
            if conn.last_activity < cutoff and conn.transport is not None:
                log.info("tcp idle close %s:%d", *conn.peer)
                conn.transport.close()
        self._arm_sweeper()

    def _deliver(self, data: bytes, target: Target) -> None:
        try:
            self._on_message(data, target)
        except Exception:  # the shell must survive a handler bug; the traceback is logged
            log.exception("sip message handler failed for %s:%s:%d", *target)

    def _error(self, exc: SipParseError, data: bytes, target: Target) -> None:
        try:
            self._on_error(exc, data, target)
        except Exception:
            log.exception("sip error handler failed")

    @property
    def tcp_connections(self) -> int:
        """Open TCP connections."""
        return len(self._conns)

    def has_connection(self, target: Target) -> bool:
        """Whether a TCP connection to ``target`` is open."""
        return (target[1], target[2]) in self._conns

    def send(self, data: bytes, target: Target, *, connect: bool = True) -> bool:
        """Send bytes; on TCP reuse the peer's connection, or dial when ``connect`` is set.

        Returns False when the bytes could not be handed to the OS now (no UDP socket, no TCP
        connection and dialling not allowed); a dial in progress queues the bytes.
        """
        proto, host, port = target
        if proto == "udp":
            if self._udp is None or self._udp.transport is None:
                return False
            self._udp.transport.sendto(data, (host, port))
            return True
        conn = self._conns.get((host, port))
        if conn is not None:
            return conn.send(data)
        if not connect:
            return False
        task = self._connecting.get((host, port))
        if task is None:
            task = self.loop.create_task(self._dial(host, port))
            self._connecting[(host, port)] = task
        task.add_done_callback(lambda t: self._after_dial(t, data))
        return True

    async def _dial(self, host: str, port: int) -> _Conn | None:
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Conn(self), host, port), timeout=5.0
            )
            return conn
        except (OSError, TimeoutError) as exc:
            log.warning("tcp connect to %s:%d failed: %s", host, port, exc)
            return None
        finally:
            self._connecting.pop((host, port), None)

    @staticmethod
    def _after_dial(task: asyncio.Task[_Conn | None], data: bytes) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        conn = task.result()
        if conn is not None:
            conn.send(data)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._connecting.values()):
            task.cancel()
        if self._server is not None:
            self._server.close()
        waits = []
        for conn in list(self._conns.values()):
            if conn.transport is not None:
                conn.transport.close()
            waits.append(conn.closed)
        if waits:
            await asyncio.wait(waits, timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
