"""The registrars under test, each a subprocess on 127.0.0.1: ``gbgw serve`` (here) and
Kamailio (``_kamailio``).

Both expose the same small surface to the benchmark: the SIP port, the process IDs to account
CPU and memory to, and ``stats()`` (devices registered now, successful REGISTERs so far,
keepalive MESSAGEs handled so far), read from gbgw's ``/metrics`` and from Kamailio's RPC
statistics through ``kamcmd`` on a control socket in the temp dir.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench._proc import Deadline, PhaseTimeout, listening_addresses, stop_process

__all__ = ["PASSWORD", "SERVER_ID", "GbgwServer", "Server", "ServerStats", "check_loopback"]

ROOT = Path(__file__).resolve().parents[1]
SERVER_ID = "62090000002000000001"
PASSWORD = "12345678"


@dataclass(frozen=True, slots=True)
class ServerStats:
    """Counters read from a running registrar."""

    online: int
    registrations_ok: int
    keepalives: int


class Server(Protocol):
    """What the benchmark needs from a registrar under test."""

    name: str
    sip_port: int

    def pids(self) -> list[int]: ...
    def stats(self) -> ServerStats: ...
    def online_via_api(self) -> int: ...
    def close(self) -> None: ...


def check_loopback(server: Server) -> set[tuple[str, str, int]]:
    """The server's bound sockets; RuntimeError if any is not on 127.0.0.1."""
    bound = listening_addresses(server.pids())
    outside = sorted(b for b in bound if b[1] != "127.0.0.1")
    if outside or not bound:
        raise RuntimeError(f"{server.name} listens outside 127.0.0.1 (or nowhere): {outside}")
    return bound


class GbgwServer:
    """``gbgw serve`` with a temp data dir, ports 0, JSON logs, default keepalive policy."""

    name = "gbgw"

    def __init__(
        self,
        workdir: Path,
        deadline: Deadline,
        *,
        catalog: bool = True,
        extra_config: str = "",
        gateway_keys: str = "",
    ) -> None:
        """Start and wait for ``ready``; ``catalog=False`` turns off the queries and SUBSCRIBE
        a gbgw sends each newly online device, leaving the bare registrar; ``extra_config``
        is TOML appended to the config (e.g. a ``[media]`` section); ``gateway_keys`` are
        TOML lines added to its ``[gateway]`` table (e.g. ``id``, ``domain``, ``name``)."""
        self.workdir = workdir
        config = workdir / "gateway.toml"
        config.write_text(
            "[gateway]\n"
            f"data_dir = {json.dumps(str(workdir / 'data'))}\n"
            + (gateway_keys.rstrip("\n") + "\n" if gateway_keys else "")
            + '[sip]\nlisten = "127.0.0.1"\nport = 0\n'
            '[http]\nlisten = "127.0.0.1"\nport = 0\n'
            # info: the production default, and the level of the ready event we wait for
            '[log]\nformat = "json"\nlevel = "info"\n'
            + ("" if catalog else "[catalog]\nquery_on_register = false\nsubscribe = false\n")
            + extra_config
        )
        # stdout goes to a file, not a pipe: a reader that falls behind would throttle the
        # gateway's logging (every line is a write) and so the gateway itself
        self.log_path = workdir / "gbgw.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "-c", str(config)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            ready = self._wait_ready(deadline)
        except BaseException:
            self.close()
            raise
        self.sip_port = int(str(ready["sip_udp"]).rsplit(":", 1)[1])
        self.http_address = str(ready["http"])
        host, _, port = self.http_address.rpartition(":")
        self._http = http.client.HTTPConnection(host, int(port), timeout=30)

    def _wait_ready(self, deadline: Deadline) -> dict[str, object]:
        """The ``ready`` event from the log, read as it grows; woken by exit or every 50 ms."""
        offset = 0
        partial = b""
        while True:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            *lines, partial = (partial + chunk).split(b"\n")
            for line in lines:
                if b'"ready"' in line:
                    event = json.loads(line)
                    if isinstance(event, dict) and event.get("event") == "ready":
                        return event
            if self.proc.poll() is not None:
                raise PhaseTimeout(f"gbgw serve exited {self.proc.returncode}:\n{self.tail()}")
            if deadline.remaining() <= 0:
                raise PhaseTimeout(f"gbgw serve not ready ({deadline.what}):\n{self.tail()}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(min(0.05, deadline.remaining()))

    def tail(self, lines: int = 40) -> str:
        """The last lines the gateway logged."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _get(self, path: str) -> bytes:
        try:
            self._http.request("GET", path)
            resp = self._http.getresponse()
        except (http.client.HTTPException, ConnectionError):
            # uvicorn closes idle keep-alive connections (5 s): reconnect once
            self._http.close()
            self._http.request("GET", path)
            resp = self._http.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}")
        return body

    def pids(self) -> list[int]:
        """The gateway process (its threads are inside its /proc accounting)."""
        return [self.proc.pid]

    def stats(self) -> ServerStats:
        """Gauges and counters from ``/metrics``."""
        values: dict[str, float] = {}
        for line in self._get("/metrics").decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return ServerStats(
            online=int(values.get("gbgw_devices_online", 0)),
            registrations_ok=int(values.get('gbgw_registrations_total{result="ok"}', 0)),
            keepalives=int(values.get("gbgw_keepalives_total", 0)),
        )

    def online_via_api(self) -> int:
        """Length of ``/api/devices?online=true``."""
        return len(json.loads(self._get("/api/devices?online=true")))

    def close(self) -> None:
        """SIGTERM the gateway (SIGKILL after 15 s)."""
        if hasattr(self, "_http"):
            self._http.close()
        stop_process(self.proc, timeout=15.0)
