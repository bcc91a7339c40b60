"""Process plumbing for benchmarks: deadlines, free ports, /proc accounting, clean-up.

Linux only: CPU time comes from ``/proc/<pid>/stat`` (utime + stime, all threads; or, at ns
resolution, the live threads' ``/proc/<pid>/task/*/schedstat``), memory from
``/proc/<pid>/status`` (VmRSS) and ``/proc/<pid>/smaps_rollup`` (Pss, which splits shared
pages among the processes mapping them, so summing it over a multi-process server such as
Kamailio does not count its shared memory once per child).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Deadline",
    "PhaseTimeout",
    "cpu_seconds",
    "descendants",
    "free_port",
    "listening_addresses",
    "machine_busy_seconds",
    "pss_kib",
    "rss_kib",
    "stop_process",
    "thread_cpu_seconds",
    "udp_receive_errors",
    "user_system_seconds",
    "wait_for_exit",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


class PhaseTimeout(Exception):
    """A benchmark phase passed its hard deadline."""


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute ``time.monotonic()`` deadline for one phase."""

    at: float
    what: str

    @classmethod
    def after(cls, seconds: float, what: str) -> Deadline:
        """A deadline ``seconds`` from now."""
        return cls(time.monotonic() + seconds, what)

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.at - time.monotonic())

    def check(self) -> None:
        """Raise ``PhaseTimeout`` once the deadline has passed."""
        if time.monotonic() >= self.at:
            raise PhaseTimeout(f"deadline passed: {self.what}")


def free_port() -> int:
    """A port number free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                    tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may contain spaces and parentheses: the fields start after the last ')'
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (exited ones count 0)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def user_system_seconds(pids: Iterable[int]) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by ``pids``: ``cpu_seconds`` split in two."""
    user = system = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            user += int(fields[11])
            system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def thread_cpu_seconds(pid: int) -> float:
    """CPU seconds the live threads of ``pid`` have run (``/proc/<pid>/task/*/schedstat``, ns
    resolution, where ``cpu_seconds`` counts 10 ms ticks); a thread that exited takes its time
    with it, so use it over windows in which threads persist. NaN if the process is gone."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")
    for tid in tasks:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    return total / 1e9


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs together spent not idle since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def udp_receive_errors() -> int:
    """Datagrams this network namespace dropped for a full socket receive buffer."""
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    udp = [r for r in rows if r and r[0] == "Udp:"]
    header, values = udp[0], udp[1]
    return int(values[header.index("RcvbufErrors")])


def _status_kib(pid: int, key: str, name: str) -> int:
    try:
        text = Path(f"/proc/{pid}/{name}").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def rss_kib(pids: Iterable[int]) -> int:
    """Summed VmRSS of ``pids`` in KiB (shared pages counted once per process)."""
    return sum(_status_kib(pid, "VmRSS:", "status") for pid in pids)


def pss_kib(pids: Iterable[int]) -> int:
    """Summed proportional set size of ``pids`` in KiB (shared pages split among sharers)."""
    return sum(_status_kib(pid, "Pss:", "smaps_rollup") for pid in pids)


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it, parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out = [pid]
    for p in out:
        out.extend(children.get(p, []))
    return out


def _socket_inodes(pids: Iterable[int]) -> set[str]:
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, PermissionError, ProcessLookupError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(FileNotFoundError, OSError):
                    target = os.readlink(fd.path)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    return inodes


def _hex_ip(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening_addresses(pids: Iterable[int]) -> set[tuple[str, str, int]]:
    """(proto, ip, port) of every bound UDP socket and listening TCP socket of ``pids``."""
    inodes = _socket_inodes(pids)
    found: set[tuple[str, str, int]] = set()
    for proto in ("udp", "udp6", "tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
            for line in lines:
                cols = line.split()
                local, state, inode = cols[1], cols[3], cols[9]
                if inode not in inodes or (proto.startswith("tcp") and state != "0A"):
                    continue
                ip, port = local.split(":")
                found.add((proto.rstrip("6"), _hex_ip(ip), int(port, 16)))
    return found


def wait_for_exit(pidfds: Iterable[int], timeout: float) -> None:
    """Return when one of the processes behind ``pidfds`` exits, or after ``timeout`` s."""
    fds = list(pidfds)
    if fds:
        select.select(fds, [], [], max(0.0, timeout))
    else:
        select.select([], [], [], max(0.0, timeout))


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)
    return proc.returncode
