"""Registrar benchmark: a REGISTER storm and a keepalive load, gbgw against Kamailio.

``python -m bench.registrar [--devices 12000] [--quick]``

For each server (``gbgw serve``, then Kamailio as a reference registrar, both on 127.0.0.1 in a
temp dir) the same ``gbgw simulate`` fleet is pointed at it over UDP:

1. storm: N devices register with digest (challenge + authenticated REGISTER each) and the
   simulators exit. Measured: the simulators' own clock from first REGISTER to last 200
   (``register_seconds``) and the time from launch until the server counts N successful
   registrations, their p50/p99 latency, the server's CPU (``/proc`` utime+stime over the
   storm) and its memory before and after.
2. keepalive: the fleet registers again, then every device sends a keepalive MESSAGE each
   second; over a fixed window after re-registration the server's handled keepalives/s and
   CPU are measured.

The server is polled (gbgw ``/metrics``, Kamailio RPC statistics) every ``POLL`` seconds, or
sooner when a simulator exits; every wait has a deadline, after which processes are killed and
the phase is reported as failed. The load generator is Python too: its CPU is measured and a
simulator process that keeps a core busy is flagged in the table.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench._fleet import PREFIXES, Simulator, fleet_ids, split
from bench._kamailio import AUTH_MODES, CHILDREN, KamailioServer
from bench._proc import (
    Deadline,
    PhaseTimeout,
    cpu_seconds,
    machine_busy_seconds,
    pss_kib,
    rss_kib,
    udp_receive_errors,
    wait_for_exit,
)
from bench._servers import PASSWORD, GbgwServer, Server, ServerStats, check_loopback
from bench._table import print_report

__all__ = ["KeepaliveResult", "StormResult", "main"]

POLL = 0.1  # seconds between server polls while waiting


@dataclass(slots=True)
class Sample:
    """One poll: when, the server's counters and CPU, each simulator's CPU."""

    at: float
    stats: ServerStats
    server_cpu: float
    sim_cpu: list[float]
    machine_cpu: float  # all CPUs, busy seconds since boot
    bench_cpu: float  # this process and its helpers (log reader, kamcmd), not simulators


def _others(a: Sample, b: Sample) -> float:
    """Cores busy between two samples outside the server, the simulators and the bench."""
    ours = (b.server_cpu - a.server_cpu) + sum(b.sim_cpu) - sum(a.sim_cpu)
    ours += b.bench_cpu - a.bench_cpu
    return max(0.0, (b.machine_cpu - a.machine_cpu) - ours) / max(1e-9, b.at - a.at)


def _bench_cpu(sims: list[Simulator]) -> float:
    """CPU seconds of this process plus reaped children other than the simulators."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = sum(s.cpu_total or 0.0 for s in sims)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime - reaped


@dataclass(slots=True)
class StormResult:
    """Phase 1 numbers for one server."""

    server: str
    devices: int
    simulators: int
    error: str = ""
    registered: int = 0
    failed: int = 0
    online_after: int = 0
    register_s: float = math.nan  # simulators' clock, first REGISTER to last 200 (max)
    observed_s: float = math.nan  # launch to the server counting N successful REGISTERs
    p50_ms: float = math.nan  # worst simulator's p50
    p99_ms: float = math.nan
    server_cpu_s: float = math.nan  # over the storm window
    other_cores: float = math.nan  # rest of the machine: bench poller, kernel, other jobs
    udp_drops: int = 0  # datagrams dropped on full receive buffers (whole namespace)
    sim_cores: list[float] = field(default_factory=list)  # per simulator, over the window
    mem_before_kib: int = 0  # gbgw: VmRSS; Kamailio: summed Pss of all its processes
    mem_after_kib: int = 0
    rss_sum_after_kib: int = 0  # summed VmRSS (Kamailio: counts shared memory per process)
    mem_settled_kib: int = 0  # after ``--settle`` s: transactions gone (Timer J, 32 s)

    @property
    def rate(self) -> float:
        """Authenticated REGISTERs (= registrations) per second."""
        return self.registered / self.register_s if self.registered else math.nan

    @property
    def server_cores(self) -> float:
        """Server CPU seconds per second of storm."""
        return self.server_cpu_s / self.register_s

    @property
    def per_cpu_second(self) -> float:
        """Registrations per second of server CPU."""
        return self.registered / self.server_cpu_s if self.server_cpu_s else math.nan

    @property
    def kib_per_1000(self) -> float:
        """Memory growth per 1,000 registered devices, KiB, right after the storm."""
        if not self.mem_after_kib or not self.registered:
            return math.nan
        return (self.mem_after_kib - self.mem_before_kib) * 1000 / self.registered

    @property
    def settled_kib_per_1000(self) -> float:
        """Memory growth per 1,000 devices once the storm's transactions have expired."""
        if not self.mem_settled_kib or not self.registered:
            return math.nan
        return (self.mem_settled_kib - self.mem_before_kib) * 1000 / self.registered


@dataclass(slots=True)
class KeepaliveResult:
    """Phase 2 numbers for one server."""

    server: str
    devices: int
    error: str = ""
    window_s: float = math.nan
    handled: int = 0
    server_cpu_s: float = math.nan
    sim_cores: list[float] = field(default_factory=list)
    other_cores: float = math.nan
    udp_drops: int = 0
    failures: int = 0  # keepalives the simulators saw fail (non-200 or timeout)
    mem_after_kib: int = 0

    @property
    def rate(self) -> float:
        """Keepalives handled per second by the server."""
        return self.handled / self.window_s

    @property
    def server_cores(self) -> float:
        """Server CPU seconds per second of window."""
        return self.server_cpu_s / self.window_s


def _memory(server: Server) -> int:
    pids = server.pids()
    return rss_kib(pids) if len(pids) == 1 else pss_kib(pids)


def _launch(
    server: Server, workdir: Path, tag: str, devices: int, simulators: int, **kw: float
) -> list[Simulator]:
    return [
        Simulator(workdir, tag, PREFIXES[i], count, server.sip_port, PASSWORD, **kw)
        for i, count in enumerate(split(devices, simulators))
    ]


def _sample(server: Server, sims: list[Simulator]) -> Sample:
    stats = server.stats()
    sim_cpu = [s.cpu() for s in sims]
    server_cpu = cpu_seconds(server.pids())
    machine = machine_busy_seconds()
    return Sample(time.monotonic(), stats, server_cpu, sim_cpu, machine, _bench_cpu(sims))


def _poll(
    server: Server, sims: list[Simulator], deadline: Deadline, until: Callable[[Sample], bool]
) -> Sample:
    """Sample the server until ``until`` holds; wakes early when a simulator exits."""
    while True:
        wait_for_exit([s.pidfd for s in sims if s.pidfd is not None], POLL)
        for s in sims:
            s.poll()
        sample = _sample(server, sims)
        if until(sample):
            return sample
        deadline.check()


def _cores(a: Sample, b: Sample, seconds: float) -> list[float]:
    return [(y - x) / seconds for x, y in zip(a.sim_cpu, b.sim_cpu, strict=True)]


def storm(
    server: Server,
    workdir: Path,
    devices: int,
    simulators: int,
    timeout: float,
    settle: float = 0.0,
) -> StormResult:
    """Phase 1: every device registers once; memory is read again after ``settle`` idle s.

    The fleet stays up until then, so requests the server sends to new devices (gbgw's
    catalog and device-info queries) are answered instead of retransmitted to closed ports.
    """
    res = StormResult(server.name, devices, simulators)
    deadline = Deadline.after(timeout, f"{server.name} registration storm")
    base = server.stats()
    res.mem_before_kib = _memory(server)
    drops = udp_receive_errors()
    launched = time.monotonic()
    sims = _launch(server, workdir, "storm", devices, simulators, keepalive=3600.0, duration=3600.0)
    try:
        try:
            before = _sample(server, sims)
            state: dict[str, Sample] = {"before": before}

            def done(s: Sample) -> bool:
                if s.stats.registrations_ok == base.registrations_ok:
                    state["before"] = s  # last sample with the storm not yet started
                return s.stats.registrations_ok - base.registrations_ok >= devices or all(
                    sim.exited for sim in sims
                )

            after = _poll(server, sims, deadline, done)
        except PhaseTimeout as exc:
            res.error = f"{exc} ({_progress(sims)})"
            return res
        res.mem_after_kib = _memory(server)
        res.rss_sum_after_kib = rss_kib(server.pids())
        res.udp_drops = udp_receive_errors() - drops
        complete = after.stats.registrations_ok - base.registrations_ok >= devices
        if complete and settle > 0:
            print(f"bench.registrar: {server.name} idle {settle:g} s (memory)", flush=True)
            # a measurement interval, not a synchronisation: UDP server transactions
            # linger for Timer J (64*T1 = 32 s) after the storm, then their memory is free
            time.sleep(settle)
            res.mem_settled_kib = _memory(server)
        for sim in sims:
            sim.terminate()
        with contextlib.suppress(PhaseTimeout):
            exits = Deadline.after(30.0, "storm simulators exiting")
            _poll(server, sims, exits, lambda _: all(sim.exited for sim in sims))
    finally:
        for sim in sims:
            sim.kill()
    summaries = [sim.summary() for sim in sims]
    if any(x is None for x in summaries):
        res.error = "simulator ended without a summary: " + _progress(sims)
        return res
    res.registered = sum(int(x["registered"]) for x in summaries if x)
    res.failed = sum(int(x["failed"]) for x in summaries if x)
    res.register_s = max(float(x["register_seconds"]) for x in summaries if x)
    p50 = [x["register_p50_ms"] for x in summaries if x and x["register_p50_ms"] is not None]
    p99 = [x["register_p99_ms"] for x in summaries if x and x["register_p99_ms"] is not None]
    res.p50_ms = max(p50) if p50 else math.nan
    res.p99_ms = max(p99) if p99 else math.nan
    res.online_after = server.online_via_api()
    if not complete:
        counted = after.stats.registrations_ok - base.registrations_ok
        res.error = f"server counted only {counted} of {devices} registrations"
        return res
    first = state["before"]
    res.observed_s = after.at - launched
    res.server_cpu_s = after.server_cpu - first.server_cpu
    res.sim_cores = _cores(first, after, res.register_s)
    res.other_cores = _others(first, after)
    return res


def keepalive(
    server: Server, workdir: Path, devices: int, simulators: int, window: float, timeout: float
) -> KeepaliveResult:
    """Phase 2: re-register, then measure a ``window`` of 1/s keepalives from every device."""
    res = KeepaliveResult(server.name, devices)
    deadline = Deadline.after(timeout, f"{server.name} keepalive load")
    base = server.stats()
    drops = udp_receive_errors()
    sims = _launch(
        server, workdir, "keepalive", devices, simulators, keepalive=1.0, duration=timeout
    )
    try:
        try:
            start = _poll(
                server,
                sims,
                deadline,
                lambda s: (
                    s.stats.registrations_ok - base.registrations_ok >= devices
                    or all(sim.exited for sim in sims)
                ),
            )
            if all(sim.exited for sim in sims):
                res.error = "simulators exited before the keepalive window: " + _progress(sims)
                return res
            end = _poll(server, sims, deadline, lambda s: s.at - start.at >= window)
        except PhaseTimeout as exc:
            res.error = f"{exc} ({_progress(sims)})"
            return res
        res.window_s = end.at - start.at
        res.handled = end.stats.keepalives - start.stats.keepalives
        res.server_cpu_s = end.server_cpu - start.server_cpu
        res.sim_cores = _cores(start, end, res.window_s)
        res.other_cores = _others(start, end)
        res.udp_drops = udp_receive_errors() - drops
        res.mem_after_kib = _memory(server)
        for s in sims:
            s.terminate()
        # in-flight keepalives may wait out their transaction timeout (Timer F, 32 s)
        with_summary = Deadline.after(45.0, "simulators summarising")
        with contextlib.suppress(PhaseTimeout):
            _poll(server, sims, with_summary, lambda _: all(sim.exited for sim in sims))
        res.failures = sum(int(x["keepalive_failures"]) for s in sims if (x := s.summary()))
    finally:
        for s in sims:
            s.kill()
    return res


def _progress(sims: list[Simulator]) -> str:
    return "; ".join(s.stderr_tail(1) or "(no output)" for s in sims)


def run_server(
    make: Callable[[Path, Deadline], Server],
    name: str,
    args: argparse.Namespace,
) -> tuple[StormResult, KeepaliveResult]:
    """Start one server in its own temp dir, run both phases, always stop it."""
    with tempfile.TemporaryDirectory(prefix=f"gbgw-bench-{name}-") as tmp:
        workdir = Path(tmp)
        try:
            server = make(workdir, Deadline.after(args.phase_timeout, f"{name} start"))
        except (PhaseTimeout, RuntimeError) as exc:
            err = f"{name} did not start: {exc}"
            return (
                StormResult(name, args.devices, args.simulators, error=err),
                KeepaliveResult(name, args.devices, error=err),
            )
        s = StormResult(name, args.devices, args.simulators)
        k = KeepaliveResult(name, args.devices)
        storm_done = False
        try:
            check_loopback(server)
            print(f"bench.registrar: {name} storm, {args.devices} devices", flush=True)
            s = storm(
                server, workdir, args.devices, args.simulators, args.phase_timeout, args.settle
            )
            storm_done = True
            print(f"bench.registrar: {name} keepalive load, {args.window:g} s", flush=True)
            k = keepalive(
                server, workdir, args.devices, args.simulators, args.window, args.phase_timeout
            )
        except Exception as exc:  # report, never hang or lose the other server's numbers
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"
            if storm_done:
                k.error = error
            else:
                s.error = k.error = error
        finally:
            server.close()
    return s, k


def main(argv: list[str] | None = None) -> int:
    """Run the registrar benchmark; 1 when a phase failed (2 with --strict and a target missed)."""
    p = argparse.ArgumentParser(
        prog="python -m bench.registrar", description=__doc__.split("\n")[0]
    )
    p.add_argument("--devices", type=int, default=12_000, help="fleet size (default 12000)")
    p.add_argument("--quick", action="store_true", help="2,000 devices, for a fast check")
    p.add_argument(
        "--simulators",
        type=int,
        default=1,
        choices=range(1, len(PREFIXES) + 1),
        help="simulator processes sharing the fleet (default 1)",
    )
    p.add_argument("--window", type=float, default=10.0, help="keepalive window, seconds")
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        help="idle seconds after the storm before memory is read again (default 35; quick 0)",
    )
    p.add_argument("--phase-timeout", type=float, default=120.0, help="hard limit per phase, s")
    p.add_argument(
        "--kamailio-auth",
        choices=AUTH_MODES,
        default="htable",
        help="Kamailio user table: in-memory htable (default) or auth_db over db_text",
    )
    p.add_argument(
        "--no-catalog",
        action="store_true",
        help="gbgw without [catalog] queries/SUBSCRIBE to new devices: the bare registrar",
    )
    p.add_argument("--no-kamailio", action="store_true", help="skip the Kamailio reference")
    p.add_argument("--strict", action="store_true", help="exit 2 when a gbgw target is missed")
    args = p.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every finally: block stops its simulators and servers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.devices = 2_000
    if args.settle is None:
        args.settle = 0.0 if args.quick else 35.0
    results = [
        run_server(lambda wd, dl: GbgwServer(wd, dl, catalog=not args.no_catalog), "gbgw", args)
    ]
    if not args.no_kamailio:
        # the subscriber table holds every ID any simulator of the run will use
        ids = fleet_ids(list(PREFIXES[: args.simulators]), split(args.devices, args.simulators)[0])
        results.append(
            run_server(
                lambda wd, dl: KamailioServer(wd, ids, dl, auth=args.kamailio_auth),
                "kamailio",
                args,
            )
        )
    passed = print_report(args, results, kamailio_children=CHILDREN, cpus=os.cpu_count())
    if any(s.error or k.error for s, k in results):
        return 1
    return 2 if args.strict and not passed else 0


if __name__ == "__main__":
    raise SystemExit(main())
