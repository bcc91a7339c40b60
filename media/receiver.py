"""asyncio RTP/PS receivers: UDP, TCP passive (we listen) and TCP active (we connect).

Rules:
1. These are thin shells. They own a socket, a pool port and two ``loop.call_at`` timers; the
   work is done by the sans-I/O cores: ``RtpPacket.parse``, ``Rfc4571Decoder`` (TCP),
   ``RtpReceiverState`` (SSRC check, reordering) and ``PsDemuxer``.
2. The owner hears everything through its ``ReceiverSink``: ``on_unit(unit)`` per access unit,
   ``on_event(event)`` for the ``media.events`` (first packet, first keyframe, SSRC mismatch,
   timeout). ``ReceiverClosed`` is always the last event, sent once.
3. A bad packet is counted and dropped; it never ends a receiver. Only the owner
   (``close()``), the media timeout, an MPEG-TS payload, a failed TCP connect or the device
   closing an active connection do.
4. Nothing per packet above a counter: no log line, no timer re-arm, no allocation beyond the
   parsed packet and what the demuxer builds.

Theory of operation: every accepted packet goes ``state.push(packet, now)``; the in-order
packets that come out are fed to the demuxer (after ``notify_loss()`` when
``last_discontinuity`` says a gap or restart preceded them) and the access units that come out
go to the sink. The media timeout is one handle at ``last packet + timeout``: packets only
store their arrival time; when the handle fires it either times out or re-arms at the new due
time, so a healthy stream costs one timer callback per ``timeout`` seconds. The reorder timer is
armed only when a gap holds packets back and none is armed yet (deadlines of later packets are
later, so the armed one is always the earliest).

UDP latches the first source that sends a valid RTP packet (with the expected SSRC when the
receiver is strict) and counts everything else as ``foreign_source``. TCP passive listens on
its pool port from ``start()`` (before the INVITE goes out) until closed: one connection at a
time from the expected host carries media, others are closed and counted; when the device
drops it, a new one may take over (late or repeated connects, wvp#1515) until the media timeout.
TCP active connects after the SDP answer, from the pool port when it can, retrying with backoff
within ``connect_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from typing import Protocol, TypedDict, Unpack, cast

from media.codec_info import Codec, video_size
from media.events import (
    CloseReason,
    FirstKeyframe,
    FirstPacket,
    MediaEvent,
    MediaTimedOut,
    ReceiverClosed,
    SsrcMismatch,
)
from media.ports import PortPool
from media.ps import AccessUnit, PsDemuxer
from media.rtp import Rfc4571Decoder, RtpPacket, RtpParseError, RtpReceiverState

__all__ = [
    "DEFAULT_RCVBUF",
    "DEFAULT_TIMEOUT",
    "ReceiverSink",
    "ReceiverStats",
    "RtpReceiver",
    "TcpActiveReceiver",
    "TcpPassiveReceiver",
    "UdpReceiver",
]

log = logging.getLogger("gbgw.media.receiver")

DEFAULT_TIMEOUT = 15.0
"""Seconds without a packet before a stream is declared dead (also before the first one)."""
DEFAULT_RCVBUF = 2 << 20
"""SO_RCVBUF asked for UDP sockets, bytes: a 300 KB keyframe arrives as one burst."""
DEFAULT_CONNECT_TIMEOUT = 5.0
"""TCP active: seconds spent retrying the connection to the device."""
MAX_SSRC_EVENTS = 8
"""``SsrcMismatch`` events per receiver; later mismatches are only counted."""
_LOG_INTERVAL = 60.0  # seconds between two warnings of one kind (STYLE: once per minute)
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0
_parse = RtpPacket.parse


class ReceiverSink(Protocol):
    """The owner of a receiver (the gateway's stream)."""

    def on_unit(self, unit: AccessUnit) -> None:
        """One demuxed access unit, in stream order."""

    def on_event(self, event: MediaEvent) -> None:
        """One of ``media.events``; ``ReceiverClosed`` comes last."""


class ReceiverStats(TypedDict):
    """Counters of one receiver (packets and bytes of RTP, header included)."""

    packets: int
    bytes: int
    lost: int
    reordered: int
    duplicate: int
    late: int
    ssrc_mismatch: int
    foreign_source: int
    """UDP datagrams from another source than the latched one."""
    rejected_connections: int
    """TCP connections closed: wrong host, or another one already carries the media."""
    reconnects: int
    """TCP passive: connections accepted after the first one ended."""
    connect_attempts: int
    video_units: int
    audio_units: int
    faults: dict[str, int]
    """Demuxer faults by kind, plus ``rtp_malformed``, ``rtp_framing`` (TCP resyncs),
    ``ssrc_mismatch`` and ``foreign_source`` (as above): what ``gbgw_media_faults_total``
    exports, so every fault a hostile peer can cause is visible outside the process."""


class ReceiverArgs(TypedDict, total=False):
    """The keyword arguments every receiver takes (see ``RtpReceiver``)."""

    pool: PortPool | None
    host: str
    expected_ssrc: int | None
    ssrc_tolerant: bool
    timeout: float
    first_packet_timeout: float
    reorder_window: int
    reorder_wait: float
    stream_id: str


class RtpReceiver:
    """Base of the three receivers: the per-packet path, timers, events, close."""

    transport_name = ""

    def __init__(
        self,
        sink: ReceiverSink,
        *,
        pool: PortPool | None = None,
        host: str = "0.0.0.0",
        expected_ssrc: int | None = None,
        ssrc_tolerant: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        first_packet_timeout: float = DEFAULT_TIMEOUT,
        reorder_window: int = 64,
        reorder_wait: float = 0.1,
        stream_id: str = "",
    ) -> None:
        """``host`` is the local address to bind; timeouts in seconds; ``reorder_wait`` is
        how long a gap is waited for (seconds), ``reorder_window`` how many packets."""
        if timeout <= 0 or first_packet_timeout <= 0:
            raise ValueError("media timeouts must be > 0 seconds")
        self._sink = sink
        self._pool = pool
        self.host = host
        self.expected_ssrc = expected_ssrc
        self.timeout = timeout
        self.first_packet_timeout = first_packet_timeout
        self.stream_id = stream_id
        self.port = 0
        """Local port (UDP, TCP listener; TCP active: the reserved port), set by ``start``."""
        self.closed = False
        self.close_reason: CloseReason | None = None
        self._state = RtpReceiverState(
            expected_ssrc, ssrc_tolerant=ssrc_tolerant, window=reorder_window, max_wait=reorder_wait
        )
        self._demux = PsDemuxer()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._source: tuple[str, int] | None = None
        self._port_held = False
        self._open = 0  # transports whose connection_lost has not come yet
        self._finished: asyncio.Future[None] | None = None
        self._last = 0.0
        self._got_first = False
        self._got_key = False
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._timeout_at = 0.0
        self._reorder_handle: asyncio.TimerHandle | None = None
        self._reorder_at = 0.0
        self._packets = 0
        self._bytes = 0
        self._malformed = 0
        self._foreign = 0
        self._rejected = 0
        self._reconnects = 0
        self._attempts = 0
        self._framing = 0
        self._ssrc_events = 0
        self._ssrc_last_got: int | None = None
        self._warned: dict[str, float] = {}

    # -- public

    @property
    def source(self) -> tuple[str, int] | None:
        """The (host, port) media is accepted from, once known."""
        return self._source

    @property
    def codecs(self) -> tuple[Codec | None, Codec | None]:
        """(video, audio) codecs of the latest PSM (video: or sniffed); for muxer factories,
        which need the audio codec before the first audio unit arrives."""
        return self._demux.video_codec, self._demux.audio_codec

    async def start(self) -> None:
        """Bind (and listen) on a pool port; ``port`` is valid afterwards."""
        raise NotImplementedError

    def close(self, reason: CloseReason = CloseReason.CLOSED) -> None:
        """Stop receiving, close sockets, give the port back; idempotent."""
        self._close(reason, None)

    async def wait_closed(self) -> None:
        """Wait until the sockets are closed and the port is back in the pool."""
        if not self.closed:
            raise RuntimeError("wait_closed() before close()")
        if self._finished is not None:
            await asyncio.shield(self._finished)

    def stats(self) -> ReceiverStats:
        """A snapshot of the counters (for ``gbgw_rtp_*`` and ``gbgw_media_faults_total``)."""
        rtp = self._state.stats
        demux = self._demux.stats
        faults = demux.faults()
        faults["rtp_malformed"] = self._malformed
        faults["rtp_framing"] = self._framing + self._live_framing()
        faults["ssrc_mismatch"] = rtp.ssrc_mismatch
        faults["foreign_source"] = self._foreign
        return {
            "packets": self._packets,
            "bytes": self._bytes,
            "lost": rtp.lost,
            "reordered": rtp.reordered,
            "duplicate": rtp.duplicate,
            "late": rtp.late,
            "ssrc_mismatch": rtp.ssrc_mismatch,
            "foreign_source": self._foreign,
            "rejected_connections": self._rejected,
            "reconnects": self._reconnects,
            "connect_attempts": self._attempts,
            "video_units": demux.video_units,
            "audio_units": demux.audio_units,
            "faults": faults,
        }

    # -- the per-packet path

    def _packet(self, packet: RtpPacket, size: int, now: float) -> None:
        """One parsed packet from the accepted source, ``size`` bytes, arrived at ``now``."""
        state = self._state
        rtp = state.stats
        mismatches = rtp.ssrc_mismatch
        expected = state.ssrc
        state.push(packet, now)
        if rtp.ssrc_mismatch != mismatches:
            self._ssrc_mismatch(expected, packet.ssrc)
            if not state.ssrc_tolerant:
                return
        self._last = now
        self._packets += 1
        self._bytes += size
        if not self._got_first:
            self._first_packet(now)
        demux = self._demux
        out = state.pop()
        while out is not None:
            if state.last_discontinuity:
                demux.notify_loss()
            demux.feed(out.payload, out.timestamp, out.marker)
            out = state.pop()
        self._drain()
        if self._reorder_handle is None and not self.closed:
            deadline = state.next_deadline()
            if deadline is not None:
                self._reorder_at = deadline
                self._reorder_handle = self._loop_().call_at(deadline, self._on_reorder)

    def _drain(self) -> None:
        demux = self._demux
        sink = self._sink
        unit = demux.next_unit()
        while unit is not None:
            if not self._got_key:
                if demux.stats.mpeg_ts:
                    self._warn("mpeg_ts", "rtp.mpeg_ts payload is MPEG-TS, not PS; stream rejected")
                    self._close(CloseReason.MPEG_TS, None)
                    return
                if unit.kind == "video" and unit.keyframe:
                    self._got_key = True
                    size = video_size(unit.codec, unit.data)
                    w, h = size if size is not None else (None, None)
                    self._emit(FirstKeyframe(unit.codec, w, h))
                    if self.closed:
                        return
            try:
                sink.on_unit(unit)
            except Exception:
                log.exception("rtp.sink_error stream_id=%s", self.stream_id)
            if self.closed:
                return
            unit = demux.next_unit()
        if not self._got_key and demux.stats.mpeg_ts:
            self._warn("mpeg_ts", "rtp.mpeg_ts payload is MPEG-TS, not PS; stream rejected")
            self._close(CloseReason.MPEG_TS, None)

    def _first_packet(self, now: float) -> None:
        self._got_first = True
        source = self._source or ("", 0)
        log.info(
            "rtp.first_packet stream_id=%s transport=%s peer=%s:%d ssrc=%s",
            self.stream_id,
            self.transport_name,
            *source,
            self._state.ssrc,
        )
        self._arm_timeout(now + self.timeout)
        self._emit(FirstPacket(source))

    def _ssrc_mismatch(self, expected: int | None, got: int) -> None:
        if expected is None or got == self._ssrc_last_got or self._ssrc_events >= MAX_SSRC_EVENTS:
            return
        self._ssrc_events += 1
        self._ssrc_last_got = got
        log.warning(
            "rtp.ssrc_mismatch stream_id=%s expected=%d got=%d tolerant=%s",
            self.stream_id,
            expected,
            got,
            self._state.ssrc_tolerant,
        )
        self._emit(SsrcMismatch(expected, got))

    # -- timers

    def _loop_(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _arm_timeout(self, at: float) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self._timeout_at = at
        self._timeout_handle = self._loop_().call_at(at, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timeout_handle = None
        if self.closed:
            return
        # call_at may fire up to one clock resolution early: never judge before the due time.
        now = max(self._loop_().time(), self._timeout_at)
        if not self._got_first:
            self._close(
                CloseReason.MEDIA_TIMEOUT,
                MediaTimedOut(self.first_packet_timeout, before_first_packet=True),
            )
            return
        due = self._last + self.timeout
        if now >= due:
            self._close(CloseReason.MEDIA_TIMEOUT, MediaTimedOut(self.timeout))
        else:
            self._arm_timeout(due)

    def _on_reorder(self) -> None:
        self._reorder_handle = None
        if self.closed:
            return
        state = self._state
        state.handle_timer(max(self._loop_().time(), self._reorder_at))
        demux = self._demux
        out = state.pop()
        while out is not None:
            if state.last_discontinuity:
                demux.notify_loss()
            demux.feed(out.payload, out.timestamp, out.marker)
            out = state.pop()
        self._drain()
        deadline = state.next_deadline()
        if deadline is not None and not self.closed:
            self._reorder_at = deadline
            self._reorder_handle = self._loop_().call_at(deadline, self._on_reorder)

    # -- closing

    def _close(self, reason: CloseReason, event: MediaEvent | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for handle in (self._timeout_handle, self._reorder_handle):
            if handle is not None:
                handle.cancel()
        self._timeout_handle = self._reorder_handle = None
        if self._loop is not None and self._finished is None:
            self._finished = self._loop.create_future()
        self._shutdown()
        level = logging.INFO if reason is CloseReason.CLOSED else logging.WARNING
        log.log(
            level,
            "rtp.closed stream_id=%s transport=%s port=%d reason=%s packets=%d lost=%d",
            self.stream_id,
            self.transport_name,
            self.port,
            reason,
            self._packets,
            self._state.stats.lost,
        )
        if event is not None:
            self._emit(event)
        self._emit(ReceiverClosed(reason))
        self._maybe_finished()

    def _shutdown(self) -> None:
        """Close the sockets (their ``connection_lost`` follows)."""

    def _transport_lost(self) -> None:
        self._open -= 1
        self._maybe_finished()

    def _maybe_finished(self) -> None:
        if not self.closed or self._open > 0:
            return
        if self._port_held and self._pool is not None:
            self._port_held = False
            self._pool.release(self.port)
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    # -- helpers

    def _emit(self, event: MediaEvent) -> None:
        try:
            self._sink.on_event(event)
        except Exception:
            log.exception("rtp.sink_error stream_id=%s event=%s", self.stream_id, event)

    def _warn(self, kind: str, message: str, *args: object) -> None:
        """A WARNING line at most once per minute per kind (a misbehaving peer)."""
        now = self._loop_().time()
        last = self._warned.get(kind)
        if last is not None and now - last < _LOG_INTERVAL:
            return
        self._warned[kind] = now
        log.warning(message + " stream_id=%s", *args, self.stream_id)

    def _live_framing(self) -> int:
        return 0

    def _new_socket(self, kind: int) -> socket.socket:
        return socket.socket(_family(self.host), kind)


# ---------------------------------------------------------------- UDP


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, rx: UdpReceiver) -> None:
        self.rx = rx
        self.time = rx._loop_().time
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so no isinstance check here
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        rx = self.rx
        if addr != rx._source:
            rx._unlatched(data, addr)
            return
        try:
            packet = _parse(data)
        except RtpParseError:
            rx._malformed += 1
            return
        rx._packet(packet, len(data), self.time())

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for a socket we never send on; nothing to do.
        log.debug("rtp.udp_error stream_id=%s error=%s", self.rx.stream_id, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.rx._transport_lost()


class UdpReceiver(RtpReceiver):
    """RTP over UDP on a pool port; latches the first valid source."""

    transport_name = "udp"

    def __init__(
        self, sink: ReceiverSink, *, rcvbuf: int = DEFAULT_RCVBUF, **kwargs: Unpack[ReceiverArgs]
    ) -> None:
        """``rcvbuf``: SO_RCVBUF in bytes (failure to set it is ignored); the rest as for
        ``RtpReceiver``."""
        super().__init__(sink, **kwargs)
        self.rcvbuf = rcvbuf
        self._protocol: _UdpProtocol | None = None

    async def start(self) -> None:
        """Bind the UDP socket; media is accepted from then on."""
        if self._loop is not None or self.closed:
            raise RuntimeError("receiver already started or closed")
        loop = self._loop_()
        if self._pool is not None:
            self.port, sock = self._pool.allocate_udp(self.host)
            self._port_held = True
        else:
            sock = self._new_socket(socket.SOCK_DGRAM)
            try:
                sock.bind((self.host, 0))
            except OSError:
                sock.close()
                raise
            self.port = sock.getsockname()[1]
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        proto = _UdpProtocol(self)
        self._open += 1  # the socket, until its connection_lost
        try:
            await loop.create_datagram_endpoint(lambda: proto, sock=sock)
        except BaseException:
            sock.close()
            self._open -= 1
            self._close(CloseReason.ERROR, None)
            self._maybe_finished()
            raise
        self._protocol = proto
        if self.closed:  # closed while the endpoint was being made
            self._shutdown()
            return
        self._arm_timeout(loop.time() + self.first_packet_timeout)

    def _unlatched(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram from a source other than the latched one (or before any latch)."""
        if self._source is not None or self.closed:
            self._foreign += 1
            self._warn("foreign", "rtp.foreign_source peer=%s:%d port=%d", *addr, self.port)
            return
        try:
            packet = _parse(data)
        except RtpParseError:
            self._malformed += 1
            return
        state = self._state
        if not state.ssrc_tolerant and state.ssrc is not None and packet.ssrc != state.ssrc:
            # Strict and the wrong SSRC: counted by the state, not latched, so the right
            # camera (or a tolerant retry) can still take the port.
            self._packet(packet, len(data), self._loop_().time())
            return
        self._source = addr
        self._packet(packet, len(data), self._loop_().time())

    def _shutdown(self) -> None:
        proto = self._protocol
        if proto is not None and proto.transport is not None:
            proto.transport.close()


# ---------------------------------------------------------------- TCP (RFC 4571)


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, rx: _TcpReceiver) -> None:
        self.rx = rx
        self.time = rx._loop_().time
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.decoder: Rfc4571Decoder | None = None  # set when this connection carries media

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1]))
        self.rx._connection_made(self)

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        if decoder is None:
            return
        rx = self.rx
        now = self.time()
        for frame in decoder.feed(data):
            try:
                packet = _parse(frame)
            except RtpParseError:
                rx._malformed += 1
                continue
            rx._packet(packet, len(frame), now)
            if rx.closed:
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.rx._connection_lost(self, exc)


class _TcpReceiver(RtpReceiver):
    """What both TCP modes share: one media connection at a time, framing counters."""

    def __init__(self, sink: ReceiverSink, **kwargs: Unpack[ReceiverArgs]) -> None:
        super().__init__(sink, **kwargs)
        self._conn: _TcpProtocol | None = None
        self._conns: set[_TcpProtocol] = set()

    def _take(self, conn: _TcpProtocol) -> None:
        """Make ``conn`` the media connection."""
        if self._source is not None:
            self._reconnects += 1
            self._demux.notify_loss()  # the old connection may have ended mid-frame
        conn.decoder = Rfc4571Decoder(self._state.ssrc)
        self._conn = conn
        self._source = conn.peer

    def _connection_made(self, conn: _TcpProtocol) -> None:
        self._open += 1
        self._conns.add(conn)

    def _connection_lost(self, conn: _TcpProtocol, exc: Exception | None) -> None:
        self._conns.discard(conn)
        if conn.decoder is not None:
            self._framing += conn.decoder.stats.resyncs
        if conn is self._conn:
            self._conn = None
            if not self.closed:
                self._media_connection_ended(conn, exc)
        self._transport_lost()

    def _media_connection_ended(self, conn: _TcpProtocol, exc: Exception | None) -> None:
        """The device closed (or reset) the media connection."""

    def _live_framing(self) -> int:
        conn = self._conn
        return conn.decoder.stats.resyncs if conn is not None and conn.decoder else 0

    def _shutdown(self) -> None:
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.abort()


class TcpPassiveReceiver(_TcpReceiver):
    """RTP over TCP, gbgw listening (SDP ``a=setup:passive``); opened before the INVITE."""

    transport_name = "tcp-passive"

    def __init__(
        self,
        sink: ReceiverSink,
        *,
        expected_host: str | None = None,
        backlog: int = 4,
        **kwargs: Unpack[ReceiverArgs],
    ) -> None:
        """``expected_host``: the only peer address accepted (None: any, behind NAT)."""
        super().__init__(sink, **kwargs)
        self.expected_host = expected_host
        self.backlog = backlog
        self._expected_ip = _ip_or_none(expected_host)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen on the port; connections are accepted from then on."""
        if self._loop is not None or self.closed:
            raise RuntimeError("receiver already started or closed")
        loop = self._loop_()
        if self._pool is not None:
            self.port, sock = self._pool.allocate_tcp_listener(self.host, self.backlog)
            self._port_held = True
        else:
            sock = self._new_socket(socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.host, 0))
                sock.listen(self.backlog)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            self.port = sock.getsockname()[1]
        self._open += 1  # the listener, until _shutdown closes it
        try:
            self._server = await loop.create_server(lambda: _TcpProtocol(self), sock=sock)
        except BaseException:
            sock.close()
            self._open -= 1
            self._close(CloseReason.ERROR, None)
            self._maybe_finished()
            raise
        if self.closed:  # closed while the server was being made
            self._shutdown()
            self._maybe_finished()
            return
        self._arm_timeout(loop.time() + self.first_packet_timeout)

    def _connection_made(self, conn: _TcpProtocol) -> None:
        super()._connection_made(conn)
        transport = conn.transport
        assert transport is not None
        if self.closed:
            transport.abort()
            return
        if self._conn is not None or not self._host_ok(conn.peer[0]):
            self._rejected += 1
            self._warn(
                "rejected",
                "rtp.connection_rejected peer=%s:%d port=%d busy=%s",
                *conn.peer,
                self.port,
                self._conn is not None,
            )
            transport.abort()
            return
        self._take(conn)

    def _host_ok(self, host: str) -> bool:
        if self.expected_host is None:
            return True
        expected = self._expected_ip
        if expected is None:
            return host == self.expected_host
        return _ip_or_none(host) == expected

    def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # closes the listening socket now
            self._open -= 1
        super()._shutdown()


class TcpActiveReceiver(_TcpReceiver):
    """RTP over TCP, gbgw connecting (SDP ``a=setup:active``) after the SDP answer."""

    transport_name = "tcp-active"

    def __init__(
        self,
        sink: ReceiverSink,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        **kwargs: Unpack[ReceiverArgs],
    ) -> None:
        """``connect_timeout``: seconds of retries (with backoff) before giving up."""
        super().__init__(sink, **kwargs)
        if connect_timeout <= 0:
            raise ValueError("connect_timeout must be > 0 seconds")
        self.connect_timeout = connect_timeout
        self._task: asyncio.Task[None] | None = None
        self._bind_local = False

    async def start(self) -> None:
        """Reserve the pool port put in the SDP offer (the connection is made from it)."""
        if self._loop is not None or self.closed:
            raise RuntimeError("receiver already started or closed")
        self._loop_()
        if self._pool is not None:
            self.port = self._pool.allocate("tcp", self.host)
            self._port_held = self._bind_local = True

    async def connect(self, host: str, port: int) -> None:
        """Connect to the device's SDP address, retrying; raise ``ConnectionError`` (and close
        with ``connect_failed``) when ``connect_timeout`` runs out or the receiver closes."""
        if self._loop is None:
            raise RuntimeError("connect() before start()")
        if self.closed:
            raise ConnectionError("receiver is closed")
        if self._task is not None:
            raise RuntimeError("connect() called twice")
        loop = self._loop_()
        self._arm_timeout(loop.time() + self.first_packet_timeout)
        task = self._task = loop.create_task(self._connect(host, port))
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and self.closed and not (current and current.cancelling()):
                raise ConnectionError("receiver closed while connecting") from None
            raise

    async def _connect(self, host: str, port: int) -> None:
        loop = self._loop_()
        try:
            family = socket.AF_INET6 if _ip(host).version == 6 else socket.AF_INET
            address: tuple[str, int] = (host, port)
        except ValueError:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            if not infos:
                raise ConnectionError(f"{host} does not resolve") from None
            family, address = infos[0][0], cast(tuple[str, int], infos[0][4][:2])
        deadline = loop.time() + self.connect_timeout
        delay = _BACKOFF_FIRST
        while True:
            self._attempts += 1
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                self._bind(sock, family)
                remaining = deadline - loop.time()
                await asyncio.wait_for(loop.sock_connect(sock, address), max(remaining, 0.01))
                break
            except (OSError, TimeoutError) as exc:
                sock.close()
                if getattr(exc, "errno", None) in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    self._bind_local = False  # the pool port is busy towards this peer
                if loop.time() + delay >= deadline:
                    log.warning(
                        "rtp.connect_failed stream_id=%s peer=%s:%d attempts=%d error=%s",
                        self.stream_id,
                        host,
                        port,
                        self._attempts,
                        exc,
                    )
                    self._close(CloseReason.CONNECT_FAILED, None)
                    raise ConnectionError(f"cannot connect to {host}:{port}: {exc}") from exc
                await asyncio.sleep(delay)  # retry backoff, not synchronisation
                delay = min(delay * 2, _BACKOFF_MAX)
            except BaseException:
                sock.close()
                raise
        try:
            await loop.create_connection(lambda: _TcpProtocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise

    def _bind(self, sock: socket.socket, family: int) -> None:
        if not self._bind_local or family != _family(self.host):
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            self._bind_local = False

    def _connection_made(self, conn: _TcpProtocol) -> None:
        super()._connection_made(conn)
        if self.closed:
            assert conn.transport is not None
            conn.transport.abort()
            return
        self._take(conn)

    def _media_connection_ended(self, conn: _TcpProtocol, exc: Exception | None) -> None:
        self._close(CloseReason.PEER_CLOSED, None)

    def _shutdown(self) -> None:
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        super()._shutdown()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _ip_or_none(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if host is None:
        return None
    try:
        return _ip(host)
    except ValueError:
        return None  # a name: compared as a string


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address, IPv4-mapped IPv6 unwrapped; raises ValueError for a name."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
