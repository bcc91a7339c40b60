"""Catalog sharing with upstream platforms (PROTOCOL §6.1): what each upstream sees.

Rules: the zones module alone decides (``zones.filter`` with the upstream's consumer); channels
go up with ParentID = their 216 group if we know it, else our cascade ID, Parental 0,
RegisterWay 1 and every field present; the regions and groups they hang from go with them.

A Catalog query is answered in fragments of ``PER_FRAGMENT`` items, echoing the upstream's
SN, each sent after the previous one's final response (or ``FRAGMENT_WAIT`` seconds). A
catalog SUBSCRIBE is kept (at most ``MAX_SUBSCRIPTIONS`` per upstream) until it expires, and
every change of a channel the upstream was told about, or may now see, goes up as a NOTIFY
(ADD, DEL, UPDATE, ON, OFF); a device going offline turns its shared channels OFF.
``UpstreamClient.announced`` remembers what each upstream was told, so an item that stops
being shared goes up as DEL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gateway.channels import Channel
from gateway.events import DeviceOffline, DeviceOnline, GatewayEvent
from gateway.manscdp import (
    CatalogItem,
    DeviceId,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusResponse,
    ManscdpError,
    Message,
    encode_catalog_fragments,
)
from gateway.registrar import gb_date
from sip.dialog import Dialog, DialogError
from sip.endpoint import new_tag
from sip.errors import BadRequest, SipParseError
from sip.message import Request, Response, make_response
from sip.transport import Target
from sip.uri import SipUri

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.cascade import UpstreamClient

__all__ = ["CatalogSharing", "Subscription"]

log = logging.getLogger("gbgw.cascade.catalog")

FRAGMENT_WAIT = 2.0  # seconds to wait for a catalog fragment's 200 before the next one
PER_FRAGMENT = 20  # catalog items per MESSAGE
MAX_SUBSCRIPTIONS = 16  # catalog subscriptions kept per upstream (oldest dropped)
MAX_SUBSCRIBE_EXPIRES = 86_400  # seconds
MANSCDP_TYPE = "Application/MANSCDP+xml"


@dataclass(slots=True)
class Subscription:
    """An upstream's catalog subscription (its dialog, and until when, in loop time)."""

    dialog: Dialog
    target: Target
    expires_at: float  # loop time
    event: str


class CatalogSharing:
    """Catalog answers, subscriptions and change notifications for every upstream."""

    def __init__(self, gw: Gateway, clients: Sequence[UpstreamClient]) -> None:
        self.gw = gw
        self.clients = clients
        self._tasks: set[asyncio.Task[None]] = set()
        gw.catalog.on_change(self._on_catalog_change)
        gw.subscribe(self._on_event)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel pending answers and notifications."""
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def answer_catalog(self, up: UpstreamClient, sn: int) -> None:
        """Send the shared catalog for the upstream's query ``sn`` (after its 200)."""
        self._spawn(self._send_catalog(up, sn))

    def answer_self(self, up: UpstreamClient, query: Message, sn: int) -> None:
        """Answer DeviceInfo/DeviceStatus about this platform (after the 200)."""
        self._spawn(self._answer_self(up, query, sn))

    # -- catalog -----------------------------------------------------------------------------

    def shared(self, up: UpstreamClient) -> list[Channel]:
        """The channels (cameras) ``up`` may see, by the zones module alone."""
        cams = [c for c in self.gw.channels if c.kind == "channel"]
        return self.gw.zones.filter(up.consumer, cams)

    def catalog_items(self, up: UpstreamClient) -> list[CatalogItem]:
        """Shared channels plus the tree nodes they hang from (PROTOCOL §6.1 shapes)."""
        channels = self.shared(up)
        nodes = {c.channel_id: c for c in self.gw.channels if c.kind != "channel"}
        wanted: set[str] = set()
        todo = [i for c in channels for i in (c.parent_id, c.business_group_id) if i in nodes]
        while todo:
            nid = todo.pop()
            if nid in wanted:
                continue
            wanted.add(nid)
            n = nodes[nid]
            todo += [i for i in (n.parent_id, n.business_group_id) if i in nodes]
        items: list[CatalogItem] = []
        for n in self.gw.zones.filter(up.consumer, (nodes[i] for i in sorted(wanted))):
            with contextlib.suppress(ManscdpError):
                items.append(_node_item(n))
        for c in channels:
            with contextlib.suppress(ManscdpError):
                items.append(_channel_item(c, up.local_id, nodes))
        return items

    async def _send_catalog(self, up: UpstreamClient, sn: int) -> None:
        items = self.catalog_items(up)
        up.announced = {i.device_id: i.status or "ON" for i in items if i.kind == "channel"}
        fragments = encode_catalog_fragments(sn, up.local_id, items, PER_FRAGMENT, "GB2312")
        sent = 0
        for body in fragments:
            if await up.send_manscdp(body, timeout=FRAGMENT_WAIT) < 300:
                sent += 1
        log.info(
            "upstream.catalog_sent upstream=%s sn=%d items=%d fragments=%d acknowledged=%d",
            up.cfg.name,
            sn,
            len(items),
            len(fragments),
            sent,
        )

    async def _answer_self(self, up: UpstreamClient, query: Message, sn: int) -> None:
        gw = self.gw
        did = DeviceId(up.local_id)
        answer: Message
        if isinstance(query, DeviceInfoQuery):
            answer = DeviceInfoResponse(
                sn=sn,
                device_id=did,
                device_name=gw.config.gateway.name,
                result="OK",
                manufacturer="gbgw",
                model="platform",
                firmware="0.1",
                channel=len(self.shared(up)),
            )
        else:
            answer = DeviceStatusResponse(
                sn=sn,
                device_id=did,
                result="OK",
                online="ONLINE",
                status="OK",
                device_time=gb_date(gw.clock()),
            )
        await up.send_manscdp(answer)

    # -- subscriptions and change notifications ----------------------------------------------

    def subscribe(self, up: UpstreamClient, req: Request, source: Target) -> Response:
        event = (req.headers.get("Event") or "").split(";", 1)[0].strip()
        if event.lower() != "catalog":
            raise BadRequest(f"subscription event {event or '-'} not supported")
        try:
            asked = req.expires
        except SipParseError:
            asked = None
        expires = min(MAX_SUBSCRIBE_EXPIRES, 3600 if asked is None else asked)
        now = self.gw.endpoint.loop.time()
        call_id = req.call_id
        old = up.subscriptions.get(call_id)
        tag = old.dialog.local.tag if old is not None else None
        tag = tag or new_tag()
        host, port = self.gw.endpoint.local_address(source)
        contact = SipUri(host, up.local_id, port)
        if expires <= 0:
            up.subscriptions.pop(call_id, None)
        elif old is not None:
            old.expires_at = now + expires
        else:
            try:
                dialog = Dialog.from_uas(req, tag, contact)
            except DialogError as exc:
                raise BadRequest(str(exc)) from None
            while len(up.subscriptions) >= MAX_SUBSCRIPTIONS:
                up.subscriptions.pop(next(iter(up.subscriptions)))
            up.subscriptions[call_id] = Subscription(dialog, source, now + expires, event)
        log.info(
            "upstream.subscribed upstream=%s event=%s expires=%d call_id=%s",
            up.cfg.name,
            event,
            expires,
            call_id,
        )
        return make_response(
            req,
            200,
            to_tag=tag,
            headers=(("Expires", str(max(0, expires))), ("Contact", f"<{contact}>")),
        )

    def _on_catalog_change(
        self, device_id: str, changed: list[Channel], removed: list[str]
    ) -> None:
        for up in self.clients:
            items: list[CatalogItem] = []
            nodes = {c.channel_id: c for c in self.gw.channels if c.kind != "channel"}
            for c in changed:
                if c.kind != "channel":
                    continue
                before = up.announced.get(c.channel_id)
                if self.gw.zones.allows(up.consumer, c):
                    ev = "ADD" if before is None else ("UPDATE" if before == c.status else c.status)
                    up.announced[c.channel_id] = c.status
                    with contextlib.suppress(ManscdpError):
                        items.append(_with_event(_channel_item(c, up.local_id, nodes), ev))
                elif before is not None:
                    del up.announced[c.channel_id]
                    items.append(CatalogItem(device_id=c.channel_id, event="DEL"))
            for cid in removed:
                if up.announced.pop(cid, None) is not None and self.gw.channels.get(cid) is None:
                    with contextlib.suppress(ManscdpError):
                        items.append(CatalogItem(device_id=cid, event="DEL"))
            self._notify(up, items)

    def _on_event(self, event: GatewayEvent) -> None:
        match event:
            case DeviceOffline(device_id=d) | DeviceOnline(device_id=d):
                status = "OFF" if isinstance(event, DeviceOffline) else "ON"
                for up in self.clients:
                    items = []
                    for c in self.gw.channels.of_device(d):
                        if c.kind != "channel" or c.channel_id not in up.announced:
                            continue
                        if status == "ON" and c.status != "ON":
                            continue
                        up.announced[c.channel_id] = status
                        with contextlib.suppress(ManscdpError):
                            items.append(CatalogItem(device_id=c.channel_id, event=status))
                    self._notify(up, items)
            case _:
                pass

    def _notify(self, up: UpstreamClient, items: list[CatalogItem]) -> None:
        if not items or not up.subscriptions:
            return
        now = self.gw.endpoint.loop.time()
        for call_id, sub in list(up.subscriptions.items()):
            if sub.expires_at <= now:
                del up.subscriptions[call_id]
                log.info("upstream.subscription_expired upstream=%s", up.cfg.name)
                continue
            self._spawn(self._send_notify(up, sub, items))

    async def _send_notify(
        self, up: UpstreamClient, sub: Subscription, items: list[CatalogItem]
    ) -> None:
        ep = self.gw.endpoint
        sn = self.gw.manscdp.next_sn()
        left = max(0, int(sub.expires_at - ep.loop.time()))
        for body in encode_catalog_fragments(
            sn, up.local_id, items, PER_FRAGMENT, "GB2312", notify=True
        ):
            req = sub.dialog.request("NOTIFY", ep.via_for(sub.target), body=body)
            req.headers.add("Event", sub.event)
            req.headers.add("Subscription-State", f"active;expires={left}")
            req.headers.add("Content-Type", MANSCDP_TYPE)  # after the dialog's own headers
            try:
                resp = await asyncio.wait_for(ep.request(req, sub.target), FRAGMENT_WAIT * 2)
            except TimeoutError:
                continue
            log.info(
                "upstream.notify_sent upstream=%s items=%d status=%d",
                up.cfg.name,
                len(items),
                resp.status,
            )


def _with_event(item: CatalogItem, event: str) -> CatalogItem:
    return replace(item, event=event)


def _node_item(n: Channel) -> CatalogItem:
    """A region, business group (215) or virtual organisation (216) as wvp sends it."""
    if n.kind == "region":
        return CatalogItem(device_id=n.channel_id, name=n.name)
    if n.kind == "business_group":
        return CatalogItem(device_id=n.channel_id, name=n.name, parent_id=n.parent_id)
    return CatalogItem(
        device_id=n.channel_id,
        name=n.name,
        parent_id=n.parent_id,
        business_group_id=n.business_group_id,
    )


def _channel_item(c: Channel, local_id: str, nodes: dict[str, Channel]) -> CatalogItem:
    """A shared channel: ParentID = its 216 group if known, else our cascade ID."""
    parent = c.parent_id
    if not (parent in nodes and nodes[parent].kind == "virtual_org"):
        parent = local_id
    return CatalogItem(
        device_id=c.channel_id,
        name=c.name,
        manufacturer=c.manufacturer,
        model=c.model,
        owner=c.owner,
        civil_code=c.civil_code or c.channel_id[:6],
        address=c.address,
        parental=0,
        parent_id=parent,
        safety_way=0,
        register_way=1,
        secrecy=1 if c.secrecy else 0,
        ip_address=c.ip_address,
        port=c.port,
        status="ON" if c.status == "ON" else "OFF",
        longitude=c.longitude,
        latitude=c.latitude,
        ptz_type=c.ptz_type,
        business_group_id=c.business_group_id if c.business_group_id in nodes else "",
    )
