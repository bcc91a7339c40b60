"""WebRTC benchmark: N WHEP viewers (aiortc) of one simulated H.264 camera through
``gbgw serve``; HTTP-FLV viewers of the same stream, in the same run, are the reference.

``python -m bench.webrtc [--viewers 1,10,50] [--quick]``

1. A 640x360 25 fps H.264 test stream (``bench._media_util.build_test_ps``, 1 Mbit/s, GOP 50,
   no B-frames) is muxed into PS once per run.
2. ``gbgw serve`` on 127.0.0.1, ``[webrtc] host_addresses = ["127.0.0.1"]``. The camera is a
   ``gateway.simulate.Fleet`` in this process whose sender logs when each frame left (the
   latency probe of ``bench.media``). One recording HTTP-FLV viewer holds the stream open all
   run long and gives the reference latency (camera send -> complete FLV tag).
3. Baseline: gateway CPU over a window with only that viewer. Reference: ``REF_FLV`` more
   HTTP-FLV viewers; their CPU cost per viewer over a window.
4. Each step starts N WHEP viewers in child processes (``PER_CHILD`` each, so decoding does not
   disturb the probe's pacing): each POSTs an offer, connects over 127.0.0.1 and decodes. A
   child reports when all its viewers have a first frame; after a warm-up the window measures
   gateway CPU; the children then print, per viewer, the POST -> first decoded frame time and
   (RTP timestamp, ``time.perf_counter()``) of each decoded frame, matched to the probe's send
   log: camera send -> decoded at the viewer (client jitter buffer and decode included).

Bounded: every phase has a deadline, at most ``MAX_VIEWERS`` viewers; every process is stopped
in a ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench._media_util import (
    FlvTag,
    FlvViewer,
    ProbeFleet,
    SendLog,
    build_test_ps,
    open_viewer,
    percentile,
)
from bench._proc import Deadline, PhaseTimeout, cpu_seconds, machine_busy_seconds
from bench._servers import GbgwServer

__all__ = ["main"]

STEPS = (1, 10, 50)
QUICK_STEPS = (1, 5)
MAX_VIEWERS = 200
PER_CHILD = 10  # WHEP viewers per child process
REF_FLV = 10  # extra HTTP-FLV viewers of the reference window
MAX_FRAMES = 3000  # frames remembered per WHEP viewer (2 min at 25 fps)
CHILD_OUTPUT = 32 << 20  # bytes: a child's result line (~100 KB per viewer)
PROBE_PREFIX = "6209009900132"


# ---------------------------------------------------------------- child: WHEP viewers


async def _viewer(url: str, channel: str, out: dict[str, object], ready: asyncio.Event) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    frames: deque[tuple[int, float]] = deque(maxlen=MAX_FRAMES)
    out["frames"] = frames
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            r = await c.post(
                f"/whep/{channel}",
                content=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            )
        out["status"] = r.status_code
        if r.status_code != 201:
            out["error"] = r.text[:200]
            return
        pc.on("track", lambda t: out.__setitem__("track", t))
        await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        track = out.pop("track")
        while True:
            frame = await track.recv()  # type: ignore[attr-defined]
            now = time.perf_counter()
            if not frames:
                out["first_frame_s"] = now - started
                ready.set()
            frames.append((int(frame.pts), now))
    except Exception as exc:  # reported, the other viewers go on
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        ready.set()
        await pc.close()


async def _child(url: str, channel: str, count: int) -> int:
    """``count`` viewers; prints ``ready`` once each has a frame (or failed), and a JSON line
    with every viewer's result on SIGTERM."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    outs: list[dict[str, object]] = [{} for _ in range(count)]
    readies = [asyncio.Event() for _ in range(count)]
    tasks = [
        asyncio.create_task(_viewer(url, channel, o, e)) for o, e in zip(outs, readies, strict=True)
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
    print(json.dumps(outs), flush=True)
    return 0


# ---------------------------------------------------------------- parent


@dataclass(slots=True)
class Step:
    viewers: int
    cores: float = math.nan
    """Gateway cores over the window, minus the baseline."""
    machine: float = math.nan
    first_frame_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    failed: int = 0
    error: str = ""


@dataclass(slots=True)
class Reference:
    base_cores: float = math.nan
    flv_cores: float = math.nan
    """Gateway cores of ``REF_FLV`` extra HTTP-FLV viewers."""
    latency_ms: list[float] = field(default_factory=list)


class _Children:
    """The child processes of one step, ``PER_CHILD`` viewers each."""

    def __init__(self, url: str, channel: str, n: int) -> None:
        self.args = [
            ["--child", str(min(PER_CHILD, n - i)), "--url", url, "--channel", channel]
            for i in range(0, n, PER_CHILD)
        ]
        self.running: list[asyncio.subprocess.Process] = []

    async def start(self, deadline: Deadline) -> None:
        """Spawn them and wait until every viewer has its first frame (or failed)."""
        for a in self.args:
            self.running.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.webrtc",
                    *a,
                    stdout=asyncio.subprocess.PIPE,
                    limit=CHILD_OUTPUT,
                )
            )
        async with asyncio.timeout(deadline.remaining()):
            for p in self.running:
                assert p.stdout is not None
                line = await p.stdout.readline()
                if line.strip() != b"ready":
                    raise RuntimeError(f"a viewer child did not start: {line[:200]!r}")

    async def results(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for p in self.running:
            p.send_signal(signal.SIGTERM)
        for p in self.running:
            assert p.stdout is not None
            async with asyncio.timeout(30):
                out += json.loads(await p.stdout.readline())
                await p.wait()
        return out

    def kill(self) -> None:
        for p in self.running:
            if p.returncode is None:
                p.kill()


def _latency(log: SendLog, frames: list[list[float]], t0: float, t1: float) -> list[float]:
    """Camera send -> decoded at the viewer, ms, for frames decoded in [t0, t1]."""
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


async def _window(gw: GbgwServer, seconds: float) -> tuple[float, float, float, float]:
    """(gateway cores, machine cores, t0, t1) over a window of ``seconds``."""
    a, m, t0 = cpu_seconds(gw.pids()), machine_busy_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)  # the measurement window itself
    b, m2, t1 = cpu_seconds(gw.pids()), machine_busy_seconds(), time.perf_counter()
    return (b - a) / (t1 - t0), (m2 - m) / (t1 - t0), t0, t1


async def _run(args: argparse.Namespace, workdir: Path) -> tuple[Reference, list[Step]]:
    from gateway.simdevice import channel_ids
    from gateway.simulate import SimulatorOptions

    info = build_test_ps(workdir / "test.ps", width=640, height=360, bitrate=1_000_000)
    extra = (
        '[media]\nlisten = "127.0.0.1"\nrtp_ports = "37000-37099"\nidle_close = 30\n'
        f'[webrtc]\nhost_addresses = ["127.0.0.1"]\nmax_sessions = {MAX_VIEWERS}\n'
    )
    gw = GbgwServer(workdir, Deadline.after(30, "gbgw serve start"), extra_config=extra)
    url = f"http://{gw.http_address}"
    host, _, port = gw.http_address.rpartition(":")
    stop = asyncio.Event()
    fleet = None
    runners: list[asyncio.Task[None]] = []
    flv: list[FlvViewer] = []
    ref, steps = Reference(), []
    try:
        opts = SimulatorOptions(
            devices=1, gateway_port=gw.sip_port, id_prefix=PROBE_PREFIX, channels=1,
            media=str(info.path), keepalive=30.0, local_host="127.0.0.1",
        )  # fmt: skip
        log = SendLog()
        fleet = ProbeFleet(opts, log)
        await fleet.endpoint.start()
        async with asyncio.timeout(20):
            await fleet.register_all()
        runners = [asyncio.create_task(d.run(stop)) for d in fleet.devices.values()]
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
        ref.base_cores, _, _, _ = await _window(gw, args.window)
        for _ in range(REF_FLV):
            flv.append(await open_viewer(host, int(port), f"/live/{channel}.flv"))
        await asyncio.sleep(args.warmup)
        cores, _, t0, t1 = await _window(gw, args.window)
        ref.flv_cores = cores - ref.base_cores
        base, pairs = log.match(list(probe.tags))
        if base is not None:
            ref.latency_ms = [1000 * (t.at - log.frames[ts][1]) for t, ts in pairs if t0 <= t.at]
        for v in flv[1:]:
            v.close()
        del flv[1:]
        for n in args.steps:
            print(f"bench.webrtc: {n} WHEP viewers", flush=True)
            step = Step(n)
            children = _Children(url, channel, n)
            try:
                await children.start(Deadline.after(args.phase_timeout, f"{n} viewers start"))
                await asyncio.sleep(args.warmup)
                cores, step.machine, t0, t1 = await _window(gw, args.window)
                step.cores = cores - ref.base_cores
                for r in await children.results():
                    if r.get("status") != 201 or "first_frame_s" not in r:
                        step.failed += 1
                        continue
                    step.first_frame_ms.append(1000 * float(r["first_frame_s"]))  # type: ignore[arg-type]
                    step.latency_ms += _latency(log, r["frames"], t0, t1)  # type: ignore[arg-type]
            except (Exception, PhaseTimeout) as exc:
                traceback.print_exc()
                step.error = f"{type(exc).__name__}: {exc}"
            finally:
                children.kill()
            steps.append(step)
            if step.error or step.failed:
                break
    finally:
        for v in flv:
            v.close()
        stop.set()
        if fleet is not None:
            await asyncio.gather(*runners, return_exceptions=True)
            for session in list(fleet.sessions.values()):
                await session.stop()
            await fleet.endpoint.close()
        gw.close()
    return ref, steps


def _f(value: float, spec: str = ".1f") -> str:
    return "-" if math.isnan(value) else format(value, spec)


def _print(ref: Reference, steps: list[Step]) -> None:
    flv_pct = 100 * ref.flv_cores / REF_FLV
    lat = ref.latency_ms
    print()
    print(
        f"webrtc: 640x360 H.264 1 Mbit/s 25 fps GOP 50, one camera; {os.cpu_count()} CPUs."
        f" Reference: HTTP-FLV viewer {_f(flv_pct, '.2f')} %core each (baseline, one viewer:"
        f" {_f(100 * ref.base_cores, '.1f')} %core); FLV latency p50/p95"
        f" {_f(percentile(lat, 0.5))} / {_f(percentile(lat, 0.95))} ms"
    )
    head = ("viewers", "gbgw %core", "%core/viewer", "vs FLV viewer", "first frame p50/p95 ms",
            "latency p50/p95 ms", "frames", "failed", "machine cores", "error")  # fmt: skip
    rows = [head]
    for s in steps:
        per = 100 * s.cores / s.viewers
        ff, lm = s.first_frame_ms, s.latency_ms
        rows.append(
            (
                str(s.viewers),
                _f(100 * s.cores, ".1f"),
                _f(per, ".2f"),
                _f(per / flv_pct if flv_pct > 0 else math.nan, ".1f") + "x",
                f"{_f(percentile(ff, 0.5), '.0f')} / {_f(percentile(ff, 0.95), '.0f')}",
                f"{_f(percentile(lm, 0.5))} / {_f(percentile(lm, 0.95))}",
                str(len(lm)),
                str(s.failed),
                _f(s.machine, ".2f"),
                s.error[:60],
            )
        )
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(len(head))]
    for r in rows:
        print("".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(
        "\n%core: gateway CPU over the window above the one-FLV-viewer baseline. First frame:"
        " POST -> first decoded frame (offer made, answer applied, ICE+DTLS, the GOP burst,"
        " decode). Latency: camera RTP send of a frame -> decoded at the viewer, aiortc jitter"
        " buffer and decode included (the FLV reference stops at the complete tag). Viewers"
        " decode in child processes on the same machine: 'machine cores' near the CPU count"
        " means the numbers include contention."
    )


def main(argv: list[str] | None = None) -> int:
    """Run the WebRTC benchmark; 1 when a step failed."""
    p = argparse.ArgumentParser(prog="python -m bench.webrtc", description=__doc__.split("\n")[0])
    p.add_argument("--viewers", default=None, help="comma-separated steps (default 1,10,50)")
    p.add_argument("--quick", action="store_true", help="small steps and short windows")
    p.add_argument("--window", type=float, default=None, help="seconds per measurement window")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before each window")
    p.add_argument("--phase-timeout", type=float, default=60.0, help="hard limit per start, s")
    p.add_argument("--timeout", type=float, default=600.0, help="hard limit of the run, s")
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--url", default="", help=argparse.SUPPRESS)
    p.add_argument("--channel", default="", help=argparse.SUPPRESS)
    args, _ = p.parse_known_args(argv)
    import uvloop

    if args.child:
        return uvloop.run(_child(args.url, args.channel, args.child))
    steps = [int(x) for x in args.viewers.split(",")] if args.viewers else None
    args.steps = sorted(set(steps or (QUICK_STEPS if args.quick else STEPS)))
    if not 1 <= min(args.steps) <= max(args.steps) <= MAX_VIEWERS:
        p.error(f"viewers must lie within 1..{MAX_VIEWERS}")
    args.window = args.window or (3.0 if args.quick else 8.0)
    with tempfile.TemporaryDirectory(prefix="gbgw-bench-webrtc-") as tmp:
        try:
            ref, steps_done = uvloop.run(asyncio.wait_for(_run(args, Path(tmp)), args.timeout))
        except (TimeoutError, PhaseTimeout) as exc:
            print(f"bench.webrtc: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    _print(ref, steps_done)
    return 1 if any(s.error or s.failed for s in steps_done) else 0


if __name__ == "__main__":
    raise SystemExit(main())
