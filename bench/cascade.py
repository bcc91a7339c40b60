"""Cascade benchmark: latency added per hop (RTP in at the county, HTTP-FLV out at the city or
the province) and the county's CPU per stream relayed upstream against a local viewer's.

``python -m bench.cascade [--hops 0..2] [--streams N] [--duration S] [--quick]``

1. Three ``gbgw serve`` on 127.0.0.1 chained by ``[[upstream]]``: county -> city -> province
   (the province only with ``--hops 2``; the city always, the CPU phase relays to it). A
   2 Mbit/s 720p25 H.264 PS file is encoded once per run (``bench._media_util``).
2. Latency: one camera (the probe, a ``gateway.simulate.Fleet`` in this process whose sender
   logs when each frame's packets left) registers at the county. One recording HTTP-FLV viewer
   per path plays its channel at the same time: the county itself (0 hops, the reference), the
   city (1 hop) and the province (2 hops), each a ``/live/<channel>.flv`` of the node, which
   INVITEs the node below. Per frame, latency = FLV tag complete at the viewer - the frame's
   last RTP packet sent; hop n adds (p99(n) - p99(0)) / n.
3. CPU: ``gbgw simulate --devices S --channels 1`` registers S cameras at the county, whose
   streams stay up between windows (a long ``idle_close``). A cycle measures the county's CPU
   seconds per stream-second in three windows: S local HTTP-FLV viewers (the reference), no
   consumer (ingest only), and S viewers at the city, so the county relays S streams upstream
   (RTP/PS out); then the city's streams are deleted. A consumer's cost is its window minus
   the cycle's ingest-only one, averaged over the cycles; target relay/local <= 1.

Every phase has a deadline; every process is stopped in a ``finally``; all traffic is on
127.0.0.1.
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
    FlvTag,
    FlvViewer,
    PsInfo,
    SendLog,
    build_test_ps,
    open_viewer,
    percentile,
    start_probe,
    stop_probe,
)
from bench._proc import (
    Deadline,
    cpu_seconds,
    listening_addresses,
    machine_busy_seconds,
    stop_process,
    thread_cpu_seconds,
    user_system_seconds,
)
from bench._servers import PASSWORD, GbgwServer

__all__ = ["CpuWindow", "PathResult", "main"]

ROOT = Path(__file__).resolve().parents[1]
# (name, gateway id, SIP domain, RTP ports): a province, one of its cities, one of its counties
NODES = (
    ("county", "62090200002000000001", "6209020000", "27000-27999"),
    ("city", "62090000002000000001", "6209000000", "26000-26999"),
    ("province", "62000000002000000001", "6200000000", "25000-25999"),
)
PROBE_PREFIX = "6209029900132"  # the probe camera's device IDs (channels keep 10 digits)
SIM_PREFIX = "6209020100132"  # the CPU phase's cameras
IDLE_CLOSE = 600.0  # s: the county keeps consumer-less streams up between CPU windows
FPS_TICKS = 3600  # 90 kHz ticks per frame at 25 fps
TARGET_HOP_P99_MS = 5.0
TARGET_RELAY_RATIO = 1.0
BUSY_ELSEWHERE = 0.3  # cores busy outside the measured processes before a window is suspect


@dataclass(slots=True)
class PathResult:
    """The probe seen through one path (``hops`` relays above the county)."""

    hops: int
    node: str
    latency_ms: list[float] = field(default_factory=list)
    after_next_ms: list[float] = field(default_factory=list)
    arrivals: dict[int, float] = field(default_factory=dict)
    """RTP timestamp -> ``perf_counter()`` the frame's tag completed, in the window."""
    unmatched: int = 0
    error: str = ""


@dataclass(slots=True)
class CpuWindow:
    """One CPU window at the county."""

    what: str
    streams: int
    seconds: float = math.nan
    county_cores: float = math.nan
    user_cores: float = math.nan
    """The county's user-mode share of ``county_cores`` (10 ms ticks); the rest is kernel."""
    sys_cores: float = math.nan
    other_cores: float = math.nan
    """Machine busy minus every gbgw node, the simulator and this process."""
    out_mbps: float = math.nan
    """Slowest consumer's Mbit/s (viewer bytes or county upstream bytes / S)."""
    error: str = ""

    @property
    def per_stream(self) -> float:
        """County CPU seconds per stream-second."""
        return self.county_cores / self.streams


# ---------------------------------------------------------------- processes


def _node(workdir: Path, index: int, upper: GbgwServer | None, idle_close: float) -> GbgwServer:
    name, gw_id, domain, ports = NODES[index]
    (workdir / name).mkdir()
    extra = f'[media]\nlisten = "127.0.0.1"\nrtp_ports = "{ports}"\nidle_close = {idle_close}\n'
    if upper is not None:
        up_name, up_id, up_domain, _ = NODES[index + 1]
        extra += (
            f'[[upstream]]\nname = "{up_name}"\nid = "{up_id}"\ndomain = "{up_domain}"\n'
            f'host = "127.0.0.1"\nport = {upper.sip_port}\ntransport = "udp"\n'
            f'password = "{PASSWORD}"\nkeepalive_interval = 10\nzones = ["default"]\n'
        )
    keys = f'id = "{gw_id}"\ndomain = "{domain}"\nname = "{name}"\n'
    return GbgwServer(
        workdir / name,
        Deadline.after(30.0, f"{name} start"),
        extra_config=extra,
        gateway_keys=keys,
    )


class Cameras:
    """``gbgw simulate --devices N --channels 1 --media FILE`` registered at the county."""

    def __init__(self, workdir: Path, devices: int, sip_port: int, media: Path) -> None:
        from gateway.simdevice import channel_ids
        from gateway.simulate import SimulatorOptions

        ids = SimulatorOptions(devices=devices, id_prefix=SIM_PREFIX).device_ids()
        self.channels = [channel_ids(d, 1)[0] for d in ids]
        with (workdir / "sim.out").open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "gateway.cli", "simulate",
                    "--devices", str(devices), "--channels", "1",
                    "--gateway", f"127.0.0.1:{sip_port}", "--transport", "udp",
                    "--server-id", NODES[0][1], "--password", PASSWORD,
                    "--id-prefix", SIM_PREFIX, "--local-host", "127.0.0.1",
                    "--media", str(media), "--keepalive", "30",
                ],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def close(self) -> None:
        """SIGTERM, SIGKILL after 10 s."""
        stop_process(self.proc, timeout=10.0)


@dataclass(slots=True)
class _Run:
    nodes: list[GbgwServer]
    clients: list[httpx.AsyncClient]
    cameras: Cameras
    probe_channel: str
    send_log: SendLog


def _addr(node: GbgwServer) -> tuple[str, int]:
    host, _, port = node.http_address.rpartition(":")
    return host, int(port)


async def _wait_channels(
    client: httpx.AsyncClient, device: str, want: set[str], d: Deadline
) -> None:
    """Until ``device``'s channel list at a node holds ``want`` (catalog or NOTIFY arrived)."""
    while True:
        r = await client.get(f"/api/devices/{device}/channels")
        if r.status_code == 200 and want <= {c["channel_id"] for c in r.json()}:
            return
        d.check()
        await asyncio.sleep(0.2)  # polling an API state, under the phase deadline


async def _open(node: GbgwServer, channel: str, *, record: bool, timeout: float) -> FlvViewer:
    """A viewer of ``channel`` at ``node``, waited for until its first keyframe tag."""
    v = await open_viewer(*_addr(node), f"/live/{channel}.flv", record=record)
    try:
        async with asyncio.timeout(timeout):
            await v.first_key
    except BaseException:
        v.close()
        raise
    return v


async def _open_all(node: GbgwServer, channels: list[str], timeout: float) -> list[FlvViewer]:
    tasks = [asyncio.create_task(_open(node, c, record=False, timeout=timeout)) for c in channels]
    done = await asyncio.gather(*tasks, return_exceptions=True)
    viewers = [v for v in done if isinstance(v, FlvViewer)]
    errors = [e for e in done if isinstance(e, BaseException)]
    if errors:
        for v in viewers:
            v.close()
        raise errors[0]
    return viewers


# ---------------------------------------------------------------- latency


def _busy_elsewhere(ctx: _Run) -> float:
    """CPU seconds the machine spent so far outside the gbgw nodes, the simulator and us."""
    ours = [n.proc.pid for n in ctx.nodes] + [ctx.cameras.proc.pid]
    return machine_busy_seconds() - cpu_seconds(ours) - _bench_cpu()


async def run_latency(ctx: _Run, args: argparse.Namespace) -> tuple[list[PathResult], float]:
    """Probe viewers at county, city, province at once; one window; per-frame latencies and
    the cores busy outside the measured processes meanwhile."""
    paths = [PathResult(n, NODES[n][0]) for n in range(args.hops + 1)]
    viewers: list[FlvViewer] = []
    try:
        for p in paths:  # bottom up: each node joins the stream the node below already has
            node = ctx.nodes[p.hops]
            viewers.append(await _open(node, ctx.probe_channel, record=True, timeout=30.0))
        await asyncio.sleep(args.warmup)  # the joins' cached-GOP bursts pass
        t0, e0 = time.perf_counter(), _busy_elsewhere(ctx)
        await asyncio.sleep(args.duration)  # the measurement window itself
        t1, e1 = time.perf_counter(), _busy_elsewhere(ctx)
    finally:
        for v in viewers:
            v.close()
    for p, v in zip(paths, viewers, strict=True):
        log = SendLog()  # a per-viewer view on the probe's log: the base keyframe is per viewer
        log.frames = ctx.send_log.frames
        base, pairs = log.match(list(v.tags))
        if base is None:
            p.error = "FLV tags could not be matched to sent frames"
            continue
        latest: dict[int, FlvTag] = {}  # by RTP timestamp: a frame's tag, not a header before it
        for tag, ts in pairs:
            if t0 <= tag.at <= t1:
                latest[ts] = tag
        in_window = sum(1 for t in v.tags if t.kind == 9 and t0 <= t.at <= t1)
        p.unmatched = in_window - sum(1 for t, _ in pairs if t0 <= t.at <= t1)
        for ts, tag in latest.items():
            _, last, _ = log.frames[ts]
            p.latency_ms.append(1000 * (tag.at - last))
            p.arrivals[ts] = tag.at
            nxt = log.frames.get((ts + FPS_TICKS) & 0xFFFFFFFF)
            if nxt is not None and nxt[0] <= tag.at:
                p.after_next_ms.append(1000 * (tag.at - nxt[0]))
    return paths, max(0.0, e1 - e0) / (t1 - t0)


async def _end_probe(ctx: _Run) -> None:
    """DELETE the probe's stream at the county (BYE down, and up the chain), wait it out."""
    county = ctx.clients[0]
    deadline = Deadline.after(20.0, "probe stream closed")
    for s in (await county.get("/api/streams")).json():
        if s["channel_id"] == ctx.probe_channel and s.get("state") != "closed":
            await county.delete(f"/api/streams/{s['stream_id']}")
    for client in ctx.clients:
        while any(s.get("state") != "closed" for s in (await client.get("/api/streams")).json()):
            deadline.check()
            await asyncio.sleep(0.1)  # polling an API state, under the phase deadline


# ---------------------------------------------------------------- CPU


def _bench_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


async def _upstream_bytes(client: httpx.AsyncClient) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith('gbgw_upstream_bytes_total{upstream="city"}'):
            return float(line.rpartition(" ")[2])
    return 0.0


async def _window(
    ctx: _Run, w: CpuWindow, seconds: float, viewers: list[FlvViewer], relay: bool
) -> None:
    county = ctx.nodes[0].proc.pid
    everyone = [n.proc.pid for n in ctx.nodes] + [ctx.cameras.proc.pid]

    async def sample() -> tuple[float, float, float, float, float, list[int], float, float, float]:
        up = await _upstream_bytes(ctx.clients[0])  # every window: each pays for 1 scrape
        user, system = user_system_seconds([county])
        return (
            time.perf_counter(), thread_cpu_seconds(county), cpu_seconds(everyone), _bench_cpu(),
            machine_busy_seconds(), [v.bytes for v in viewers], up, user, system,
        )  # fmt: skip

    a = await sample()
    await asyncio.sleep(seconds)  # the measurement window itself
    b = await sample()
    dt = b[0] - a[0]
    w.seconds = dt
    w.county_cores = (b[1] - a[1]) / dt
    w.user_cores, w.sys_cores = (b[7] - a[7]) / dt, (b[8] - a[8]) / dt
    w.other_cores = max(0.0, (b[4] - a[4]) - (b[2] - a[2]) - (b[3] - a[3])) / dt
    if relay:
        w.out_mbps = (b[6] - a[6]) * 8 / dt / 1e6 / w.streams
    elif viewers:
        w.out_mbps = min((y - x) * 8 / dt / 1e6 for x, y in zip(a[5], b[5], strict=True))
    if any(v.done.done() for v in viewers):
        ended = sum(v.done.done() for v in viewers)
        w.error = w.error or f"{ended} viewers were disconnected"


async def _relayed(client: httpx.AsyncClient) -> int:
    """Streams the county is sending to the city now (``/api/upstreams``)."""
    return int((await client.get("/api/upstreams")).json()[0]["streams"])


async def _end_relays(ctx: _Run) -> None:
    """DELETE the city's streams (it BYEs the county, whose senders stop); the county keeps
    its own streams (``IDLE_CLOSE``)."""
    city = ctx.clients[1]
    for s in (await city.get("/api/streams")).json():
        if s.get("state") != "closed":
            await city.delete(f"/api/streams/{s['stream_id']}")
    deadline = Deadline.after(20.0, "county's upstream senders stopped")
    while await _relayed(ctx.clients[0]):
        deadline.check()
        await asyncio.sleep(0.1)  # polling an API state, under the phase deadline


async def run_cpu(ctx: _Run, args: argparse.Namespace) -> list[CpuWindow]:
    """Per cycle: S local viewers, then ingest only, then the same S streams relayed to the
    city (ended by DELETE at the city before the next cycle)."""
    s = len(ctx.cameras.channels)
    county, city = ctx.nodes[0], ctx.nodes[1]
    out: list[CpuWindow] = []
    for _ in range(args.cycles):
        local, base, relay = CpuWindow("local", s), CpuWindow("ingest", s), CpuWindow("relay", s)
        out += [local, base, relay]
        viewers = await _open_all(county, ctx.cameras.channels, 30.0)
        try:
            await asyncio.sleep(args.warmup)  # the start-up and GOP bursts pass
            await _window(ctx, local, args.window, viewers, relay=False)
        finally:
            for v in viewers:
                v.close()
        await asyncio.sleep(args.warmup)  # the FLV muxers go with their last consumer
        await _window(ctx, base, args.window, [], relay=False)
        viewers = await _open_all(city, ctx.cameras.channels, 30.0)
        try:
            await asyncio.sleep(args.warmup)
            if (n := await _relayed(ctx.clients[0])) != s:
                relay.error = f"the county relays {n} streams, not {s}"
            await _window(ctx, relay, args.window, viewers, relay=True)
        finally:
            for v in viewers:
                v.close()
        await _end_relays(ctx)
    return out


# ---------------------------------------------------------------- the run


async def run(args: argparse.Namespace, info: PsInfo, workdir: Path) -> _Report:
    """Start the chain and the cameras, run both phases; always stop everything."""
    from gateway.simdevice import channel_ids
    from gateway.simulate import SimulatorOptions

    report = _Report()
    nodes: list[GbgwServer] = []
    clients: list[httpx.AsyncClient] = []
    cameras: Cameras | None = None
    fleet = None
    stop = asyncio.Event()
    runners: list[asyncio.Task[None]] = []
    try:
        count = max(2, args.hops + 1)  # the CPU phase relays county -> city
        upper = None
        for i in reversed(range(count)):  # top first: a node needs its upstream's SIP port
            upper = _node(workdir, i, upper, IDLE_CLOSE if i == 0 else 5.0)
            nodes.insert(0, upper)
        clients = [httpx.AsyncClient(base_url=f"http://{n.http_address}", timeout=10.0)
                   for n in nodes]  # fmt: skip
        report.load_before = os.getloadavg()
        opts = SimulatorOptions(
            devices=1, gateway_port=nodes[0].sip_port, id_prefix=PROBE_PREFIX, channels=1,
            media=str(info.path), keepalive=30.0, local_host="127.0.0.1",
            server_id=NODES[0][1], password=PASSWORD,
        )  # fmt: skip
        send_log = SendLog()
        fleet, runners = await start_probe(opts, send_log, stop, 20.0)
        probe = channel_ids(opts.device_ids()[0], 1)[0]
        cameras = Cameras(workdir, args.streams, nodes[0].sip_port, info.path)
        ctx = _Run(nodes, clients, cameras, probe, send_log)
        deadline = Deadline.after(60.0, "channels shared up the chain")
        want = {probe, *cameras.channels}
        await _wait_channels(clients[0], opts.device_ids()[0], {probe}, deadline)
        for i in range(1, count):  # each node lists the one below as a device
            await _wait_channels(clients[i], NODES[i - 1][1], want, deadline)
        print(f"bench.cascade: latency, 0..{args.hops} hops, {args.duration:g} s", flush=True)
        report.paths, report.latency_other_cores = await run_latency(ctx, args)
        await _end_probe(ctx)
        print(f"bench.cascade: CPU, {args.streams} streams, {args.window:g} s windows", flush=True)
        report.cpu = await run_cpu(ctx, args)
        report.load_after = os.getloadavg()
        for n in nodes:
            outside = sorted(b for b in listening_addresses([n.proc.pid]) if b[1] != "127.0.0.1")
            if outside:
                raise RuntimeError(f"gbgw bound sockets outside 127.0.0.1: {outside}")
    except Exception as exc:
        traceback.print_exc()
        report.error = f"{type(exc).__name__}: {exc}"
        for n in nodes:
            print(f"--- {n.workdir.name} log tail:\n{n.tail(15)}", file=sys.stderr)
    finally:
        for c in clients:
            await c.aclose()
        if cameras is not None:
            cameras.close()
        stop.set()
        if fleet is not None:
            await stop_probe(fleet, runners)
        for n in nodes:
            n.close()
    return report


# ---------------------------------------------------------------- report


@dataclass(slots=True)
class _Report:
    paths: list[PathResult] = field(default_factory=list)
    cpu: list[CpuWindow] = field(default_factory=list)
    load_before: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    load_after: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    latency_other_cores: float = math.nan
    error: str = ""


def _f(value: float, spec: str = ".1f") -> str:
    return "-" if math.isnan(value) else format(value, spec)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]))]
    for r in rows:
        print("".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _verdict(passed: bool, busy: bool = False) -> str:
    """PASS/FAIL; ``busy``: measured while other jobs took cores (see the WARNING)."""
    return ("PASS" if passed else "FAIL") + (" (busy)" if busy else "")


def print_report(args: argparse.Namespace, info: PsInfo, rep: _Report) -> bool:
    """Both tables with targets and the notes; True when every target passed."""
    ok = not rep.error
    print()
    print(
        f"cascade latency: probe {info.width}x{info.height} H.264 {info.mbps:.2f} Mbit/s 25 fps"
        f" GOP 50, PS over UDP at the county, HTTP-FLV out; {args.duration:g} s window"
    )
    head = ("path", "frames", "p50 ms", "p99 ms", "after next p50/p99", "p99 vs 0 hops",
            "frame delta p50/p99", "per hop p99 ms", "target", "result")  # fmt: skip
    rows: list[tuple[str, ...]] = [head]
    ref = rep.paths[0] if rep.paths else None
    ref99 = percentile(ref.latency_ms, 0.99) if ref else math.nan
    for p in rep.paths:
        p50, p99 = percentile(p.latency_ms, 0.5), percentile(p.latency_ms, 0.99)
        an = f"{_f(percentile(p.after_next_ms, 0.5))}/{_f(percentile(p.after_next_ms, 0.99))}"
        frames = f"{len(p.latency_ms)}" + (f" ({p.unmatched} unmatched)" if p.unmatched else "")
        if p.hops == 0 or ref is None:
            rows.append((f"{p.node} (0 hops, ref)", frames, _f(p50), _f(p99), an, "1.00",
                         "-", "-", "reference", "-"))  # fmt: skip
            continue
        deltas = [1000 * (at - ref.arrivals[ts]) for ts, at in p.arrivals.items()
                  if ts in ref.arrivals]  # fmt: skip
        per_hop = (p99 - ref99) / p.hops
        passed = not p.error and bool(p.latency_ms) and per_hop <= TARGET_HOP_P99_MS
        ok = ok and passed
        rows.append(
            (
                f"{p.node} ({p.hops} hop{'s' if p.hops > 1 else ''})",
                frames, _f(p50), _f(p99), an,
                _f(p99 / ref99 if ref99 else math.nan, ".2f"),
                f"{_f(percentile(deltas, 0.5))}/{_f(percentile(deltas, 0.99))}",
                _f(per_hop), f"<= {TARGET_HOP_P99_MS:g} ms",
                _verdict(passed, rep.latency_other_cores > BUSY_ELSEWHERE),
            )
        )  # fmt: skip
    _rows(rows)
    print()
    n = args.streams
    print(
        f"cascade CPU at the county: {n} camera streams ({info.mbps:.2f} Mbit/s each) in;"
        f" {args.cycles} cycle{'s' if args.cycles > 1 else ''} of {args.window:g} s windows"
    )
    kinds = {k: [w for w in rep.cpu if w.what == k] for k in ("local", "ingest", "relay")}
    cycles = list(zip(kinds["local"], kinds["ingest"], kinds["relay"], strict=False))
    cost = {  # a consumer's CPU: its window minus the same cycle's ingest-only window
        "local": [1000 * (lo.per_stream - b.per_stream) for lo, b, _ in cycles],
        "ingest": [],
        "relay": [1000 * (r.per_stream - b.per_stream) for _, b, r in cycles],
    }
    split = {  # the same, user / kernel (10 ms ticks: coarse)
        k: (
            _mean([1000 * (w.user_cores - b.user_cores) / n for w, b in pairs]),
            _mean([1000 * (w.sys_cores - b.sys_cores) / n for w, b in pairs]),
        )
        for k, pairs in (
            ("local", [(lo, b) for lo, b, _ in cycles]),
            ("relay", [(r, b) for _, b, r in cycles]),
        )
    }
    local_cost = _mean(cost["local"])
    head2 = ("consumers", "county cores", "CPU ms/stream-s", "consumer ms/stream-s (range)",
             "user/sys", "vs local", "out Mbit/s/stream", "other cores", "target",
             "result")  # fmt: skip
    rows = [head2]
    labels = {"local": f"{n} local HTTP-FLV viewers (ref)", "ingest": "none (ingest only)",
              "relay": f"{n} relayed upstream (RTP/PS)"}  # fmt: skip
    for what, windows in kinds.items():
        if not windows:
            continue
        c = cost[what]
        ratio = _mean(c) / local_cost if local_cost > 0 else math.nan
        spread = f" ({_f(min(c), '.2f')}-{_f(max(c), '.2f')})" if len(c) > 1 else ""
        target, verdict = "-", "-"
        if what == "relay":
            passed = not any(w.error for w in windows) and ratio <= TARGET_RELAY_RATIO
            ok = ok and passed
            busy = any(w.other_cores > BUSY_ELSEWHERE for w in rep.cpu)
            target, verdict = f"<= {TARGET_RELAY_RATIO:g}x local", _verdict(passed, busy)
        elif what == "local":
            target = "reference"
        rows.append(
            (
                labels[what], _f(_mean([w.county_cores for w in windows]), ".3f"),
                _f(1000 * _mean([w.per_stream for w in windows]), ".2f"),
                (_f(_mean(c), ".2f") + spread) if c else "-",
                "/".join(_f(x, ".1f") for x in split[what]) if what in split and c else "-",
                _f(ratio, ".2f") if c else "-",
                _f(min(w.out_mbps for w in windows), ".2f"),
                _f(max(w.other_cores for w in windows), ".2f"), target, verdict,
            )
        )  # fmt: skip
    if len(rows) > 1:
        _rows(rows)
    if cycles:
        whole = _mean([r.per_stream for *_, r in cycles]) / _mean(
            [lo.per_stream for lo, *_ in cycles]
        )
        print(f"whole county per stream, relay/local: {whole:.2f} (ingest included)")
    _notes(args, rep)
    return ok


def _notes(args: argparse.Namespace, rep: _Report) -> None:
    b, a = rep.load_before, rep.load_after
    other = [w.other_cores for w in rep.cpu if not math.isnan(w.other_cores)]
    print(
        f"machine: {os.cpu_count()} CPUs shared by {max(2, args.hops + 1)} gbgw nodes, the"
        f" simulator and this process; loadavg 1 min {b[0]:.2f} before, {a[0]:.2f} after; cores"
        f" busy elsewhere: latency window {_f(rep.latency_other_cores, '.2f')}, CPU windows"
        f" {'/'.join(f'{o:.2f}' for o in other) or '-'}; {platform.platform()}"
    )
    notes = [
        "latency = FLV tag complete at the viewer - last RTP packet of its frame sent (both"
        " perf_counter() in this process: the probe camera and the viewers share its loop);"
        " after next = tag complete - first packet of the NEXT frame sent; frame delta = the"
        " same frame's arrival at that path minus at the county; per hop = (p99 - p99 at 0"
        " hops) / hops. A demuxer that ends a frame only at the next pack header (not at the RTP"
        " marker) holds every frame one interval (40 ms) per demux, i.e. per hop",
        "the viewers of all paths run at once on the same frames; each node above the county"
        " joins the stream the node below already has (one stream per hop)",
        "CPU: the county's threads' run time (/proc/<pid>/task/*/schedstat, ns) over each"
        " window / (streams x seconds); other cores from /proc/stat minus utime+stime of ours;"
        " a cycle is: S local viewers, none (streams kept up by media.idle_close ="
        f" {IDLE_CLOSE:g} s), S viewers at the city (the county's upstream sender: hub units ->"
        " PS mux -> RTP -> UDP), then DELETE at the city; consumer = a window minus the same"
        " cycle's ingest-only one, averaged over cycles (range = per cycle); user/sys = the same"
        " from utime/stime ticks (loopback delivery to the receiver is charged to the sender's"
        " sys time); out Mbit/s ="
        " slowest local viewer, or gbgw_upstream_bytes_total{upstream=city} / S",
    ]
    for note in notes:
        print(f"note: {note}")
    for p in rep.paths:
        if p.error:
            print(f"FAILED: {p.node} path: {p.error}")
    for w in rep.cpu:
        if w.error:
            print(f"FAILED: CPU {w.what}: {w.error}")
    busy = [f"{w.what} {w.other_cores:.2f}" for w in rep.cpu if w.other_cores > BUSY_ELSEWHERE]
    if rep.latency_other_cores > BUSY_ELSEWHERE:
        busy.insert(0, f"latency {rep.latency_other_cores:.2f}")
    if busy:
        print(
            f"WARNING: cores busy outside the measured processes (other jobs?) in windows:"
            f" {', '.join(busy)}; numbers are disturbed"
        )
    if rep.error:
        print(f"FAILED: {rep.error}")


# ---------------------------------------------------------------- main


async def _main_async(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with tempfile.TemporaryDirectory(prefix="gbgw-bench-cascade-") as tmp:
        workdir = Path(tmp)
        print("bench.cascade: encoding the test stream", flush=True)
        info = await asyncio.to_thread(build_test_ps, workdir / "test.ps", seconds=args.seconds)
        try:
            async with asyncio.timeout(args.timeout):
                rep = await run(args, info, workdir)
        except TimeoutError:
            rep = _Report(error=f"the run passed --timeout {args.timeout:g} s")
        ok = print_report(args, info, rep)
        failed = rep.error or any(p.error for p in rep.paths) or any(w.error for w in rep.cpu)
        if failed:
            return 1
        return 2 if args.strict and not ok else 0


def main(argv: list[str] | None = None) -> int:
    """Run the cascade benchmark; 1 when a phase failed (2 with --strict and a target missed)."""
    p = argparse.ArgumentParser(prog="python -m bench.cascade", description=__doc__.split("\n")[0])
    p.add_argument("--hops", type=int, choices=(0, 1, 2), default=2, help="latency paths 0..N")
    p.add_argument("--streams", type=int, default=10, help="CPU phase streams (default 10)")
    p.add_argument("--duration", type=float, default=None, help="latency window, s (30; quick 10)")
    p.add_argument("--window", type=float, default=None, help="CPU window, s (10; quick 5)")
    p.add_argument("--warmup", type=float, default=None, help="s before each window (3; quick 2)")
    p.add_argument("--cycles", type=int, default=None, help="CPU window cycles (2; quick 1)")
    p.add_argument("--quick", action="store_true", help="shorter windows, one CPU cycle")
    p.add_argument("--timeout", type=float, default=300.0, help="hard limit of the run, s")
    p.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    args = p.parse_args(argv)
    q = args.quick
    # quick keeps 10 streams: a consumer's cost grows with them, the county's background
    # (keepalives, store flushes, the /metrics scrape) does not, so fewer would only add noise
    args.duration = args.duration or (10.0 if q else 30.0)
    args.window = args.window or (5.0 if q else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if q else 3.0)
    args.cycles = args.cycles or (1 if q else 2)
    args.seconds = 4.0 if q else 10.0  # test file length (looped): 2 GOPs in quick mode
    if args.streams < 1:
        p.error("--streams must be >= 1")
    import uvloop

    try:
        return uvloop.run(_main_async(args))
    except asyncio.CancelledError:
        print("bench.cascade: cancelled", file=sys.stderr)
        return 143


if __name__ == "__main__":
    raise SystemExit(main())
