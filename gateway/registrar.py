"""The GB/T 28181 registrar: REGISTER with digest, keepalives, online/offline tracking.

Theory of operation
-------------------
Devices (cameras, NVRs, lower platforms) live in memory in ``Registrar.devices``; the store is
told about every new or moved device durably (``DeviceSink.save``: the 200 OK waits for it) and
about last-seen times write-behind (``touch``: a keepalive never waits on disk).

A device is online from a successful REGISTER (or a keepalive within a live registration)
until its *deadline*: the earlier of its registration expiry and the keepalive window
``keepalive_interval * keepalive_max_missed`` after it last spoke (PROTOCOL §3.3). ``sweep(now)``
runs once a second and takes devices past their deadline offline.

The device's address is the packet source (NAT, PROTOCOL §2.4), and its transport the one it
registered over; requests to it go there. Repeated digest failures from one (source IP,
device ID) pair lock that pair out for ``auth_lockout`` seconds (403, counted), so a password
cannot be guessed at wire speed; the table of failures is bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from gateway.events import DeviceOffline, DeviceOnline, DeviceUnregistered, GatewayEvent
from gateway.manscdp.errors import ManscdpError
from gateway.manscdp.ids import parse_device_id
from gateway.metrics import Metrics
from sip.auth import AuthResult, DigestCredentials, DigestParseError, DigestVerifier
from sip.errors import BadRequest, Forbidden, IntervalTooBrief, NotFound, SipParseError
from sip.message import Request, Response, make_response
from sip.transport import Target

__all__ = ["Device", "DeviceSink", "Registrar", "RegistrarConfig", "gb_date"]

log = logging.getLogger("gbgw.registrar")

MAX_LOCKOUT_ENTRIES = 100_000


def gb_date(now: datetime) -> str:
    """GB/T 28181 Date header: local time, no zone, milliseconds (PROTOCOL §2.3)."""
    local = now.astimezone()
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}"


@dataclass(slots=True)
class Device:
    """One registered (or once registered) device; mutable, owned by the registrar."""

    device_id: str
    transport: str = "udp"
    host: str = ""
    port: int = 0
    online: bool = False
    registered_at: datetime | None = None
    last_seen: datetime | None = None
    expires_at: datetime | None = None
    name: str = ""
    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    password: str | None = None
    charset: str = ""
    call_id: str = ""
    contact: str = ""
    user_agent: str = ""
    channel_count: int = 0
    # monotonic seconds (loop.time()): when the registration ends / the device goes offline
    expiry_deadline: float = 0.0
    deadline: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> Target:
        """Where requests to this device go."""
        return (self.transport, self.host, self.port)


class DeviceSink(Protocol):
    """Persistence for devices (implemented over the store by the app)."""

    def save(self, device: Device) -> Awaitable[None]:
        """Write the device durably (group commit); resolves when it is on disk."""
        ...

    def touch(self, device_id: str, last_seen: datetime) -> None:
        """Record a last-seen time write-behind."""
        ...

    def delete(self, device_id: str) -> Awaitable[None]:
        """Forget a device and its channels."""
        ...


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    """Registrar settings, from ``[gateway]`` and ``[sip]``."""

    server_id: str
    domain: str
    password: str = ""
    register_expires: int = 3600
    register_min_expires: int = 60
    register_max_expires: int = 86400
    keepalive_interval: float = 60.0
    keepalive_max_missed: int = 3
    auth_max_failures: int = 5
    auth_lockout: float = 60.0


class Registrar:
    """Handles REGISTER and keepalives and owns the in-memory device table."""

    def __init__(
        self,
        config: RegistrarConfig,
        verifier: DigestVerifier,
        sink: DeviceSink,
        metrics: Metrics,
        clock: Callable[[], datetime],
        send_response: Callable[[Response], None],
        publish: Callable[[GatewayEvent], None],
    ) -> None:
        self.config = config
        self.verifier = verifier
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self.send_response = send_response
        self.publish = publish
        self.devices: dict[str, Device] = {}
        # (ip, device_id) -> (failures, locked_until or 0.0, window_start)
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._online = 0

    # -- loading and bookkeeping -------------------------------------------------------------

    def load(self, devices: list[Device]) -> None:
        """Adopt devices from the store: all offline until they speak again."""
        for d in devices:
            d.online = False
            self.devices[d.device_id] = d
        self._update_gauges()

    def _update_gauges(self) -> None:
        self.metrics.devices_registered.set(len(self.devices))
        self.metrics.devices_online.set(self._online)

    def _set_online(self, device: Device, online: bool, reason: str) -> None:
        if device.online == online:
            return
        device.online = online
        self._online += 1 if online else -1
        self.metrics.devices_online.set(self._online)
        if online:
            log.info(
                "device.online device_id=%s peer=%s:%d", device.device_id, device.host, device.port
            )
            self.publish(DeviceOnline(device.device_id))
        else:
            log.info("device.offline device_id=%s reason=%s", device.device_id, reason)
            self.publish(DeviceOffline(device.device_id, reason))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait for pending REGISTER completions."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- REGISTER ------------------------------------------------------------------------------

    def handle_register(self, req: Request, source: Target, now: float) -> Response | None:
        """Answer a REGISTER (RFC 3261 §10.3, GB/T 28181 §9.1); None when answered later."""
        cfg = self.config
        try:
            device_id = parse_device_id(req.from_.uri.user or "")
        except ManscdpError:
            self.metrics.registrations.labels("malformed").inc()
            raise BadRequest("From user is not a 20-digit device ID") from None
        ruser = req.uri.user
        if ruser is not None and len(ruser) == 20 and ruser.isdigit() and ruser != cfg.server_id:
            # PROTOCOL Q-12: a wrong server ID on the device is a classic misconfiguration.
            log.warning(
                "register.wrong_server_id device_id=%s expected=%s got=%s",
                device_id,
                cfg.server_id,
                ruser,
            )
            self.metrics.registrations.labels("forbidden").inc()
            raise Forbidden(f"server ID is {cfg.server_id}, not {ruser}")
        expires = self._requested_expires(req)
        key = (source[1], device_id)
        locked = self._locked(key, now)
        if locked:
            self.metrics.registrations.labels("forbidden").inc()
            raise Forbidden("too many authentication failures; try later")
        device = self.devices.get(device_id)
        password = device.password if device is not None and device.password else cfg.password
        if password:
            auth = req.headers.get("Authorization")
            if auth is None:
                self.metrics.registrations.labels("unauthorized").inc()
                return self._challenge(req, now, stale=False)
            result = self._verify(auth, req, password, now)
            if result is AuthResult.MALFORMED:
                self.metrics.registrations.labels("malformed").inc()
                raise BadRequest("unparsable Authorization header")
            if result.status == 401:
                self.metrics.registrations.labels("unauthorized").inc()
                return self._challenge(req, now, stale=result.stale)
            if result is not AuthResult.OK:
                # a wrong digest is an authentication failure: counted as unauthorized
                self.metrics.registrations.labels("unauthorized").inc()
                self._note_failure(key, now)
                log.warning(
                    "register.auth_failed device_id=%s peer=%s:%d result=%s",
                    device_id,
                    source[1],
                    source[2],
                    result.value,
                )
                raise Forbidden("wrong password")
            self._failures.pop(key, None)
        if expires == 0:
            return self._unregister(req, device, source)
        if expires < cfg.register_min_expires:
            raise IntervalTooBrief(
                f"Expires {expires} below {cfg.register_min_expires}",
                headers=(("Min-Expires", str(cfg.register_min_expires)),),
            )
        expires = min(expires, cfg.register_max_expires)
        return self._accept(req, device_id, device, source, expires, now)

    def _requested_expires(self, req: Request) -> int:
        try:
            expires = req.expires
            if expires is None:
                contacts = req.contact
                raw = contacts[0].param("expires") if contacts else None
                if raw is not None and raw.isdigit():
                    expires = int(raw)
        except SipParseError:
            expires = None
        if expires is None:
            self.metrics.registrations.labels("malformed").inc()
            raise BadRequest("REGISTER without Expires")
        return expires

    def _verify(self, auth: str, req: Request, password: str, now: float) -> AuthResult:
        try:
            creds = DigestCredentials.from_header(auth)
        except DigestParseError:
            return AuthResult.MALFORMED
        return self.verifier.verify(creds, method="REGISTER", password=password, now=now)

    def _challenge(self, req: Request, now: float, *, stale: bool) -> Response:
        return make_response(
            req,
            401,
            to_tag=_tag_for(req),
            headers=(("WWW-Authenticate", self.verifier.challenge(now, stale=stale)),),
        )

    def _locked(self, key: tuple[str, str], now: float) -> bool:
        entry = self._failures.get(key)
        if entry is None:
            return False
        _, until = entry
        if until and now < until:
            return True
        if until and now >= until:
            del self._failures[key]
        return False

    def _note_failure(self, key: tuple[str, str], now: float) -> None:
        failures, until = self._failures.pop(key, (0, 0.0))
        failures += 1
        if failures >= self.config.auth_max_failures:
            until = now + self.config.auth_lockout
            self.metrics.auth_lockouts.inc()
            log.warning(
                "register.lockout peer=%s device_id=%s seconds=%s",
                key[0],
                key[1],
                self.config.auth_lockout,
            )
            failures = 0
        self._failures[key] = (failures, until)
        while len(self._failures) > MAX_LOCKOUT_ENTRIES:
            self._failures.popitem(last=False)

    def _accept(
        self,
        req: Request,
        device_id: str,
        device: Device | None,
        source: Target,
        expires: int,
        now: float,
    ) -> Response | None:
        wall = self.clock()
        is_new = device is None
        if device is None:
            device = Device(device_id)
            self.devices[device_id] = device
            self.metrics.devices_registered.set(len(self.devices))
        moved = (device.transport, device.host, device.port) != source
        device.transport, device.host, device.port = source
        device.registered_at = wall
        device.last_seen = wall
        device.expires_at = wall + timedelta(seconds=expires)
        device.call_id = req.call_id
        device.contact = req.headers.get("Contact") or ""
        device.user_agent = (req.headers.get("User-Agent") or "")[:128]
        device.expiry_deadline = now + expires
        device.deadline = min(device.expiry_deadline, now + self._keepalive_window())
        headers: list[tuple[str, str]] = []
        if device.contact:
            headers.append(("Contact", device.contact))
        headers += [("Expires", str(expires)), ("Date", gb_date(wall))]
        resp = make_response(req, 200, to_tag=_tag_for(req), headers=headers)
        self.metrics.registrations.labels("ok").inc()
        log.info(
            "register.ok device_id=%s transport=%s peer=%s:%d expires=%d call_id=%s",
            device_id,
            source[0],
            source[1],
            source[2],
            expires,
            device.call_id,
        )
        if is_new or moved:
            # Durable before the 200 and before anyone hears of it: a device the gateway
            # acknowledged is never lost, and services (catalog) only see stored devices.
            self._spawn(self._save_then_reply(device, resp))
            return None
        self._set_online(device, True, "registered")
        self.sink.touch(device_id, wall)
        return resp

    async def _save_then_reply(self, device: Device, resp: Response) -> None:
        try:
            await self.sink.save(device)
        except Exception:
            log.exception("store.save_failed device_id=%s", device.device_id)
            resp = Response(500, None, resp.headers.copy())
        else:
            self._set_online(device, True, "registered")
        self.send_response(resp)

    def _unregister(self, req: Request, device: Device | None, source: Target) -> Response:
        if device is not None:
            device.expires_at = self.clock()
            device.expiry_deadline = 0.0
            device.deadline = 0.0
            self._set_online(device, False, "unregistered")
            self.publish(DeviceUnregistered(device.device_id))
        self.metrics.registrations.labels("ok").inc()
        log.info("register.unregistered device_id=%s", req.from_.uri.user)
        return make_response(
            req,
            200,
            to_tag=_tag_for(req),
            headers=(("Expires", "0"), ("Date", gb_date(self.clock()))),
        )

    def _keepalive_window(self) -> float:
        return self.config.keepalive_interval * self.config.keepalive_max_missed

    # -- keepalive -------------------------------------------------------------------------

    def handle_keepalive(self, device_id: str, source: Target, now: float) -> None:
        """A keepalive (MANSCDP Notify): refresh, or NotFound to force a re-register."""
        device = self.devices.get(device_id)
        if device is None or device.expiry_deadline <= now:
            raise NotFound("not registered")
        self.metrics.keepalives.inc()
        wall = self.clock()
        device.last_seen = wall
        if (device.transport, device.host, device.port) != source:
            # PROTOCOL §2.4: a NATed device may come back from a new address.
            device.transport, device.host, device.port = source
            self._spawn(self.sink.save(device))
        else:
            self.sink.touch(device_id, wall)
        device.deadline = min(device.expiry_deadline, now + self._keepalive_window())
        self._set_online(device, True, "keepalive")

    def seen(self, device_id: str, now: float) -> Device | None:
        """Any request from a registered device counts as a sign of life; returns it."""
        device = self.devices.get(device_id)
        if device is None or device.expiry_deadline <= now:
            return None
        return device

    # -- timers ----------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Take devices past their deadline offline (called once a second)."""
        for device in self.devices.values():
            if device.online and device.deadline <= now:
                if device.expiry_deadline <= now:
                    self.metrics.registrations.labels("expired").inc()
                    self._set_online(device, False, "registration_expired")
                else:
                    self._set_online(device, False, "keepalive_timeout")

    async def forget(self, device_id: str) -> bool:
        """Unregister and delete a device (API DELETE)."""
        device = self.devices.pop(device_id, None)
        if device is None:
            return False
        if device.online:
            self._online -= 1
        await self.sink.delete(device_id)
        self._update_gauges()
        self.publish(DeviceUnregistered(device_id))
        return True


def _tag_for(req: Request) -> str:
    """A stable To tag per Call-ID, so 401 and 200 of one registration agree."""
    return f"{abs(hash(req.call_id)) & 0xFFFFFFFF:08x}"
