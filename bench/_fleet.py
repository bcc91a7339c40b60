"""``gbgw simulate`` processes as the load generator, with their CPU accounted.

Each simulator is its own process with its own 13-digit ID prefix, so several can run at once
without ID clashes. Its CPU is read from /proc while it runs and from ``wait4`` rusage when it
exits (the benchmark reaps it itself, so the final figure is exact).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench._proc import cpu_seconds
from gateway.simulate import SimulatorOptions

__all__ = ["PREFIXES", "Simulator", "fleet_ids", "split"]

ROOT = Path(__file__).resolve().parents[1]
# distinct 13-digit prefixes (center code 6209000000 + industry 00 + type 13x): distinct IDs
PREFIXES = ("6209000000132", "6209000000131", "6209000000133", "6209000000134")


def split(total: int, parts: int) -> list[int]:
    """``total`` devices over ``parts`` simulators, the remainder on the first ones."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def fleet_ids(prefixes: list[str], per_prefix: int) -> list[str]:
    """The device IDs ``gbgw simulate --id-prefix P --devices per_prefix`` uses, per prefix."""
    ids: list[str] = []
    for prefix in prefixes:
        ids += SimulatorOptions(devices=per_prefix, id_prefix=prefix).device_ids()
    return ids


class Simulator:
    """One ``gbgw simulate`` subprocess; stdout/stderr go to files in the work dir."""

    def __init__(
        self,
        workdir: Path,
        tag: str,
        prefix: str,
        devices: int,
        port: int,
        password: str,
        *,
        keepalive: float,
        duration: float,
    ) -> None:
        self.devices = devices
        self.out_path = workdir / f"sim-{tag}-{prefix}.out"
        self.err_path = workdir / f"sim-{tag}-{prefix}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "gateway.cli", "simulate",
                    "--devices", str(devices),
                    "--gateway", f"127.0.0.1:{port}",
                    "--password", password,
                    "--transport", "udp",
                    "--keepalive", str(keepalive),
                    "--duration", str(duration),
                    "--id-prefix", prefix,
                    "--local-host", "127.0.0.1",
                ],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )  # fmt: skip
        self.pidfd: int | None = os.pidfd_open(self.proc.pid)
        self.cpu_total: float | None = None

    @property
    def exited(self) -> bool:
        """Whether the process has been reaped."""
        return self.cpu_total is not None

    def poll(self) -> bool:
        """Reap the process if it has exited (keeping its rusage); True once reaped."""
        if self.cpu_total is not None:
            return True
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return False
        self._reaped(status, usage.ru_utime + usage.ru_stime)
        return True

    def _reaped(self, status: int, cpu: float) -> None:
        # Popen must not wait for a pid we reaped ourselves: hand it the exit code
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_total = cpu
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def cpu(self) -> float:
        """CPU seconds used so far (exact once exited)."""
        if self.cpu_total is not None:
            return self.cpu_total
        return cpu_seconds([self.proc.pid])

    def terminate(self) -> None:
        """Ask the simulator to stop (it prints its summary on SIGTERM)."""
        if self.cpu_total is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL and reap, if still running."""
        if self.cpu_total is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        _, status, usage = os.wait4(self.proc.pid, 0)
        self._reaped(status, usage.ru_utime + usage.ru_stime)

    def summary(self) -> dict[str, Any] | None:
        """The JSON summary line, when the simulator finished normally."""
        lines = self.out_path.read_text(errors="replace").strip().splitlines()
        if not lines:
            return None
        try:
            data = json.loads(lines[-1])
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def stderr_tail(self, lines: int = 5) -> str:
        """The last progress or error lines."""
        return "\n".join(self.err_path.read_text(errors="replace").splitlines()[-lines:])
