"""A hostile test camera: it registers on a raw UDP socket (``RawDevice``), answers the
gateway's INVITE with a GB SDP answer and, from the ACK on, streams the H.264 sample as RTP/PS
over UDP in real time (25 fps), every frame going through an ``Injector`` that breaks it.

Rules:
1. The camera is itself a self-registering IPC (type code 132): its ID is the channel.
2. Faults apply by frame index (counted over the whole run, across passes of the file), so a
   run is clean before ``window.start``, hostile inside ``window``, clean again after it; the
   injector counts exactly what it did, for the test to compare with the gateway's counters.
3. Two threads, both owned by the camera and joined by ``close()``: signalling (answers every
   request: INVITE with SDP, BYE ends the media, the rest 200) and media (paced sender). Pacing
   waits on the halt event, so ``close()`` or a BYE ends it at once.
4. The camera may hold its stream after ``hold_after`` frames until ``release()`` (the viewer
   got its first bytes): so the viewer joins within the first GOP whatever the load, and its
   FLV starts at frame 0. The schedule then goes on from the release, as after a stall.
"""

from __future__ import annotations

import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from gateway.sdp import build_answer, parse_sdp, ssrc_int
from gateway.simmedia import CLOCK_RATE, PsFile, frame_schedule
from media.ps import PsDemuxer
from media.rtp import RtpPacket, RtpPacketizer
from sip.message import Request, Response, make_response, parse_message
from tests.interop.rawdevice import RawDevice

__all__ = [
    "CAMERA_ID",
    "FPS",
    "ForeignSource",
    "GarbageBetweenPacks",
    "HostileCamera",
    "Injector",
    "RandomLoss",
    "TruncatePFrames",
    "WrongSsrc",
    "keyframe_flags",
]

CAMERA_ID = "62090000001320000001"
FPS = 25
MEDIA = "media"
FOREIGN = "foreign"
_WAKE = b"\x00wake"  # a datagram the camera sends itself to end its signalling thread
HOLD_TIMEOUT = 30.0
"""Seconds a held camera waits for ``release()`` before it gives up (an error)."""


def keyframe_flags(ps: PsFile) -> tuple[bool, ...]:
    """Whether each frame of ``ps`` holds a video keyframe (each frame demuxed on its own)."""
    flags = []
    for frame in ps.frames:
        demux = PsDemuxer()
        demux.feed(frame.data)
        demux.flush()
        flags.append(any(u.kind == "video" and u.keyframe for u in demux.pop_units()))
    return tuple(flags)


class Injector:
    """Turns one frame into datagrams; the base class breaks nothing.

    ``ps()`` may rewrite a frame's PS bytes before packetization, ``rtp()`` returns the
    datagrams for the frame's packets as ``(socket, bytes)`` with socket ``media`` or
    ``foreign``. ``injected`` counts the faults made (what one is depends on the subclass).
    """

    def __init__(self, window: range = range(0)) -> None:
        self.window = window
        self.injected = 0

    def ps(self, index: int, data: bytes, keyframe: bool) -> bytes:
        """PS bytes to send for frame ``index``."""
        return data

    def rtp(self, index: int, packets: list[RtpPacket]) -> list[tuple[str, bytes]]:
        """Datagrams to send for frame ``index``, in order."""
        return [(MEDIA, p.serialize()) for p in packets]


class TruncatePFrames(Injector):
    """Every ``every``-th P-frame in the window loses the second half of its PS bytes."""

    def __init__(self, window: range, every: int = 4) -> None:
        super().__init__(window)
        self.every = every

    def ps(self, index: int, data: bytes, keyframe: bool) -> bytes:
        if index in self.window and not keyframe and index % self.every == 0:
            self.injected += 1
            return data[: len(data) // 2]
        return data


class GarbageBetweenPacks(Injector):
    """Every ``every``-th frame in the window is preceded by 1..300 random bytes (none 0x00 or
    0x01, so no start code can form with the bytes around them): one garbage run each."""

    def __init__(self, window: range, every: int = 5, seed: int = 28181) -> None:
        super().__init__(window)
        self.every = every
        self.rng = random.Random(seed)
        self.garbage_bytes = 0

    def ps(self, index: int, data: bytes, keyframe: bool) -> bytes:
        if index in self.window and index % self.every == 0:
            junk = bytes(self.rng.randrange(2, 256) for _ in range(self.rng.randrange(1, 301)))
            self.injected += 1
            self.garbage_bytes += len(junk)
            return junk + data
        return data


class RandomLoss(Injector):
    """Each packet in the window is dropped with probability ``rate`` (seeded); ``injected``
    counts the packets dropped, ``gaps`` the runs of consecutive drops."""

    def __init__(self, window: range, rate: float = 0.05, seed: int = 28181) -> None:
        super().__init__(window)
        self.rate = rate
        self.rng = random.Random(seed)
        self.offered = 0
        self.gaps = 0
        self._dropping = False

    def rtp(self, index: int, packets: list[RtpPacket]) -> list[tuple[str, bytes]]:
        if index not in self.window:
            return super().rtp(index, packets)
        out = []
        for p in packets:
            self.offered += 1
            drop = self.rng.random() < self.rate
            self.gaps += drop and not self._dropping
            self._dropping = drop
            if drop:
                self.injected += 1
            else:
                out.append((MEDIA, p.serialize()))
        return out


class WrongSsrc(Injector):
    """Frames in the window go out with another SSRC (sequence numbers run on): a camera that
    switches SSRC for a while. ``injected`` counts the packets sent with it."""

    def __init__(self, window: range, ssrc: int = 0x0BADF00D) -> None:
        super().__init__(window)
        self.ssrc = ssrc

    def rtp(self, index: int, packets: list[RtpPacket]) -> list[tuple[str, bytes]]:
        if index not in self.window:
            return super().rtp(index, packets)
        self.injected += len(packets)
        return [(MEDIA, replace(p, ssrc=self.ssrc).serialize()) for p in packets]


class ForeignSource(Injector):
    """For each frame in the window, a forged copy of its first packet (same SSRC, sequence
    number and timestamp, random payload) goes out first from a second socket: if the gateway
    took it, the real packet would be a duplicate and the junk would reach the demuxer."""

    def __init__(self, window: range, seed: int = 28181) -> None:
        super().__init__(window)
        self.rng = random.Random(seed)

    def rtp(self, index: int, packets: list[RtpPacket]) -> list[tuple[str, bytes]]:
        out = super().rtp(index, packets)
        if index in self.window and packets:
            junk = bytes(self.rng.randrange(2, 256) for _ in range(len(packets[0].payload)))
            out.insert(0, (FOREIGN, replace(packets[0], payload=junk).serialize()))
            self.injected += 1
        return out


class HostileCamera:
    """A self-registering camera whose media goes through ``injector``; use as a context
    manager (``close()`` joins its threads and closes its sockets)."""

    def __init__(
        self, gateway_port: int, ps: PsFile, injector: Injector, *, hold_after: int | None = None
    ) -> None:
        self.device = RawDevice(gateway_port, CAMERA_ID)
        self.gateway = ("127.0.0.1", gateway_port)
        self.ps = ps
        self.keyframes = keyframe_flags(ps)
        self.injector = injector
        self.hold_after = hold_after
        self.media_sock = self._udp()
        self.foreign_sock = self._udp()
        self.media_port = self.media_sock.getsockname()[1]
        self.frames_sent = 0
        """Frames handed to the injector so far (the run's clock, in frames)."""
        self.datagrams = {MEDIA: 0, FOREIGN: 0}
        self.ssrc: int | None = None
        """The offer's ``y=`` as an RTP SSRC, once the INVITE came."""
        self.invites: list[Request] = []
        self.acked = threading.Event()
        self.bye = threading.Event()
        self.error: BaseException | None = None
        self.peer: tuple[str, int] = ("", 0)
        """Where RTP goes: the offer's ``c=``/``m=``."""
        self._closing = threading.Event()  # close(): both threads end
        self._halt = threading.Event()  # BYE or close(): the media ends
        self._go = threading.Event()  # ACK (or halt): the media starts
        self._released = threading.Event()  # release() (or halt): a held stream goes on
        self._answers: dict[str, Response] = {}  # by Call-ID: a retransmitted INVITE gets it again
        self._threads = [
            threading.Thread(target=self._guard, args=(self._signalling,), name="cam-sip"),
            threading.Thread(target=self._guard, args=(self._media,), name="cam-media"),
        ]

    @staticmethod
    def _udp() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        return sock

    def __enter__(self) -> HostileCamera:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register(self) -> Response:
        """REGISTER (no digest: the gateway runs with an empty password), then start serving."""
        resp = self.device.register()
        for t in self._threads:
            t.start()
        return resp

    def release(self) -> None:
        """Let a stream held at ``hold_after`` frames go on (rule 4)."""
        self._released.set()

    def send_bye(self) -> None:
        """The camera ends the call itself (RFC 3261 §15.1.1): BYE in the INVITE's dialog."""
        invite = self.invites[-1]
        ok = self._answers[invite.call_id]
        local = self.device.local
        target = invite.contact[0].uri if invite.contact else invite.from_.uri
        bye = (
            f"BYE {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local[0]}:{local[1]};rport;branch=z9hG4bK{secrets.token_hex(6)}\r\n"
            f"From: {ok.to}\r\nTo: {invite.from_}\r\nCall-ID: {invite.call_id}\r\n"
            "CSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        self._halt.set()
        self.device.sock.sendto(bye.encode(), self.gateway)

    def close(self) -> None:
        """Stop both threads, wait for them, close every socket; idempotent."""
        self._closing.set()
        self._halt.set()
        self._go.set()
        self._released.set()
        sock = self.device.sock
        if sock.fileno() >= 0:
            sock.sendto(_WAKE, sock.getsockname())
        for t in self._threads:
            if t.is_alive():
                t.join(10)
        alive = [t.name for t in self._threads if t.is_alive()]
        self.device.close()
        self.media_sock.close()
        self.foreign_sock.close()
        if alive:
            raise AssertionError(f"camera threads did not end: {alive}")

    # -- threads

    def _guard(self, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # reported to the test, which asserts error is None
            self.error = exc
            self._halt.set()
            self._go.set()
            self._released.set()

    def _signalling(self) -> None:
        sock = self.device.sock
        sock.settimeout(None)
        for req in self.device.backlog:  # requests that came while REGISTER was in flight
            self._answer(req, self.gateway)
        self.device.backlog.clear()
        while not self._closing.is_set():
            raw, addr = sock.recvfrom(65535)
            if raw == _WAKE:
                continue
            msg = parse_message(raw)
            if isinstance(msg, Request):
                self._answer(msg, addr)

    def _answer(self, req: Request, addr: tuple[str, int]) -> None:
        sock = self.device.sock
        if req.method == "ACK":
            if req.call_id in self._answers:
                self.acked.set()
                self._go.set()
            return
        if req.method == "INVITE":
            resp = self._answers.get(req.call_id)
            if resp is None:
                resp = self._invite(req)
            sock.sendto(resp.serialize(), addr)
            return
        if req.method == "BYE":
            self.bye.set()
            self._halt.set()
            self._released.set()
        sock.sendto(make_response(req, 200, to_tag=secrets.token_hex(4)).serialize(), addr)

    def _invite(self, req: Request) -> Response:
        offer = parse_sdp(req.body)
        answer = build_answer(offer, CAMERA_ID, "127.0.0.1", self.media_port)
        assert offer.ssrc is not None, "the gateway's offer has no y="
        self.ssrc = ssrc_int(offer.ssrc)
        self.peer = (offer.connection_address, offer.port)
        self.invites.append(req)
        local = self.device.local
        resp = make_response(
            req,
            200,
            to_tag=secrets.token_hex(4),
            headers=(
                ("Contact", f"<sip:{CAMERA_ID}@{local[0]}:{local[1]}>"),
                ("Content-Type", "application/sdp"),
            ),
            body=answer.serialize(),
        )
        self._answers[req.call_id] = resp
        return resp

    def _media(self) -> None:
        self._go.wait()  # no INVITE comes until a viewer asks: wait as long as that takes
        if self._halt.is_set():
            return
        assert self.ssrc is not None
        rng = random.Random(self.ssrc)
        packetizer = RtpPacketizer(self.ssrc, payload_type=96, max_payload=1400, rng=rng)
        ts_base = rng.randrange(1 << 32)
        socks = {MEDIA: self.media_sock, FOREIGN: self.foreign_sock}
        nframes = len(self.ps.frames)
        t0 = time.monotonic()
        for index, (_, clock, data) in enumerate(frame_schedule(self.ps)):
            if index == self.hold_after:
                if not self._released.wait(HOLD_TIMEOUT):
                    raise AssertionError(f"not released within {HOLD_TIMEOUT} s (rule 4)")
                t0 = time.monotonic() - clock / CLOCK_RATE
            # Real-time pacing: the wait is on the halt event, so a BYE or close() ends it.
            if self._halt.wait(max(0.0, t0 + clock / CLOCK_RATE - time.monotonic())):
                return
            data = self.injector.ps(index, data, self.keyframes[index % nframes])
            packets = packetizer.packetize(data, ts_base + clock)
            for which, datagram in self.injector.rtp(index, packets):
                socks[which].sendto(datagram, self.peer)
                self.datagrams[which] += 1
            self.frames_sent = index + 1
