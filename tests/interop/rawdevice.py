"""A scriptable test device over a raw UDP socket: it writes exact bytes on the wire.

For faults no well-behaved peer produces (wrong SumNum, a malformed fragment in the middle of
a catalog, 1,000 fragments): the test decides every byte. It registers without a challenge,
so the gateway under test runs with an empty ``sip.password``.
"""

from __future__ import annotations

import secrets
import socket
import time

from sip.message import Request, Response, make_response, parse_message

SERVER_ID = "62090000002000000001"
DOMAIN = "6209000000"


class RawDevice:
    """One device on its own UDP socket."""

    def __init__(self, gateway_port: int, device_id: str) -> None:
        self.port = gateway_port
        self.device_id = device_id
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.local = self.sock.getsockname()
        self.cseq = 0
        self.backlog: list[Request] = []

    def close(self) -> None:
        self.sock.close()

    def _headers(self, method: str, to_user: str, call_id: str | None = None) -> str:
        self.cseq += 1
        return (
            f"Via: SIP/2.0/UDP {self.local[0]}:{self.local[1]};rport;"
            f"branch=z9hG4bK{secrets.token_hex(6)}\r\n"
            f"From: <sip:{self.device_id}@{DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{to_user}@{DOMAIN}>\r\n"
            f"Call-ID: {call_id or secrets.token_hex(8)}@{self.local[0]}\r\n"
            f"CSeq: {self.cseq} {method}\r\nMax-Forwards: 70\r\n"
        )

    def _send_wait(self, data: bytes, timeout: float = 5.0) -> Response:
        self.sock.sendto(data, ("127.0.0.1", self.port))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                raw, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            msg = parse_message(raw)
            if isinstance(msg, Request):
                # a request from the gateway while we wait: answer it at once, as devices do
                self.sock.sendto(make_response(msg, 200, to_tag="d1").serialize(), addr)
                self.backlog.append(msg)
                continue
            if msg.status >= 200:
                return msg
        raise AssertionError("no final response from the gateway")

    def register(self, expires: int = 3600) -> Response:
        head = (
            f"REGISTER sip:{SERVER_ID}@{DOMAIN} SIP/2.0\r\n"
            + self._headers("REGISTER", self.device_id)
            + f"Contact: <sip:{self.device_id}@{self.local[0]}:{self.local[1]}>\r\n"
            + f"Expires: {expires}\r\nContent-Length: 0\r\n\r\n"
        )
        return self._send_wait(head.encode())

    def message(self, body: bytes) -> Response:
        head = (
            f"MESSAGE sip:{SERVER_ID}@{DOMAIN} SIP/2.0\r\n"
            + self._headers("MESSAGE", SERVER_ID)
            + f"Content-Type: Application/MANSCDP+xml\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return self._send_wait(head.encode() + body)

    def next_request(self, timeout: float = 10.0, method: str | None = None) -> Request:
        """The next request from the gateway (answered 200 at once, as devices do)."""
        deadline = time.monotonic() + timeout
        while True:
            while self.backlog:
                req = self.backlog.pop(0)
                if method is None or req.method == method:
                    return req
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no request from the gateway")
            self.sock.settimeout(left)
            try:
                raw, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            msg = parse_message(raw)
            if isinstance(msg, Request):
                self.sock.sendto(make_response(msg, 200, to_tag="d1").serialize(), addr)
                if method is None or msg.method == method:
                    return msg
