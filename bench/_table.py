"""The registrar benchmark's report: two tables, the gbgw targets, and how it was measured."""

from __future__ import annotations

import argparse
import math
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.registrar import KeepaliveResult, StormResult

__all__ = ["print_report"]

TARGET_DEVICES = 12_000
TARGET_SECONDS = 10.0  # for TARGET_DEVICES, on one core
TARGET_RATE = 3_000.0  # authenticated REGISTERs per second
TARGET_BYTES_PER_DEVICE = 4096
ONE_CORE = 1.05  # cores: a single-threaded server plus its SQLite writer thread's share
SATURATED = 0.9
BUSY_ELSEWHERE = 0.3  # cores used by neither server nor simulators before a run is suspect


KAMAILIO_AUTH = {
    "htable": "users in an htable loaded from a db_text table (N rows) at start-up,"
    " pv_www_authenticate against $sht(users=>$au)",
    "auth_db": "auth_db www_authorize over a db_text 'subscriber' table (N rows, plain"
    " password, calculate_ha1; db_text scans rows linearly per lookup)",
}


def _revision() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return rev or "(not a git checkout)"


def _kamailio_version() -> str:
    try:
        out = subprocess.run(
            ["/usr/sbin/kamailio", "-v"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return "not installed"
    first = out.splitlines()[0] if out else ""
    return first.removeprefix("version: kamailio ").split(" ")[0] or "unknown"


def _f(value: float, spec: str = ".1f") -> str:
    return "-" if math.isnan(value) else format(value, spec)


def _ratio(a: float, b: float) -> str:
    if math.isnan(b):
        return ""
    if math.isnan(a) or b == 0:
        return "-"
    return f"{a / b:.2f}"


def _sims(cores: list[float]) -> str:
    if not cores:
        return "-"
    text = "+".join(f"{c:.2f}" for c in cores)
    return text + (" SATURATED" if max(cores) >= SATURATED else "")


def _row(name: str, g: str, k: str, r: str = "") -> str:
    return f"{name:<40}{g:<18}{k:<18}{r}"


def _storm_rows(g: StormResult, k: StormResult | None) -> list[str]:
    rows = [_row("metric", "gbgw", "kamailio" if k else "", "ratio gbgw/kamailio" if k else "")]

    def line(name: str, get: Callable[[StormResult], float], spec: str) -> None:
        gv = get(g)
        kv = get(k) if k is not None else math.nan
        rows.append(_row(name, _f(gv, spec), _f(kv, spec) if k else "", _ratio(gv, kv)))

    def text(name: str, get: Callable[[StormResult], str]) -> None:
        rows.append(_row(name, get(g), get(k) if k is not None else ""))

    text("registered / failed", lambda r: f"{r.registered}/{r.failed}")
    text("online after storm (API / usrloc)", lambda r: str(r.online_after))
    line("all registered, simulator clock (s)", lambda r: r.register_s, ".2f")
    line("all registered, observed (s)", lambda r: r.observed_s, ".2f")
    line("authenticated REGISTER/s", lambda r: r.rate, ".0f")
    line("REGISTER transactions/s (2 per device)", lambda r: 2 * r.rate, ".0f")
    text("p50 / p99 latency (ms)", lambda r: f"{_f(r.p50_ms)} / {_f(r.p99_ms)}")
    line("server CPU (core-seconds)", lambda r: r.server_cpu_s, ".2f")
    line("server cores busy", lambda r: r.server_cores, ".2f")
    line("registrations per server CPU-second", lambda r: r.per_cpu_second, ".0f")
    text(
        "memory before -> after (MiB)",
        lambda r: f"{r.mem_before_kib / 1024:.1f} -> {r.mem_after_kib / 1024:.1f}",
    )
    line("RSS per 1,000 devices (KiB)", lambda r: r.kib_per_1000, ".0f")
    line("RSS per device (bytes)", lambda r: r.kib_per_1000 * 1.024, ".0f")
    if not math.isnan(g.settled_kib_per_1000):
        text("memory settled, after idle (MiB)", lambda r: f"{r.mem_settled_kib / 1024:.1f}")
        line("RSS per 1,000 devices, settled (KiB)", lambda r: r.settled_kib_per_1000, ".0f")
        line("RSS per device, settled (bytes)", lambda r: r.settled_kib_per_1000 * 1.024, ".0f")
    text("simulator cores busy (per process)", lambda r: _sims(r.sim_cores))
    text("rest of machine, cores busy", lambda r: _f(r.other_cores, ".2f"))
    text("UDP receive-buffer drops", lambda r: str(r.udp_drops))
    return rows


def _targets(g: StormResult) -> tuple[list[str], bool]:
    n = g.devices
    limit = TARGET_SECONDS * n / TARGET_DEVICES
    settled = not math.isnan(g.settled_kib_per_1000)
    per_device = (g.settled_kib_per_1000 if settled else g.kib_per_1000) * 1.024
    checks = [
        (
            f"12,000 in < 10 s on one core (N={n}: < {limit:.2f} s, <= 1 core)",
            f"{_f(g.register_s, '.2f')} s on {_f(g.server_cores, '.2f')} cores",
            g.register_s < limit and g.server_cores <= ONE_CORE,
        ),
        (
            ">= 3,000 authenticated REGISTER/s",
            f"{_f(g.rate, '.0f')}/s ({_f(2 * g.rate, '.0f')} transactions/s)",
            g.rate >= TARGET_RATE,
        ),
        (
            "<= 4 KiB RSS per device" + (" (settled)" if settled else " (right after storm)"),
            f"{_f(per_device, '.0f')} bytes/device",
            per_device <= TARGET_BYTES_PER_DEVICE,
        ),
    ]
    rows = []
    ok = True
    for what, got, passed in checks:
        passed = passed and not g.error
        ok = ok and passed
        rows.append(f"target: {what:<52} gbgw {got:<34} -> {'PASS' if passed else 'FAIL'}")
    return rows, ok


def _per_1000(r: KeepaliveResult) -> float:
    return r.server_cpu_s / r.handled * 1e6 if r.handled else math.nan


def _keepalive_rows(g: KeepaliveResult, k: KeepaliveResult | None) -> list[str]:
    rows = [_row("metric", "gbgw", "kamailio" if k else "", "ratio gbgw/kamailio" if k else "")]
    numbers: list[tuple[str, Callable[[KeepaliveResult], float], str]] = [
        ("keepalives handled/s", lambda r: r.rate, ".0f"),
        ("server CPU (core-seconds)", lambda r: r.server_cpu_s, ".2f"),
        ("server cores busy", lambda r: r.server_cores, ".2f"),
        ("server CPU per 1,000 keepalives (ms)", _per_1000, ".1f"),
    ]
    for name, get, spec in numbers:
        gv = get(g)
        kv = get(k) if k is not None else math.nan
        rows.append(_row(name, _f(gv, spec), _f(kv, spec) if k else "", _ratio(gv, kv)))

    def text(name: str, get: Callable[[KeepaliveResult], str]) -> None:
        rows.append(_row(name, get(g), get(k) if k is not None else ""))

    text("keepalive failures seen by simulators", lambda r: str(r.failures))
    text("simulator cores busy (per process)", lambda r: _sims(r.sim_cores))
    text("rest of machine, cores busy", lambda r: _f(r.other_cores, ".2f"))
    text("UDP receive-buffer drops", lambda r: str(r.udp_drops))
    text("memory after phase (MiB)", lambda r: f"{r.mem_after_kib / 1024:.1f}")
    return rows


def print_report(
    args: argparse.Namespace,
    results: list[tuple[StormResult, KeepaliveResult]],
    *,
    kamailio_children: int,
    cpus: int | None,
) -> bool:
    """Print the tables to stdout; True when every gbgw target passed."""
    (gs, gk), *rest = results
    ks, kk = rest[0] if rest else (None, None)
    sims = args.simulators
    print()
    print(f"gbgw {_revision()}; kamailio {_kamailio_version()}; {platform.platform()}")
    print(
        f"registrar storm, N={args.devices} devices, UDP, digest "
        f"({sims} simulator process{'es' if sims > 1 else ''}, {cpus} CPUs)"
    )
    for line in _storm_rows(gs, ks):
        print(line)
    rows, ok = _targets(gs)
    for line in rows:
        print(line)
    print()
    print(
        f"keepalive load, N={args.devices} devices x 1 keepalive/s "
        f"(closed loop: next keepalive 1 s after the last one's 200), {args.window:g} s window"
        " after re-registration"
    )
    for line in _keepalive_rows(gk, kk):
        print(line)
    print()
    notes = [
        "all registered, simulator clock: first REGISTER to last 200 OK, slowest simulator;"
        " rates and cores are over that time",
        "observed: simulator launch (incl. its start-up) until the server counts N successful"
        " REGISTERs (gbgw /metrics, Kamailio registrar:accepted_regs), polled every 0.1 s;"
        " gbgw counts a REGISTER when accepted, before its 200 waits for the SQLite commit",
        "rest of machine: busy CPU outside the server, the simulators and this bench (other"
        " jobs, unattributed kernel work); over 0.3 cores and the run is flagged",
        "memory: gbgw = VmRSS of its one process; kamailio = Pss summed over all its processes"
        + (
            f" (summed VmRSS after storm {ks.rss_sum_after_kib / 1024:.1f} MiB counts shared"
            " memory once per process)"
            if ks
            else ""
        ),
        "registrations per server CPU-second: N / server CPU, a capacity estimate per core"
        " that holds even when the simulator sets the pace",
        "gbgw: default config ([catalog] "
        + (
            "query_on_register and subscribe OFF: bare registrar"
            if args.no_catalog
            else "query_on_register and subscribe on: each new device also gets DeviceInfo and"
            " Catalog queries and a Catalog SUBSCRIBE, answered 200 by the simulator"
        )
        + "), JSON logs at info, SQLite in a temp dir",
        "latency: per-simulator percentiles from the simulator summary (worst one shown)",
        f"simulator SATURATED: a load-generator process at >= {SATURATED} cores, i.e. the"
        " simulator, not the server, may set the pace",
    ]
    if ks is not None:
        notes.append(
            f"kamailio: children={kamailio_children} UDP workers, usrloc db_mode=0 (memory), "
            + KAMAILIO_AUTH[args.kamailio_auth]
            + ', realm $td = 6209000000, save("location") for every REGISTER (the GB domain is'
            " not an alias: any REGISTER is local); keepalive = 200 to MESSAGE if"
            ' registered("location", "$fu"), no MANSCDP parsing'
        )
    for note in notes:
        print(f"note: {note}")
    for phase, r in (("storm", gs), ("keepalive", gk), ("storm", ks), ("keepalive", kk)):
        if r is None:
            continue
        if r.other_cores > BUSY_ELSEWHERE:
            print(
                f"WARNING: {r.server} {phase}: {r.other_cores:.2f} cores were busy outside the"
                " server and simulators (other jobs on this machine?): numbers are disturbed"
            )
        if r.error:
            print(f"FAILED: {r.server} {phase}: {r.error}")
    return ok
