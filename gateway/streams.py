"""Live streams: one INVITE and one receive path per channel, however many consumers.

Theory of operation
-------------------
``open(channel_id, consumer, peer)`` asks ``gateway.zones`` first, then joins the running
stream of the channel, or starts one: an SSRC (``0`` + 5 digits of the domain + a 4-digit
serial) and a receiver on a pool port (UDP, TCP passive: listening before the INVITE, or TCP
active: connecting after the answer), then an INVITE with the GB SDP offer to the device that
owns the channel. The 200 is ACKed in its dialog; media flows receiver -> ``StreamHub``, which
remuxes once per format and fans out with a GOP cache. Concurrent opens of one channel wait on
the same start, so they cost exactly one INVITE.

A stream ends for everyone on a device BYE, a media timeout, an API DELETE, or when it has had
no consumer for ``media.idle_close`` seconds (then we BYE). Failures map to clear errors:
403 zone, 404 unknown channel, 502 device refused, 504 no answer or no keyframe in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from gateway import sdp as gbsdp
from gateway.channels import Channel
from gateway.registrar import Device
from gateway.zones import Consumer
from media.events import FirstKeyframe, MediaEvent, MediaTimedOut, ReceiverClosed
from media.hub import StreamHub
from media.ports import NoPortAvailable, PortPool
from media.ps import AccessUnit
from media.receiver import RtpReceiver, TcpActiveReceiver, TcpPassiveReceiver, UdpReceiver
from media.sinks import make_muxer
from sip.dialog import Dialog, DialogError
from sip.errors import BusyHere, NotFound, ServerTimeout, SipError
from sip.message import Request, Response, make_response
from sip.uri import NameAddr, SipUri

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["LiveStream", "StreamError", "StreamManager"]

log = logging.getLogger("gbgw.streams")

START_TIMEOUT = 15.0  # seconds from INVITE to first keyframe before the open fails (504)
FORMATS = ("flv", "ts", "ps")


class StreamError(SipError):
    """The device refused or failed the stream (502)."""

    status = 502


@dataclass(eq=False)
class LiveStream:
    """One running (or starting) stream of one channel."""

    stream_id: str
    channel: Channel
    device: Device
    ssrc: str
    transport: str
    hub: StreamHub
    started_at: datetime
    invite_at: float
    receiver: RtpReceiver | None = None
    dialog: Dialog | None = None
    ready: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    closed: bool = False
    close_reason: str = ""
    idle_handle: asyncio.TimerHandle | None = None
    counted: dict[str, int] = field(default_factory=dict)

    def info(self) -> dict[str, object]:
        """The API view."""
        hi = self.hub.info()
        st = self.receiver.stats() if self.receiver is not None else None
        return {
            "stream_id": self.stream_id,
            "channel_id": self.channel.channel_id,
            "device_id": self.device.device_id,
            "ssrc": self.ssrc,
            "transport": self.transport,
            "codec": str(hi.video_codec) if hi.video_codec else None,
            "audio_codec": str(hi.audio_codec) if hi.audio_codec else None,
            "resolution": f"{hi.width}x{hi.height}" if hi.width and hi.height else None,
            "fps": round(hi.fps, 2) if hi.fps else None,
            "bitrate": int(hi.bitrate) if hi.bitrate else None,
            "consumers": hi.consumers,
            "packets": st["packets"] if st else 0,
            "lost": st["lost"] if st else 0,
            "started_at": self.started_at,
            "state": "closed" if self.closed else ("running" if self.ready.done() else "starting"),
        }


class _Sink:
    """Receiver -> hub and stream events."""

    def __init__(self, mgr: StreamManager, stream: LiveStream) -> None:
        self.mgr = mgr
        self.stream = stream

    def on_unit(self, unit: AccessUnit) -> None:
        self.stream.hub.push(unit)

    def on_event(self, event: MediaEvent) -> None:
        self.mgr._on_media_event(self.stream, event)


class StreamManager:
    """Owns every live stream of the gateway."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        media = gw.config.media
        self.pool = PortPool.parse(media.rtp_ports)
        self.ssrcs = gbsdp.SsrcAllocator(gw.config.gateway.domain)
        self.streams: dict[str, LiveStream] = {}  # by stream_id
        self._by_channel: dict[tuple[str, str], LiveStream] = {}
        self._by_call: dict[str, LiveStream] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.invites_sent = 0

    # -- opening -----------------------------------------------------------------------------

    async def open(
        self, channel_id: str, consumer: Consumer, peer: str, action: str = "stream"
    ) -> LiveStream:
        """A running stream of the channel for ``consumer`` (zones checked, audited)."""
        gw = self.gw
        channel = gw.channels.get(channel_id) or self.self_channel(channel_id)
        if channel is None:
            gw.zones.check_unknown(consumer, channel_id, action, peer)
            raise NotFound(f"channel {channel_id} not found")
        gw.zones.check(consumer, channel, action, peer)
        device = gw.registrar.devices.get(channel.device_id)
        if device is None or not device.online:
            raise NotFound(f"the device of channel {channel_id} is offline")
        gw.audit.record(consumer, action, channel_id, peer)
        key = (channel.device_id, channel.channel_id)
        stream = self._by_channel.get(key)
        if stream is None or stream.closed:
            stream = self._start(channel, device)
        try:
            await asyncio.wait_for(asyncio.shield(stream.ready), START_TIMEOUT)
        except TimeoutError:
            self.close(stream, "no_keyframe")
            raise ServerTimeout(f"no video from {channel_id} within {START_TIMEOUT:g}s") from None
        return stream

    def self_channel(self, device_id: str) -> Channel | None:
        """A camera that registers by itself is its own channel (PROTOCOL §4.1), even before
        (or without) a catalog that lists it."""
        device = self.gw.registrar.devices.get(device_id)
        if device is None or device_id[10:13] not in ("131", "132"):
            return None
        channel = Channel(device_id=device_id, channel_id=device_id, name=device.name)
        self.gw.zones.apply(channel)
        self.gw.channels.put(channel)
        return channel

    def _start(self, channel: Channel, device: Device) -> LiveStream:
        gw = self.gw
        loop = asyncio.get_running_loop()
        stream_id = f"s-{next(self._ids)}"
        try:
            ssrc = self.ssrcs.allocate()
        except ValueError:
            raise BusyHere("no SSRC left") from None
        holder: list[LiveStream] = []
        hub = StreamHub(
            loop.time,
            stream_id=stream_id,
            on_consumers=lambda n: self._consumers_changed(holder[0], n) if holder else None,
        )
        stream = LiveStream(
            stream_id=stream_id,
            channel=channel,
            device=device,
            ssrc=ssrc,
            transport=gw.config.media.transport,
            hub=hub,
            started_at=gw.clock(),
            invite_at=loop.time(),
        )
        holder.append(stream)
        for fmt in FORMATS:
            hub.register_format(fmt, self._muxer_factory(hub, fmt))
        self.streams[stream_id] = stream
        self._by_channel[(channel.device_id, channel.channel_id)] = stream
        gw.metrics.streams_active.set(len(self.streams))
        task = loop.create_task(self._run_start(stream), name=f"stream-start-{stream_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return stream

    @staticmethod
    def _muxer_factory(hub: StreamHub, fmt: str):  # type: ignore[no-untyped-def]
        def make():  # type: ignore[no-untyped-def]
            info = hub.info()
            return make_muxer(fmt, info.video_codec, info.audio_codec)

        return make

    async def _run_start(self, stream: LiveStream) -> None:
        try:
            await self._invite(stream)
        except Exception as exc:
            if not stream.ready.done():
                stream.ready.set_exception(
                    exc if isinstance(exc, SipError) else StreamError(str(exc))
                )
                stream.ready.exception()  # retrieved here: waiters re-raise their own copy
            self.close(stream, "start_failed")

    async def _invite(self, stream: LiveStream) -> None:
        gw = self.gw
        media = gw.config.media
        device = stream.device
        sink = _Sink(self, stream)
        common = dict(
            pool=self.pool,
            host=media.listen,
            expected_ssrc=gbsdp.ssrc_int(stream.ssrc),
            ssrc_tolerant=media.ssrc_tolerant,
            timeout=media.timeout,
            first_packet_timeout=media.timeout,
            stream_id=stream.stream_id,
        )
        receiver: RtpReceiver
        if stream.transport == "tcp-passive":
            receiver = TcpPassiveReceiver(sink, expected_host=None, **common)  # type: ignore[arg-type]
        elif stream.transport == "tcp-active":
            receiver = TcpActiveReceiver(sink, **common)  # type: ignore[arg-type]
        else:
            receiver = UdpReceiver(sink, **common)  # type: ignore[arg-type]
        try:
            await receiver.start()
        except NoPortAvailable:
            raise BusyHere("no RTP port free") from None
        stream.receiver = receiver
        ep = gw.endpoint
        cfg = gw.config.gateway
        target = device.target
        media_ip = media.advertise or ep.local_address(target)[0]
        offer = gbsdp.build_offer(
            origin_user=cfg.id,
            address=media_ip,
            port=receiver.port,
            ssrc=stream.ssrc,
            tcp_setup={"udp": None, "tcp-passive": "passive", "tcp-active": "active"}[
                stream.transport
            ],
        )
        channel_id = stream.channel.channel_id
        req = ep.build_request(
            "INVITE",
            SipUri(device.host, channel_id, device.port or None),
            target,
            from_=NameAddr(SipUri(cfg.domain, cfg.id)),
            to=NameAddr(SipUri(cfg.domain, channel_id)),
            contact_user=cfg.id,
            headers=(("Subject", f"{channel_id}:{stream.ssrc},{cfg.id}:0"),),
            body=offer.serialize(),
            content_type="APPLICATION/SDP",
        )
        self._by_call[req.call_id] = stream
        self.invites_sent += 1
        log.info(
            "stream.invite stream_id=%s channel_id=%s device_id=%s ssrc=%s transport=%s call_id=%s",
            stream.stream_id,
            channel_id,
            device.device_id,
            stream.ssrc,
            stream.transport,
            req.call_id,
        )
        resp = await ep.request(req, target)
        if resp.status == 408:
            raise ServerTimeout(f"device {device.device_id} did not answer the INVITE")
        if resp.status >= 300:
            raise StreamError(f"device answered {resp.status} {resp.reason}")
        try:
            stream.dialog = Dialog.from_uac(req, resp)
        except DialogError as exc:
            raise StreamError(f"bad 200 to INVITE: {exc}") from None
        self._send_ack(stream)
        if stream.closed:
            return
        if isinstance(receiver, TcpActiveReceiver):
            try:
                answer = gbsdp.parse_sdp(resp.body)
            except ValueError as exc:
                raise StreamError(f"bad SDP answer: {exc}") from None
            await receiver.connect(answer.connection_address or device.host, answer.port)

    def _send_ack(self, stream: LiveStream) -> None:
        if stream.dialog is None:
            return
        ep = self.gw.endpoint
        ack = stream.dialog.ack(ep.via_for(stream.device.target))
        ep.send_stateless(ack, stream.device.target)

    def on_stray_response(self, response: Response) -> None:
        """A retransmitted 2xx to an INVITE: ACK it again (RFC 3261 §13.2.2.4)."""
        with contextlib.suppress(Exception):
            stream = self._by_call.get(response.call_id)
            if (
                stream is not None
                and response.status // 100 == 2
                and response.cseq.method == "INVITE"
            ):
                self._send_ack(stream)

    # -- events --------------------------------------------------------------------------------

    def _on_media_event(self, stream: LiveStream, event: MediaEvent) -> None:
        match event:
            case FirstKeyframe(codec=codec, width=w, height=h):
                elapsed = asyncio.get_running_loop().time() - stream.invite_at
                self.gw.metrics.stream_start.observe(elapsed)
                if w and h:
                    stream.channel.resolution = f"{w}x{h}"
                log.info(
                    "stream.first_keyframe stream_id=%s channel_id=%s ssrc=%s codec=%s ms=%d",
                    stream.stream_id,
                    stream.channel.channel_id,
                    stream.ssrc,
                    codec,
                    elapsed * 1000,
                )
                if not stream.ready.done():
                    stream.ready.set_result(None)
            case MediaTimedOut(seconds=s):
                log.warning("stream.media_timeout stream_id=%s seconds=%s", stream.stream_id, s)
                self.close(stream, "media_timeout")
            case ReceiverClosed(reason=reason):
                if not stream.closed:
                    self.close(stream, str(reason))
            case _:
                pass

    def _consumers_changed(self, stream: LiveStream, count: int) -> None:
        self.gw.metrics.stream_consumers.set(sum(s.hub.consumers for s in self.streams.values()))
        if stream.idle_handle is not None:
            stream.idle_handle.cancel()
            stream.idle_handle = None
        if count == 0 and not stream.closed:
            loop = asyncio.get_running_loop()
            stream.idle_handle = loop.call_later(
                self.gw.config.media.idle_close, self.close, stream, "idle"
            )

    def hold_until_idle(self, stream: LiveStream) -> None:
        """Start the idle timer of a stream nobody subscribed to (e.g. after a snapshot)."""
        if stream.hub.consumers == 0:
            self._consumers_changed(stream, 0)

    def on_bye(self, req: Request) -> Response:
        """A BYE from the device: end the stream for every consumer."""
        stream = self._by_call.get(req.call_id)
        if stream is None:
            return make_response(req, 481, to_tag="gbgw")
        log.info(
            "stream.device_bye stream_id=%s channel_id=%s",
            stream.stream_id,
            stream.channel.channel_id,
        )
        stream.dialog = None  # the device ended the dialog: no BYE back
        self.close(stream, "device_bye")
        return make_response(req, 200)

    # -- closing -----------------------------------------------------------------------------

    def close(self, stream: LiveStream, reason: str) -> None:
        """End a stream for all consumers; BYE the device if our dialog is up."""
        if stream.closed:
            return
        stream.closed = True
        stream.close_reason = reason
        if stream.idle_handle is not None:
            stream.idle_handle.cancel()
        log.info(
            "stream.closed stream_id=%s channel_id=%s reason=%s",
            stream.stream_id,
            stream.channel.channel_id,
            reason,
        )
        if not stream.ready.done():
            stream.ready.set_exception(ServerTimeout(f"stream ended: {reason}"))
            stream.ready.exception()
        self._account(stream)
        if stream.receiver is not None:
            stream.receiver.close()
        stream.hub.close(reason)
        if stream.dialog is not None:
            self._bye(stream)
        self.streams.pop(stream.stream_id, None)
        key = (stream.channel.device_id, stream.channel.channel_id)
        if self._by_channel.get(key) is stream:
            del self._by_channel[key]
        for call_id, s in list(self._by_call.items()):
            if s is stream:
                del self._by_call[call_id]
        self.ssrcs.release(stream.ssrc)
        self.gw.metrics.streams_active.set(len(self.streams))

    def _bye(self, stream: LiveStream) -> None:
        dialog = stream.dialog
        stream.dialog = None
        if dialog is None:
            return
        ep = self.gw.endpoint
        bye = dialog.request("BYE", ep.via_for(stream.device.target))
        fut = ep.request(bye, stream.device.target)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _account(self, stream: LiveStream) -> None:
        """Move receiver counters into the Prometheus totals (deltas since last time)."""
        if stream.receiver is None:
            return
        st = stream.receiver.stats()
        m = self.gw.metrics
        for name, metric in (
            ("packets", m.rtp_packets.labels("in")),
            ("bytes", m.rtp_bytes.labels("in")),
        ):
            value = int(st[name])  # type: ignore[literal-required]
            metric.inc(max(0, value - stream.counted.get(name, 0)))
            stream.counted[name] = value
        lost = int(st["lost"])
        m.rtp_lost.inc(max(0, lost - stream.counted.get("lost", 0)))
        stream.counted["lost"] = lost
        for kind, value in st["faults"].items():
            prev = stream.counted.get("f:" + kind, 0)
            if value > prev:
                m.media_faults.labels(kind).inc(value - prev)
                stream.counted["f:" + kind] = value

    def collect(self) -> None:
        """Refresh counters of running streams (called once a second)."""
        for stream in list(self.streams.values()):
            self._account(stream)

    async def close_all(self) -> None:
        """Shutdown: BYE every stream and wait for the receivers to let go of their ports."""
        streams = list(self.streams.values())
        for s in streams:
            self.close(s, "shutdown")
        for s in streams:
            if s.receiver is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(s.receiver.wait_closed(), 2.0)
        for t in list(self._tasks):
            t.cancel()
