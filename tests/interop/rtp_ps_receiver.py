"""A small RTP/PS receiver for interop tests: what an upstream platform's media node does.

Listens on UDP or TCP (RFC 4571 2-byte length framing; passive = we listen, active = we
connect), keeps the packets of one SSRC, puts them back in sequence order within a window of
``window`` packets, writes the PS payloads to a file and reports JSON stats. It is written
independently of the gateway's receive path: only ``media.rtp.RtpPacket.parse`` is shared, and
the TCP framing is strict (a bad length prefix ends the session instead of resynchronising), so
a sender bug shows up here instead of being repaired.

Importable (``RtpPsReceiver(...).start()`` binds at once and runs in a thread; ``wait()``
returns the stats) or runnable::

    python -m tests.interop.rtp_ps_receiver out.ps udp --listen 127.0.0.1:37900 --ssrc 0620900101
    python -m tests.interop.rtp_ps_receiver out.ps tcp-passive --listen 127.0.0.1:37902
    python -m tests.interop.rtp_ps_receiver out.ps tcp-active 127.0.0.1 37010

The stats go to stdout as one JSON object; the exit status is 0 when packets arrived.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from media.rtp import RtpPacket, RtpParseError

__all__ = ["ReceiverStats", "RtpPsReceiver", "main", "parse_ssrc"]

MODES = ("udp", "tcp-passive", "tcp-active")
WINDOW = 64  # packets held while waiting for a missing sequence number
POLL = 0.1  # seconds between checks of the stop conditions
MAX_DATAGRAM = 65535


def parse_ssrc(text: str) -> int:
    """An SSRC as written in ``y=`` (decimal, leading zeros allowed) or as ``0x...`` hex."""
    value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"SSRC {text} is not 32-bit")
    return value


@dataclass
class ReceiverStats:
    """What arrived; counts are packets unless named bytes."""

    mode: str
    listen: str = ""
    peer: str = ""
    ssrc: int | None = None
    ssrc_decimal: str = ""
    packets: int = 0
    """Packets of the kept SSRC (duplicates excluded)."""
    bytes: int = 0
    """PS payload bytes written to the file."""
    frames: int = 0
    """Packets with the marker bit (one per PS frame from a GB sender)."""
    lost: int = 0
    reordered: int = 0
    duplicates: int = 0
    other_ssrc: int = 0
    """Packets dropped because their SSRC was not the expected (or first) one."""
    malformed: int = 0
    payload_types: tuple[int, ...] = ()
    stop_reason: str = ""
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class _Reorder:
    """Release payloads in sequence order (16-bit wrap), skipping gaps past the window."""

    def __init__(self, out: BinaryIO, stats: ReceiverStats, window: int) -> None:
        self.out = out
        self.st = stats
        self.window = window
        self.next_seq: int | None = None
        self.highest: int | None = None
        self.pending: dict[int, RtpPacket] = {}

    def push(self, p: RtpPacket) -> None:
        seq = p.sequence_number
        if self.next_seq is None:
            self.next_seq = seq
        ahead = (seq - self.next_seq) & 0xFFFF
        if ahead >= 0x8000:  # behind what was already released or skipped
            self.st.duplicates += 1
            return
        if seq in self.pending:
            self.st.duplicates += 1
            return
        if self.highest is not None and (seq - self.highest) & 0xFFFF >= 0x8000:
            self.st.reordered += 1  # older than a packet already received
        else:
            self.highest = seq
        self.pending[seq] = p
        self.st.packets += 1
        self._drain(force=False)

    def _drain(self, *, force: bool) -> None:
        assert self.next_seq is not None or not self.pending
        while self.pending:
            assert self.next_seq is not None
            p = self.pending.pop(self.next_seq, None)
            if p is not None:
                self._write(p)
                self.next_seq = (self.next_seq + 1) & 0xFFFF
                continue
            if not force and len(self.pending) < self.window:
                return
            oldest = min(self.pending, key=lambda s: (s - (self.next_seq or 0)) & 0xFFFF)
            self.st.lost += (oldest - self.next_seq) & 0xFFFF
            self.next_seq = oldest

    def _write(self, p: RtpPacket) -> None:
        self.out.write(p.payload)
        self.st.bytes += len(p.payload)
        if p.marker:
            self.st.frames += 1

    def finish(self) -> None:
        self._drain(force=True)


class _Stop(Exception):
    pass


class RtpPsReceiver:
    """One RTP/PS session received into ``output``; ``start()`` binds (or connects) at once."""

    def __init__(
        self,
        output: Path,
        mode: str = "udp",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssrc: int | None = None,
        idle: float = 3.0,
        first_timeout: float = 60.0,
        duration: float = 0.0,
        window: int = WINDOW,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self.output = output
        self.mode = mode
        self.host = host
        self.port = port
        self.expected_ssrc = ssrc
        self.idle = idle
        self.first_timeout = first_timeout
        self.duration = duration
        self.stats = ReceiverStats(mode=mode)
        self.first_packet = threading.Event()
        self._window = window
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._last: float | None = None
        self._types: set[int] = set()

    # -- lifecycle

    def start(self) -> RtpPsReceiver:
        """Bind the listening socket now (so its port can go in an SDP), then run in a thread."""
        if self.mode == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind((self.host, self.port))
        elif self.mode == "tcp-passive":
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.host, self.port))
            s.listen(1)
        else:
            s = None
        if s is not None:
            self.port = s.getsockname()[1]
            self.stats.listen = f"{self.host}:{self.port}"
        self._sock = s
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rtp-ps-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to finish (it writes what it has and reports ``stopped``)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> ReceiverStats:
        """Join the thread; the final stats (``stop_reason`` is empty if it is still running)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.stats

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread

    def _check(self) -> None:
        now = time.monotonic()
        if self._stop.is_set():
            raise _Stop("stopped")
        if self.duration and now - self._t0 >= self.duration:
            raise _Stop("duration")
        if self._last is None and now - self._t0 >= self.first_timeout:
            raise _Stop("no packets")
        if self._last is not None and now - self._last >= self.idle:
            raise _Stop("idle")

    def _run(self) -> None:
        st = self.stats
        with self.output.open("wb") as out:
            reorder = _Reorder(out, st, self._window)
            conn: socket.socket | None = None
            try:
                if self.mode == "udp":
                    assert self._sock is not None
                    self._udp(self._sock, reorder)
                else:
                    conn = self._connect()
                    self._tcp(conn, reorder)
            except _Stop as exc:
                st.stop_reason = str(exc)
            except OSError as exc:
                st.stop_reason = f"socket error: {exc}"
            finally:
                for s in (conn, self._sock):
                    if s is not None:
                        s.close()
                reorder.finish()
        st.payload_types = tuple(sorted(self._types))
        st.seconds = round(time.monotonic() - self._t0, 3)
        if st.ssrc is not None:
            st.ssrc_decimal = f"{st.ssrc:010d}"

    def _connect(self) -> socket.socket:
        if self.mode == "tcp-active":
            deadline = time.monotonic() + self.first_timeout
            while True:
                self._check()
                try:
                    conn = socket.create_connection((self.host, self.port), timeout=1.0)
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        raise
                    self._stop.wait(0.2)  # the sender may not be listening yet
        else:
            assert self._sock is not None
            while True:
                self._check()
                r, _, _ = select.select([self._sock], [], [], POLL)
                if r:
                    conn, _ = self._sock.accept()
                    break
        peer = conn.getpeername()
        self.stats.peer = f"{peer[0]}:{peer[1]}"
        return conn

    def _udp(self, sock: socket.socket, reorder: _Reorder) -> None:
        while True:
            self._check()
            r, _, _ = select.select([sock], [], [], POLL)
            if not r:
                continue
            data, addr = sock.recvfrom(MAX_DATAGRAM)
            if not self.stats.peer:
                self.stats.peer = f"{addr[0]}:{addr[1]}"
            self._packet(data, reorder)

    def _tcp(self, conn: socket.socket, reorder: _Reorder) -> None:
        buf = bytearray()
        while True:
            while len(buf) >= 2:
                (n,) = struct.unpack_from(">H", buf)
                if n < 12:  # RFC 4571 frame shorter than an RTP header: broken framing
                    self.stats.malformed += 1
                    raise _Stop(f"bad RFC 4571 length {n}")
                if len(buf) < 2 + n:
                    break
                self._packet(bytes(buf[2 : 2 + n]), reorder)
                del buf[: 2 + n]
            self._check()
            r, _, _ = select.select([conn], [], [], POLL)
            if not r:
                continue
            chunk = conn.recv(1 << 16)
            if not chunk:
                raise _Stop("peer closed" if not buf else "peer closed mid-frame")
            buf += chunk

    def _packet(self, data: bytes, reorder: _Reorder) -> None:
        st = self.stats
        try:
            p = RtpPacket.parse(data)
        except RtpParseError:
            st.malformed += 1
            return
        if st.ssrc is None:
            if self.expected_ssrc is not None and p.ssrc != self.expected_ssrc:
                st.other_ssrc += 1
                return
            st.ssrc = p.ssrc
        elif p.ssrc != st.ssrc:
            st.other_ssrc += 1
            return
        self._last = time.monotonic()
        self._types.add(p.payload_type)
        reorder.push(p)
        self.first_packet.set()


def main(argv: list[str] | None = None) -> int:
    """Command line: receive one session, print the stats as JSON on stdout."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("output", type=Path, help="file the reassembled PS is written to")
    ap.add_argument("mode", choices=MODES)
    ap.add_argument("host", nargs="?", default="127.0.0.1", help="tcp-active: sender host")
    ap.add_argument("port", nargs="?", type=int, default=0, help="tcp-active: sender port")
    ap.add_argument("--listen", default="127.0.0.1:0", help="udp/tcp-passive: HOST:PORT")
    ap.add_argument("--ssrc", type=parse_ssrc, help="keep only this SSRC (decimal or 0x hex)")
    ap.add_argument("--idle", type=float, default=3.0, help="stop after S s of silence")
    ap.add_argument("--first-timeout", type=float, default=60.0, help="give up after S s")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after S s (0: no limit)")
    ap.add_argument("--window", type=int, default=WINDOW, help="reorder window, packets")
    a = ap.parse_args(argv)
    if a.mode == "tcp-active":
        if not a.port:
            ap.error("tcp-active needs HOST and PORT")
        host, port = a.host, a.port
    else:
        host, _, p = a.listen.rpartition(":")
        port = int(p)
    rx = RtpPsReceiver(
        a.output,
        a.mode,
        host or "127.0.0.1",
        port,
        ssrc=a.ssrc,
        idle=a.idle,
        first_timeout=a.first_timeout,
        duration=a.duration,
        window=a.window,
    ).start()
    if rx.stats.listen:
        print(f"listening on {rx.stats.listen}", file=sys.stderr, flush=True)
    try:
        stats = rx.wait()
    except KeyboardInterrupt:
        rx.stop()
        stats = rx.wait()
    print(stats.to_json(), flush=True)
    return 0 if stats.packets else 1


if __name__ == "__main__":
    sys.exit(main())
