"""gateway.simmedia: the simulated device's RTP sender over real loopback sockets.

Every wait is for something observable (a unit count, a packet count, EOF, the session's
close) under an ``asyncio.wait_for`` deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sdp import SdpError, build_offer, parse_sdp
from gateway.simmedia import (
    CLOCK_RATE,
    MAX_WRITE_BUFFER,
    MediaSession,
    PsFile,
    frame_schedule,
    retime,
)
from media.codec_info import Codec
from media.ps import END_CODE, AccessUnit, PsDemuxer, PsMuxer
from media.rtp import Rfc4571Decoder, RtpPacket

DATA = Path(__file__).resolve().parents[2] / "data" / "media"
H264 = DATA / "h264_640x360_25fps_10s.ps"
H264_G711A = DATA / "h264_640x360_25fps_10s_g711a.ps"
H265 = DATA / "h265_640x360_25fps_10s.ps"
GW = "34020000002000000001"
CAM = "34020000001320000001"
Y = "0200001234"
DEADLINE = 10.0  # seconds; never reached when things work
SENTINEL = b"end of test"
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def steps(pts: list[int | None]) -> set[int]:
    """Differences between successive PTS (90 kHz ticks)."""
    assert None not in pts
    return {b - a for a, b in itertools.pairwise(p for p in pts if p is not None)}


def other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


class Collector:
    """RTP packets as received, and the access units their payloads demux to."""

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []
        self.units: list[AccessUnit] = []
        self.demuxer = PsDemuxer()
        self._changed = asyncio.Event()

    @property
    def video(self) -> list[AccessUnit]:
        return [u for u in self.units if u.kind == "video"]

    def add(self, data: bytes) -> None:
        packet = RtpPacket.parse(data)
        self.packets.append(packet)
        self.demuxer.feed(packet.payload, packet.timestamp)
        self.units += self.demuxer.pop_units()
        self._changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        async def wait() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), DEADLINE)

    def check_stream(self, ssrc: int) -> None:
        """One SSRC, contiguous sequence numbers, one timestamp per frame, markers at ends."""
        assert self.packets
        assert {p.ssrc for p in self.packets} == {ssrc}
        assert {p.payload_type for p in self.packets} == {96}
        for a, b in itertools.pairwise(self.packets):
            assert b.sequence_number == (a.sequence_number + 1) & 0xFFFF
            if a.marker:
                assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == 3600  # 25 fps
            else:
                assert b.timestamp == a.timestamp
        assert self.packets[-1].marker
        assert max(len(p.payload) for p in self.packets) == 1400


async def read_udp(sock: socket.socket, into: Collector) -> None:
    loop = asyncio.get_running_loop()
    while (data := await loop.sock_recv(sock, 65536)) != SENTINEL:
        into.add(data)


async def read_tcp(reader: asyncio.StreamReader, into: Collector) -> None:
    decoder = Rfc4571Decoder()
    while data := await reader.read(65536):
        for frame in decoder.feed(data):
            into.add(frame)
    assert decoder.stats.bad_length == decoder.stats.discarded_bytes == 0


@pytest.mark.parametrize("mode", ["udp", "tcp-gateway-passive", "tcp-gateway-active"])
async def test_streams_the_file_as_paced_rtp_and_stops_cleanly(mode: str) -> None:
    loop = asyncio.get_running_loop()
    fds = open_fds()
    got = Collector()
    udp: socket.socket | None = None
    server: asyncio.Server | None = None
    accepted: asyncio.Future[Stream] = loop.create_future()
    if mode == "udp":
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.setblocking(False)
        port = udp.getsockname()[1]
        offer = build_offer(GW, "127.0.0.1", port, Y)
    elif mode == "tcp-gateway-passive":  # the test is the gateway, listening
        server = await asyncio.start_server(
            lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        offer = build_offer(GW, "127.0.0.1", port, Y, tcp_setup="passive")
    else:  # the gateway connects to the device
        offer = build_offer(GW, "127.0.0.1", 9, Y, tcp_setup="active")

    session = MediaSession(parse_sdp(offer.serialize()), "127.0.0.1", H264, origin_user=CAM)
    answer = session.answer()
    assert answer is session.answer()
    assert (answer.origin_user, answer.connection_address) == (CAM, "127.0.0.1")
    assert answer.direction == "sendonly" and answer.ssrc == Y and answer.port > 0
    assert answer.proto == offer.proto
    assert answer.setup == {"udp": None, "tcp-gateway-passive": "active"}.get(mode, "passive")
    assert answer.connection_new == (mode != "udp")

    if mode == "tcp-gateway-active":
        # The device listens before its answer leaves: connecting before start() works.
        accepted.set_result(await asyncio.open_connection("127.0.0.1", answer.port))
    await session.start()
    start = loop.time()
    writer: asyncio.StreamWriter | None = None
    if udp is not None:
        receiver = asyncio.create_task(read_udp(udp, got))
    else:
        reader, writer = await asyncio.wait_for(accepted, DEADLINE)
        receiver = asyncio.create_task(read_tcp(reader, got))

    await got.until(lambda: len(got.video) >= 50)
    elapsed = loop.time() - start
    # Real time: frame 49 is due 1.96 s after the first; generous above for a loaded box.
    assert 1.5 <= elapsed <= 3.5, elapsed

    await session.stop()
    assert session.closed and session.close_reason == "stopped"
    assert await session.wait_closed() == "stopped"
    sent = session.stats.packets
    assert session.stats.frames >= 50 and session.stats.bytes > 0 and session.stats.loops == 0
    if udp is not None:
        await got.until(lambda: len(got.packets) >= sent)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.sendto(SENTINEL, udp.getsockname())
        probe.close()
    await asyncio.wait_for(receiver, DEADLINE)  # UDP: the sentinel; TCP: EOF after stop
    assert len(got.packets) == sent  # nothing after stop()
    assert session.stats.packets == sent
    assert sum(len(p.serialize()) for p in got.packets) == session.stats.bytes

    got.check_stream(200001234)
    video = got.video
    assert len(video) >= 25
    assert {u.codec for u in video} == {Codec.H264}
    assert video[0].keyframe  # the file starts with an IDR and nothing was lost
    assert sum(p.marker for p in got.packets) == session.stats.frames

    if writer is not None:
        writer.close()
        await writer.wait_closed()
    if server is not None:
        server.close()
        await server.wait_closed()
    if udp is not None:
        udp.close()
    assert not other_tasks()
    assert open_fds() == fds


async def test_loops_with_continuous_timestamps_and_sequence() -> None:
    """Two passes over the file, unpaced: RTP and PS clocks continue across the join."""
    got = Collector()
    accepted: asyncio.Future[Stream] = asyncio.get_running_loop().create_future()
    server = await asyncio.start_server(lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    offer = build_offer(GW, "127.0.0.1", port, Y, tcp_setup="passive")
    session = MediaSession(offer, "127.0.0.1", PsFile.load(H265), speed=0)
    session.answer()
    await session.start()
    reader, writer = await asyncio.wait_for(accepted, DEADLINE)
    receiver = asyncio.create_task(read_tcp(reader, got))
    await got.until(lambda: len(got.video) >= 600)
    await session.stop()
    await asyncio.wait_for(receiver, DEADLINE)
    writer.close()
    await writer.wait_closed()
    assert session.stats.loops >= 2
    got.check_stream(200001234)  # includes +3600 ticks across each join
    video = got.video
    assert {u.codec for u in video} == {Codec.H265}
    pts = [u.pts for u in video]
    assert steps(pts) == {3600}
    assert video[250].keyframe  # the second pass starts with the file's first picture
    server.close()
    await server.wait_closed()
    assert not other_tasks()


async def test_a_peer_that_does_not_read_stops_the_session() -> None:
    fds = open_fds()
    offer = build_offer(GW, "127.0.0.1", 9, Y, tcp_setup="active")
    session = MediaSession(offer, "127.0.0.1", H264, speed=0)
    port = session.answer().port
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    await session.start()
    reason = await asyncio.wait_for(session.wait_closed(), DEADLINE)
    assert reason.startswith("peer not reading")
    assert session.stats.bytes > MAX_WRITE_BUFFER
    await session.stop()  # idempotent after the session ended by itself
    assert session.close_reason == reason
    sock.close()
    assert not other_tasks()
    assert open_fds() == fds


async def test_gateway_closing_the_connection_ends_the_session() -> None:
    offer = build_offer(GW, "127.0.0.1", 9, Y, tcp_setup="active")
    session = MediaSession(offer, "127.0.0.1", H264)
    port = session.answer().port
    await session.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.readexactly(2), DEADLINE)  # the first frame's length
    writer.close()
    await writer.wait_closed()
    reason = await asyncio.wait_for(session.wait_closed(), DEADLINE)
    assert reason in ("peer closed the connection",) or reason.startswith("connection lost")
    assert session.peer[0] == "127.0.0.1"
    await session.stop()
    assert not other_tasks()


async def test_nobody_connecting_times_out() -> None:
    fds = open_fds()
    offer = build_offer(GW, "127.0.0.1", 9, Y, tcp_setup="active")
    session = MediaSession(offer, "127.0.0.1", H264, connect_timeout=0.2)
    session.answer()
    await session.start()
    reason = await asyncio.wait_for(session.wait_closed(), DEADLINE)
    assert reason == "no tcp-passive connection within 0.2 s"
    assert session.stats.packets == 0
    assert open_fds() == fds


async def test_gateway_not_listening_is_a_socket_error() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # a port nobody listens on
    session = MediaSession(
        build_offer(GW, "127.0.0.1", port, Y, tcp_setup="passive"), "127.0.0.1", H264
    )
    assert session.answer().setup == "active"
    await session.start()
    reason = await asyncio.wait_for(session.wait_closed(), DEADLINE)
    assert reason.startswith("socket error")


async def test_stop_before_start_closes_the_bound_socket() -> None:
    fds = open_fds()
    session = MediaSession(build_offer(GW, "127.0.0.1", 30000, Y), "127.0.0.1", H264)
    session.answer()
    assert open_fds() == fds + 1
    await session.stop()
    await session.stop()
    assert session.closed and await session.wait_closed() == "stopped"
    assert open_fds() == fds
    with pytest.raises(RuntimeError):
        await session.start()
    never_answered = MediaSession(build_offer(GW, "127.0.0.1", 1, Y), "127.0.0.1", H264)
    await never_answered.stop()
    with pytest.raises(RuntimeError):
        never_answered.answer()
    assert open_fds() == fds


def test_session_rejects_unusable_offers_and_fills_in_ssrc() -> None:
    with pytest.raises(SdpError):
        MediaSession(build_offer(GW, "127.0.0.1", 0, Y), "127.0.0.1", H264)
    holdconn = parse_sdp(
        build_offer(GW, "127.0.0.1", 9, Y, tcp_setup="active")
        .serialize()
        .replace(b"setup:active", b"setup:holdconn")
    )
    with pytest.raises(SdpError):
        MediaSession(holdconn, "127.0.0.1", H264)
    with pytest.raises(ValueError):
        MediaSession(build_offer(GW, "127.0.0.1", 1, Y), "127.0.0.1", H264, speed=-1)
    no_y = parse_sdp(
        build_offer(GW, "127.0.0.1", 1, Y).serialize().replace(b"y=0200001234\r\n", b"")
    )
    s = MediaSession(no_y, "127.0.0.1", H264)  # the device makes one up
    assert len(s.ssrc_text) == 10 and s.ssrc == int(s.ssrc_text)
    s2 = MediaSession(build_offer(GW, "127.0.0.1", 1, Y), "127.0.0.1", H264, ssrc="0703001718")
    assert s2.ssrc == 703001718  # a device answering its own y=


# ---------------------------------------------------------------- the file, sans I/O


@pytest.mark.parametrize("path", [H264, H265, H264_G711A])
def test_sample_files_cut_into_frames(path: Path) -> None:
    data = path.read_bytes()
    ps = PsFile.load(path)
    assert len(ps.frames) == 250  # 10 s at 25 fps; audio shares its video frame's PTS
    assert [f.clock for f in ps.frames] == [3600 * i for i in range(250)]
    assert ps.span == 250 * 3600
    assert data.endswith(END_CODE)
    assert b"".join(f.data for f in ps.frames) == data[: -len(END_CODE)]
    assert all(f.data.startswith(b"\x00\x00\x01\xba") for f in ps.frames)


def test_frames_without_pts_and_a_mid_file_end_code() -> None:
    mux = PsMuxer(video_codec=Codec.H264)
    idr = b"\x00\x00\x00\x01\x65" + b"\x88" * 50
    units = [AccessUnit("video", Codec.H264, None, None, i == 0, idr) for i in range(3)]
    data = b"junk" + mux.mux(units[0]) + END_CODE + b"garbage" + mux.mux(units[1])
    data += mux.mux(units[2])
    ps = PsFile.from_bytes(data, fps=30)
    assert [f.clock for f in ps.frames] == [0, 3000, 6000]
    assert ps.frames[0].data.startswith(b"\x00\x00\x01\xba\x44")  # the junk is skipped
    assert END_CODE not in b"".join(f.data for f in ps.frames)
    with pytest.raises(ValueError, match="pack header"):
        PsFile.from_bytes(b"\x00\x00\x01\xe0 not a PS file")


@pytest.mark.parametrize("offset", [0, 900000, (1 << 33) - 1000])
def test_retime_equals_muxing_the_shifted_unit(offset: int) -> None:
    def pack(pts: int, dts: int) -> bytes:
        unit = AccessUnit("video", Codec.H264, pts, dts, True, b"\x00\x00\x00\x01\x65\x88")
        return PsMuxer(video_codec=Codec.H264).mux(unit)

    base = 8_000_000
    ps = PsFile.from_bytes(pack(base + 7200, base + 3600))
    (frame,) = ps.frames
    assert len(frame.scr_offsets) == 1 and len(frame.ts_offsets) == 2
    mask = (1 << 33) - 1
    assert retime(frame, offset) == pack(
        (base + 7200 + offset) & mask, (base + 3600 + offset) & mask
    )


def test_schedule_continues_clocks_and_ps_timestamps_across_passes() -> None:
    ps = PsFile.load(H264)
    schedule = frame_schedule(ps)
    first = [next(schedule) for _ in range(2 * len(ps.frames) + 1)]
    assert [k for k, _, _ in first] == [0] * 250 + [1] * 250 + [2]
    assert [c for _, c, _ in first] == [3600 * i for i in range(501)]
    assert first[0][2] == ps.frames[0].data
    demux = PsDemuxer()
    units: list[AccessUnit] = []
    for _, _, data in first:
        demux.feed(data)
        units += demux.pop_units()
    demux.flush()
    pts = [u.pts for u in units + demux.pop_units() if u.kind == "video"]
    assert len(pts) == 501
    assert steps(pts) == {3600}
    assert CLOCK_RATE == 90000


@given(st.binary(max_size=300), st.integers(0, 1 << 34))
def test_any_bytes_cut_or_raise_value_error(data: bytes, offset: int) -> None:
    for blob in (data, b"\x00\x00\x01\xba" + data):
        try:
            ps = PsFile.from_bytes(blob)
        except ValueError:
            assert blob is data
            continue
        assert ps.frames and ps.span > max(f.clock for f in ps.frames) >= 0
        assert len(b"".join(f.data for f in ps.frames)) <= len(blob)
        for frame in ps.frames:
            assert len(retime(frame, offset)) == len(frame.data)
