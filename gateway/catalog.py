"""Catalog service: query devices for their channels, assemble fragments, keep the table.

Theory of operation
-------------------
A catalog query (after registration, periodically, or on ``POST /api/devices/{id}/catalog``)
opens one *collection* per (device, SN). Response fragments carry the same SN and any number of
items; items are keyed by their DeviceID (duplicates overwrite, any order). The collection is
*complete* when it holds ``SumNum`` unique items, and is then committed as the device's new
channel set: it replaces the old one atomically, in memory and in the store (one transaction).

A collection that stops short (lost or malformed fragments, a wrong SumNum) is committed when
no fragment has arrived for ``fragment_idle`` seconds, or ``max_wait`` after the query at the
latest. Such a catalog is *incomplete*: its items are merged (added and updated, never
deleted: PROTOCOL Q-5), the device is flagged ``catalog_complete = False`` in the API and
``gbgw_catalog_incomplete_total`` counts it.

Change notifications (MESSAGE Notify/Catalog, or NOTIFY in a catalog subscription) apply their
``Event`` per item: ON/OFF/VLOST/DEFECT change the status, ADD/UPDATE upsert, DEL removes.

Every channel's zone and class are assigned by ``gateway.zones`` when it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.channels import Channel
from gateway.events import DeviceOnline, DeviceUnregistered, GatewayEvent
from gateway.manscdp import CatalogItem, CatalogNotify, CatalogQuery, CatalogResponse, DeviceId
from gateway.store import ChannelRecord
from sip.errors import NotFound, ServerTimeout

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["CatalogService", "CatalogState", "channel_from_record", "record_from_channel"]

log = logging.getLogger("gbgw.catalog")

MAX_SUM_NUM = 100_000  # STYLE: catalog being collected is capped
MAX_COLLECTIONS = 2_000  # concurrent collections (devices mid-catalog)


@dataclass(slots=True)
class _Collection:
    device_id: str
    sn: int
    started: float
    last_fragment: float
    sum_num: int | None = None
    items: dict[str, CatalogItem] = field(default_factory=dict)
    skipped: int = 0
    fragments: int = 0
    done: asyncio.Future[int] | None = None


@dataclass(slots=True)
class CatalogState:
    """What the API shows about a device's catalog."""

    complete: bool = True
    queried_at: float | None = None
    items: int = 0
    expected: int | None = None


def channel_from_item(device_id: str, item: CatalogItem, now_wall: object) -> Channel:
    """A Channel from a catalog item (status OFF for VLOST/DEFECT with the fault kept)."""
    status = item.status or "ON"
    return Channel(
        device_id=device_id,
        channel_id=item.device_id,
        name=item.name[:256],
        kind=str(item.kind),
        civil_code=item.civil_code[:20],
        parent_id=item.parent_id[:20],
        business_group_id=item.business_group_id[:20],
        status=status,
        manufacturer=item.manufacturer[:128],
        model=item.model[:128],
        owner=item.owner[:128],
        address=item.address[:256],
        ip_address=item.ip_address[:64],
        port=item.port,
        longitude=item.longitude,
        latitude=item.latitude,
        ptz_type=item.ptz_type,
        secrecy=item.secrecy or 0,
        resolution=item.resolution[:32],
        updated_at=now_wall,  # type: ignore[arg-type]  # a datetime from the gateway clock
    )


def record_from_channel(c: Channel) -> ChannelRecord:
    """The store row of a channel."""
    return ChannelRecord(
        device_id=c.device_id,
        channel_id=c.channel_id,
        name=c.name or None,
        civil_code=c.civil_code or None,
        parent_id=c.parent_id or None,
        business_group_id=c.business_group_id or None,
        kind=c.kind,
        status=c.status,
        manufacturer=c.manufacturer or None,
        model=c.model or None,
        owner=c.owner or None,
        address=c.address or None,
        ip_address=c.ip_address or None,
        port=c.port,
        longitude=c.longitude,
        latitude=c.latitude,
        ptz_type=c.ptz_type,
        secrecy=bool(c.secrecy),
        resolution=c.resolution or None,
        updated_at=c.updated_at,
    )


def channel_from_record(r: ChannelRecord) -> Channel:
    """A Channel from its store row."""
    return Channel(
        device_id=r.device_id,
        channel_id=r.channel_id,
        name=r.name or "",
        kind=r.kind or "channel",
        civil_code=r.civil_code or "",
        parent_id=r.parent_id or "",
        business_group_id=r.business_group_id or "",
        status=r.status or "OFF",
        manufacturer=r.manufacturer or "",
        model=r.model or "",
        owner=r.owner or "",
        address=r.address or "",
        ip_address=r.ip_address or "",
        port=r.port,
        longitude=r.longitude,
        latitude=r.latitude,
        ptz_type=r.ptz_type,
        secrecy=int(r.secrecy),
        resolution=r.resolution or "",
        updated_at=r.updated_at,
    )


class CatalogService:
    """Owns catalog collection and the channel table's content."""

    def __init__(
        self,
        gw: Gateway,
        *,
        fragment_idle: float = 5.0,
        max_wait: float = 60.0,
        interval: float = 0.0,
        query_on_register: bool = True,
        subscribe: bool = False,
        subscribe_expires: int = 3600,
    ) -> None:
        self.gw = gw
        self.fragment_idle = fragment_idle
        self.max_wait = max_wait
        self.interval = interval
        self.query_on_register = query_on_register
        self.subscribe = subscribe
        self.subscribe_expires = subscribe_expires
        # device_id -> monotonic time to refresh its catalog subscription
        self._subscriptions: dict[str, float] = {}
        self._counted: dict[str, int] = {}  # device_id -> its channels counted in the gauge
        self._channel_total = 0
        self._collections: dict[tuple[str, int], _Collection] = {}
        self.state: dict[str, CatalogState] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._on_change: list[Callable[[str, list[Channel], list[str]], None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load stored channels and start the collection timer."""
        for rec in await self.gw.store.load_channels():
            ch = channel_from_record(rec)
            self.gw.zones.apply(ch)
            if self.gw.registrar.devices.get(ch.device_id) is not None:
                self.gw.channels.put(ch)
        self._refresh_counts(None)
        self.gw.subscribe(self._on_event)
        self._timer = asyncio.create_task(self._tick(), name="catalog-timer")

    async def close(self) -> None:
        """Stop timers and pending work."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def on_change(self, listener: Callable[[str, list[Channel], list[str]], None]) -> None:
        """Listen for channel changes: (device_id, changed channels, removed channel IDs)."""
        self._on_change.append(listener)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, event: GatewayEvent) -> None:
        match event:
            case DeviceOnline(device_id=device_id) if self.query_on_register:
                st = self.state.get(device_id)
                if st is None or st.queried_at is None:
                    self._spawn(self._query_quietly(device_id))
            case DeviceUnregistered(device_id=device_id):
                self._subscriptions.pop(device_id, None)
                if device_id not in self.gw.registrar.devices:
                    self.gw.channels.remove_device(device_id)
                    self.state.pop(device_id, None)
                    self._refresh_counts(None)
            case _:
                pass

    async def _query_quietly(self, device_id: str) -> None:
        """After registration: the catalog, then DeviceInfo (devices may ignore either)."""
        try:
            await self.query(device_id, wait=False)
        except Exception as exc:
            log.warning("catalog.query_failed device_id=%s error=%s", device_id, type(exc).__name__)
        self._spawn(self._device_info(device_id))
        if self.subscribe:
            await self._subscribe(device_id)

    async def _device_info(self, device_id: str) -> None:
        try:
            await self.gw.manscdp.device_info(device_id)
        except Exception as exc:
            log.info("device.info_failed device_id=%s error=%s", device_id, type(exc).__name__)

    async def _subscribe(self, device_id: str) -> None:
        """SUBSCRIBE to catalog changes (PROTOCOL §3.9); refused or unanswered: not again."""
        try:
            resp = await self.gw.manscdp.subscribe_catalog(device_id, self.subscribe_expires)
        except Exception as exc:
            log.info(
                "catalog.subscribe_failed device_id=%s error=%s", device_id, type(exc).__name__
            )
            self._subscriptions.pop(device_id, None)
            return
        if resp.status >= 300:
            log.info("catalog.subscribe_refused device_id=%s status=%d", device_id, resp.status)
            self._subscriptions.pop(device_id, None)
            return
        expires = resp.expires or self.subscribe_expires
        loop = asyncio.get_running_loop()
        self._subscriptions[device_id] = loop.time() + max(30.0, expires * 2 / 3)
        log.info("catalog.subscribed device_id=%s expires=%d", device_id, expires)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        next_periodic = loop.time() + self.interval if self.interval > 0 else None
        while True:
            await asyncio.sleep(0.5)
            now = loop.time()
            self.expire(now)
            for device_id, at in list(self._subscriptions.items()):
                if at <= now:
                    self._subscriptions[device_id] = now + 60.0  # until the refresh answers
                    self._spawn(self._subscribe(device_id))
            if next_periodic is not None and now >= next_periodic:
                next_periodic = now + self.interval
                for d in list(self.gw.registrar.devices.values()):
                    if d.online:
                        self._spawn(self._query_quietly(d.device_id))

    # -- querying --------------------------------------------------------------------------

    async def query(self, device_id: str, *, wait: bool = True) -> int:
        """Query a device's catalog; with ``wait``, the number of items once committed."""
        device = self.gw.registrar.devices.get(device_id)
        if device is None or not device.host:
            raise NotFound(f"device {device_id} not found")
        if len(self._collections) >= MAX_COLLECTIONS:
            raise ServerTimeout("too many catalogs being collected; try later")
        loop = asyncio.get_running_loop()
        sn = self.gw.manscdp.next_sn()
        now = loop.time()
        col = _Collection(device_id, sn, now, now, done=loop.create_future())
        self._collections[(device_id, sn)] = col
        self.state.setdefault(device_id, CatalogState()).queried_at = now
        resp = await self.gw.manscdp.send(
            device, CatalogQuery(sn=sn, device_id=DeviceId(device_id))
        )
        if resp.status >= 300:
            self._collections.pop((device_id, sn), None)
            raise ServerTimeout(f"device answered the catalog query with {resp.status}")
        log.info("catalog.query device_id=%s sn=%d", device_id, sn)
        if not wait:
            return 0
        assert col.done is not None
        return await asyncio.shield(col.done)

    def on_response(self, device_id: str, msg: CatalogResponse, now: float) -> None:
        """A catalog Response fragment from ``device_id`` (the MESSAGE's From user)."""
        col = self._collections.get((device_id, msg.sn)) or self._collections.get(
            (msg.device_id, msg.sn)
        )
        if col is None:
            # unsolicited or late: treat as a change report that merges
            self._merge(device_id, msg.items, now)
            return
        col.fragments += 1
        col.last_fragment = now
        col.skipped += msg.skipped_items
        col.sum_num = min(max(msg.sum_num, 0), MAX_SUM_NUM)
        for item in msg.items:
            if len(col.items) >= MAX_SUM_NUM and item.device_id not in col.items:
                break
            col.items[item.device_id] = item
        if len(col.items) >= col.sum_num and col.skipped == 0:
            self._commit(col, complete=True, now=now)

    def on_malformed_fragment(self, device_id: str) -> None:
        """A fragment from this device could not be decoded: its catalog will be incomplete."""
        for col in self._collections.values():
            if col.device_id == device_id:
                col.skipped += 1

    def expire(self, now: float) -> None:
        """Commit collections idle for ``fragment_idle`` or older than ``max_wait``."""
        for col in list(self._collections.values()):
            idle = col.fragments > 0 and now - col.last_fragment >= self.fragment_idle
            # max_wait bounds a silent device; a catalog still arriving steadily (100k items
            # one per MESSAGE) gets more time: 10 ms per expected item, at most 30 minutes.
            budget = self.max_wait + min(1800.0, 0.01 * (col.sum_num or 0))
            if idle or now - col.started >= budget:
                complete = (
                    col.sum_num is not None and len(col.items) >= col.sum_num and col.skipped == 0
                )
                self._commit(col, complete=complete, now=now)

    def _commit(self, col: _Collection, *, complete: bool, now: float) -> None:
        self._collections.pop((col.device_id, col.sn), None)
        wall = self.gw.clock()
        channels = [channel_from_item(col.device_id, it, wall) for it in col.items.values()]
        for ch in channels:
            self.gw.zones.apply(ch)
        st = self.state.setdefault(col.device_id, CatalogState())
        st.complete = complete
        st.items = len(channels)
        st.expected = col.sum_num
        table = self.gw.channels
        if complete:
            old = {c.channel_id for c in table.of_device(col.device_id)}
            table.replace_device(col.device_id, channels)
            removed = sorted(old - {c.channel_id for c in channels})
            self._spawn(self._persist_replace(col.device_id, channels))
        else:
            self.gw.metrics.catalog_incomplete.inc()
            for ch in channels:
                table.put(ch)
            removed = []
            self._spawn(self._persist_merge(col.device_id, channels))
        self._refresh_counts(col.device_id)
        log.info(
            "catalog.committed device_id=%s sn=%d items=%d sum_num=%s complete=%s fragments=%d",
            col.device_id,
            col.sn,
            len(channels),
            col.sum_num,
            complete,
            col.fragments,
        )
        for listener in self._on_change:
            listener(col.device_id, channels, removed)
        if col.done is not None and not col.done.done():
            col.done.set_result(len(channels))

    async def _persist_replace(self, device_id: str, channels: list[Channel]) -> None:
        try:
            await self.gw.store.replace_channels(
                device_id, [record_from_channel(c) for c in channels]
            )
        except Exception:
            log.exception("store.channels_failed device_id=%s", device_id)

    async def _persist_merge(self, device_id: str, channels: list[Channel]) -> None:
        try:
            await self.gw.store.merge_channels(
                device_id, [record_from_channel(c) for c in channels]
            )
        except Exception:
            log.exception("store.channels_failed device_id=%s", device_id)

    def _refresh_counts(self, device_id: str | None) -> None:
        """Update a device's channel_count and the channel gauge (incrementally: a catalog
        storm must not rescan the whole table per device)."""
        table = self.gw.channels
        if device_id is not None:
            d = self.gw.registrar.devices.get(device_id)
            new = table.count(device_id)
            old = self._counted.get(device_id, 0)
            self._counted[device_id] = new
            self._channel_total += new - old
            if d is not None:
                d.channel_count = new
        else:
            self._counted = {}
            for dev_id in {c.device_id for c in table}:
                self._counted[dev_id] = table.count(dev_id)
            self._channel_total = sum(self._counted.values())
            for d in self.gw.registrar.devices.values():
                d.channel_count = self._counted.get(d.device_id, 0)
        self.gw.metrics.channels.set(self._channel_total)

    # -- change notifications --------------------------------------------------------------

    def on_notify(self, device_id: str, msg: CatalogNotify, now: float) -> None:
        """Apply a catalog change report (ON, OFF, VLOST, DEFECT, ADD, DEL, UPDATE)."""
        table = self.gw.channels
        wall = self.gw.clock()
        changed: list[Channel] = []
        removed: list[str] = []
        for item in msg.items:
            event = (item.event or "UPDATE").upper()
            current = table.get(item.device_id, device_id)
            if event == "DEL":
                if table.remove(device_id, item.device_id) is not None:
                    removed.append(item.device_id)
                continue
            if event in ("ON", "OFF", "VLOST", "DEFECT") and current is not None:
                current.status = "ON" if event == "ON" else "OFF"
                current.fault = event if event in ("VLOST", "DEFECT") else ""
                current.updated_at = wall
                changed.append(current)
                continue
            ch = channel_from_item(device_id, item, wall)
            if event in ("OFF", "VLOST", "DEFECT"):
                ch.status = "OFF"
            self.gw.zones.apply(ch)
            table.put(ch)
            changed.append(ch)
        if changed:
            self._spawn(self._persist_merge(device_id, changed))
        if removed:
            self._spawn(self._persist_delete(device_id, removed))
        self._refresh_counts(device_id)
        log.info(
            "catalog.notify device_id=%s changed=%d removed=%d",
            device_id,
            len(changed),
            len(removed),
        )
        for listener in self._on_change:
            listener(device_id, changed, removed)

    def _merge(self, device_id: str, items: Iterable[CatalogItem], now: float) -> None:
        wall = self.gw.clock()
        chans = [channel_from_item(device_id, it, wall) for it in items]
        for ch in chans:
            self.gw.zones.apply(ch)
            self.gw.channels.put(ch)
        if chans:
            self._spawn(self._persist_merge(device_id, chans))
        self._refresh_counts(device_id)

    async def _persist_delete(self, device_id: str, ids: list[str]) -> None:
        try:
            await self.gw.store.delete_channels(device_id, ids)
        except Exception:
            log.exception("store.channels_failed device_id=%s", device_id)
