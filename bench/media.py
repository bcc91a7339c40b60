"""Media benchmark: N concurrent 2 Mbit/s 25 fps camera streams over UDP, one HTTP-FLV viewer
each, through ``gbgw serve``; a bare Python UDP relay is the reference.

``python -m bench.media [--streams 10,25,50,100,150] [--quick]``

1. A 10 s 1280x720 H.264 test stream (2 Mbit/s CBR, GOP 50, no B-frames) is encoded with PyAV
   and muxed into PS once per run (``bench._media_util.build_test_ps``).
2. gbgw: ``gbgw serve`` on 127.0.0.1 (RTP on 127.0.0.1, ports 20000-24999). One camera lives in
   this process (the latency probe, a ``gateway.simulate.Fleet`` whose sender logs when each
   frame left); the others are ``gbgw simulate --channels 1 --media test.ps`` processes, one
   per step (each with its own centre code, so channel IDs never collide). Streams grow in
   steps; at each step every new channel gets one viewer (``GET /live/<id>.flv``, raw socket
   in this process, bytes counted), then after a warm-up a window is measured: gateway CPU
   (/proc utime+stime), ``gbgw_rtp_packets_lost_total`` and ``gbgw_media_faults_total``
   deltas, kernel UDP receive-buffer drops, VmRSS, bytes each viewer got, and the probe's
   added latency. After the window, joining viewers time their first FLV byte and first
   keyframe tag on running streams.
3. Reference: for the same N, ``python -m bench._media_util relay`` (uvloop, one
   DatagramProtocol per stream writing each datagram to a TCP connection to this process) fed
   by ``MediaSession`` senders (the simulator's pacer) in other processes; its CPU per stream
   is the floor of Python's per-packet cost.

Escalation stops after a step that loses over ``SEVERE_LOSS`` of its packets or keeps the
gateway at ``SATURATED`` cores. Every phase has a deadline; every process is stopped in a
``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench._media_util import (
    FlvViewer,
    PsInfo,
    ReferenceResult,
    SendLog,
    build_test_ps,
    open_viewer,
    percentile,
    run_reference,
    start_probe,
    stop_probe,
)
from bench._proc import (
    Deadline,
    cpu_seconds,
    listening_addresses,
    machine_busy_seconds,
    rss_kib,
    stop_process,
    udp_receive_errors,
)
from bench._servers import GbgwServer

__all__ = ["StepResult", "main"]

ROOT = Path(__file__).resolve().parents[1]
STEPS = (10, 25, 50, 100, 150)
QUICK_STEPS = (5, 10)
PER_SIMULATOR = 50  # streams per ``gbgw simulate`` process (~0.3 % of a core each)
PROBE_PREFIX = "6209009900132"
SEVERE_LOSS = 0.02  # share of packets lost in a window beyond which escalation stops
SATURATED = 0.95  # gateway cores beyond which escalation stops
IN_TIME = 0.97  # share of the real-time packet and byte rate a step must reach
LAGGING_MS = 1000.0  # probe p99 latency above which the gateway has fallen behind
BUSY_ELSEWHERE = 0.3  # cores busy outside the measured processes before a step is suspect
OPEN_CONCURRENCY = 16  # viewers being opened at once
TARGET_PER_CORE = 150
TARGET_P99_MS = 5.0
TARGET_RSS_MIB = 8.0
TARGET_FIRST_FRAME_MS = 100.0


def sim_prefix(k: int) -> str:
    """13-digit ID prefix of simulator ``k`` (1..98): centre code 620900kk, industry 00,
    type 132. ``channel_ids`` keeps a device's first 10 digits, so channels stay distinct."""
    return f"620900{k:02d}00132"


@dataclass(slots=True)
class StepResult:
    """One step of N streams."""

    streams: int
    error: str = ""
    stream_mbps: float = math.nan  # the test file's rate
    window_s: float = math.nan
    gw_cores: float = math.nan
    sim_cores: float = math.nan
    bench_cores: float = math.nan
    machine_cores: float = math.nan
    packets: int = 0
    lost: int = 0
    lost_metric: int = 0  # gbgw_rtp_packets_lost_total delta (refreshed once a second)
    faults: int = 0
    udp_drops: int = 0
    rss_kib: int = 0
    rss_base_kib: int = 0
    viewer_mbps_min: float = math.nan
    viewer_mbps_mean: float = math.nan
    viewers_ended: int = 0
    latency_ms: list[float] = field(default_factory=list)  # vs the frame's last packet sent
    after_next_ms: list[float] = field(default_factory=list)  # vs the next frame's first packet
    unmatched: int = 0
    joins: list[tuple[float, float]] = field(default_factory=list)  # first byte, first key ms
    join_failures: int = 0
    expected_packets: float = math.nan  # N x the file's packets/s x window

    @property
    def loss_free(self) -> bool:
        """No RTP loss, no media fault, no kernel drop, no error in the window."""
        return (
            not self.error and self.lost == self.lost_metric == self.faults == self.udp_drops == 0
        )

    @property
    def in_time(self) -> float:
        """Packets the gateway took in over those the senders should have sent in real time."""
        return self.packets / self.expected_packets

    @property
    def keeps_up(self) -> bool:
        """Senders and gateway kept real time: packets in >= IN_TIME of the schedule, the
        slowest viewer got >= IN_TIME of the stream's rate, p99 latency under LAGGING_MS."""
        return (
            self.in_time >= IN_TIME
            and self.viewer_mbps_min >= IN_TIME * self.stream_mbps
            and percentile(self.latency_ms, 0.99) < LAGGING_MS
        )

    @property
    def healthy(self) -> bool:
        """Loss-free and in real time: a step that counts towards capacity."""
        return self.loss_free and self.keeps_up

    @property
    def other_cores(self) -> float:
        """Cores busy outside gbgw, the simulators and this process (other jobs, kernel)."""
        return max(0.0, self.machine_cores - self.gw_cores - self.sim_cores - self.bench_cores)

    @property
    def pct_core_per_stream(self) -> float:
        """Gateway CPU per stream, percent of one core."""
        return 100 * self.gw_cores / self.streams

    @property
    def rss_mib_per_stream(self) -> float:
        """VmRSS growth since before the first stream, MiB per stream."""
        return (self.rss_kib - self.rss_base_kib) / 1024 / self.streams


# ---------------------------------------------------------------- processes


class MediaGateway(GbgwServer):
    """``gbgw serve`` as ``GbgwServer`` starts it, plus RTP on 127.0.0.1 and a wide port range."""

    def __init__(self, workdir: Path, deadline: Deadline) -> None:
        super().__init__(
            workdir,
            deadline,
            extra_config='[media]\nlisten = "127.0.0.1"\nrtp_ports = "20000-24999"\n',
        )


class MediaSimulator:
    """One ``gbgw simulate --channels 1 --media FILE`` process; output to files."""

    def __init__(self, workdir: Path, prefix: str, devices: int, sip_port: int, media: Path):
        from gateway.simdevice import channel_ids
        from gateway.simulate import SimulatorOptions

        self.devices = devices
        ids = SimulatorOptions(devices=devices, id_prefix=prefix).device_ids()
        self.channels = [channel_ids(d, 1)[0] for d in ids]
        self.err_path = workdir / f"sim-{prefix}.err"
        with (workdir / f"sim-{prefix}.out").open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "gateway.cli", "simulate",
                    "--devices", str(devices), "--channels", "1",
                    "--gateway", f"127.0.0.1:{sip_port}", "--transport", "udp",
                    "--id-prefix", prefix, "--local-host", "127.0.0.1",
                    "--media", str(media), "--keepalive", "30",
                ],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            )  # fmt: skip

    def close(self) -> None:
        """SIGTERM (the simulator BYEs nothing, it just stops), SIGKILL after 10 s."""
        stop_process(self.proc, timeout=10.0)


# ---------------------------------------------------------------- measuring


async def _metrics(client: httpx.AsyncClient) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in (await client.get("/metrics")).text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def _faults(m: dict[str, float]) -> int:
    return int(sum(v for k, v in m.items() if k.startswith("gbgw_media_faults_total{")))


def _bench_cpu() -> float:
    """This process: viewers, the probe camera, the poller."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


async def _wait_channels(client: httpx.AsyncClient, total: int, deadline: Deadline) -> None:
    while True:
        page = (await client.get("/api/channels", params={"limit": 1})).json()
        if int(page["total"]) >= total:
            return
        deadline.check()
        await asyncio.sleep(0.1)  # polling an API state, under the phase deadline


async def _open_all(host: str, port: int, channels: list[str], timeout: float) -> list[FlvViewer]:
    """One viewer per channel, each waited for until its first keyframe tag."""
    sem = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(cid: str) -> FlvViewer:
        async with sem:
            v = await open_viewer(host, port, f"/live/{cid}.flv")
            try:
                await v.first_key
            except BaseException:
                v.close()
                raise
            return v

    tasks = [asyncio.create_task(one(c)) for c in channels]
    try:
        async with asyncio.timeout(timeout):
            return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:  # no half-opened viewer outlives a failed step
            t.cancel()
            if t.done() and not t.cancelled() and t.exception() is None:
                t.result().close()
        raise


async def _join(host: str, port: int, cid: str, timeout: float) -> tuple[float, float]:
    """A viewer joining a running stream: ms to the first FLV byte and to the first keyframe."""
    v = await open_viewer(host, port, f"/live/{cid}.flv")
    try:
        async with asyncio.timeout(timeout):
            await v.first_key
        assert v.first_body_at is not None and v.first_key_at is not None
        return 1000 * (v.first_body_at - v.started), 1000 * (v.first_key_at - v.started)
    finally:
        v.close()


async def _stream_counters(client: httpx.AsyncClient) -> tuple[int, int]:
    """(packets, lost) summed over ``/api/streams``: the receivers' live counters (``/metrics``
    copies them once a second)."""
    streams = (await client.get("/api/streams")).json()
    return sum(int(s["packets"]) for s in streams), sum(int(s["lost"]) for s in streams)


@dataclass(slots=True)
class _Sample:
    at: float
    packets: int
    lost: int
    gw_cpu: float
    sim_cpu: float
    bench_cpu: float
    machine: float
    metrics: dict[str, float]
    udp_drops: int
    viewer_bytes: list[int]


async def _sample(
    client: httpx.AsyncClient,
    gw: MediaGateway,
    sims: list[MediaSimulator],
    viewers: list[FlvViewer],
) -> _Sample:
    metrics = await _metrics(client)
    packets, lost = await _stream_counters(client)
    return _Sample(
        time.perf_counter(),
        packets,
        lost,
        cpu_seconds([gw.proc.pid]),
        cpu_seconds([s.proc.pid for s in sims]),
        _bench_cpu(),
        machine_busy_seconds(),
        metrics,
        udp_receive_errors(),
        [v.bytes for v in viewers],
    )


def _latency(step: StepResult, probe: FlvViewer, log: SendLog, t0: float, t1: float) -> None:
    base, pairs = log.match(list(probe.tags))
    window = [(t, ts) for t, ts in pairs if t0 <= t.at <= t1]
    step.unmatched = sum(1 for t in probe.tags if t.kind == 9 and t0 <= t.at <= t1) - len(window)
    if base is None:
        step.error = step.error or "probe: FLV tags could not be matched to sent frames"
        return
    for tag, ts in window:
        _, last, _ = log.frames[ts]
        step.latency_ms.append(1000 * (tag.at - last))
        nxt = log.frames.get((ts + 3600) & 0xFFFFFFFF)
        if nxt is not None and nxt[0] <= tag.at:
            step.after_next_ms.append(1000 * (tag.at - nxt[0]))


async def _measure(
    step: StepResult,
    ctx: _Run,
    window: float,
) -> None:
    a = await _sample(ctx.client, ctx.gw, ctx.sims, ctx.viewers)
    await asyncio.sleep(window)  # the measurement window itself
    b = await _sample(ctx.client, ctx.gw, ctx.sims, ctx.viewers)
    dt = b.at - a.at
    step.window_s = dt
    step.expected_packets = step.streams * ctx.packets_per_s * dt
    step.gw_cores = (b.gw_cpu - a.gw_cpu) / dt
    step.sim_cores = (b.sim_cpu - a.sim_cpu) / dt
    step.bench_cores = (b.bench_cpu - a.bench_cpu) / dt
    step.machine_cores = (b.machine - a.machine) / dt
    step.packets = b.packets - a.packets
    step.lost = b.lost - a.lost
    lost = "gbgw_rtp_packets_lost_total"
    step.lost_metric = int(b.metrics.get(lost, 0) - a.metrics.get(lost, 0))
    step.faults = _faults(b.metrics) - _faults(a.metrics)
    step.udp_drops = b.udp_drops - a.udp_drops
    step.rss_kib = rss_kib([ctx.gw.proc.pid])
    step.rss_base_kib = ctx.rss_base
    rates = [(y - x) * 8 / dt / 1e6 for x, y in zip(a.viewer_bytes, b.viewer_bytes, strict=True)]
    step.viewer_mbps_min = min(rates)
    step.viewer_mbps_mean = sum(rates) / len(rates)
    step.viewers_ended = sum(1 for v in ctx.viewers if v.done.done())
    _latency(step, ctx.probe, ctx.send_log, a.at, b.at)


@dataclass(slots=True)
class _Run:
    gw: MediaGateway
    client: httpx.AsyncClient
    host: str
    port: int
    probe: FlvViewer
    send_log: SendLog
    rss_base: int
    packets_per_s: float
    stream_mbps: float
    sims: list[MediaSimulator] = field(default_factory=list)
    viewers: list[FlvViewer] = field(default_factory=list)
    sim_channels: list[str] = field(default_factory=list)


async def _step(ctx: _Run, n: int, args: argparse.Namespace, ps: Path, workdir: Path) -> StepResult:
    step = StepResult(n, stream_mbps=ctx.stream_mbps)
    deadline = Deadline.after(args.phase_timeout, f"step {n} streams")
    have = 1 + len(ctx.sim_channels)  # the probe is stream number 1
    k = len(ctx.sims) + 1
    while have < n:  # one simulator per PER_SIMULATOR new streams
        count = min(PER_SIMULATOR, n - have)
        sim = MediaSimulator(workdir, sim_prefix(k), count, ctx.gw.sip_port, ps)
        ctx.sims.append(sim)
        await _wait_channels(ctx.client, have + count, deadline)
        new = await _open_all(ctx.host, ctx.port, sim.channels, deadline.remaining())
        ctx.viewers += new
        ctx.sim_channels += sim.channels
        have += count
        k += 1
    await asyncio.sleep(args.warmup)  # let the new streams' GOP bursts pass
    await _measure(step, ctx, args.window)
    for i in range(args.joins):
        cid = ctx.sim_channels[(i * 7919) % len(ctx.sim_channels)]
        try:
            step.joins.append(await _join(ctx.host, ctx.port, cid, min(10.0, deadline.remaining())))
        except (TimeoutError, RuntimeError, OSError):
            step.join_failures += 1
    return step


async def run_gbgw(args: argparse.Namespace, info: PsInfo, workdir: Path) -> list[StepResult]:
    """Start the gateway and the probe, then run the steps; always stop everything."""
    from gateway.simdevice import channel_ids
    from gateway.simulate import SimulatorOptions

    results: list[StepResult] = []
    ps = info.path
    gw = MediaGateway(workdir, Deadline.after(30.0, "gbgw serve start"))
    stop = asyncio.Event()
    fleet = None
    runners: list[asyncio.Task[None]] = []
    ctx: _Run | None = None
    client: httpx.AsyncClient | None = None
    try:
        host, _, port_text = gw.http_address.rpartition(":")
        client = httpx.AsyncClient(base_url=f"http://{gw.http_address}", timeout=10.0)
        opts = SimulatorOptions(
            devices=1, gateway_port=gw.sip_port, id_prefix=PROBE_PREFIX, channels=1,
            media=str(ps), keepalive=30.0, local_host="127.0.0.1",
        )  # fmt: skip
        send_log = SendLog()
        fleet, runners = await start_probe(opts, send_log, stop, 20.0)
        await _wait_channels(client, 1, Deadline.after(20.0, "probe channel listed"))
        rss_base = rss_kib([gw.proc.pid])
        probe_cid = channel_ids(opts.device_ids()[0], 1)[0]
        probe = await open_viewer(host, int(port_text), f"/live/{probe_cid}.flv", record=True)
        async with asyncio.timeout(20.0):
            await probe.first_key
        ctx = _Run(
            gw, client, host, int(port_text), probe, send_log, rss_base, info.packets_per_s,
            info.mbps,
        )  # fmt: skip
        for n in args.steps:
            print(f"bench.media: gbgw, {n} streams", flush=True)
            try:
                step = await _step(ctx, n, args, ps, workdir)
            except Exception as exc:  # report the step, keep the ones before it
                traceback.print_exc()
                step = StepResult(n, error=f"{type(exc).__name__}: {exc}")
            results.append(step)
            if step.error or step.lost > SEVERE_LOSS * max(1, step.packets):
                break
            if step.gw_cores >= SATURATED or not step.keeps_up:
                break
        outside = sorted(b for b in listening_addresses([gw.proc.pid]) if b[1] != "127.0.0.1")
        if outside:
            raise RuntimeError(f"gbgw bound sockets outside 127.0.0.1: {outside}")
    finally:
        if client is not None:
            await client.aclose()
        if ctx is not None:
            for v in [ctx.probe, *ctx.viewers]:
                v.close()
            for sim in ctx.sims:
                sim.close()
        stop.set()
        if fleet is not None:
            await stop_probe(fleet, runners)
        gw.close()
    return results


# ---------------------------------------------------------------- report


def _f(value: float, spec: str = ".1f") -> str:
    return "-" if math.isnan(value) else format(value, spec)


def _pcts(values: list[float]) -> str:
    return f"{_f(percentile(values, 0.5))} / {_f(percentile(values, 0.99))}"


def print_report(
    args: argparse.Namespace, info: PsInfo, steps: list[StepResult], refs: list[ReferenceResult]
) -> bool:
    """The tables, the targets, and how it was measured; True when every target passed."""
    by_n = {r.streams: r for r in refs}
    print()
    print(
        f"media: {info.width}x{info.height} H.264 {info.mbps:.2f} Mbit/s {FPS_TEXT}, PS over UDP,"
        f" one HTTP-FLV viewer per stream; {os.cpu_count()} CPUs; {platform.platform()}"
    )
    head = ("streams", "gbgw cores", "%core/str", "ref %core/str", "gbgw/ref", "str/core",
            "lost/pkts", "lost metric", "in-time %", "faults", "udp drops", "RSS MiB/str",
            "ref KiB/str", "viewer Mbit/s min", "sim cores", "bench cores",
            "other cores")  # fmt: skip
    rows: list[tuple[str, ...]] = [head]
    for s in steps:
        r = by_n.get(s.streams)
        ref_pct = 100 * r.cores / r.streams if r and not r.error else math.nan
        rows.append(
            (
                str(s.streams),
                _f(s.gw_cores, ".2f"),
                _f(s.pct_core_per_stream, ".2f"),
                _f(ref_pct, ".2f"),
                _f(s.pct_core_per_stream / ref_pct if ref_pct else math.nan, ".1f"),
                _f(s.streams / s.gw_cores if s.gw_cores else math.nan, ".0f"),
                f"{s.lost}/{s.packets}",
                str(s.lost_metric),
                _f(100 * s.in_time, ".1f"),
                str(s.faults),
                str(s.udp_drops),
                _f(s.rss_mib_per_stream, ".2f"),
                _f(r.rss_kib_per_stream if r else math.nan, ".0f"),
                _f(s.viewer_mbps_min, ".2f"),
                _f(s.sim_cores, ".2f"),
                _f(s.bench_cores, ".2f"),
                _f(s.other_cores, ".2f"),
            )
        )
    _print_rows(rows)
    print()
    head2 = ("streams", "latency p50/p99 ms", "after next frame p50/p99 ms", "frames",
             "join first byte p50/max ms", "join keyframe p50/max ms",
             "joins ok/failed")  # fmt: skip
    rows = [head2]
    for s in steps:
        fb = [j[0] for j in s.joins]
        fk = [j[1] for j in s.joins]
        rows.append(
            (
                str(s.streams),
                _pcts(s.latency_ms),
                _pcts(s.after_next_ms),
                f"{len(s.latency_ms)}" + (f" ({s.unmatched} unmatched)" if s.unmatched else ""),
                f"{_f(percentile(fb, 0.5))} / {_f(max(fb) if fb else math.nan)}",
                f"{_f(percentile(fk, 0.5))} / {_f(max(fk) if fk else math.nan)}",
                f"{len(s.joins)}/{s.join_failures}",
            )
        )
    _print_rows(rows)
    ok = _targets(args, steps)
    _notes(args, info, steps, refs)
    return ok


FPS_TEXT = "25 fps GOP 50 no B-frames"


def _print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]))]
    for r in rows:
        print("".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _targets(args: argparse.Namespace, steps: list[StepResult]) -> bool:
    clean = [s for s in steps if s.healthy]
    first_loss = next((s.streams for s in steps if not s.loss_free and not s.error), None)
    first_behind = next((s.streams for s in steps if not s.keeps_up and not s.error), None)
    best = max(clean, key=lambda s: s.streams) if clean else None
    checks: list[tuple[str, str, bool]] = []
    if best is not None:
        per_core = best.streams / best.gw_cores if best.gw_cores else math.nan
        proven = best.streams >= TARGET_PER_CORE
        checks.append(
            (
                f">= {TARGET_PER_CORE} streams per core without loss (healthy steps)",
                f"{best.streams} healthy on {best.gw_cores:.2f} cores = {per_core:.0f}/core"
                + ("" if proven else " (projected from that step)"),
                per_core >= TARGET_PER_CORE and (proven or args.quick),
            )
        )
        p99 = max(percentile(s.latency_ms, 0.99) for s in clean)
        p99_next = max(percentile(s.after_next_ms, 0.99) for s in clean)
        checks.append(
            (
                f"p99 added latency <= {TARGET_P99_MS:g} ms (healthy steps)",
                f"worst p99 {_f(p99)} ms ({_f(p99_next)} after next frame)",
                p99 <= TARGET_P99_MS,
            )
        )
        checks.append(
            (
                f"<= {TARGET_RSS_MIB:g} MiB RSS per stream (at {best.streams})",
                f"{best.rss_mib_per_stream:.2f} MiB",
                best.rss_mib_per_stream <= TARGET_RSS_MIB,
            )
        )
        keys = [j[1] for s in clean for j in s.joins]
        fails = sum(s.join_failures for s in clean)
        worst = max(keys) if keys else math.nan
        checks.append(
            (
                f"first frame <= {TARGET_FIRST_FRAME_MS:g} ms, every join (healthy steps)",
                f"p50 {_f(percentile(keys, 0.5))} ms, max {_f(worst)} ms, {fails} failed",
                bool(keys) and worst <= TARGET_FIRST_FRAME_MS and fails == 0,
            )
        )
    else:
        checks.append(("any healthy step (loss-free and in real time)", "none", False))
    print()
    top = steps[-1].streams if steps else 0
    print(f"loss starts at: {first_loss or f'none up to {top}'} streams")
    print(f"falls behind real time at: {first_behind or f'none up to {top}'} streams")
    not_run = [n for n in args.steps if n > top]
    if not_run:
        print(f"not run (escalation stopped after {top}): {', '.join(map(str, not_run))}")
    ok = True
    for what, got, passed in checks:
        ok = ok and passed
        print(f"target: {what:<58} gbgw {got:<58} -> {'PASS' if passed else 'FAIL'}")
    return ok


def _notes(
    args: argparse.Namespace, info: PsInfo, steps: list[StepResult], refs: list[ReferenceResult]
) -> None:
    notes = [
        f"test stream: PyAV libx264 veryfast CBR on testsrc2+noise, {info.frames} frames"
        f" ({info.keyframes} keyframes) looped, encoded in {info.encode_s:.1f} s, muxed with"
        " media.ps.PsMuxer (one pack per frame); sent by gbgw simulate's MediaSession (RTP"
        f" payload <= 1400 bytes, {info.packets_per_s:.0f} packets/s per stream)",
        f"window: {args.window:g} s per step after {args.warmup:g} s warm-up; cores = CPU"
        " seconds (/proc utime+stime, all threads) per second of window; str/core = streams /"
        " gbgw cores",
        "lost/pkts = receiver counters summed over /api/streams (live); lost metric ="
        " gbgw_rtp_packets_lost_total delta (copied from the receivers once a second); faults ="
        " sum of gbgw_media_faults_total; udp drops = RcvbufErrors in /proc/net/snmp (whole"
        " namespace); loss-free = all four 0",
        f"in-time = RTP packets gbgw counted / (N x {info.packets_per_s:.0f} packets/s of the"
        f" file x window); healthy = loss-free, in-time and slowest viewer >= {IN_TIME:.0%},"
        f" probe p99 < {LAGGING_MS:g} ms (a starved gateway queues seconds in its 2 MiB UDP"
        " buffers and loses nothing, so loss alone does not show overload)",
        "RSS MiB/str = (gbgw VmRSS at the end of the window - VmRSS before the first stream) / N;"
        " ref KiB/str = the relay's VmRSS growth from before its sockets to the end of its window",
        "latency: one stream (the probe) is sent from this process by a gateway.simulate.Fleet"
        " whose MediaSession logs perf_counter() before the first and after the last packet of"
        " each frame; the probe's HTTP-FLV viewer (same process) stamps each complete tag; a tag's"
        " DTS ms maps to an RTP timestamp once the first (key)frame is identified; latency = tag"
        " complete - last packet of its frame sent. It includes loopback UDP+TCP and this"
        " process's wake-up, which is loaded by the N viewers (bench cores)",
        "after next frame: tag complete - first packet of the NEXT frame sent; the PS demuxer"
        " (media/ps/_demux.py) closes a frame at its RTP marker once the marker has matched the PS"
        " boundaries for 3 frames (before that, at the next pack header), so this column and"
        " 'latency' differ by about one frame interval only while it learns",
        "join: a new viewer on a running stream, from connect() to the first FLV body byte and to"
        " the complete first keyframe tag (the hub serves its cached GOP)",
        "reference: bench._media_util relay, uvloop, one DatagramProtocol per stream, each datagram"
        " written unparsed to a TCP connection to this process; fed by MediaSession senders in"
        f" other processes ({PER_SIMULATOR} streams per process, as gbgw simulate here)",
        f"escalation stops after a step with > {SEVERE_LOSS:.0%} loss, >= {SATURATED} gbgw cores"
        " or not in real time;"
        f" {os.cpu_count()} CPUs are shared by gbgw, the senders and this process: look at"
        " sim/bench/other cores before blaming the gateway for loss; other = machine busy"
        " (/proc/stat) minus gbgw, simulators and this process",
    ]
    for note in notes:
        print(f"note: {note}")
    for s in steps:
        if s.error:
            print(f"FAILED: gbgw {s.streams} streams: {s.error}")
        if s.other_cores > BUSY_ELSEWHERE:
            print(
                f"WARNING: gbgw {s.streams} streams: {s.other_cores:.2f} cores were busy outside"
                " gbgw, the simulators and this process (other jobs?): numbers are disturbed"
            )
        if s.viewers_ended:
            print(f"WARNING: gbgw {s.streams} streams: {s.viewers_ended} viewers were disconnected")
    for r in refs:
        if r.error:
            print(f"FAILED: reference {r.streams} streams: {r.error}")


# ---------------------------------------------------------------- main


async def _main_async(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with tempfile.TemporaryDirectory(prefix="gbgw-bench-media-") as tmp:
        workdir = Path(tmp)
        print("bench.media: encoding the test stream", flush=True)
        info = await asyncio.to_thread(build_test_ps, workdir / "test.ps", bitrate=args.bitrate)
        steps: list[StepResult] = []
        try:
            async with asyncio.timeout(args.timeout):
                steps = await run_gbgw(args, info, workdir)
        except Exception as exc:
            traceback.print_exc()
            steps.append(StepResult(0, error=f"{type(exc).__name__}: {exc}"))
        refs: list[ReferenceResult] = []
        for n in [s.streams for s in steps if s.window_s == s.window_s]:
            print(f"bench.media: reference relay, {n} streams", flush=True)
            refs.append(
                await run_reference(
                    n,
                    info.path,
                    per_sender=PER_SIMULATOR,
                    warmup=args.warmup,
                    window=args.window,
                    timeout=args.phase_timeout,
                )
            )
        ok = print_report(args, info, steps, refs)
        if any(s.error for s in steps) or any(r.error for r in refs) or not steps:
            return 1
        return 2 if args.strict and not ok else 0


def main(argv: list[str] | None = None) -> int:
    """Run the media benchmark; 1 when a phase failed (2 with --strict and a target missed)."""
    p = argparse.ArgumentParser(prog="python -m bench.media", description=__doc__.split("\n")[0])
    p.add_argument(
        "--streams",
        default=None,
        help=f"comma-separated steps of N (default {','.join(map(str, STEPS))};"
        f" quick {','.join(map(str, QUICK_STEPS))})",
    )
    p.add_argument("--quick", action="store_true", help="small steps and short windows")
    p.add_argument("--window", type=float, default=None, help="seconds per measurement window")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before each window")
    p.add_argument("--joins", type=int, default=None, help="joining viewers timed per step")
    p.add_argument("--bitrate", type=int, default=2_000_000, help="test stream bit/s")
    p.add_argument("--phase-timeout", type=float, default=120.0, help="hard limit per step, s")
    p.add_argument("--timeout", type=float, default=900.0, help="hard limit of the gbgw run, s")
    p.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    args = p.parse_args(argv)
    if args.streams:
        args.steps = sorted({int(x) for x in args.streams.split(",")})
    else:
        args.steps = list(QUICK_STEPS if args.quick else STEPS)
    if min(args.steps) < 2:
        p.error("every step needs >= 2 streams (one is the latency probe)")
    args.window = args.window or (5.0 if args.quick else 10.0)
    args.joins = args.joins if args.joins is not None else (3 if args.quick else 5)
    import uvloop

    try:
        return uvloop.run(_main_async(args))
    except asyncio.CancelledError:
        print("bench.media: cancelled", file=sys.stderr)
        return 143


if __name__ == "__main__":
    raise SystemExit(main())
