"""WebRTC benchmark: N WHEP viewers (aiortc) of one simulated H.264 camera through
``gbgw serve``; HTTP-FLV viewers of the same stream, in the same run, are the reference.
It measures the gateway, not the viewers: all viewers but one hand their frames to a counting
stub instead of an H.264 decoder.

``python -m bench.webrtc [--viewers 1,10,50] [--quick]``

1. A 640x360 25 fps H.264 test stream (``bench._media_util.build_test_ps``, 1 Mbit/s, GOP 50,
   no B-frames) is muxed into PS once per run.
2. ``gbgw serve`` on 127.0.0.1, ``[webrtc] host_addresses = ["127.0.0.1"]``. The camera is a
   ``gateway.simulate.Fleet`` in this process whose sender logs when each frame left (the
   latency probe of ``bench.media``). One recording HTTP-FLV viewer holds the stream open all
   run long and gives the reference latency (camera send -> complete FLV tag).
3. Baseline: gateway CPU over a window with only that viewer. Reference: ``REF_FLV`` more
   HTTP-FLV viewers; their CPU cost per viewer over a window.
4. Each step runs N WHEP viewers in child processes: one verifying viewer that decodes with
   aiortc's real decoder and checks every picture is 640x360, and N-1 counting viewers in
   children of ``PER_CHILD``. In the children ``aiortc.rtcrtpreceiver.get_decoder`` (looked up
   by the receiver's decoder thread) returns ``_Arrivals``, which stamps each complete encoded
   frame the jitter buffer hands over and passes the stamp up the track (so it reaches its own
   viewer), then the real decoder's pictures or, for counting viewers, none. The children
   import first, then all N viewers POST their offers at once; the gateway's and the viewers'
   CPU is measured over that start. After a warm-up the window measures gateway CPU; then
   ``JOINS`` more viewers join the N one at a time (each closed at its first keyframe); then
   every viewer reports POST -> answer, -> ICE+DTLS up, -> first complete keyframe, and the
   (RTP timestamp, ``time.perf_counter()``) of each complete frame, matched to the probe's send
   log: camera send -> frame complete at the viewer.

Bounded: every phase has a deadline, at most ``MAX_VIEWERS`` viewers; every process is stopped
in a ``finally``; the sessions of a step must be gone before the next one starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench._media_util import (
    FlvTag,
    FlvViewer,
    SendLog,
    build_test_ps,
    open_viewer,
    percentile,
    start_probe,
    stop_probe,
)
from bench._proc import (
    Deadline,
    PhaseTimeout,
    cpu_seconds,
    machine_busy_seconds,
    thread_cpu_seconds,
)
from bench._servers import GbgwServer

__all__ = ["main"]

STEPS = (1, 10, 50)
QUICK_STEPS = (1, 50)
JOINS = 10  # viewers joining one at a time after each step's window
QUICK_JOINS = 5
MAX_VIEWERS = 200
PER_CHILD = 10  # counting WHEP viewers per child process
REF_FLV = 10  # extra HTTP-FLV viewers of the reference window
MAX_FRAMES = 3000  # frames remembered per WHEP viewer (2 min at 25 fps)
CHILD_OUTPUT = 32 << 20  # bytes: a child's result line (~100 KB per viewer)
PROBE_PREFIX = "6209009900132"
WIDTH, HEIGHT = 640, 360
TARGET_PER_CORE = 50.0  # passthrough viewers per gateway core
TARGET_FIRST_FRAME_MS = 500.0  # first frame p99
MIN_RATED = 10  # viewers below which the baseline's noise (~1 %core) swamps viewers/core
BUSY_ELSEWHERE = 0.3  # cores busy outside the measured processes before a window is suspect


# ---------------------------------------------------------------- child: WHEP viewers


@dataclass(frozen=True, slots=True)
class _Arrival:
    """A complete encoded frame handed to the decoder, passed up the track in its place."""

    timestamp: int
    """RTP timestamp (90 kHz, aiortc's receiver starts it at 0)."""
    at: float
    """``time.perf_counter()`` of the hand-over."""
    keyframe: bool


def _has_idr(data: bytes) -> bool:
    """Whether an Annex B access unit has an IDR slice (NAL type 5) before any other slice."""
    find, n = data.find, len(data)
    pos = find(b"\x00\x00\x01")
    while 0 <= pos < n - 3:
        kind = data[pos + 3] & 0x1F
        if 1 <= kind <= 5:
            return kind == 5
        pos = find(b"\x00\x00\x01", pos + 3)
    return False


class _Arrivals:
    """A viewer's video "decoder": stamps each complete frame and returns that stamp, then the
    real decoder's pictures (verifying viewer) or none (counting viewer). Runs on the
    receiver's decoder thread, as a decoder does."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def decode(self, encoded_frame: Any) -> list[Any]:
        data: bytes = encoded_frame.data
        stamp = _Arrival(encoded_frame.timestamp, time.perf_counter(), _has_idr(data))
        return [stamp, *(self.real.decode(encoded_frame) if self.real is not None else ())]


def _patch_decoders(verify: bool) -> None:
    """Route this child's H.264 receivers through ``_Arrivals`` (only the bench's children)."""
    import aiortc.rtcrtpreceiver as receiver
    from aiortc.codecs import get_decoder as real

    def get_decoder(codec: Any) -> Any:
        if codec.mimeType.lower() != "video/h264":
            return real(codec)
        return _Arrivals(real(codec) if verify else None)

    # not re-exported there (mypy attr-defined), but it is where the decoder thread looks it up
    receiver.get_decoder = get_decoder  # type: ignore[attr-defined]


async def _viewer(
    c: httpx.AsyncClient, channel: str, out: dict[str, object], ready: asyncio.Event
) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    frames: deque[tuple[int, float]] = deque(maxlen=MAX_FRAMES)
    out["frames"] = frames
    out["decoded"] = out["bad_size"] = 0
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        started = time.perf_counter()
        r = await c.post(
            f"/whep/{channel}",
            content=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"},
        )
        out["status"] = r.status_code
        out["answer_s"] = time.perf_counter() - started
        if r.status_code != 201:
            out["error"] = r.text[:200]
            return
        pc.on("track", lambda t: out.__setitem__("track", t))

        def state() -> None:
            if pc.connectionState == "connected":
                out["connected_s"] = time.perf_counter() - started

        pc.on("connectionstatechange", state)
        await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        track = out.pop("track")
        while True:
            item = await track.recv()  # type: ignore[attr-defined]
            if isinstance(item, _Arrival):
                if not frames and not item.keyframe:
                    continue  # the stream starts at a keyframe; a partial start is not one
                if not frames:
                    out["first_frame_s"] = item.at - started
                    ready.set()
                frames.append((item.timestamp, item.at))
            else:
                out["decoded"] += 1  # type: ignore[operator]
                if (item.width, item.height) != (WIDTH, HEIGHT):
                    out["bad_size"] += 1  # type: ignore[operator]
                    out["size"] = f"{item.width}x{item.height}"
    except Exception as exc:  # reported, the other viewers go on
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        ready.set()
        await pc.close()


async def _child(url: str, channel: str, count: int, mode: str) -> int:
    """``count`` viewers. Prints ``loaded`` once imported and starts on a ``go`` line from
    stdin. ``count``/``verify``: all at once; prints ``ready`` once each has a first keyframe
    (or failed), then on SIGTERM a JSON line with every viewer's result. ``join``: one after
    the other, each closed at its first keyframe; then the JSON line."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    _patch_decoders(mode == "verify")
    # one HTTP client for all: building one loads the CA bundle (~30 ms of CPU per client)
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
        print("loaded", flush=True)
        if (await asyncio.to_thread(sys.stdin.readline)).strip() != "go":
            return 1
        outs: list[dict[str, object]] = [{"mode": mode} for _ in range(count)]
        if mode == "join":
            for out in outs:
                ready = asyncio.Event()
                task = asyncio.create_task(_viewer(c, channel, out, ready))
                await ready.wait()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                out["frames"] = []
        else:
            await _viewers(c, channel, outs)
    print(json.dumps(outs), flush=True)
    return 0


async def _viewers(c: httpx.AsyncClient, channel: str, outs: list[dict[str, object]]) -> None:
    readies = [asyncio.Event() for _ in outs]
    tasks = [
        asyncio.create_task(_viewer(c, channel, o, e)) for o, e in zip(outs, readies, strict=True)
    ]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await asyncio.gather(*(e.wait() for e in readies))
    print("ready", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for o in outs:
        o["frames"] = list(o.get("frames", ()))  # type: ignore[call-overload]


# ---------------------------------------------------------------- parent


@dataclass(slots=True)
class Step:
    viewers: int
    cores: float = math.nan
    """Gateway cores over the window, minus the baseline."""
    machine: float = math.nan
    other: float = math.nan
    """Cores busy outside the gateway, the viewers and this process."""
    start: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    """Start of the N viewers at once, go -> every first keyframe: (seconds, gateway cores,
    viewers' cores)."""
    answer_ms: list[float] = field(default_factory=list)
    """POST -> answer received."""
    connected_ms: list[float] = field(default_factory=list)
    """POST -> ICE and DTLS up."""
    first_frame_ms: list[float] = field(default_factory=list)
    """POST -> first complete keyframe, the N viewers started at once."""
    join_ms: list[float] = field(default_factory=list)
    """POST -> first complete keyframe, one viewer at a time joining the N."""
    join_answer_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    decoded: int = 0
    """Pictures the verifying viewer decoded, all 640x360."""
    failed: int = 0
    error: str = ""

    @property
    def per_core(self) -> float:
        """Viewers one gateway core serves at this step's cost per viewer."""
        return self.viewers / self.cores if self.cores > 0 else math.nan

    def verdict(self) -> str:
        """PASS/FAIL against the targets, naming what failed."""
        missed = []
        rated = self.viewers >= MIN_RATED
        if rated and not self.per_core >= TARGET_PER_CORE:
            missed.append("viewers/core")
        if not percentile(self.first_frame_ms, 0.99) <= TARGET_FIRST_FRAME_MS:
            joins = percentile(self.join_ms, 0.99) <= TARGET_FIRST_FRAME_MS
            missed.append("first frame" + (", joins pass" if joins else ""))
        verdict = f"FAIL ({'; '.join(missed)})" if missed else "PASS"
        verdict += "" if rated else " (first frame only)"
        return verdict + (" (busy)" if self.other > BUSY_ELSEWHERE else "")

    def add(self, r: dict[str, Any], log: SendLog, t0: float, t1: float) -> None:
        """One viewer's result; latencies of frames complete within the window [t0, t1]."""
        if r["mode"] == "verify":
            self.decoded = int(r.get("decoded", 0))
            if r.get("bad_size") or not self.decoded:
                self.error = f"verifying viewer: {self.decoded} pictures, one {r.get('size')}"
        if r.get("status") != 201 or "first_frame_s" not in r:
            self.failed += 1
            self.error = self.error or f"{r['mode']}: {r.get('error', 'no first keyframe')}"
            return
        if r["mode"] == "join":
            self.join_ms.append(1000 * r["first_frame_s"])
            self.join_answer_ms.append(1000 * r["answer_s"])
            return
        self.first_frame_ms.append(1000 * r["first_frame_s"])
        self.answer_ms.append(1000 * r["answer_s"])
        self.connected_ms.append(1000 * r.get("connected_s", math.nan))
        self.latency_ms += _latency(log, r["frames"], t0, t1)


@dataclass(slots=True)
class Reference:
    base_cores: float = math.nan
    flv_cores: float = math.nan
    """Gateway cores of ``REF_FLV`` extra HTTP-FLV viewers."""
    latency_ms: list[float] = field(default_factory=list)
    load_before: float = math.nan
    load_after: float = math.nan


class _Children:
    """Viewer child processes, one per (viewers, mode)."""

    def __init__(self, url: str, channel: str, specs: list[tuple[int, str]]) -> None:
        common = ["--url", url, "--channel", channel]
        self.args = [["--child", str(n), "--mode", mode, *common] for n, mode in specs]
        self.running: list[asyncio.subprocess.Process] = []

    def pids(self) -> list[int]:
        return [p.pid for p in self.running]

    async def _line(self, p: asyncio.subprocess.Process, want: bytes) -> None:
        assert p.stdout is not None
        line = await p.stdout.readline()
        if line.strip() != want:
            raise RuntimeError(f"a viewer child did not say {want.decode()}: {line[:200]!r}")

    async def spawn(self) -> None:
        """Start them and wait until each has imported (not yet connecting)."""
        for a in self.args:
            self.running.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.webrtc", *a,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    limit=CHILD_OUTPUT,
                )
            )  # fmt: skip
        await asyncio.gather(*(self._line(p, b"loaded") for p in self.running))

    def go(self) -> None:
        """Every child starts its viewers now."""
        for p in self.running:
            assert p.stdin is not None
            p.stdin.write(b"go\n")

    async def ready(self) -> None:
        """Until each viewer of each child has its first keyframe (or failed)."""
        await asyncio.gather(*(self._line(p, b"ready") for p in self.running))

    async def results(self, *, stop: bool) -> list[dict[str, Any]]:
        """Every viewer's result; ``stop``: SIGTERM first (all-at-once children)."""
        out: list[dict[str, Any]] = []
        for p in self.running:
            if stop:
                p.send_signal(signal.SIGTERM)
        for p in self.running:
            assert p.stdout is not None
            out += json.loads(await p.stdout.readline())
            await p.wait()
        return out

    def kill(self) -> None:
        for p in self.running:
            if p.returncode is None:
                p.kill()


def _latency(log: SendLog, frames: list[list[float]], t0: float, t1: float) -> list[float]:
    """Camera send -> frame complete at the viewer, ms, for frames complete in [t0, t1]."""
    if not frames:
        return []
    view = SendLog()
    view.frames = log.frames  # shared log, this viewer's own base
    pts0 = int(frames[0][0])
    tags = [
        FlvTag(9, ((int(p) - pts0) & 0xFFFFFFFF) // 90, i == 0, at)
        for i, (p, at) in enumerate(frames)
    ]
    _, pairs = view.match(tags)
    return [1000 * (t.at - log.frames[ts][1]) for t, ts in pairs if t0 <= t.at <= t1]


def _gw_cpu(gw: GbgwServer) -> float:
    """The gateway's CPU seconds at ns resolution (its threads live through every window: a
    passthrough session starts none); 10 ms ticks would swamp one FLV viewer in a 3 s window."""
    return sum(thread_cpu_seconds(pid) for pid in gw.pids())


async def _window(
    gw: GbgwServer, seconds: float, others: tuple[int, ...] = ()
) -> tuple[float, float, float, float, float]:
    """(gateway cores, machine cores, cores busy elsewhere, t0, t1) over ``seconds``; elsewhere
    is outside the gateway, ``others`` and this process."""
    ours = [*gw.pids(), *others, os.getpid()]

    def sample() -> tuple[float, float, float, float]:
        return (
            _gw_cpu(gw),
            machine_busy_seconds(),
            cpu_seconds(ours),
            time.perf_counter(),
        )

    g0, m0, o0, t0 = sample()
    await asyncio.sleep(seconds)  # the measurement window itself
    g1, m1, o1, t1 = sample()
    dt = t1 - t0
    return (g1 - g0) / dt, (m1 - m0) / dt, ((m1 - m0) - (o1 - o0)) / dt, t0, t1


async def _no_sessions(c: httpx.AsyncClient, deadline: Deadline) -> None:
    """Wait until the gateway has ended every WHEP session (polling its API, under a deadline)."""
    while (await c.get("/api/webrtc")).json():
        deadline.check()
        await asyncio.sleep(0.1)


async def _step(
    args: argparse.Namespace, gw: GbgwServer, url: str, channel: str, log: SendLog, ref: Reference
) -> Step:
    """N viewers at once, a window, then ``args.joins`` viewers joining them one at a time."""
    n = args.n
    step = Step(n)
    counting = [(min(PER_CHILD, n - i), "count") for i in range(1, n, PER_CHILD)]
    viewers = _Children(url, channel, [(1, "verify"), *counting])
    joins = _Children(url, channel, [(args.joins, "join")])
    try:
        async with asyncio.timeout(args.phase_timeout):
            await asyncio.gather(viewers.spawn(), joins.spawn())
            gw0, v0, t0 = _gw_cpu(gw), cpu_seconds(viewers.pids()), time.perf_counter()
            viewers.go()
            await viewers.ready()
            gw1, v1, t1 = _gw_cpu(gw), cpu_seconds(viewers.pids()), time.perf_counter()
        step.start = (t1 - t0, (gw1 - gw0) / (t1 - t0), (v1 - v0) / (t1 - t0))
        await asyncio.sleep(args.warmup)
        pids = (*viewers.pids(), *joins.pids())
        cores, step.machine, step.other, t0, t1 = await _window(gw, args.window, pids)
        step.cores = cores - ref.base_cores
        async with asyncio.timeout(args.phase_timeout):
            joins.go()
            for r in await joins.results(stop=False) + await viewers.results(stop=True):
                step.add(r, log, t0, t1)
    except (Exception, PhaseTimeout) as exc:
        traceback.print_exc()
        step.error = f"{type(exc).__name__}: {exc}"
    finally:
        viewers.kill()
        joins.kill()
    return step


async def _run(args: argparse.Namespace, workdir: Path) -> tuple[Reference, list[Step]]:
    from gateway.simdevice import channel_ids
    from gateway.simulate import SimulatorOptions

    info = build_test_ps(workdir / "test.ps", width=WIDTH, height=HEIGHT, bitrate=1_000_000)
    extra = (
        '[media]\nlisten = "127.0.0.1"\nrtp_ports = "37000-37099"\nidle_close = 30\n'
        f'[webrtc]\nhost_addresses = ["127.0.0.1"]\nmax_sessions = {MAX_VIEWERS}\n'
    )
    ref, steps = Reference(load_before=os.getloadavg()[0]), []
    gw = GbgwServer(workdir, Deadline.after(30, "gbgw serve start"), extra_config=extra)
    url = f"http://{gw.http_address}"
    host, _, port = gw.http_address.rpartition(":")
    stop = asyncio.Event()
    fleet = None
    runners: list[asyncio.Task[None]] = []
    flv: list[FlvViewer] = []
    try:
        opts = SimulatorOptions(
            devices=1, gateway_port=gw.sip_port, id_prefix=PROBE_PREFIX, channels=1,
            media=str(info.path), keepalive=30.0, local_host="127.0.0.1",
        )  # fmt: skip
        log = SendLog()
        fleet, runners = await start_probe(opts, log, stop, 20)
        channel = channel_ids(opts.device_ids()[0], 1)[0]
        deadline = Deadline.after(20, "probe channel listed")
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            while (await c.get("/api/channels", params={"limit": 1})).json()["total"] < 1:
                deadline.check()
                await asyncio.sleep(0.1)  # polling an API state, under the phase deadline
        probe = await open_viewer(host, int(port), f"/live/{channel}.flv", record=True)
        flv.append(probe)
        async with asyncio.timeout(20):
            await probe.first_key
        await asyncio.sleep(args.warmup)  # the GOP burst passes
        ref.base_cores, _, _, _, _ = await _window(gw, args.window)
        for _ in range(REF_FLV):
            flv.append(await open_viewer(host, int(port), f"/live/{channel}.flv"))
        await asyncio.sleep(args.warmup)
        cores, _, _, t0, _ = await _window(gw, args.window)
        ref.flv_cores = cores - ref.base_cores
        base, pairs = log.match(list(probe.tags))
        if base is not None:
            ref.latency_ms = [1000 * (t.at - log.frames[ts][1]) for t, ts in pairs if t0 <= t.at]
        for v in flv[1:]:
            v.close()
        del flv[1:]
        for n in args.steps:
            print(f"bench.webrtc: {n} WHEP viewers", flush=True)
            args.n = n
            steps.append(await _step(args, gw, url, channel, log, ref))
            if steps[-1].error or steps[-1].failed:
                break
            async with httpx.AsyncClient(base_url=url, timeout=10) as c:
                await _no_sessions(c, Deadline.after(20, f"{n} WHEP sessions ended"))
    finally:
        ref.load_after = os.getloadavg()[0]
        for v in flv:
            v.close()
        stop.set()
        if fleet is not None:
            await stop_probe(fleet, runners)
        gw.close()
    return ref, steps


def _f(value: float, spec: str = ".1f") -> str:
    return "-" if math.isnan(value) else format(value, spec)


def _ms(values: list[float], q: float = 0.99) -> str:
    """``p50 / p<q>`` of ``values``, whole ms."""
    return f"{_f(percentile(values, 0.5), '.0f')} / {_f(percentile(values, q), '.0f')}"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]))]
    for r in rows:
        print("".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _print(args: argparse.Namespace, ref: Reference, steps: list[Step]) -> None:
    flv_pct = 100 * ref.flv_cores / REF_FLV
    print()
    print(
        f"webrtc: 640x360 H.264 1 Mbit/s 25 fps GOP 50, one camera; {os.cpu_count()} CPUs;"
        f" {args.window:g} s windows. Reference: HTTP-FLV viewer {_f(flv_pct, '.2f')} %core"
        f" each (baseline, one viewer: {_f(100 * ref.base_cores, '.1f')} %core); FLV latency"
        f" p50/p99 {_f(percentile(ref.latency_ms, 0.5))} / {_f(percentile(ref.latency_ms, 0.99))}"
        " ms"
    )
    rows: list[tuple[str, ...]]
    rows = [("viewers", "gbgw %core", "%core/viewer", "viewers/core", "vs FLV viewer",
             "first frame p50/p99 ms", "join p50/max ms", "latency p50/p99 ms", "frames",
             "decoded", "failed", "machine/elsewhere cores", "target")]  # fmt: skip
    for s in steps:
        per = 100 * s.cores / s.viewers
        rows.append(
            (
                str(s.viewers),
                _f(100 * s.cores, ".1f"),
                _f(per, ".2f"),
                _f(s.per_core, ".0f"),
                _f(per / flv_pct if flv_pct > 0 else math.nan, ".1f") + "x",
                _ms(s.first_frame_ms),
                _ms(s.join_ms, 1.0),
                f"{_f(percentile(s.latency_ms, 0.5))} / {_f(percentile(s.latency_ms, 0.99))}",
                str(len(s.latency_ms)),
                str(s.decoded),
                str(s.failed),
                f"{_f(s.machine, '.2f')} / {_f(s.other, '.2f')}",
                s.verdict(),
            )
        )
    _table(rows)
    print("\nstart of the N viewers at once (go -> every first keyframe):")
    rows = [("viewers", "seconds", "gbgw cores", "viewers' cores", "gbgw CPU ms/viewer",
             "POST->answer p50/p99 ms", "POST->ICE+DTLS up p50/p99 ms",
             "join POST->answer p50/max ms")]  # fmt: skip
    for s in steps:
        secs, gw, clients = s.start
        rows.append(
            (
                str(s.viewers),
                _f(secs, ".2f"),
                _f(gw, ".2f"),
                _f(clients, ".2f"),
                _f(1000 * secs * gw / s.viewers, ".1f"),
                _ms(s.answer_ms),
                _ms(s.connected_ms),
                _ms(s.join_answer_ms, 1.0),
            )
        )
    _table(rows)
    for s in steps:
        if s.error:
            print(f"FAILED at {s.viewers} viewers: {s.error}")
    notes = [
        f"target: >= {TARGET_PER_CORE:g} viewers per gateway core and first frame p99 <="
        f" {TARGET_FIRST_FRAME_MS:g} ms (of the N viewers started at once)",
        "%core: gateway CPU over the window above the one-FLV-viewer baseline; viewers/core ="
        " viewers / that",
        "first frame: POST -> first complete keyframe handed to the viewer's decoder (answer,"
        " ICE+DTLS, the keyframe's packets); all N viewers POST at once (after their processes"
        f" have imported); join: {args.joins} more viewers, one at a time, each closed at its"
        " first keyframe, while the N stream",
        "latency: camera RTP send of a frame -> that frame complete at the viewer. aiortc's"
        " jitter buffer completes a frame only when the next one's first packet arrives, so this"
        " includes one frame interval (40 ms) that a marker-bit receiver (a browser) does not"
        " wait",
        "only one viewer decodes (aiortc's decoder, every picture checked 640x360: 'decoded');"
        " the others hand complete frames to a counting stub",
        f"machine: {os.cpu_count()} CPUs shared by the gateway, the viewers' processes and this"
        f" one (camera, FLV viewer); loadavg 1 min {ref.load_before:.2f} before,"
        f" {ref.load_after:.2f} after; elsewhere = cores busy outside those; {platform.platform()}",
    ]
    for note in notes:
        print(f"note: {note}")
    busy = [str(s.viewers) for s in steps if s.other > BUSY_ELSEWHERE]
    if busy:
        print(
            f"WARNING: more than {BUSY_ELSEWHERE} cores busy outside the measured processes at"
            f" {', '.join(busy)} viewers (other jobs?); numbers are disturbed"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the WebRTC benchmark; 1 when a step failed."""
    p = argparse.ArgumentParser(prog="python -m bench.webrtc", description=__doc__.split("\n")[0])
    p.add_argument("--viewers", default=None, help="comma-separated steps (default 1,10,50)")
    p.add_argument("--quick", action="store_true", help="fewer steps and short windows")
    p.add_argument("--window", type=float, default=None, help="seconds per measurement window")
    p.add_argument("--warmup", type=float, default=None, help="seconds before each window")
    p.add_argument("--phase-timeout", type=float, default=60.0, help="hard limit per start, s")
    p.add_argument("--timeout", type=float, default=300.0, help="hard limit of the run, s")
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="count", help=argparse.SUPPRESS)
    p.add_argument("--url", default="", help=argparse.SUPPRESS)
    p.add_argument("--channel", default="", help=argparse.SUPPRESS)
    args, _ = p.parse_known_args(argv)
    import uvloop

    if args.child:
        return uvloop.run(_child(args.url, args.channel, args.child, args.mode))
    steps = [int(x) for x in args.viewers.split(",")] if args.viewers else None
    args.steps = sorted(set(steps or (QUICK_STEPS if args.quick else STEPS)))
    if not 1 <= min(args.steps) <= max(args.steps) <= MAX_VIEWERS:
        p.error(f"viewers must lie within 1..{MAX_VIEWERS}")
    args.window = args.window or (3.0 if args.quick else 8.0)
    args.joins = QUICK_JOINS if args.quick else JOINS
    args.warmup = args.warmup or (2.0 if args.quick else 3.0)
    with tempfile.TemporaryDirectory(prefix="gbgw-bench-webrtc-") as tmp:
        try:
            ref, steps_done = uvloop.run(asyncio.wait_for(_run(args, Path(tmp)), args.timeout))
        except (TimeoutError, PhaseTimeout) as exc:
            print(f"bench.webrtc: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    _print(args, ref, steps_done)
    return 1 if any(s.error or s.failed for s in steps_done) else 0


if __name__ == "__main__":
    raise SystemExit(main())
