"""``gbgw simulate``: a fleet of GB/T 28181 devices for tests, demos and load.

The fleet shares one SIP endpoint (one UDP socket, or one TCP connection to the gateway), as
devices behind one NAT or one access switch would; requests from the gateway are dispatched to
the simulated device named in the Request-URI. Each device registers with digest, refreshes
before expiry, and sends keepalives; a 404 to a keepalive makes it register again.
Progress goes to stderr once a second; the summary is one JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
import time
from dataclasses import dataclass, field

from gateway.manscdp import DeviceId, Keepalive, encode
from gateway.sdp import SdpError, parse_sdp
from gateway.simdevice import DeviceProfile, answer_manscdp, channel_ids
from gateway.simmedia import MediaSession, PsFile
from sip.auth import build_authorization, parse_digest_params
from sip.endpoint import SipEndpoint
from sip.message import Request, Response, make_response
from sip.transport import Target, TransportConfig
from sip.uri import NameAddr, SipUri

__all__ = ["DeviceSim", "Fleet", "SimulatorOptions", "run_simulator"]

log = logging.getLogger("gbgw.simulate")

MAX_IN_FLIGHT = 256  # REGISTER transactions outstanding at once when unpaced


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    """What to simulate."""

    devices: int = 10
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 5060
    password: str = "12345678"
    transport: str = "udp"
    keepalive: float = 60.0
    id_prefix: str = "6209000000132"
    server_id: str = "62090000002000000001"
    domain: str = ""
    expires: int = 3600
    duration: float = 0.0
    rate: float = 0.0
    local_host: str = "127.0.0.1"
    channels: int = 4
    civil_code: str = "620902"
    per_fragment: int = 2
    media: str = ""

    def device_ids(self) -> list[str]:
        """The 20-digit IDs of the fleet: prefix + zero-padded serial."""
        width = 20 - len(self.id_prefix)
        if width < 1 or not self.id_prefix.isdigit():
            raise ValueError("--id-prefix must be 1 to 19 digits")
        if self.devices >= 10**width:
            raise ValueError(f"--id-prefix leaves room for only {10**width - 1} devices")
        return [f"{self.id_prefix}{i:0{width}d}" for i in range(1, self.devices + 1)]


@dataclass(slots=True)
class Stats:
    """Fleet counters."""

    registered: int = 0
    failed: int = 0
    keepalives: int = 0
    keepalive_failures: int = 0
    reregistered: int = 0
    requests_answered: int = 0
    streams_started: int = 0
    streams_ended: int = 0
    latencies: list[float] = field(default_factory=list)


class DeviceSim:
    """One simulated device."""

    def __init__(self, fleet: Fleet, device_id: str) -> None:
        self.fleet = fleet
        self.device_id = device_id
        self.call_id = f"{secrets.token_hex(8)}@{fleet.opts.local_host}"
        self.from_tag = secrets.token_hex(4)
        self.cseq = 0
        self.registered = False
        self.sn = 0

    def _request(self, method: str, uri: SipUri, *, to_user: str, **kw: object) -> Request:
        f = self.fleet
        domain = f.domain
        self.cseq += 1
        return f.endpoint.build_request(
            method,
            uri,
            f.target,
            from_=NameAddr(SipUri(domain, self.device_id), params=(("tag", self.from_tag),)),
            to=NameAddr(SipUri(domain, to_user)),
            call_id=kw.pop("call_id", None) or f"{secrets.token_hex(8)}@{f.opts.local_host}",  # type: ignore[arg-type]
            cseq=self.cseq,
            **kw,  # type: ignore[arg-type]
        )

    async def register(self, expires: int | None = None) -> bool:
        """REGISTER, answering one digest challenge; True on 200."""
        f = self.fleet
        exp = f.opts.expires if expires is None else expires
        uri = SipUri(f.domain, f.opts.server_id)
        auth: str | None = None
        started = time.monotonic()
        for _ in range(3):
            headers = [("Expires", str(exp))]
            if auth is not None:
                headers.append(("Authorization", auth))
            req = self._request(
                "REGISTER",
                uri,
                to_user=self.device_id,
                call_id=self.call_id,
                contact_user=self.device_id,
                headers=headers,
            )
            req.headers.set("To", str(NameAddr(SipUri(f.domain, self.device_id))))
            resp = await f.endpoint.request(req, f.target)
            if resp.status == 401:
                challenge = resp.headers.get("WWW-Authenticate") or ""
                params = parse_digest_params(challenge)
                auth = build_authorization(
                    params,
                    username=self.device_id,
                    password=f.opts.password,
                    method="REGISTER",
                    uri=str(uri),
                    cnonce=secrets.token_hex(4),
                    nc=1,
                )
                continue
            if resp.status == 200:
                self.registered = exp > 0
                f.stats.latencies.append(time.monotonic() - started)
                return True
            log.warning("sim.register_failed device_id=%s status=%d", self.device_id, resp.status)
            return False
        return False

    async def send_manscdp(self, body: bytes) -> int:
        """Send one MANSCDP body to the gateway (a new MESSAGE transaction); the status."""
        f = self.fleet
        req = self._request(
            "MESSAGE",
            SipUri(f.domain, f.opts.server_id),
            to_user=f.opts.server_id,
            body=body,
            content_type="Application/MANSCDP+xml",
        )
        resp = await f.endpoint.request(req, f.target)
        return resp.status

    async def keepalive(self) -> int:
        """Send one keepalive MESSAGE; returns the SIP status."""
        f = self.fleet
        self.sn += 1
        body = encode(Keepalive(sn=self.sn, device_id=DeviceId(self.device_id), status="OK"))
        req = self._request(
            "MESSAGE",
            SipUri(f.domain, f.opts.server_id),
            to_user=f.opts.server_id,
            body=body,
            content_type="Application/MANSCDP+xml",
        )
        resp = await f.endpoint.request(req, f.target)
        return resp.status

    async def run(self, stop: asyncio.Event) -> None:
        """Keep alive and refresh the registration until ``stop``."""
        f = self.fleet
        refresh_at = time.monotonic() + f.opts.expires * 2 / 3
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=f.opts.keepalive)
            if stop.is_set():
                return
            if time.monotonic() >= refresh_at or not self.registered:
                if await self.register():
                    f.stats.reregistered += 1
                refresh_at = time.monotonic() + f.opts.expires * 2 / 3
                continue
            status = await self.keepalive()
            if status == 200:
                f.stats.keepalives += 1
            else:
                f.stats.keepalive_failures += 1
                if status == 404:
                    self.registered = False


class Fleet:
    """All simulated devices on one endpoint."""

    def __init__(self, opts: SimulatorOptions) -> None:
        self.opts = opts
        self.domain = opts.domain or opts.server_id[:10]
        self.target: Target = (opts.transport, opts.gateway_host, opts.gateway_port)
        self.stats = Stats()
        self.endpoint = SipEndpoint(
            TransportConfig(listen=opts.local_host, port=0, transports=(opts.transport,)),
            self.handle,
            user_agent="gbgw-simulate",
        )
        self.devices = {d: DeviceSim(self, d) for d in opts.device_ids()}
        self.profile = DeviceProfile(
            channels=opts.channels, civil_code=opts.civil_code, per_fragment=opts.per_fragment
        )
        self.channel_owner = {
            c: dev
            for dev in self.devices.values()
            for c in channel_ids(dev.device_id, opts.channels)
        }
        self.ps_file = PsFile.load(opts.media) if opts.media else None
        self.sessions: dict[str, MediaSession] = {}
        self._started: dict[str, bool] = {}
        self._tasks: set[asyncio.Task[object]] = set()

    def handle(self, req: Request, source: Target) -> Response | None:
        """Requests from the gateway, for the device (or channel) in the Request-URI."""
        user = req.uri.user or ""
        dev = self.devices.get(user) or self.channel_owner.get(user)
        if req.method == "ACK":
            session = self.sessions.get(req.call_id)
            if session is not None and not self._started.get(req.call_id):
                self._started[req.call_id] = True
                self._spawn(session.start())
            return None
        if dev is None:
            return make_response(req, 404)
        self.stats.requests_answered += 1
        if req.method == "MESSAGE":
            self._spawn(answer_manscdp(dev.device_id, req.body, self.profile, dev.send_manscdp))
            return make_response(req, 200, to_tag=dev.from_tag)
        if req.method in ("OPTIONS", "SUBSCRIBE", "NOTIFY", "INFO"):
            resp = make_response(req, 200, to_tag=dev.from_tag)
            if req.method == "SUBSCRIBE":
                resp.headers.add("Expires", str(req.expires or 3600))
            return resp
        if req.method == "INVITE":
            return self._invite(req, user)
        if req.method == "BYE":
            session = self.sessions.pop(req.call_id, None)
            self._started.pop(req.call_id, None)
            if session is None:
                return make_response(req, 481)
            self.stats.streams_ended += 1
            self._spawn(session.stop())
            return make_response(req, 200)
        return make_response(req, 501, to_tag=dev.from_tag)

    def _invite(self, req: Request, channel_id: str) -> Response:
        if self.ps_file is None:
            return make_response(req, 488, to_tag="sim")
        try:
            offer = parse_sdp(req.body)
            session = MediaSession(
                offer, self.opts.local_host, self.ps_file, origin_user=channel_id
            )
            answer = session.answer()
        except (SdpError, ValueError, OSError) as exc:
            log.warning("sim.invite_failed channel_id=%s error=%s", channel_id, exc)
            return make_response(req, 488, to_tag="sim")
        self.sessions[req.call_id] = session
        self.stats.streams_started += 1
        host, port = self.endpoint.local_address(self.target)
        resp = make_response(
            req,
            200,
            to_tag=secrets.token_hex(4),
            headers=(
                ("Contact", f"<sip:{channel_id}@{host}:{port}>"),
                ("Content-Type", "application/sdp"),
            ),
            body=answer.serialize(),
        )
        return resp

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def register_all(self) -> None:
        """Register every device (paced by ``rate``, or with bounded concurrency)."""
        sem = asyncio.Semaphore(MAX_IN_FLIGHT)
        interval = 1.0 / self.opts.rate if self.opts.rate > 0 else 0.0

        async def one(dev: DeviceSim) -> None:
            async with sem:
                if await dev.register():
                    self.stats.registered += 1
                else:
                    self.stats.failed += 1

        tasks = []
        for dev in self.devices.values():
            tasks.append(asyncio.create_task(one(dev)))
            if interval:
                await asyncio.sleep(interval)  # pacing is the behaviour asked for
        await asyncio.gather(*tasks)


async def _progress(fleet: Fleet, stop: asyncio.Event) -> None:
    s = fleet.stats
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        print(
            f"simulate: registered {s.registered}/{fleet.opts.devices} failed {s.failed} "
            f"keepalives {s.keepalives} keepalive_failures {s.keepalive_failures}",
            file=sys.stderr,
            flush=True,
        )


async def run_simulator(opts: SimulatorOptions) -> int:
    """Run the fleet; 0 when every device registered, 1 otherwise."""
    fleet = Fleet(opts)
    await fleet.endpoint.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    progress = asyncio.create_task(_progress(fleet, stop))
    started = time.monotonic()
    await fleet.register_all()
    elapsed = time.monotonic() - started
    runners = [asyncio.create_task(d.run(stop)) for d in fleet.devices.values()]
    if opts.duration > 0:
        remaining = opts.duration - (time.monotonic() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, remaining))
    else:
        await stop.wait()
    stop.set()
    await asyncio.gather(*runners, return_exceptions=True)
    await progress
    for session in list(fleet.sessions.values()):
        await session.stop()
    await fleet.endpoint.close()
    s = fleet.stats
    lat = sorted(s.latencies)
    summary = {
        "devices": opts.devices,
        "registered": s.registered,
        "failed": s.failed,
        "keepalives": s.keepalives,
        "keepalive_failures": s.keepalive_failures,
        "requests_answered": s.requests_answered,
        "streams_started": s.streams_started,
        "streams_ended": s.streams_ended,
        "register_seconds": round(elapsed, 3),
        "register_p50_ms": round(lat[len(lat) // 2] * 1000, 2) if lat else None,
        "register_p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2) if lat else None,
    }
    print(json.dumps(summary), flush=True)
    return 0 if s.failed == 0 and s.registered == opts.devices else 1
