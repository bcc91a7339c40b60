"""Pieces of the media benchmark: the test stream, HTTP-FLV viewers, the latency probe, and
the reference relay and RTP senders run as subprocesses (``python -m bench._media_util``).

* ``build_test_ps``: a 2 Mbit/s, 25 fps, GOP-50, no-B-frame H.264 stream (PyAV libx264 on a
  noisy ``testsrc2``) muxed with ``media.ps.PsMuxer`` into a GB-style PS file.
* ``FlvViewer``: a raw-socket HTTP/1.1 reader of ``/live/<channel>.flv`` that counts bytes;
  it de-chunks and parses FLV tags until the first video keyframe (or for ever, ``record``),
  stamping each complete tag with ``time.perf_counter()`` at the read that completed it.
* ``ProbeFleet``: ``gateway.simulate.Fleet`` run in the bench process whose media sessions log
  when each frame (RTP timestamp) went out, so FLV tags can be matched to sends.
* ``relay`` (subprocess): the reference, a minimal uvloop ``DatagramProtocol`` per stream that
  writes every datagram to one TCP connection, unparsed.
* ``send`` (subprocess): ``gateway.simmedia.MediaSession`` senders (the same pacer and
  packetizer as ``gbgw simulate``) aimed at the relay's ports, no SIP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import signal
import socket
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FlvTag",
    "FlvViewer",
    "ProbeFleet",
    "PsInfo",
    "ReferenceResult",
    "SendLog",
    "build_test_ps",
    "open_viewer",
    "percentile",
    "run_reference",
]

FPS = 25
TICKS_PER_FRAME = 90000 // FPS
RTP_PAYLOAD = 1400  # bytes: MediaSession's RtpPacketizer(max_payload=1400)
MAX_RECORDED_TAGS = 20_000  # per recording viewer (13 min at 25 fps)
MAX_SEND_FRAMES = 4_000  # frames remembered by the probe's send log (160 s)
_HEAD_LIMIT = 16 * 1024  # bytes of HTTP response head accepted


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


# ---------------------------------------------------------------- the test stream


@dataclass(frozen=True, slots=True)
class PsInfo:
    """The PS test file built for a run."""

    path: Path
    seconds: float
    mbps: float
    """Video payload bit rate, Mbit/s."""
    keyframes: int
    frames: int
    width: int
    height: int
    encode_s: float
    packets_per_s: float
    """RTP packets per second one stream of this file makes (1400-byte payloads)."""


def build_test_ps(
    path: Path,
    *,
    seconds: float = 10.0,
    width: int = 1280,
    height: int = 720,
    bitrate: int = 2_000_000,
) -> PsInfo:
    """Encode ``seconds`` of a noisy test pattern (libx264, CBR ``bitrate`` bit/s, GOP 50,
    no B-frames, SPS/PPS on every keyframe) and mux it one pack per frame into ``path``."""
    import av

    from media.codec_info import Codec
    from media.ps import AccessUnit, PsMuxer

    started = time.monotonic()
    kbps = bitrate // 1000
    src = av.open(f"testsrc2=size={width}x{height}:rate={FPS},noise=alls=12:allf=t", format="lavfi")
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = fractions.Fraction(1, 90000)
    enc.framerate = fractions.Fraction(FPS, 1)
    enc.bit_rate = bitrate
    enc.gop_size = 2 * FPS
    enc.max_b_frames = 0
    enc.options = {
        "preset": "veryfast",
        "x264-params": f"keyint={2 * FPS}:min-keyint={2 * FPS}:scenecut=0:bframes=0:"
        f"vbv-maxrate={kbps}:vbv-bufsize={kbps // 2}:nal-hrd=cbr:repeat-headers=1",
    }
    frames = round(seconds * FPS)
    mux = PsMuxer(video_codec=Codec.H264)
    out = bytearray()
    payload = keys = count = 0

    def put(packets: list[Any]) -> None:
        nonlocal payload, keys, count
        for p in packets:
            data = bytes(p)
            pts = int(p.pts)
            unit = AccessUnit("video", Codec.H264, pts, pts, bool(p.is_keyframe), data)
            out.extend(mux.mux(unit))
            payload += len(data)
            keys += bool(p.is_keyframe)
            count += 1

    try:
        for i, frame in enumerate(src.decode(video=0)):
            if i >= frames:
                break
            frame = frame.reformat(format="yuv420p")
            frame.pts = i * TICKS_PER_FRAME
            frame.time_base = enc.time_base
            # a decoded frame is flagged I: unflagged, x264 places keyframes by keyint alone
            frame.pict_type = av.video.frame.PictureType.NONE
            put(enc.encode(frame))
        put(enc.encode(None))
    finally:
        src.close()
    out.extend(mux.end())
    path.write_bytes(bytes(out))
    from gateway.simmedia import CLOCK_RATE, PsFile

    ps = PsFile.load(path)  # as the senders cut it: one RTP timestamp per frame
    packets = sum(-(-len(f.data) // RTP_PAYLOAD) for f in ps.frames)
    return PsInfo(
        path, frames / FPS, payload * 8 / (frames / FPS) / 1e6, keys, count, width, height,
        time.monotonic() - started, packets / (ps.span / CLOCK_RATE),
    )  # fmt: skip


# ---------------------------------------------------------------- HTTP-FLV viewers


@dataclass(frozen=True, slots=True)
class FlvTag:
    """One complete FLV tag as a viewer saw it."""

    kind: int
    """8 audio, 9 video, 18 script."""
    ms: int
    """Tag timestamp, ms (32 bits)."""
    keyframe: bool
    """A video keyframe picture (frame type 1, AVC NALU packet), not a sequence header."""
    at: float
    """``time.perf_counter()`` of the read that completed the tag."""


class FlvViewer(asyncio.Protocol):
    """One HTTP-FLV viewer; see the module docstring. ``done`` resolves when it ends."""

    def __init__(self, *, record: bool = False) -> None:
        self.record = record
        self.started = time.perf_counter()
        self.bytes = 0
        """Raw bytes read (HTTP head and chunk framing included)."""
        self.status = 0
        self.first_body_at: float | None = None
        self.first_key_at: float | None = None
        self.tags: deque[FlvTag] = deque(maxlen=MAX_RECORDED_TAGS)
        self.error = ""
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.first_key: asyncio.Future[float] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self._head = bytearray()
        self._in_head = True
        self._chunked = False
        self._chunk_left = 0  # body bytes left in the current chunk; -1: reading a size line
        self._raw = bytearray()  # undecoded chunked bytes
        self._flv = bytearray()  # de-chunked FLV bytes not yet parsed
        self._flv_pos = 13  # FLV header (9) + PreviousTagSize0 (4) precede the first tag
        self._parsing = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not asyncio's

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.bytes += len(data)
        if not self._parsing:
            return
        if self._in_head:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _HEAD_LIMIT:
                    self._fail("HTTP response head too long")
                return
            head = bytes(self._head[:end]).decode("latin-1").lower()
            rest = bytes(self._head[end + 4 :])
            self._in_head = False
            self._head = bytearray()
            first = head.split("\r\n", 1)[0].split()
            self.status = int(first[1]) if len(first) > 1 and first[1].isdigit() else 0
            if self.status != 200:
                self._fail(f"HTTP {self.status}")
                return
            self._chunked = "transfer-encoding: chunked" in head
            self._chunk_left = -1
            if not rest:
                return
            data = rest
        if self._chunked:
            self._dechunk(data)
        else:
            self._flv += data
        if self._flv and self.first_body_at is None:
            self.first_body_at = now
        self._tags(now)

    def _dechunk(self, data: bytes) -> None:
        raw = self._raw
        raw += data
        pos = 0
        while pos < len(raw):
            if self._chunk_left < 0:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                size_text = bytes(raw[pos:eol]).split(b";")[0].strip()
                pos = eol + 2
                if not size_text:
                    continue  # the CRLF after a chunk's data
                self._chunk_left = int(size_text, 16)
                if self._chunk_left == 0:
                    pos = len(raw)
                    break
            take = min(self._chunk_left, len(raw) - pos)
            self._flv += raw[pos : pos + take]
            pos += take
            self._chunk_left -= take
            if self._chunk_left == 0:
                self._chunk_left = -1
        del raw[:pos]

    def _tags(self, now: float) -> None:
        buf = self._flv
        pos = self._flv_pos
        if len(buf) < pos:
            return
        while len(buf) >= pos + 11:
            size = int.from_bytes(buf[pos + 1 : pos + 4], "big")
            end = pos + 11 + size + 4
            if len(buf) < end:
                break
            kind = buf[pos] & 0x1F
            ms = int.from_bytes(buf[pos + 4 : pos + 7], "big") | buf[pos + 7] << 24
            key = kind == 9 and size >= 2 and buf[pos + 11] >> 4 == 1 and buf[pos + 12] == 1
            if self.record:
                self.tags.append(FlvTag(kind, ms, key, now))
            if key and self.first_key_at is None:
                self.first_key_at = now
                self.first_key.set_result(now)
                if not self.record:
                    self._parsing = False  # from here on bytes are only counted
                    self._flv = bytearray()
                    self._raw = bytearray()
                    return
            pos = end
        del buf[:pos]
        self._flv_pos = 0

    def _fail(self, why: str) -> None:
        self.error = why
        self._parsing = False
        if not self.first_key.done():
            self.first_key.set_exception(RuntimeError(why))
            self.first_key.exception()  # retrieved: whoever awaits gets its own copy
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.first_key.done():
            self._fail(self.error or f"connection closed before a keyframe ({exc})")
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        """Disconnect (the gateway sees the viewer leave)."""
        if self.transport is not None:
            self.transport.close()


async def open_viewer(host: str, port: int, path: str, *, record: bool = False) -> FlvViewer:
    """Connect and send ``GET path``; the viewer starts its clock before the connect."""
    loop = asyncio.get_running_loop()
    viewer = FlvViewer(record=record)
    _, proto = await loop.create_connection(lambda: viewer, host, port)
    assert proto.transport is not None
    proto.transport.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: gbgw-bench\r\n\r\n".encode()
    )
    return proto


# ---------------------------------------------------------------- the latency probe


class SendLog:
    """When each frame of the probe stream was sent: RTP timestamp -> (first packet about to
    go, last packet gone, keyframe), ``time.perf_counter()`` seconds; the last
    ``MAX_SEND_FRAMES`` frames."""

    def __init__(self) -> None:
        self.frames: OrderedDict[int, tuple[float, float, bool]] = OrderedDict()
        self.base: int | None = None
        """RTP timestamp of the viewer's first video tag, once matched."""

    def wrap(self, session: Any) -> None:
        """Record around ``session._send`` (one call per frame; ``MediaSession`` has no hook)."""
        inner = session._send
        frames = self.frames

        def send(packets: list[bytes]) -> None:
            first = time.perf_counter()
            inner(packets)
            last = time.perf_counter()
            if packets:
                ts = int.from_bytes(packets[0][4:8], "big")
                # PsMuxer writes the system header and PSM only in front of keyframes
                frames[ts] = (first, last, b"\x00\x00\x01\xbc" in packets[0][12:400])
                while len(frames) > MAX_SEND_FRAMES:
                    frames.popitem(last=False)

        session._send = send

    def match(self, tags: list[FlvTag]) -> tuple[int | None, list[tuple[FlvTag, int]]]:
        """(RTP timestamp of the first video tag, [(video tag, its RTP timestamp)]) for the
        video tags whose frame is still in the log.

        FLV tag times are DTS ms since the first tag (which is a keyframe), so the only unknown
        is which sent keyframe that is. It is the latest one for which every matched frame was
        sent before its tag arrived (keyframes are 2 s apart, far more than any latency). Found
        once, while that keyframe is still in the log, then reused."""
        video = [t for t in tags if t.kind == 9]
        if not video:
            return None, []
        if self.base is None:
            first = video[0]
            keys = [ts for ts, (_, last, key) in self.frames.items() if key and last <= first.at]
            for base in reversed(keys):
                sent = self._pairs(base, video)
                if sent and all(self.frames[ts][1] <= t.at for t, ts in sent):
                    self.base = base
                    break
            else:
                return None, []
        return self.base, self._pairs(self.base, video)

    def _pairs(self, base: int, video: list[FlvTag]) -> list[tuple[FlvTag, int]]:
        pairs = [(t, (base + t.ms * 90) & 0xFFFFFFFF) for t in video]
        return [(t, ts) for t, ts in pairs if ts in self.frames]


def _probe_fleet_class() -> type:
    from gateway.simulate import Fleet

    class _ProbeFleet(Fleet):
        """A one-camera ``Fleet`` whose media sessions report into a ``SendLog``."""

        def __init__(self, opts: Any, send_log: SendLog) -> None:
            super().__init__(opts)
            self.send_log = send_log
            self._wrapped: set[str] = set()

        def handle(self, req: Any, source: Any) -> Any:
            resp = super().handle(req, source)
            session = self.sessions.get(req.call_id)
            if session is not None and req.call_id not in self._wrapped:
                self._wrapped.add(req.call_id)
                self.send_log.wrap(session)
            return resp

    return _ProbeFleet


def ProbeFleet(opts: Any, send_log: SendLog) -> Any:
    """A ``gateway.simulate.Fleet`` (imported lazily) whose sessions log into ``send_log``."""
    return _probe_fleet_class()(opts, send_log)


async def start_probe(
    opts: Any, send_log: SendLog, stop: asyncio.Event, timeout: float = 20.0
) -> tuple[Any, list[asyncio.Task[None]]]:
    """Start a ``ProbeFleet`` in this process: registered, its devices running until
    ``stop``; returns the fleet and its device tasks for ``stop_probe``."""
    fleet = ProbeFleet(opts, send_log)
    await fleet.endpoint.start()
    async with asyncio.timeout(timeout):
        await fleet.register_all()
    return fleet, [asyncio.create_task(d.run(stop)) for d in fleet.devices.values()]


async def stop_probe(fleet: Any, runners: list[asyncio.Task[None]]) -> None:
    """After ``stop`` is set: wait for the devices, end their media sessions, close."""
    await asyncio.gather(*runners, return_exceptions=True)
    for session in list(fleet.sessions.values()):
        await session.stop()
    await fleet.endpoint.close()


# ---------------------------------------------------------------- reference relay and senders


class _Relay(asyncio.DatagramProtocol):
    """The reference: each datagram goes to the stream's TCP connection, as it is."""

    def __init__(self, out: asyncio.Transport) -> None:
        self.out = out
        self.packets = 0

    def itself(self) -> _Relay:
        """The protocol factory of this relay's endpoint."""
        return self

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets += 1
        self.out.write(data)


async def _relay(streams: int, sink: str) -> int:
    loop = asyncio.get_running_loop()
    rss_before = _own_rss_kib()
    host, _, port = sink.rpartition(":")
    relays: list[_Relay] = []
    ports: list[int] = []
    for _ in range(streams):
        out, _proto = await loop.create_connection(asyncio.Protocol, host, int(port))
        relay = _Relay(out)
        transport, proto = await loop.create_datagram_endpoint(
            relay.itself, local_addr=("127.0.0.1", 0)
        )
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):  # as gbgw's receivers ask (media.receiver)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 << 20)
        relays.append(proto)
        ports.append(sock.getsockname()[1])
    print(json.dumps({"ports": ports, "rss_before_kib": rss_before}), flush=True)
    await _until_signal()
    print(json.dumps({"packets": sum(r.packets for r in relays)}), flush=True)
    return 0


async def _send(media: str, targets: list[int]) -> int:
    from gateway.sdp import build_offer
    from gateway.simmedia import MediaSession, PsFile

    ps = PsFile.load(media)
    sessions = []
    for i, port in enumerate(targets):
        offer = build_offer("62090000002000000001", "127.0.0.1", port, f"0{i:09d}")
        s = MediaSession(offer, "127.0.0.1", ps, origin_user="62090000001310000001")
        s.answer()
        await s.start()
        sessions.append(s)
    print(json.dumps({"started": len(sessions)}), flush=True)
    await _until_signal()
    for s in sessions:
        await s.stop()
    print(
        json.dumps(
            {
                "packets": sum(s.stats.packets for s in sessions),
                "send_errors": sum(s.send_errors for s in sessions),
            }
        ),
        flush=True,
    )
    return 0


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _own_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass(slots=True)
class ReferenceResult:
    """The reference relay at N streams."""

    streams: int
    error: str = ""
    cores: float = float("nan")
    """Relay CPU seconds per second of window."""
    sender_cores: float = float("nan")
    rss_kib_per_stream: float = float("nan")
    mbps_min: float = float("nan")
    """Slowest stream's forwarded Mbit/s over the window."""


async def _child(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench._media_util", *args,
        cwd=Path(__file__).resolve().parents[1],
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def run_reference(
    streams: int, media: Path, *, per_sender: int, warmup: float, window: float, timeout: float
) -> ReferenceResult:
    """Relay ``streams`` paced RTP streams through the reference; measure its CPU and memory."""
    from bench._proc import cpu_seconds, rss_kib

    res = ReferenceResult(streams)
    counts: list[int] = []

    class _Sink(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.i = len(counts)
            counts.append(0)

        def data_received(self, data: bytes) -> None:
            counts[self.i] += len(data)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Sink, "127.0.0.1", 0)
    sink_port = server.sockets[0].getsockname()[1]
    procs: list[asyncio.subprocess.Process] = []
    try:
        async with asyncio.timeout(timeout):
            relay = await _child(
                "relay", "--streams", str(streams), "--sink", f"127.0.0.1:{sink_port}"
            )
            procs.append(relay)
            assert relay.stdout is not None
            ready = json.loads(await relay.stdout.readline())
            ports: list[int] = ready["ports"]
            senders = []
            for i in range(0, len(ports), per_sender):
                chunk = ",".join(map(str, ports[i : i + per_sender]))
                senders.append(await _child("send", "--media", str(media), "--targets", chunk))
                procs.append(senders[-1])
            for s in senders:
                assert s.stdout is not None
                json.loads(await s.stdout.readline())
            await asyncio.sleep(warmup)  # senders settle into their pace
            pids = [s.pid for s in senders]
            c0, s0, b0, t0 = (
                cpu_seconds([relay.pid]),
                cpu_seconds(pids),
                list(counts),
                time.perf_counter(),
            )
            await asyncio.sleep(window)  # the measurement window itself
            dt = time.perf_counter() - t0
            res.cores = (cpu_seconds([relay.pid]) - c0) / dt
            res.sender_cores = (cpu_seconds(pids) - s0) / dt
            res.rss_kib_per_stream = (rss_kib([relay.pid]) - ready["rss_before_kib"]) / streams
            res.mbps_min = min((y - x) * 8 / dt / 1e6 for x, y in zip(b0, counts, strict=False))
    except (TimeoutError, OSError, ValueError, KeyError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        for proc in reversed(procs):
            await _end(proc)
        server.close()
    return res


def _cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench._media_util")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay", help="reference UDP -> TCP relay, one socket pair per stream")
    r.add_argument("--streams", type=int, required=True)
    r.add_argument("--sink", required=True, help="HOST:PORT of the TCP sink")
    s = sub.add_parser("send", help="paced RTP/PS senders (MediaSession), no SIP")
    s.add_argument("--media", required=True)
    s.add_argument("--targets", required=True, help="comma-separated UDP ports on 127.0.0.1")
    args = p.parse_args(argv)
    import uvloop

    if args.cmd == "relay":
        return uvloop.run(_relay(args.streams, args.sink))
    return uvloop.run(_send(args.media, [int(x) for x in args.targets.split(",")]))


if __name__ == "__main__":
    sys.exit(_cli())
