"""media.receiver over real loopback sockets: UDP, TCP passive and TCP active.

Every wait is for something the receiver reports (an event, a unit count) under an
``asyncio.wait_for`` deadline. Timeouts are short where a timeout firing is the behaviour
under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import pytest

from media.codec_info import Codec
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
from media.receiver import (
    RtpReceiver,
    TcpActiveReceiver,
    TcpPassiveReceiver,
    UdpReceiver,
)
from tests.unit.media.rtpsend import (
    H264,
    H264_G711A,
    H265,
    SSRC,
    Camera,
    Listener,
    mpeg_ts_wire,
    rtp_header,
    send_tcp,
    send_udp,
    write_rfc4571,
)

DEADLINE = 10.0  # seconds; generous for a loaded CI box, never reached when things work
E = TypeVar("E", bound=MediaEvent)


class Sink:
    """Collects units and events; lets a test await a unit count or an event type."""

    def __init__(self) -> None:
        self.units: list[AccessUnit] = []
        self.events: list[MediaEvent] = []
        self._unit_waits: list[tuple[int, asyncio.Future[None]]] = []
        self._event_waits: list[tuple[type[MediaEvent], asyncio.Future[MediaEvent]]] = []

    @property
    def video(self) -> list[AccessUnit]:
        return [u for u in self.units if u.kind == "video"]

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def on_unit(self, unit: AccessUnit) -> None:
        self.units.append(unit)
        for want, fut in self._unit_waits:
            if len(self.video) >= want and not fut.done():
                fut.set_result(None)

    def on_event(self, event: MediaEvent) -> None:
        self.events.append(event)
        for kind, fut in self._event_waits:
            if isinstance(event, kind) and not fut.done():
                fut.set_result(event)

    async def video_units(self, count: int) -> list[AccessUnit]:
        if len(self.video) < count:
            fut = asyncio.get_running_loop().create_future()
            self._unit_waits.append((count, fut))
            await asyncio.wait_for(fut, DEADLINE)
        return self.video

    async def event(self, kind: type[E]) -> E:
        for e in self.events:
            if isinstance(e, kind):
                return e
        fut: asyncio.Future[MediaEvent] = asyncio.get_running_loop().create_future()
        self._event_waits.append((kind, fut))
        got = await asyncio.wait_for(fut, DEADLINE)
        assert isinstance(got, kind)
        return got


def reference_units(data: bytes) -> list[AccessUnit]:
    """What a demuxer makes of ``data`` fed in RTP-sized pieces, without flush."""
    demux = PsDemuxer()
    units: list[AccessUnit] = []
    for pos in range(0, len(data), 1400):
        demux.feed(data[pos : pos + 1400])
        units.extend(demux.pop_units())
    return units


async def closed_by_peer(reader: asyncio.StreamReader) -> None:
    """Wait until the receiver has closed this connection (EOF or reset)."""
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), DEADLINE) == b""


def assert_clean_close(sink: Sink, reason: CloseReason) -> None:
    closed = sink.of(ReceiverClosed)
    assert closed == [ReceiverClosed(reason)]
    assert sink.events[-1] == closed[0]


@pytest.fixture
def pool() -> PortPool:
    return PortPool(21000, 21199)


@pytest.fixture
async def receivers() -> AsyncIterator[list[RtpReceiver]]:
    made: list[RtpReceiver] = []
    yield made
    for rx in made:
        rx.close()
        await asyncio.wait_for(rx.wait_closed(), DEADLINE)


@pytest.fixture
async def writers() -> AsyncIterator[list[asyncio.StreamWriter]]:
    """Device-side TCP streams, closed (and awaited) after the test."""
    made: list[asyncio.StreamWriter] = []
    yield made
    for writer in made:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# ---------------------------------------------------------------- the samples, three ways

SAMPLES = [(H264, Codec.H264), (H265, Codec.H265)]


@pytest.mark.parametrize(("name", "codec"), SAMPLES)
async def test_udp_receives_every_frame(
    name: str, codec: Codec, pool: PortPool, receivers: list[RtpReceiver]
) -> None:
    sink = Sink()
    rx = UdpReceiver(sink, pool=pool, host="127.0.0.1", expected_ssrc=SSRC)
    receivers.append(rx)
    await rx.start()
    assert rx.port in pool
    wire = Camera(name).packets()
    await send_udp(wire, rx.port)
    video = await sink.video_units(250)
    assert len(video) == 250
    assert sum(u.keyframe for u in video) == 10
    assert {u.codec for u in video} == {codec}
    assert await sink.event(FirstKeyframe) == FirstKeyframe(codec, 640, 360)
    first = sink.of(FirstPacket)
    assert len(first) == 1 and first[0].source == rx.source
    assert sink.events.index(first[0]) < sink.events.index(sink.of(FirstKeyframe)[0])
    stats = rx.stats()
    assert stats["packets"] == len(wire)
    assert stats["bytes"] == sum(map(len, wire))
    assert stats["lost"] == stats["foreign_source"] == stats["ssrc_mismatch"] == 0
    assert not any(stats["faults"].values())


@pytest.mark.parametrize(("name", "codec"), SAMPLES)
async def test_tcp_passive_receives_every_frame(
    name: str,
    codec: Codec,
    pool: PortPool,
    receivers: list[RtpReceiver],
    writers: list[asyncio.StreamWriter],
) -> None:
    sink = Sink()
    rx = TcpPassiveReceiver(sink, pool=pool, host="127.0.0.1", expected_host="127.0.0.1")
    receivers.append(rx)
    await rx.start()  # listening before the INVITE would go out
    wire = Camera(name).packets()
    writers.append((await send_tcp(wire, rx.port, close=False))[1])
    video = await sink.video_units(250)
    assert len(video) == 250 and sum(u.keyframe for u in video) == 10
    assert await sink.event(FirstKeyframe) == FirstKeyframe(codec, 640, 360)
    assert rx.stats()["packets"] == len(wire)
    assert rx.stats()["bytes"] == sum(map(len, wire))  # RTP bytes, without the 2-byte prefix


@pytest.mark.parametrize(("name", "codec"), SAMPLES)
async def test_tcp_active_receives_every_frame(
    name: str, codec: Codec, pool: PortPool, receivers: list[RtpReceiver]
) -> None:
    sink = Sink()
    device = await Listener(Camera(name).packets()).start()
    rx = TcpActiveReceiver(sink, pool=pool, host="127.0.0.1")
    receivers.append(rx)
    await rx.start()
    assert rx.port in pool  # the port the SDP offer names
    await asyncio.wait_for(rx.connect("127.0.0.1", device.port), DEADLINE)
    video = await sink.video_units(250)
    assert len(video) == 250 and sum(u.keyframe for u in video) == 10
    assert await sink.event(FirstKeyframe) == FirstKeyframe(codec, 640, 360)
    # The device hangs up after the file: the stream ends for everyone.
    await sink.event(ReceiverClosed)
    assert_clean_close(sink, CloseReason.PEER_CLOSED)
    await asyncio.wait_for(rx.wait_closed(), DEADLINE)
    assert rx.port not in pool
    await device.close()


async def test_audio_and_video_sample(receivers: list[RtpReceiver]) -> None:
    sink = Sink()
    rx = UdpReceiver(sink, host="127.0.0.1")
    receivers.append(rx)
    await rx.start()
    await send_udp(Camera(H264_G711A).packets(), rx.port)
    await sink.video_units(250)
    audio = [u for u in sink.units if u.kind == "audio"]
    assert len(audio) == 250 and {u.codec for u in audio} == {Codec.PCMA}
    assert rx.codecs == (Codec.H264, Codec.PCMA)
    assert rx.stats()["audio_units"] == 250


# ---------------------------------------------------------------- sources and SSRC


async def test_udp_latches_first_source_and_counts_foreign(
    pool: PortPool, receivers: list[RtpReceiver]
) -> None:
    sink = Sink()
    rx = UdpReceiver(sink, pool=pool, host="127.0.0.1")
    receivers.append(rx)
    await rx.start()
    wire = Camera(H264).packets()
    camera = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    camera.bind(("127.0.0.1", 0))
    await send_udp(wire[:5], rx.port, sock=camera)
    first = await sink.event(FirstPacket)
    assert first.source == camera.getsockname() == rx.source
    # Someone else sends the same stream from another port: counted, ignored.
    await send_udp(Camera(H264, seed=7).packets()[:40], rx.port)
    await send_udp(wire[5:], rx.port, sock=camera)
    camera.close()
    video = await sink.video_units(250)
    assert len(video) == 250
    stats = rx.stats()
    assert stats["foreign_source"] == stats["faults"]["foreign_source"] == 40
    assert stats["packets"] == len(wire)


async def test_udp_malformed_packets_are_counted(receivers: list[RtpReceiver]) -> None:
    sink = Sink()
    rx = UdpReceiver(sink, host="127.0.0.1")
    receivers.append(rx)
    await rx.start()
    wire = Camera(H264).packets()
    camera = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await send_udp(wire[:1], rx.port, sock=camera)
    await sink.event(FirstPacket)
    bad = [b"\x00" * 20, b"\x80\x60", rtp_header(1, 2)[:11]]
    for junk in bad:
        camera.sendto(junk, ("127.0.0.1", rx.port))
    await send_udp(wire[1:], rx.port, sock=camera)
    camera.close()
    await sink.video_units(250)
    assert rx.stats()["faults"]["rtp_malformed"] == len(bad)


async def test_strict_receiver_drops_another_ssrc(receivers: list[RtpReceiver]) -> None:
    sink = Sink()
    rx = UdpReceiver(
        sink, host="127.0.0.1", expected_ssrc=SSRC, first_packet_timeout=0.3, timeout=0.3
    )
    receivers.append(rx)
    await rx.start()
    wire = Camera(H264, ssrc=SSRC + 1).packets()
    await send_udp(wire, rx.port)
    assert await sink.event(SsrcMismatch) == SsrcMismatch(SSRC, SSRC + 1)
    timed_out = await sink.event(MediaTimedOut)
    assert timed_out == MediaTimedOut(0.3, before_first_packet=True)
    assert sink.units == [] and rx.source is None  # the wrong stream did not take the port
    assert rx.stats()["ssrc_mismatch"] == rx.stats()["faults"]["ssrc_mismatch"] == len(wire)
    assert len(sink.of(SsrcMismatch)) == 1  # reported once, counted always
    assert_clean_close(sink, CloseReason.MEDIA_TIMEOUT)


async def test_tolerant_receiver_follows_the_device(receivers: list[RtpReceiver]) -> None:
    sink = Sink()
    rx = UdpReceiver(sink, host="127.0.0.1", expected_ssrc=SSRC, ssrc_tolerant=True)
    receivers.append(rx)
    await rx.start()
    await send_udp(Camera(H264, ssrc=0x12345678).packets(), rx.port)
    assert len(await sink.video_units(250)) == 250
    assert sink.of(SsrcMismatch) == [SsrcMismatch(SSRC, 0x12345678)]
    assert rx.stats()["ssrc_mismatch"] == 1  # the switch, counted once (a known quirk)
    assert rx.stats()["faults"]["ssrc_mismatch"] == 1


async def test_tcp_passive_accepts_only_the_expected_host(
    pool: PortPool, receivers: list[RtpReceiver], writers: list[asyncio.StreamWriter]
) -> None:
    sink = Sink()
    rx = TcpPassiveReceiver(sink, pool=pool, host="127.0.0.1", expected_host="127.0.0.2")
    receivers.append(rx)
    await rx.start()
    wire = Camera(H264).packets()
    # 127.0.0.1 is not the device: the connection is closed unread.
    reader, writer = await asyncio.open_connection("127.0.0.1", rx.port)
    writers.append(writer)
    await closed_by_peer(reader)
    assert rx.stats()["rejected_connections"] == 1
    writers.append((await send_tcp(wire, rx.port, local_host="127.0.0.2", close=False))[1])
    assert len(await sink.video_units(250)) == 250
    assert rx.source is not None and rx.source[0] == "127.0.0.2"


async def test_tcp_passive_first_connection_wins(
    pool: PortPool, receivers: list[RtpReceiver], writers: list[asyncio.StreamWriter]
) -> None:
    sink = Sink()
    rx = TcpPassiveReceiver(sink, pool=pool, host="127.0.0.1")
    receivers.append(rx)
    await rx.start()
    wire = Camera(H264).packets()
    _, first = await send_tcp(wire[:10], rx.port, close=False)
    writers.append(first)
    await sink.event(FirstPacket)
    reader, second = await asyncio.open_connection("127.0.0.1", rx.port)
    writers.append(second)
    await closed_by_peer(reader)
    await write_rfc4571(first, wire[10:])
    assert len(await sink.video_units(250)) == 250
    assert rx.stats()["rejected_connections"] == 1


async def test_tcp_passive_takes_a_reconnect(
    receivers: list[RtpReceiver], writers: list[asyncio.StreamWriter]
) -> None:
    sink = Sink()
    rx = TcpPassiveReceiver(sink, host="127.0.0.1")
    receivers.append(rx)
    await rx.start()
    wire = Camera(H264).packets()
    half = len(wire) // 2
    reader, writer = await send_tcp(wire[:half], rx.port, close=False)
    writers.append(writer)
    writer.write_eof()  # the device drops the connection ...
    await closed_by_peer(reader)  # (gbgw has seen it go)
    writers.append((await send_tcp(wire[half:], rx.port, close=False))[1])  # ... and is back
    video = await sink.video_units(248)
    assert 248 <= len(video) <= 250  # the frame cut by the drop may be lost
    assert rx.stats()["reconnects"] == 1
    assert not rx.closed


async def test_tcp_framing_junk_and_ps_junk_are_survived(
    receivers: list[RtpReceiver], writers: list[asyncio.StreamWriter]
) -> None:
    sink = Sink()
    rx = TcpPassiveReceiver(sink, host="127.0.0.1", expected_ssrc=SSRC)
    receivers.append(rx)
    await rx.start()
    wire = Camera(H264, ps_junk_every=10).packets()
    writers.append((await send_tcp(wire, rx.port, junk_every=25, close=False))[1])
    assert len(await sink.video_units(250)) == 250
    faults = rx.stats()["faults"]
    assert faults["rtp_framing"] == len(wire) // 25
    assert faults["garbage"] == 25


async def test_truncated_stream_gives_the_complete_frames(
    receivers: list[RtpReceiver],
) -> None:
    sink = Sink()
    device = await Listener(Camera(H264, truncate=0.6).packets()).start()
    rx = TcpActiveReceiver(sink, host="127.0.0.1")
    receivers.append(rx)
    await rx.start()
    await rx.connect("127.0.0.1", device.port)
    await sink.event(ReceiverClosed)
    data = b"".join(frame for frame, _ in Camera(H264, truncate=0.6).frames())
    expected = reference_units(data)
    assert [u.pts for u in sink.units] == [u.pts for u in expected]
    assert len(sink.units) > 100
    await device.close()


async def test_mpeg_ts_payload_is_rejected(receivers: list[RtpReceiver]) -> None:
    sink = Sink()
    rx = UdpReceiver(sink, host="127.0.0.1")
    receivers.append(rx)
    await rx.start()
    await send_udp(mpeg_ts_wire(), rx.port)
    await sink.event(ReceiverClosed)
    assert_clean_close(sink, CloseReason.MPEG_TS)
    assert rx.stats()["faults"]["mpeg_ts"] == 1


# ---------------------------------------------------------------- loss and reordering


async def test_udp_loss_keeps_the_stream_going(receivers: list[RtpReceiver]) -> None:
    sink = Sink()
    rx = UdpReceiver(sink, host="127.0.0.1", timeout=0.5)
    receivers.append(rx)
    await rx.start()
    camera = Camera(H264, loss=0.05, seed=3)
    wire = camera.packets()
    await send_udp(wire, rx.port)
    await sink.event(MediaTimedOut)  # the end of the stream; held packets were released
    video = sink.video
    stats = rx.stats()
    assert 0 < stats["lost"] <= len(Camera(H264).packets()) - len(wire)
    assert stats["faults"]["loss"] > 0
    assert sum(u.keyframe for u in video) >= 5
    assert len(video) > 150
    # No frame is delivered damaged: each one equals the sample's frame of that PTS.
    clean = {u.pts: u.data for u in reference_units(b"".join(f for f, _ in camera.frames()))}
    assert all(clean[u.pts] == u.data for u in video)


async def test_udp_reordering_is_repaired(receivers: list[RtpReceiver]) -> None:
    sink = Sink()
    rx = UdpReceiver(sink, host="127.0.0.1")
    receivers.append(rx)
    await rx.start()
    wire = Camera(H264, reorder=4, seed=5).packets()
    await send_udp(wire, rx.port)
    assert len(await sink.video_units(250)) == 250
    stats = rx.stats()
    assert stats["reordered"] > 0 and stats["lost"] == 0


# ---------------------------------------------------------------- timeouts and lifecycle


async def test_media_timeout_after_the_last_packet(receivers: list[RtpReceiver]) -> None:
    sink = Sink()
    rx = UdpReceiver(sink, host="127.0.0.1", timeout=0.3, first_packet_timeout=5.0)
    receivers.append(rx)
    await rx.start()
    loop = asyncio.get_running_loop()
    await send_udp(Camera(H264).packets()[:50], rx.port)
    sent_at = loop.time()
    assert await sink.event(MediaTimedOut) == MediaTimedOut(0.3)
    elapsed = loop.time() - sent_at
    assert 0.25 <= elapsed < 2.0
    assert_clean_close(sink, CloseReason.MEDIA_TIMEOUT)
    assert rx.close_reason is CloseReason.MEDIA_TIMEOUT


async def test_first_packet_timeout(pool: PortPool, receivers: list[RtpReceiver]) -> None:
    sink = Sink()
    rx = TcpPassiveReceiver(sink, pool=pool, host="127.0.0.1", first_packet_timeout=0.2)
    receivers.append(rx)
    await rx.start()
    assert await sink.event(MediaTimedOut) == MediaTimedOut(0.2, before_first_packet=True)
    assert_clean_close(sink, CloseReason.MEDIA_TIMEOUT)
    await asyncio.wait_for(rx.wait_closed(), DEADLINE)
    assert pool.in_use == 0


async def test_tcp_active_retries_until_the_device_listens(
    receivers: list[RtpReceiver],
) -> None:
    sink = Sink()
    device_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    device_sock.bind(("127.0.0.1", 0))  # bound, not listening yet: connections are refused
    device = Listener(Camera(H264).packets())
    loop = asyncio.get_running_loop()
    listening = loop.create_future()

    def listen() -> None:
        listening.set_result(loop.create_task(device.start(device_sock)))

    loop.call_later(0.3, listen)
    rx = TcpActiveReceiver(sink, host="127.0.0.1", connect_timeout=5.0)
    receivers.append(rx)
    await rx.start()
    await asyncio.wait_for(rx.connect("127.0.0.1", device_sock.getsockname()[1]), DEADLINE)
    assert rx.stats()["connect_attempts"] > 1
    assert len(await sink.video_units(250)) == 250
    await (await listening)
    await device.close()


async def test_tcp_active_gives_up(pool: PortPool, receivers: list[RtpReceiver]) -> None:
    sink = Sink()
    refusing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    refusing.bind(("127.0.0.1", 0))
    rx = TcpActiveReceiver(sink, pool=pool, host="127.0.0.1", connect_timeout=0.3)
    receivers.append(rx)
    await rx.start()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(rx.connect(*refusing.getsockname()), DEADLINE)
    refusing.close()
    assert_clean_close(sink, CloseReason.CONNECT_FAILED)
    assert rx.stats()["connect_attempts"] >= 2
    await asyncio.wait_for(rx.wait_closed(), DEADLINE)
    assert pool.in_use == 0


async def test_close_while_connecting(receivers: list[RtpReceiver]) -> None:
    sink = Sink()
    refusing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    refusing.bind(("127.0.0.1", 0))
    rx = TcpActiveReceiver(sink, host="127.0.0.1", connect_timeout=30.0)
    receivers.append(rx)
    await rx.start()
    connecting = asyncio.ensure_future(rx.connect(*refusing.getsockname()))
    asyncio.get_running_loop().call_soon(rx.close)
    with pytest.raises(ConnectionError, match="closed while connecting"):
        await asyncio.wait_for(connecting, DEADLINE)
    refusing.close()
    assert_clean_close(sink, CloseReason.CLOSED)


async def test_close_is_idempotent_and_last(pool: PortPool) -> None:
    sink = Sink()
    rx = UdpReceiver(sink, pool=pool, host="127.0.0.1")
    await rx.start()
    rx.close()
    rx.close(CloseReason.MEDIA_TIMEOUT)
    await asyncio.wait_for(rx.wait_closed(), DEADLINE)
    await rx.wait_closed()
    assert_clean_close(sink, CloseReason.CLOSED)
    assert pool.in_use == 0


@pytest.mark.parametrize("kind", ["udp", "tcp-passive"])
async def test_close_during_start(kind: str, pool: PortPool) -> None:
    sink = Sink()
    rx = KINDS[kind](sink, pool)
    before = _fds()
    asyncio.get_running_loop().call_soon(rx.close)  # runs while start() awaits the loop
    await rx.start()
    assert rx.closed
    await asyncio.wait_for(rx.wait_closed(), DEADLINE)
    assert_clean_close(sink, CloseReason.CLOSED)
    assert pool.in_use == 0 and _fds() == before


class _Closer(Sink):
    """An owner that closes the receiver from inside its first keyframe callback."""

    rx: RtpReceiver

    def on_event(self, event: MediaEvent) -> None:
        super().on_event(event)
        if isinstance(event, FirstKeyframe):
            self.rx.close()


async def test_owner_may_close_from_a_callback() -> None:
    sink = _Closer()
    rx = sink.rx = UdpReceiver(sink, host="127.0.0.1")
    await rx.start()
    await send_udp(Camera(H264).packets(), rx.port)
    await sink.event(ReceiverClosed)
    assert_clean_close(sink, CloseReason.CLOSED)
    assert len(sink.units) == 0  # closed before the keyframe was handed over
    await asyncio.wait_for(rx.wait_closed(), DEADLINE)


# ---------------------------------------------------------------- no leaks


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


Factory = Callable[[Sink, PortPool], RtpReceiver]
KINDS: dict[str, Factory] = {
    "udp": lambda sink, pool: UdpReceiver(sink, pool=pool, host="127.0.0.1"),
    "tcp-passive": lambda sink, pool: TcpPassiveReceiver(sink, pool=pool, host="127.0.0.1"),
    "tcp-active": lambda sink, pool: TcpActiveReceiver(sink, pool=pool, host="127.0.0.1"),
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_open_close_cycles_leak_nothing(kind: str) -> None:
    pool = PortPool(21200, 21219)  # smaller than the cycle count: ports must come back
    make = KINDS[kind]
    warm = make(Sink(), pool)
    await warm.start()
    warm.close()
    await warm.wait_closed()
    before = _fds()
    for _ in range(200):
        rx = make(Sink(), pool)
        await rx.start()
        rx.close()
        await asyncio.wait_for(rx.wait_closed(), DEADLINE)
    assert pool.in_use == 0
    assert _fds() == before


async def test_cycles_with_traffic_leak_nothing() -> None:
    pool = PortPool(21220, 21229)
    wire = Camera(H264).packets()[:20]

    async def cycle(i: int) -> None:
        sink = Sink()
        if i % 2:
            rx: RtpReceiver = UdpReceiver(sink, pool=pool, host="127.0.0.1")
            await rx.start()
            await send_udp(wire, rx.port)
        else:
            rx = TcpPassiveReceiver(sink, pool=pool, host="127.0.0.1")
            await rx.start()
            await send_tcp(wire, rx.port, close=True)
        await sink.event(FirstPacket)
        rx.close()
        await asyncio.wait_for(rx.wait_closed(), DEADLINE)

    for i in range(2):  # warm up: the loop may open its own descriptors once (uvloop)
        await cycle(i)
    before = _fds()
    for i in range(30):
        await cycle(i)
    assert pool.in_use == 0
    assert _fds() == before
