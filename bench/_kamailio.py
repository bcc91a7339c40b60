"""Kamailio as the reference registrar: generated config, user tables, process control.

Everything lives in the benchmark's temp dir: kamailio.cfg, the db_text tables, the runtime dir
(``-Y``), the pid file and the control socket; it listens on 127.0.0.1 UDP only (no TCP, TLS,
SCTP) and runs in the foreground (``-DD``: the creator does not daemonise) logging to stderr
(``-E``), as the invoking user (no ``-u``/``-g``).

Two ways to keep the device passwords, both a local user table loaded from files in the temp
dir (``--kamailio-auth``):

- ``htable`` (default): a db_text ``users`` table loaded at start-up into an in-memory hash
  table; ``pv_www_authenticate`` checks the digest against ``$sht(users=>$au)``. This is what
  gbgw does (an in-memory lookup), so it is the like-for-like reference.
- ``auth_db``: ``www_authorize("$td", "subscriber")`` over a db_text ``subscriber`` table.
  db_text answers each query with a linear scan of its cached rows, so its cost per REGISTER
  grows with N: at 12,000 users this measures db_text more than the registrar.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from bench._proc import Deadline, descendants, free_port, stop_process
from bench._servers import PASSWORD, SERVER_ID, ServerStats

__all__ = ["AUTH_MODES", "CHILDREN", "KamailioServer", "kamailio_config", "write_tables"]

KAMAILIO = "/usr/sbin/kamailio"
KAMCMD = "/usr/sbin/kamcmd"
DOMAIN = "6209000000"
CHILDREN = 2  # UDP worker processes on the one listen socket
AUTH_MODES = ("htable", "auth_db")

_AUTH = {
    "htable": (
        """loadmodule "htable.so"
modparam("htable", "db_url", "text://{dbdir}")
modparam("htable", "htable", "users=>size=16;dbtable=users;")""",
        """        # credentials from the in-memory user table, loaded from db_text at start-up
        if ($au == $null) {{
            www_challenge("$td", "0");
            exit;
        }}
        if ($sht(users=>$au) == $null || $au != $tU) {{
            sl_send_reply("403", "Forbidden");
            exit;
        }}
        if (!pv_www_authenticate("$td", "$sht(users=>$au)", "0")) {{
            www_challenge("$td", "0");
            exit;
        }}""",
    ),
    "auth_db": (
        """loadmodule "auth_db.so"
modparam("auth_db", "db_url", "text://{dbdir}")
modparam("auth_db", "calculate_ha1", 1)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "load_credentials", "")
modparam("auth_db", "use_domain", 0)""",
        """        if (!www_authorize("$td", "subscriber")) {{
            www_challenge("$td", "0");
            exit;
        }}""",
    ),
}


def kamailio_config(port: int, dbdir: Path, ctl: Path, auth: str = "htable") -> str:
    """A registrar-only kamailio.cfg with digest auth against a local user table."""
    modules, check = _AUTH[auth]
    modules = modules.format(dbdir=dbdir)
    check = check.format()
    return f"""#!KAMAILIO
# gbgw bench: Kamailio as a plain registrar with digest auth ({auth}); generated, temp dir
debug=1
log_stderror=yes
children={CHILDREN}
auto_aliases=no
disable_tcp=yes
disable_sctp=yes
enable_tls=no
listen=udp:127.0.0.1:{port}

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "db_text.so"
loadmodule "auth.so"
{modules}
# measurement only: RPC statistics over a unix socket in the temp dir
loadmodule "kex.so"
loadmodule "ctl.so"

modparam("ctl", "binrpc", "unix:{ctl}")
modparam("usrloc", "db_mode", 0)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    # Every REGISTER is ours: the GB domain in the Request-URI is not a local alias.
    if (method == "REGISTER") {{
{check}
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    # Keepalive stand-in: 200 to a MESSAGE from a registered device (no MANSCDP parsing).
    if (method == "MESSAGE") {{
        if (registered("location", "$fu")) {{
            sl_send_reply("200", "OK");
        }} else {{
            sl_send_reply("404", "Not Found");
        }}
        exit;
    }}
    sl_send_reply("404", "Not Found");
}}
"""


def write_tables(dbdir: Path, device_ids: list[str], password: str) -> None:
    """db_text ``version``, ``subscriber`` (auth_db) and ``users`` (htable), a row per device."""
    dbdir.mkdir(parents=True, exist_ok=True)
    (dbdir / "version").write_text(
        "id(int,auto) table_name(string) table_version(int)\n"
        "0:version:1\n0:location:9\n0:subscriber:7\n0:htable:2\n0:users:2\n"
    )
    sub = [
        "id(int,auto) username(string) domain(string) password(string) "
        "ha1(string,null) ha1b(string,null)"
    ]
    sub += [f"{i}:{d}:{DOMAIN}:{password}::" for i, d in enumerate(device_ids, start=1)]
    (dbdir / "subscriber").write_text("\n".join(sub) + "\n")
    users = [
        "id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string) expires(int)"
    ]
    users += [f"{i}:{d}:0:0:{password}:0" for i, d in enumerate(device_ids, start=1)]
    (dbdir / "users").write_text("\n".join(users) + "\n")


class KamailioServer:
    """Kamailio in the foreground (``-DD -E``), runtime dir, pid file and DB in the temp dir."""

    name = "kamailio"

    def __init__(
        self, workdir: Path, device_ids: list[str], deadline: Deadline, auth: str = "htable"
    ) -> None:
        for tool in (KAMAILIO, KAMCMD):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} missing: `make bench` installs the kamailio package")
        self.workdir = workdir
        run = workdir / "run"
        run.mkdir(parents=True, exist_ok=True)
        dbdir = workdir / "db"
        write_tables(dbdir, device_ids, PASSWORD)
        self.ctl = run / "kamailio_ctl"
        self.sip_port = free_port()
        cfg = workdir / "kamailio.cfg"
        cfg.write_text(kamailio_config(self.sip_port, dbdir, self.ctl, auth))
        self.log_path = workdir / "kamailio.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    KAMAILIO,
                    "-f", str(cfg),
                    "-DD", "-E",
                    "-Y", str(run),
                    "-P", str(run / "kamailio.pid"),
                    "-w", str(workdir),
                    "-m", "256",
                    "-M", "16",
                ],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._pids: list[int] = []
        try:
            self._wait_ready(deadline)
        except BaseException:
            self.close()
            raise
        self._pids = descendants(self.proc.pid)

    def _wait_ready(self, deadline: Deadline) -> None:
        """Ready = a SIP reply on the UDP port, then an RPC answer on the control socket."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            probe = (
                f"OPTIONS sip:{SERVER_ID}@{DOMAIN} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{s.getsockname()[1]};branch=z9hG4bKbenchprobe\r\n"
                "From: <sip:bench@127.0.0.1>;tag=probe\r\nTo: <sip:bench@127.0.0.1>\r\n"
                "Call-ID: bench-probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"kamailio exited:\n{self._log_tail()}")
                deadline.check()
                s.settimeout(min(0.2, deadline.remaining() + 0.01))
                s.sendto(probe, ("127.0.0.1", self.sip_port))
                try:
                    if s.recv(65535).startswith(b"SIP/2.0 "):
                        break
                except TimeoutError:
                    continue
        while True:
            deadline.check()
            try:
                self.stats()
                return
            except RuntimeError:
                # the ctl socket is not up yet: retry soon, or give up if kamailio exited
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(0.05)
                if self.proc.poll() is not None:
                    raise

    def _log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def _rpc(self, *args: str) -> str:
        out = subprocess.run(
            [KAMCMD, "-s", f"unix:{self.ctl}", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"kamcmd {' '.join(args)}: {out.stderr.strip() or out.stdout}")
        return out.stdout

    def pids(self) -> list[int]:
        """The main process and all its children (workers, timers, ctl)."""
        return self._pids

    def stats(self) -> ServerStats:
        """usrloc, registrar and core counters via ``stats.get_statistics``."""
        values: dict[str, int] = {}
        for line in self._rpc("stats.get_statistics", "all").splitlines():
            key, eq, value = line.partition(" = ")
            if eq:
                values[key.strip()] = int(value.strip())
        return ServerStats(
            online=values.get("usrloc:registered_users", 0),
            registrations_ok=values.get("registrar:accepted_regs", 0),
            keepalives=values.get("core:rcv_requests_message", 0),
        )

    def online_via_api(self) -> int:
        """Registered users according to usrloc."""
        return self.stats().online

    def close(self) -> None:
        """SIGTERM the main process (it stops its children); SIGKILL leftovers by pid."""
        stop_process(self.proc, timeout=10.0)
        for pid in self._pids[1:]:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            try:
                # a recorded child still running kamailio (not a reused pid): ours, kill it
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if cmd.startswith(KAMAILIO.encode()) or cmd.startswith(b"kamailio"):
                os.kill(pid, signal.SIGKILL)
