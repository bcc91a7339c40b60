"""Streams an upstream platform asked for (PROTOCOL §6.2): INVITE in, RTP/PS out.

Theory of operation
-------------------
An upstream INVITE for a channel is answered asynchronously: ``streams.open`` (zones check,
audit, join or start the local stream: 403/404/504 map straight to the SIP answer), then a
sending socket per the upstream's SDP (UDP: a pool port, sending to ``c=``/``m=``; TCP with
the upstream ``passive``: we connect after the ACK; TCP with the upstream ``active``: we listen
on a pool port and accept one connection), then 200 with ``build_answer`` (a=sendonly, the
offer's y=, the opposite a=setup). After the ACK a sender task reads the hub's access units
from the cached keyframe, muxes them into GB PS, packetises them as RTP with the upstream's
SSRC and 90 kHz timestamps from each unit's PTS, and sends them (TCP: RFC 4571 framing, the
socket's write buffer bounded by ``TCP_HIGH_WATER``).

An upstream BYE ends that sender (the local stream closes later when idle). The local stream
ending (device BYE, media timeout) ends the sender, and we BYE the upstream. No ACK within
``ACK_TIMEOUT`` seconds releases everything and BYEs the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway import sdp as gbsdp
from gateway.config import UpstreamConfig
from gateway.streams import LiveStream
from gateway.zones import Consumer
from media.hub import Consumer as UnitConsumer
from media.hub import HubClosed
from media.ports import NoPortAvailable, PortPool
from media.ps import AccessUnit
from media.rtp import RtpPacketizer
from media.sinks import UnsupportedCodec, make_muxer
from sip.dialog import Dialog, DialogError
from sip.endpoint import new_tag
from sip.errors import BadRequest, BusyHere, SipError, SipParseError
from sip.message import Request, Response, make_response
from sip.transport import Target
from sip.uri import SipUri

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["UpstreamMedia"]

log = logging.getLogger("gbgw.cascade.media")

ACK_TIMEOUT = 60.0  # seconds from our 200 to the upstream's ACK (PROTOCOL §6.2, wvp)
CONNECT_TIMEOUT = 10.0  # seconds for a TCP media connection either way
MAX_PAYLOAD = 1400  # bytes of PS per RTP packet
TCP_HIGH_WATER = 1 << 20  # bytes queued on a TCP media socket before we wait for it
MAX_SESSIONS = 1000  # upstream sessions at once (503 beyond)


@dataclass(eq=False)
class _Session:
    upstream: str
    call_id: str
    channel_id: str
    stream: LiveStream
    dialog: Dialog
    target: Target  # where the upstream's SIP came from (BYE goes there)
    offer: gbsdp.SessionDescription
    mode: str  # udp | tcp-connect | tcp-accept
    port: int
    sock: socket.socket | None
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    closed: bool = False
    bytes_sent: int = 0
    ssrc: str = ""  # the y= we send with: the offer's, or one we allocated
    own_ssrc: bool = False  # allocated from streams.ssrcs: release at close


class UpstreamMedia:
    """Every stream sent to an upstream platform."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._sessions: dict[str, _Session] = {}  # by Call-ID
        self._tasks: set[asyncio.Task[None]] = set()

    def count(self, upstream: str) -> int:
        """Streams being sent to ``upstream``."""
        return sum(1 for s in self._sessions.values() if s.upstream == upstream)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _gauge(self, upstream: str) -> None:
        self.gw.metrics.upstream_streams.labels(upstream).set(self.count(upstream))

    # -- INVITE ------------------------------------------------------------------------------

    def on_invite(
        self, cfg: UpstreamConfig, consumer: Consumer, local_id: str, req: Request, source: Target
    ) -> Response | None:
        """Answer later (None now): open the stream, then 200 with our SDP."""
        if req.call_id in self._sessions:
            raise BadRequest("re-INVITE is not supported")
        if len(self._sessions) >= MAX_SESSIONS:
            raise BusyHere("too many upstream streams")
        try:
            offer = gbsdp.parse_sdp(req.body)
        except ValueError as exc:
            raise BadRequest(f"bad SDP offer: {exc}") from None
        channel_id = req.uri.user or ""
        self.gw.endpoint.send_response(make_response(req, 100))
        self._spawn(
            self._answer(cfg, consumer, local_id, req, source, offer, channel_id),
            name=f"upstream-invite-{channel_id}",
        )
        return None

    async def _answer(
        self,
        cfg: UpstreamConfig,
        consumer: Consumer,
        local_id: str,
        req: Request,
        source: Target,
        offer: gbsdp.SessionDescription,
        channel_id: str,
    ) -> None:
        gw = self.gw
        ep = gw.endpoint
        peer = f"{source[1]}:{source[2]}"
        try:
            stream = await gw.streams.open(channel_id, consumer, peer, action="upstream_stream")
        except SipError as exc:
            log.info(
                "upstream.invite_refused upstream=%s channel_id=%s status=%d reason=%s",
                cfg.name,
                channel_id,
                exc.status,
                type(exc).__name__,
            )
            ep.send_response(make_response(req, exc.status, to_tag=new_tag()))
            return
        except Exception:
            log.exception("upstream.invite_failed upstream=%s channel_id=%s", cfg.name, channel_id)
            ep.send_response(make_response(req, 500, to_tag=new_tag()))
            return
        # One consumer for the whole session keeps the local stream up while we negotiate.
        try:
            units = stream.hub.subscribe_units()
        except HubClosed:
            ep.send_response(make_response(req, 503, to_tag=new_tag()))
            return
        media = gw.config.media
        pool = gw.streams.pool
        host = media.listen
        sock: socket.socket | None = None
        try:
            if not offer.is_tcp:
                mode = "udp"
                port, sock = pool.allocate_udp(host)
            elif (offer.setup or "passive") == "active":
                mode = "tcp-accept"
                port, sock = pool.allocate_tcp_listener(host, backlog=1)
            else:
                mode = "tcp-connect"
                port = pool.allocate("tcp", host)
        except NoPortAvailable:
            units.close()
            ep.send_response(make_response(req, 486, to_tag=new_tag()))
            return
        media_ip = media.advertise or ep.local_address(source)[0]
        tag = new_tag()
        ssrc = offer.ssrc
        own_ssrc = False
        try:
            if ssrc is None:
                # an upper platform that sends no y= takes the one in our answer.
                ssrc = gw.streams.ssrcs.allocate()
                own_ssrc = True
            # PROTOCOL §6.2: the answer's o= is the channel (as wvp writes it), not our ID.
            answer = gbsdp.build_answer(offer, channel_id, media_ip, port, ssrc=ssrc)
            gbsdp.ssrc_int(ssrc)
            sip_host, sip_port = ep.local_address(source)
            dialog = Dialog.from_uas(req, tag, SipUri(sip_host, channel_id, sip_port))
        except (ValueError, DialogError, SipParseError, gbsdp.SsrcExhausted) as exc:
            log.warning("upstream.bad_offer upstream=%s reason=%s", cfg.name, exc)
            if own_ssrc and ssrc is not None:
                gw.streams.ssrcs.release(ssrc)
            units.close()
            _release(pool, port, sock)
            ep.send_response(make_response(req, 488, to_tag=tag))
            return
        session = _Session(
            upstream=cfg.name,
            call_id=req.call_id,
            channel_id=channel_id,
            stream=stream,
            dialog=dialog,
            target=source,
            offer=offer,
            mode=mode,
            port=port,
            sock=sock,
            ssrc=ssrc,
            own_ssrc=own_ssrc,
        )
        self._sessions[req.call_id] = session
        self._gauge(cfg.name)
        resp = make_response(
            req,
            200,
            to_tag=tag,
            headers=(
                ("Contact", f"<sip:{channel_id}@{sip_host}:{sip_port}>"),
                ("Content-Type", "APPLICATION/SDP"),
            ),
            body=answer.serialize(),
        )
        ep.send_response(resp)
        log.info(
            "upstream.stream_answered upstream=%s channel_id=%s stream_id=%s mode=%s ssrc=%s "
            "call_id=%s",
            cfg.name,
            channel_id,
            stream.stream_id,
            mode,
            ssrc,
            req.call_id,
        )
        session.task = self._spawn(self._run(session, units), name=f"upstream-send-{channel_id}")

    # -- in-dialog requests ------------------------------------------------------------------

    def on_ack(self, req: Request) -> None:
        """The upstream's ACK for our 200: sending may start."""
        s = self._sessions.get(req.call_id)
        if s is not None:
            s.acked.set()

    def on_bye(self, req: Request) -> Response | None:
        """An upstream BYE: stop that sender; None when the Call-ID is not ours."""
        s = self._sessions.get(req.call_id)
        if s is None:
            return None
        log.info(
            "upstream.bye upstream=%s channel_id=%s sent_bytes=%d",
            s.upstream,
            s.channel_id,
            s.bytes_sent,
        )
        self._close(s, "upstream_bye", bye=False)
        return make_response(req, 200)

    # -- the sender --------------------------------------------------------------------------

    async def _run(self, s: _Session, units: UnitConsumer[AccessUnit]) -> None:
        reason = "stream_ended"
        writer: asyncio.StreamWriter | None = None
        udp: asyncio.DatagramTransport | None = None
        loop = asyncio.get_running_loop()
        try:
            try:
                await asyncio.wait_for(s.acked.wait(), ACK_TIMEOUT)
            except TimeoutError:
                reason = "no_ack"
                return
            dest = (s.offer.connection_address or s.target[1], s.offer.port)
            if s.mode == "udp":
                assert s.sock is not None
                transport, _ = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, sock=s.sock
                )
                s.sock = None  # owned by the transport now
                udp = transport
            elif s.mode == "tcp-connect":
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        dest[0], dest[1], local_addr=(self.gw.config.media.listen, s.port)
                    ),
                    CONNECT_TIMEOUT,
                )
            else:
                assert s.sock is not None
                writer = await asyncio.wait_for(self._accept(s.sock), CONNECT_TIMEOUT)
            if writer is not None:
                writer.transport.set_write_buffer_limits(high=TCP_HIGH_WATER)
            reason = await self._pump(s, units, udp, writer, dest)
        except (OSError, TimeoutError) as exc:
            reason = f"media_{type(exc).__name__}"
        except UnsupportedCodec:
            reason = "unsupported_codec"
        finally:
            units.close()
            if udp is not None:
                udp.close()
            if writer is not None:
                writer.close()
            self._close(s, reason, bye=not s.closed)

    async def _accept(self, listener: socket.socket) -> asyncio.StreamWriter:
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(listener)
        conn.setblocking(False)
        _, writer = await asyncio.open_connection(sock=conn)
        return writer

    async def _pump(
        self,
        s: _Session,
        units: UnitConsumer[AccessUnit],
        udp: asyncio.DatagramTransport | None,
        writer: asyncio.StreamWriter | None,
        dest: tuple[str, int],
    ) -> str:
        info = s.stream.hub.info()
        muxer = make_muxer("ps", info.video_codec, info.audio_codec)
        packetizer = RtpPacketizer(gbsdp.ssrc_int(s.ssrc), payload_type=96, max_payload=MAX_PAYLOAD)
        counter = self.gw.metrics.upstream_bytes.labels(s.upstream)
        pending = muxer.header()
        async for unit in units:
            if s.closed:
                return "closed"
            data = muxer.mux(unit)
            if pending:
                data, pending = pending + data, b""
            if not data:
                continue
            ts = unit.pts if unit.pts is not None else (unit.dts or 0)
            if udp is not None:
                sent = 0
                for raw in packetizer.packetize_wire(data, ts):
                    udp.sendto(raw, dest)
                    sent += len(raw)
            else:
                assert writer is not None
                # One write per frame: RFC 4571 frames back to back (one syscall, not one per
                # packet; the relay's cost is per packet otherwise).
                raw = b"".join(packetizer.packetize_wire(data, ts, rfc4571=True))
                writer.write(raw)
                sent = len(raw)
            s.bytes_sent += sent
            counter.inc(sent)
            if writer is not None:
                if writer.is_closing():
                    return "upstream_disconnected"
                await writer.drain()  # bounded by TCP_HIGH_WATER; the hub skips if we lag
        return f"stream_{s.stream.close_reason or 'ended'}"

    # -- closing -----------------------------------------------------------------------------

    def _close(self, s: _Session, reason: str, *, bye: bool) -> None:
        first = not s.closed
        s.closed = True
        if self._sessions.get(s.call_id) is s:
            del self._sessions[s.call_id]
            _release(self.gw.streams.pool, s.port, s.sock)
            s.sock = None
            if s.own_ssrc:
                self.gw.streams.ssrcs.release(s.ssrc)
            self._gauge(s.upstream)
        if s.task is not None and not s.task.done() and s.task is not asyncio.current_task():
            s.task.cancel()
        if not first:
            return
        log.info(
            "upstream.stream_closed upstream=%s channel_id=%s reason=%s sent_bytes=%d",
            s.upstream,
            s.channel_id,
            reason,
            s.bytes_sent,
        )
        if bye:
            ep = self.gw.endpoint
            req = s.dialog.request("BYE", ep.via_for(s.target))
            fut = ep.request(req, s.target)
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def close_all(self) -> None:
        """Shutdown: BYE every upstream stream."""
        for s in list(self._sessions.values()):
            self._close(s, "shutdown", bye=True)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _release(pool: PortPool, port: int, sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
    with contextlib.suppress(ValueError):
        pool.release(port)
