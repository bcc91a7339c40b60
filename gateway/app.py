"""The composition root: builds every part from the validated config and wires them.

Parts receive collaborators in their constructors; nothing here is global. ``Gateway.start()``
opens the store (running migrations), reloads devices, binds SIP and HTTP, and starts the
periodic sweeps; ``stop()`` follows uvicorn's order: stop intake, finish pending work, flush
the store, close sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable, Generator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import uvicorn

from gateway.audit import AuditLog
from gateway.cascade import CascadeService
from gateway.catalog import CatalogService
from gateway.channels import ChannelTable
from gateway.config import GatewayConfig
from gateway.devicectl import Manscdp
from gateway.devices import StoreDeviceSink
from gateway.events import DeviceOffline, DeviceOnline, GatewayEvent
from gateway.kpi import KpiService
from gateway.metrics import Metrics
from gateway.registrar import Registrar, RegistrarConfig
from gateway.sip_handler import GatewaySipHandler
from gateway.store import Store, WriteBehind
from gateway.streams import StreamManager
from gateway.webrtc import WebRtcService
from gateway.zones import Consumer, ZonePolicy
from sip.auth import DigestVerifier, NonceCounter, NonceManager
from sip.endpoint import SipEndpoint
from sip.transport import TransportConfig

__all__ = ["Gateway"]

log = logging.getLogger("gbgw.app")


def utc_now() -> datetime:
    """Wall clock, timezone-aware UTC (only for timestamps, never for timeouts)."""
    return datetime.now(UTC)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn on our loop; signals belong to ``gbgw serve``, not to uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Gateway:
    """One gbgw node."""

    def __init__(self, config: GatewayConfig, clock: Callable[[], datetime] = utc_now) -> None:
        self.config = config
        self.clock = clock
        self.metrics = Metrics()
        self.started_at = clock()
        self._listeners: list[Callable[[GatewayEvent], None]] = []
        self.store = Store(config.storage_url(), data_dir=Path(config.gateway.data_dir))
        self.write_behind = WriteBehind(self.store, flush_interval=config.storage.flush_interval)
        self.device_sink = StoreDeviceSink(self.store, self.write_behind)
        self.channels = ChannelTable()
        self.zones = ZonePolicy(
            config.zone, config.token, config.upstream, self.metrics, http_token=config.http.token
        )
        self.audit = AuditLog(self.write_behind, self.store, clock)
        self.zones.on_denied = self._audit_denied
        self.kpi = KpiService(
            self.metrics,
            time.monotonic,
            {(p.county, p.class_): p.channels for p in config.kpi.plan},
            window=config.kpi.window,
            target=config.kpi.target,
        )
        sip = config.sip
        secret = secrets.token_bytes(32)
        self.verifier = DigestVerifier(
            config.gateway.domain, NonceManager(secret, 300.0), NonceCounter(300.0)
        )
        self.handler = GatewaySipHandler(self)
        self.endpoint = SipEndpoint(
            TransportConfig(
                listen=sip.listen,
                port=sip.port,
                transports=tuple(sip.transports),
                max_message=sip.max_message_size,
                tcp_idle_timeout=sip.tcp_idle_timeout,
            ),
            self.handler.handle,
            advertise=sip.advertise,
            user_agent="gbgw/0.1",
            observer=self.metrics,
        )
        self.registrar = Registrar(
            RegistrarConfig(
                server_id=config.gateway.id,
                domain=config.gateway.domain,
                password=sip.password,
                register_expires=sip.register_expires,
                register_min_expires=sip.register_min_expires,
                register_max_expires=sip.register_max_expires,
                keepalive_interval=sip.keepalive_interval,
                keepalive_max_missed=sip.keepalive_max_missed,
                auth_max_failures=sip.auth_max_failures,
                auth_lockout=sip.auth_lockout,
            ),
            self.verifier,
            self.device_sink,
            self.metrics,
            clock,
            self.endpoint.send_response,
            self.publish,
        )
        self.manscdp = Manscdp(self)
        cat = config.catalog
        self.catalog = CatalogService(
            self,
            fragment_idle=cat.fragment_idle,
            max_wait=cat.max_wait,
            interval=cat.interval,
            query_on_register=cat.query_on_register,
            subscribe=cat.subscribe,
            subscribe_expires=cat.subscribe_expires,
        )
        self.streams = StreamManager(self)
        self.endpoint.on_stray_response = self.streams.on_stray_response
        self.cascade = CascadeService(self)
        self.webrtc = WebRtcService(self)
        self._http: _EmbeddedServer | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.http_address: tuple[str, int] | None = None

    # -- events ----------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[GatewayEvent], None]) -> None:
        """Receive every gateway event (called synchronously on the loop)."""
        self._listeners.append(listener)

    def publish(self, event: GatewayEvent) -> None:
        """Deliver an event to every listener; a failing listener is logged, not fatal."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed for %r", event)

    def _audit_denied(
        self, consumer: Consumer, channel_id: str, action: str, peer: str, reason: str
    ) -> None:
        """Every zones refusal goes to the audit log too (result ``denied``)."""
        self.audit.record(consumer, action, channel_id, peer, "denied", reason)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, reload devices, bind SIP and HTTP."""
        await self.store.open()
        self.registrar.load(await self.device_sink.load())
        await self.write_behind.start()
        await self.device_sink.start()
        await self.catalog.start()
        self.subscribe(self._observe)
        await self.endpoint.start()
        await self.cascade.start()
        await self._start_http()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="registrar-sweep")

    async def _start_http(self) -> None:
        from gateway.api import create_api  # FastAPI import is heavy; keep it off the CLI path

        http = self.config.http
        app = create_api(self)
        family = socket.AF_INET6 if ":" in http.listen else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((http.listen, http.port))
        sock.listen(1024)
        sock.setblocking(False)
        self.http_address = sock.getsockname()[:2]
        server = _EmbeddedServer(
            uvicorn.Config(
                app,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=3,
            )
        )
        self._http = server
        # The socket already listens, so clients queue in its backlog until uvicorn accepts.
        self._http_task = asyncio.create_task(server.serve(sockets=[sock]), name="http")

    async def _sweep_loop(self) -> None:
        loop = asyncio.get_running_loop()
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            self.registrar.sweep(loop.time())
            self.streams.collect()
            if self.endpoint.transports is not None:
                self.metrics.tcp_connections.set(self.endpoint.transports.tcp_connections)
            ticks += 1
            if ticks % 15 == 0:
                # KPI gauges and availability samples (a missed event is caught here)
                self.kpi.publish(self.channels, self.registrar.devices.values())

    async def stop(self) -> None:
        """Graceful shutdown: intake off, pending work done, store flushed, sockets closed."""
        await self.cascade.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._http is not None:
            self._http.should_exit = True
        if self._http_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http_task, 5.0)
        await self.webrtc.close_all()
        await self.streams.close_all()
        await self.registrar.close()
        await self.catalog.close()
        await self.endpoint.close()
        await self.device_sink.close()
        await self.write_behind.close()
        await self.store.close()

    def _observe(self, event: GatewayEvent) -> None:
        match event:
            case DeviceOnline(device_id=d):
                self.kpi.observe_device(d, True)
            case DeviceOffline(device_id=d):
                self.kpi.observe_device(d, False)
            case _:
                pass

    # -- questions the API asks ------------------------------------------------------------

    def device_visible(self, consumer: Consumer, device_id: str) -> bool:
        """A device is visible to a restricted consumer only through a channel it may see."""
        if self.zones.sees_all(consumer):
            return True
        return any(
            self.zones.allows(consumer, c)
            for c in self.channels.of_device(device_id)
            if c.kind == "channel"
        )

    def kpi_rows(self, consumer: Consumer, by: tuple[str, ...]) -> list[dict[str, object]]:
        """KPI rows for the API, over what ``consumer`` may see."""
        rows = self.kpi.compute(
            self.channels, self.registrar.devices.values(), by, consumer, self.zones
        )
        out = []
        for r in rows:
            d = asdict(r)
            d["class"] = d.pop("class_")
            out.append(d)
        return out

    def ready_fields(self) -> dict[str, str]:
        """Addresses bound, for the ``ready`` log line that tests and operators wait for."""
        t = self.endpoint.transports
        out: dict[str, str] = {}
        if t is not None and t.udp_address is not None:
            out["sip_udp"] = f"{t.udp_address[0]}:{t.udp_address[1]}"
        if t is not None and t.tcp_address is not None:
            out["sip_tcp"] = f"{t.tcp_address[0]}:{t.tcp_address[1]}"
        if self.http_address is not None:
            out["http"] = f"{self.http_address[0]}:{self.http_address[1]}"
        return out
