"""RTP port pool over ``media.rtp_ports`` ("30000-30999").

Rules:
1. A port handed out is never handed out again before ``release(port)``.
2. A port that cannot be bound right now (another process, a socket still closing) is skipped:
   every allocation try-binds. ``allocate_udp`` and ``allocate_tcp_listener`` return the bound
   socket itself, so nothing can take the port between the check and its use.
3. Allocation is round-robin from just past the last port handed out, so a port released a
   moment ago (late packets of the old stream still in flight) is the last one reused.

The pool is used from one event loop thread and does no I/O beyond ``bind``.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Literal

__all__ = ["NoPortAvailable", "PortKind", "PortPool"]

PortKind = Literal["udp", "tcp"]


class NoPortAvailable(RuntimeError):
    """Every port of the pool is in use or cannot be bound (the gateway answers 486)."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class PortPool:
    """Ports ``start``..``end`` (inclusive) for RTP receivers."""

    def __init__(self, start: int, end: int) -> None:
        if not 1 <= start <= end <= 0xFFFF:
            raise ValueError(f"port range {start}-{end} is not within 1..65535, low to high")
        self.start = start
        self.end = end
        self._in_use: set[int] = set()
        self._cursor = start

    @classmethod
    def parse(cls, text: str) -> PortPool:
        """A pool from ``"30000-30999"`` (inclusive) or a single ``"30000"``."""
        low, sep, high = text.strip().partition("-")
        try:
            start = int(low)
            end = int(high) if sep else start
        except ValueError:
            raise ValueError(f"port range {text!r} is not 'LOW-HIGH'") from None
        return cls(start, end)

    @property
    def size(self) -> int:
        """Number of ports in the range."""
        return self.end - self.start + 1

    @property
    def in_use(self) -> int:
        """Ports handed out and not released."""
        return len(self._in_use)

    def __contains__(self, port: object) -> bool:
        return port in self._in_use

    def __repr__(self) -> str:
        return f"PortPool({self.start}-{self.end}, in_use={self.in_use})"

    def allocate(self, kind: PortKind = "udp", host: str = "0.0.0.0") -> int:
        """A free port that ``kind`` can bind on ``host`` now (checked, then unbound)."""
        port, sock = self._take(kind, host, listen=False)
        sock.close()
        return port

    def allocate_udp(self, host: str = "0.0.0.0") -> tuple[int, socket.socket]:
        """A free port and a non-blocking UDP socket bound to it; the caller owns both."""
        return self._take("udp", host, listen=False)

    def allocate_tcp_listener(
        self, host: str = "0.0.0.0", backlog: int = 8
    ) -> tuple[int, socket.socket]:
        """A free port and a non-blocking TCP socket listening on it; the caller owns both."""
        return self._take("tcp", host, listen=True, backlog=backlog)

    def release(self, port: int) -> None:
        """Give ``port`` back. Releasing a port not handed out is a bug and raises."""
        try:
            self._in_use.remove(port)
        except KeyError:
            raise ValueError(f"port {port} was not allocated from {self!r}") from None

    def _take(
        self, kind: PortKind, host: str, *, listen: bool, backlog: int = 8
    ) -> tuple[int, socket.socket]:
        if kind != "udp" and kind != "tcp":
            raise ValueError(f"port kind must be 'udp' or 'tcp', not {kind!r}")
        size = self.size
        port = self._cursor
        for _ in range(size):
            candidate = port
            port = port + 1 if port < self.end else self.start
            if candidate in self._in_use:
                continue
            sock = _try_bind(kind, host, candidate, listen, backlog)
            if sock is None:
                continue
            self._in_use.add(candidate)
            self._cursor = port
            return candidate, sock
        raise NoPortAvailable(
            f"no {kind} port free in {self.start}-{self.end} ({self.in_use} in use)"
        )


def _try_bind(
    kind: PortKind, host: str, port: int, listen: bool, backlog: int
) -> socket.socket | None:
    """A socket bound to (host, port), or None when the port is taken."""
    sock = socket.socket(_family(host), socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    try:
        if kind == "tcp":
            # As asyncio's create_server does: a port whose old connections linger in
            # TIME_WAIT is free for a new listener. Never on UDP, where Linux would then allow
            # two sockets on one port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        return None
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return sock
