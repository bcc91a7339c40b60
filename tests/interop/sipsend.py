"""A tiny raw SIP sender for hostile-input tests (our own; stdlib only)."""

from __future__ import annotations

import secrets
import select
import socket
import time


def fill(raw: bytes, transport: str, local: tuple[str, int]) -> bytes:
    """Fill the placeholders of a raw message file for one send."""
    rnd = secrets.token_hex(6).encode()
    for k, v in {
        b"{{transport}}": transport.upper().encode(),
        b"{{local}}": f"{local[0]}:{local[1]}".encode(),
        b"{{branch}}": b"z9hG4bK" + rnd,
        b"{{tag}}": b"t" + rnd,
        b"{{call_id}}": b"bad-" + rnd + b"@" + local[0].encode(),
    }.items():
        raw = raw.replace(k, v)
    return raw


def send_udp(raw: bytes, port: int, timeout: float = 1.0) -> bytes | None:
    """Send one datagram; the first final response (or None)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        data = fill(raw, "udp", s.getsockname())
        if len(data) > 65507:
            return None
        s.send(data)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            r, _, _ = select.select([s], [], [], left)
            if not r:
                return None
            resp = s.recv(65535)
            if not resp.startswith(b"SIP/2.0 1"):
                return resp
        return None


def send_tcp(raw: bytes, port: int, timeout: float = 1.0) -> tuple[bytes | None, bool]:
    """Send over a fresh TCP connection; (first final response or None, connection closed?)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(fill(raw, "tcp", s.getsockname()))
        buf = b""
        closed = False
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            r, _, _ = select.select([s], [], [], left)
            if not r:
                break
            try:
                chunk = s.recv(65535)
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            buf += chunk
            if b"\r\n\r\n" in buf and not buf.startswith(b"SIP/2.0 1"):
                break
        return (buf or None), closed


def options(port: int, transport: str = "udp") -> bytes | None:
    """A well-formed OPTIONS; the response (liveness probe)."""
    raw = (
        b"OPTIONS sip:62090000002000000001@6209000000 SIP/2.0\r\n"
        b"Via: SIP/2.0/{{transport}} {{local}};rport;branch={{branch}}\r\n"
        b"From: <sip:34020000001320000009@6209000000>;tag={{tag}}\r\n"
        b"To: <sip:62090000002000000001@6209000000>\r\n"
        b"Call-ID: {{call_id}}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    if transport == "udp":
        return send_udp(raw, port)
    return send_tcp(raw, port)[0]
