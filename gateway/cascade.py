"""Cascade: gbgw as a lower platform of each ``[[upstream]]`` (PROTOCOL §6.1, §6.2).

Theory of operation
-------------------
One ``UpstreamClient`` per ``[[upstream]]`` runs a registration loop: REGISTER (answering a
401/407 with digest, username = our cascade ID), then keepalives every ``keepalive_interval``
and a refresh at 2/3 of the granted Expires. A failed REGISTER, or ``KEEPALIVE_MAX_FAILURES``
consecutive failed keepalives, mark the upstream lost; registration is retried at once and then
with a bounded exponential backoff (``BACKOFF_BASE`` doubling to ``BACKOFF_MAX`` seconds).
Requests to the upstream are bounded by our own deadline (``REQUEST_TIMEOUT``) so a dead
upstream is noticed in seconds, not after Timer F (32 s) per attempt.

Requests from an upstream (From user = its ID) are routed here by the SIP handler:
MESSAGE queries (Catalog, DeviceInfo, DeviceStatus, Keepalive) and catalog SUBSCRIBE, which
``gateway.cascade_catalog`` answers, and INVITE/ACK/BYE, which belong to
``gateway.cascade_media``. What an upstream sees is decided by
``gateway.zones`` only: ``consumer_for_upstream`` + ``filter`` for listings, ``check`` (via
``streams.open``) for streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import secrets
import socket
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.cascade_catalog import CatalogSharing, Subscription
from gateway.cascade_media import UpstreamMedia
from gateway.config import UpstreamConfig
from gateway.manscdp import (
    CatalogQuery,
    DeviceControl,
    DeviceId,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusQuery,
    DeviceStatusResponse,
    Keepalive,
    Message,
    encode,
)
from gateway.zones import ACTION_PTZ, Consumer
from sip.auth import DigestError, build_authorization, parse_digest_params
from sip.endpoint import new_tag
from sip.errors import Forbidden, NotFound, SipParseError
from sip.message import Request, Response, make_response
from sip.transport import Target
from sip.uri import NameAddr, SipUri

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["CascadeService", "UpstreamClient"]

log = logging.getLogger("gbgw.cascade")

ACTION_QUERY = "status"  # zones/audit action of an upstream's DeviceInfo/DeviceStatus query

BACKOFF_BASE = 1.0  # seconds before the 2nd re-register attempt; doubles per failure
BACKOFF_MAX = 60.0  # PROTOCOL §6.1: retry at most every 60 s once failures persist
REQUEST_TIMEOUT = 5.0  # seconds we wait for a final response to a REGISTER
KEEPALIVE_MAX_FAILURES = 3  # PROTOCOL §6.1: 3 consecutive failures -> upstream offline
MANSCDP_TYPE = "Application/MANSCDP+xml"


class UpstreamClient:
    """Registration, keepalive and requests towards one upstream platform."""

    def __init__(self, service: CascadeService, cfg: UpstreamConfig) -> None:
        self.service = service
        self.gw = service.gw
        self.cfg = cfg
        self.local_id = self.gw.config.upstream_local_id(cfg)
        self.target: Target = (cfg.transport, cfg.host, cfg.port)
        self.consumer: Consumer = self.gw.zones.consumer_for_upstream(cfg)
        self.registered = False
        self.last_error = ""
        self.registered_at: datetime | None = None
        self.keepalives_ok = 0
        self.expires = 0
        self._call_id = f"{secrets.token_hex(10)}@gbgw"
        self._from_tag = new_tag()
        self._cseq = 0
        self._nc = 0
        self._task: asyncio.Task[None] | None = None
        self.subscriptions: dict[str, Subscription] = {}
        # channel_id -> status last announced to this upstream (what it believes it has)
        self.announced: dict[str, str] = {}
        # where its own requests may come from: [[upstream]].sources, else what host resolves to
        self.sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in cfg.sources
        )
        if not self.sources:
            with contextlib.suppress(ValueError):  # an IP host is known now; a name is resolved
                self.sources = (ipaddress.ip_network(cfg.host),)
        self.refused = 0  # requests claiming this upstream's ID from elsewhere

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the registration loop."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"upstream-{self.cfg.name}"
        )

    async def close(self) -> None:
        """Stop the loop and unregister (best effort, bounded)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.registered:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._register(0), 2.0)
            self._set_state(False, "closed")

    def info(self) -> dict[str, object]:
        """The API view."""
        cfg = self.cfg
        return {
            "name": cfg.name,
            "id": cfg.id,
            "local_id": self.local_id,
            "host": cfg.host,
            "port": cfg.port,
            "transport": cfg.transport,
            "registered": self.registered,
            "last_error": self.last_error,
            "registered_at": self.registered_at,
            "keepalives_ok": self.keepalives_ok,
            "streams": self.service.media.count(cfg.name),
            "subscriptions": len(self.subscriptions),
            "refused_sources": self.refused,
        }

    def _set_state(self, registered: bool, reason: str) -> None:
        self.gw.metrics.upstream_registered.labels(self.cfg.name).set(1 if registered else 0)
        if registered:
            self.last_error = ""
            self.registered_at = self.gw.clock()
        else:
            self.last_error = reason
        if registered == self.registered:
            if not registered:
                log.info("upstream.register_failed upstream=%s reason=%s", self.cfg.name, reason)
            return
        self.registered = registered
        if registered:
            log.info(
                "upstream.registered upstream=%s id=%s local_id=%s peer=%s:%d expires=%d",
                self.cfg.name,
                self.cfg.id,
                self.local_id,
                self.cfg.host,
                self.cfg.port,
                self.expires,
            )
        else:
            log.warning("upstream.lost upstream=%s reason=%s", self.cfg.name, reason)

    # -- the registration loop ---------------------------------------------------------------

    def accepts(self, host: str) -> bool:
        """Whether a request from ``host`` may be this upstream's own."""
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self.sources)

    async def _resolve_sources(self, loop: asyncio.AbstractEventLoop) -> None:
        """Without ``sources``, the upstream's requests must come from an address of ``host``
        (resolved again before each registration: a DNS name may move)."""
        if self.cfg.sources:
            return
        try:
            infos = await loop.getaddrinfo(self.cfg.host, None, type=socket.SOCK_DGRAM)
        except OSError as exc:
            log.warning("upstream.resolve_failed upstream=%s error=%s", self.cfg.name, exc)
            return
        self.sources = tuple(
            ipaddress.ip_network(str(info[4][0]).split("%", 1)[0]) for info in infos
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_BASE
        while True:
            await self._resolve_sources(loop)
            try:
                self.expires = await self._register(self.cfg.register_expires)
            except _UpstreamFailure as exc:
                self._set_state(False, exc.reason)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            except Exception:
                log.exception("upstream.register_error upstream=%s", self.cfg.name)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_BASE
            self._set_state(True, "")
            reason = await self._maintain(loop)
            self._set_state(False, reason)

    async def _maintain(self, loop: asyncio.AbstractEventLoop) -> str:
        """Keepalives and refreshes while registered; returns why registration was lost."""
        interval = self.cfg.keepalive_interval
        refresh_at = loop.time() + max(1.0, self.expires * 2 / 3)
        next_keepalive = loop.time() + interval
        failures = 0
        while True:
            await asyncio.sleep(max(0.0, min(refresh_at, next_keepalive) - loop.time()))
            if loop.time() >= refresh_at:
                try:
                    self.expires = await self._register(self.cfg.register_expires)
                except _UpstreamFailure as exc:
                    return f"refresh_{exc.reason}"
                refresh_at = loop.time() + max(1.0, self.expires * 2 / 3)
                self._set_state(True, "")
                continue
            next_keepalive = loop.time() + interval
            status = await self._keepalive()
            if 200 <= status < 300:
                failures = 0
                self.keepalives_ok += 1
                continue
            failures += 1
            log.info(
                "upstream.keepalive_failed upstream=%s status=%d failures=%d",
                self.cfg.name,
                status,
                failures,
            )
            if failures >= KEEPALIVE_MAX_FAILURES:
                return f"keepalive_{status}"

    async def _register(self, expires: int) -> int:
        """One REGISTER (with a digest retry); the granted Expires, or ``_UpstreamFailure``."""
        cfg = self.cfg
        uri = SipUri(cfg.realm, cfg.id)
        resp = await self._bounded(self._register_request(uri, expires, None))
        if resp.status in (401, 407):
            header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
            challenge = resp.headers.get(header) or ""
            self._nc += 1
            try:
                auth = build_authorization(
                    parse_digest_params(challenge),
                    username=self.local_id,
                    password=cfg.password,
                    method="REGISTER",
                    uri=str(uri),
                    cnonce=secrets.token_hex(8),
                    nc=self._nc,
                )
            except DigestError as exc:
                raise _UpstreamFailure("bad_challenge") from exc
            name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
            resp = await self._bounded(self._register_request(uri, expires, (name, auth)))
        if resp.status // 100 != 2:
            raise _UpstreamFailure(str(resp.status))
        granted = resp.expires
        if granted is None:
            with contextlib.suppress(SipParseError, ValueError, IndexError):
                param = resp.contact[0].param("expires")
                granted = int(param) if param is not None else None
        return expires if granted is None else granted

    def _register_request(self, uri: SipUri, expires: int, auth: tuple[str, str] | None) -> Request:
        self._cseq += 1
        me = NameAddr(SipUri(self.cfg.realm, self.local_id))
        headers = [("Expires", str(expires))]
        if auth is not None:
            headers.append(auth)
        return self.gw.endpoint.build_request(
            "REGISTER",
            uri,
            self.target,
            from_=me.with_tag(self._from_tag),
            to=me,
            call_id=self._call_id,
            cseq=self._cseq,
            contact_user=self.local_id,
            headers=headers,
        )

    async def _bounded(self, req: Request, timeout: float = REQUEST_TIMEOUT) -> Response:
        fut = self.gw.endpoint.request(req, self.target)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise _UpstreamFailure("408") from None

    async def _keepalive(self) -> int:
        timeout = min(max(self.cfg.keepalive_interval, 2.0), 10.0)
        body = Keepalive(
            sn=self.gw.manscdp.next_sn(), device_id=DeviceId(self.local_id), status="OK"
        )
        return await self.send_manscdp(body, timeout=timeout)

    # -- requests to the upstream ------------------------------------------------------------

    async def send_manscdp(self, msg: Message | bytes, *, timeout: float = REQUEST_TIMEOUT) -> int:
        """One MESSAGE to the upstream; the status of its final response (408: no answer
        within ``timeout`` seconds)."""
        cfg = self.cfg
        body = msg if isinstance(msg, bytes) else encode(msg, "GB2312")
        req = self.gw.endpoint.build_request(
            "MESSAGE",
            SipUri(cfg.host, cfg.id, cfg.port),
            self.target,
            from_=NameAddr(SipUri(cfg.realm, self.local_id)),
            to=NameAddr(SipUri(cfg.realm, cfg.id)),
            body=body,
            content_type=MANSCDP_TYPE,
        )
        try:
            return (await self._bounded(req, timeout)).status
        except _UpstreamFailure:
            return 408


class _UpstreamFailure(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CascadeService:
    """Every upstream of this node: registration, catalog sharing and upstream streams."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.media = UpstreamMedia(gw)
        self.clients = [UpstreamClient(self, u) for u in gw.config.upstream]
        self._by_id: dict[str, list[UpstreamClient]] = {}
        for c in self.clients:
            self._by_id.setdefault(c.cfg.id, []).append(c)
            gw.metrics.upstream_registered.labels(c.cfg.name).set(0)
            gw.metrics.upstream_streams.labels(c.cfg.name).set(0)
            gw.metrics.upstream_bytes.labels(c.cfg.name)
        self.catalog = CatalogSharing(gw, self.clients)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start registering to every upstream (after the endpoint is bound)."""
        for c in self.clients:
            c.start()

    async def close(self) -> None:
        """BYE upstream streams, unregister, cancel pending work."""
        await self.media.close_all()
        await self.catalog.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)

    # -- routing -----------------------------------------------------------------------------

    def upstream_of(self, req: Request, source: Target) -> UpstreamClient | None:
        """The upstream a request comes from: its From user is the upstream's ID, and it comes
        from one of the upstream's addresses (``Forbidden`` when it claims the ID from
        elsewhere: anyone could write a From header)."""
        try:
            user = req.from_.uri.user or ""
            ruser = req.uri.user or ""
        except SipParseError:
            return None
        found = self._by_id.get(user)
        if not found:
            return None
        allowed = [c for c in found if c.accepts(source[1])]
        if not allowed:
            client = found[0]
            client.refused += 1
            if client.refused & (client.refused - 1) == 0:  # 1st, 2nd, 4th, 8th...: bounded log
                log.warning(
                    "upstream.source_refused upstream=%s method=%s peer=%s:%d refused=%d",
                    client.cfg.name,
                    req.method,
                    source[1],
                    source[2],
                    client.refused,
                )
            raise Forbidden(f"not from an address of upstream {user}")
        return next((c for c in allowed if c.local_id == ruser), allowed[0])

    def handle(self, up: UpstreamClient, req: Request, source: Target) -> Response | None:
        """INVITE/ACK/BYE/SUBSCRIBE from an upstream (MESSAGE comes via ``on_message``)."""
        match req.method:
            case "INVITE":
                return self.media.on_invite(up.cfg, up.consumer, up.local_id, req, source)
            case "ACK":
                self.media.on_ack(req)
                return None
            case "BYE":
                resp = self.media.on_bye(req)
                return resp if resp is not None else self.gw.streams.on_bye(req)
            case "SUBSCRIBE":
                return self.catalog.subscribe(up, req, source)
            case _:
                raise NotFound(f"{req.method} from an upstream is not handled")

    def on_message(
        self, up: UpstreamClient, req: Request, msg: Message, source: Target
    ) -> Response:
        """A MANSCDP MESSAGE from an upstream: 200 now, business answers after."""
        match msg:
            case Keepalive():
                pass
            case CatalogQuery(sn=sn):
                self.catalog.answer_catalog(up, sn)
            case DeviceInfoQuery(sn=sn, device_id=did) | DeviceStatusQuery(sn=sn, device_id=did):
                if did == up.local_id:
                    self.catalog.answer_self(up, msg, sn)
                else:
                    self._relay_query(up, msg, str(did), sn, source)
            case DeviceControl(ptz_cmd=cmd) if cmd is not None:
                self._forward_ptz(up, msg, source)
            case _:
                log.info(
                    "upstream.message_ignored upstream=%s type=%s", up.cfg.name, type(msg).__name__
                )
        return make_response(req, 200, to_tag=new_tag())

    def _relay_query(
        self, up: UpstreamClient, msg: Message, channel_id: str, sn: int, source: Target
    ) -> None:
        """DeviceInfo/DeviceStatus about a shared channel: asked of its device (or lower
        platform) with our own SN, answered upstream with the upstream's SN and the channel's
        ID. Not shared (or not known) is the same 403 as everywhere (zones decide)."""
        gw = self.gw
        peer = f"{source[1]}:{source[2]}"
        channel = gw.channels.get(channel_id) or gw.streams.self_channel(channel_id)
        if channel is None:
            gw.zones.check_unknown(up.consumer, channel_id, ACTION_QUERY, peer)
            raise NotFound(f"channel {channel_id} not found")
        gw.zones.check(up.consumer, channel, ACTION_QUERY, peer)
        task = asyncio.get_running_loop().create_task(
            self._answer_query(up, msg, channel.device_id, channel_id, sn), name="upstream-query"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_query(
        self, up: UpstreamClient, msg: Message, device_id: str, channel_id: str, sn: int
    ) -> None:
        gw = self.gw
        info = isinstance(msg, DeviceInfoQuery)
        cmd = "DeviceInfo" if info else "DeviceStatus"
        did = DeviceId(channel_id)
        answer: Message
        try:
            device = gw.manscdp.device(device_id)
            query: Message = (DeviceInfoQuery if info else DeviceStatusQuery)(
                sn=gw.manscdp.next_sn(), device_id=did
            )
            reply = await gw.manscdp.query(device, query, cmd)
            assert isinstance(reply, DeviceInfoResponse | DeviceStatusResponse)
            answer = dataclasses.replace(reply, sn=sn, device_id=did)
        except Exception as exc:  # offline, timeout, refusal: the upstream still gets an answer
            log.info(
                "upstream.query_failed upstream=%s channel_id=%s cmd=%s error=%s",
                up.cfg.name,
                channel_id,
                cmd,
                exc,
            )
            if info:
                answer = DeviceInfoResponse(sn=sn, device_id=did, result="ERROR")
            else:
                answer = DeviceStatusResponse(
                    sn=sn, device_id=did, result="ERROR", online="OFFLINE", status="ERROR"
                )
        await up.send_manscdp(answer)

    def _forward_ptz(self, up: UpstreamClient, msg: DeviceControl, source: Target) -> None:
        """PTZ from an upstream for one of its shared channels goes on to the device: the
        same zones check (``ptz`` granted by ``[[upstream]].ptz``) and audit as the API's PTZ.
        A refusal raises ``Forbidden``/``NotFound`` (the MESSAGE's answer); the device's own
        answer is only logged, as PTZ has no business response to relay (PROTOCOL §3.7)."""
        gw = self.gw
        channel_id = str(msg.device_id)
        peer = f"{source[1]}:{source[2]}"
        channel = gw.channels.get(channel_id) or gw.streams.self_channel(channel_id)
        if channel is None:
            gw.zones.check_unknown(up.consumer, channel_id, ACTION_PTZ, peer)
            raise NotFound(f"channel {channel_id} not found")
        gw.zones.check(up.consumer, channel, ACTION_PTZ, peer)
        device = gw.registrar.devices.get(channel.device_id)
        if device is None or not device.online:
            raise NotFound(f"the device of channel {channel_id} is offline")
        assert msg.ptz_cmd is not None
        gw.audit.record(up.consumer, ACTION_PTZ, channel_id, peer, detail=msg.ptz_cmd.encode())
        task = asyncio.get_running_loop().create_task(
            self._send_ptz(up, channel.device_id, channel_id, msg), name="upstream-ptz"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_ptz(
        self, up: UpstreamClient, device_id: str, channel_id: str, msg: DeviceControl
    ) -> None:
        assert msg.ptz_cmd is not None
        try:
            await self.gw.manscdp.ptz(device_id, channel_id, msg.ptz_cmd)
        except Exception as exc:  # the device's failure is the device's: log, never raise
            log.warning(
                "upstream.ptz_failed upstream=%s channel_id=%s error=%s",
                up.cfg.name,
                channel_id,
                exc,
            )

    # -- questions the API asks --------------------------------------------------------------

    def info(self) -> list[dict[str, object]]:
        """Every upstream's state."""
        return [c.info() for c in self.clients]
