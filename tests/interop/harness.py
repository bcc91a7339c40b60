"""Interop harness: a real ``gbgw serve`` subprocess on 127.0.0.1 with free ports.

Readiness is the ``ready`` event on the child's stdout (JSON logs); every later wait is for an
observable thing (a log event, an API state, a metric) under a deadline, never a sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared"
GBGW = [sys.executable, "-m", "gateway.cli"]

SERVER_ID = "62090000002000000001"
DOMAIN = "6209000000"
PASSWORD = "12345678"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        try:
            with socket.socket(socket.AF_INET, other) as s2:
                s2.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


# Notified on every line a gateway writes, so waits wake on activity, not on a timer alone.
ACTIVITY = threading.Condition()


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Re-check ``cond`` on gateway activity (or every 0.1 s) until truthy or the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        with ACTIVITY:
            ACTIVITY.wait(min(remaining, 0.1))


def require(tool: str) -> str:
    """The path of a peer tool; fail (not skip) when missing: `make test` installs it."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; run `make test` as root to install the peers")
    return path


class GatewayProcess:
    """A running ``gbgw serve`` with its log events collected from stdout."""

    def __init__(self, workdir: Path, config_text: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config_path = workdir / "gateway.toml"
        self.config_path.write_text(config_text)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self.ready: dict[str, Any] = {}

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        self.events.clear()
        self.proc = subprocess.Popen(
            [*GBGW, "serve", "-c", str(self.config_path)],
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        threading.Thread(target=self._reader, args=(self.proc,), daemon=True).start()
        self.ready = self.wait_event("ready", timeout=timeout)
        return self

    def _reader(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            try:
                ev = json.loads(line)
            except ValueError:
                ev = None
            with self._lock:
                self.raw.append(line)
                if isinstance(ev, dict):
                    self.events.append(ev)
            with ACTIVITY:
                ACTIVITY.notify_all()
        with ACTIVITY:
            ACTIVITY.notify_all()

    def find(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e
                for e in self.events
                if e.get("event") == event
                and all(str(e.get(k)) == str(v) for k, v in fields.items())
            ]

    def wait_event(self, event: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            if (
                self.proc is not None
                and self.proc.poll() is not None
                and not self.find(event, **fields)
            ):
                raise AssertionError(
                    f"gbgw exited with {self.proc.returncode} before {event}:\n"
                    + "\n".join(self.raw[-40:])
                )
            hits = self.find(event, **fields)
            return hits[-1] if hits else None

        return wait_until(check, timeout, f"log event {event} {fields}")

    @property
    def sip_port(self) -> int:
        return int(str(self.ready.get("sip_udp") or self.ready["sip_tcp"]).rsplit(":", 1)[1])

    @property
    def http_url(self) -> str:
        return f"http://{self.ready['http']}"

    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.http_url, headers=headers, timeout=10.0)

    def metric(
        self, name: str, labels: dict[str, str] | None = None, token: str | None = None
    ) -> float:
        """The value of one sample in /metrics (0.0 when absent)."""
        with self.api(token) as c:
            text = c.get("/metrics").text
        want = ""
        if labels:
            want = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key == name + want:
                return float(value)
        return 0.0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


def gateway_config(workdir: Path, **sections: dict[str, Any]) -> str:
    """A TOML config for tests: loopback, ephemeral ports, JSON logs, temp data dir."""
    base: dict[str, dict[str, Any]] = {
        "gateway": {"data_dir": str(workdir / "data")},
        "sip": {"listen": "127.0.0.1", "port": 0},
        "http": {"listen": "127.0.0.1", "port": 0},
        "log": {"format": "json", "level": "info"},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            lines.append(f"{k} = {json.dumps(v)}")
        lines.append("")
    return "\n".join(lines)


def run_sipp(
    scenario: Path,
    gw: GatewayProcess,
    *,
    transport: str = "udp",
    keys: dict[str, str] | None = None,
    extra: list[str] | None = None,
    timeout: float = 60.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one sipp call of ``scenario`` against the gateway; returns the finished process."""
    sipp = require("sipp")
    k = {
        "device_id": "34020000001320000001",
        "sip_domain": DOMAIN,
        "server_id": SERVER_ID,
        "password": PASSWORD,
        "expires": "3600",
        **(keys or {}),
    }
    args = [
        sipp,
        "-sf",
        str(scenario),
        "-m",
        "1",
        "-nostdin",
        "-p",
        str(free_port()),
        "-i",
        "127.0.0.1",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
    ]
    for name, value in k.items():
        args += ["-key", name, value]
    if transport == "tcp":
        args += ["-t", "t1"]
    args += extra or []
    args.append(f"127.0.0.1:{gw.sip_port}")
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout + 30, check=False
    )
