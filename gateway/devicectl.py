"""MANSCDP requests to devices: send a MESSAGE, match the business answer by (device, CmdType, SN).

GB/T 28181 answers a query twice (PROTOCOL §3.1): a SIP 200 that only acknowledges receipt, and
later a separate MESSAGE with root ``Response``, the same CmdType and the same SN. ``Manscdp``
sends queries and controls, keeps one waiter per (device, CmdType, SN) with a deadline, and is
handed every ``Response`` the SIP handler decodes. DeviceInfo and DeviceStatus are queried
here; PTZ, which has no business answer, resolves on the SIP response to its MESSAGE.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING

from gateway.manscdp import (
    CatalogQuery,
    DeviceControl,
    DeviceId,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusQuery,
    DeviceStatusResponse,
    Message,
    PtzCmd,
    encode,
)
from gateway.registrar import Device
from sip.errors import NotFound, ServerTimeout, SipError
from sip.message import Response
from sip.uri import NameAddr, SipUri

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["DeviceError", "Manscdp"]

log = logging.getLogger("gbgw.devicectl")

MAX_WAITERS = 10_000
QUERY_TIMEOUT = 10.0  # seconds for a business answer (PROTOCOL §7: 10-30 s in practice)


class DeviceError(SipError):
    """The device answered the request with an error status."""

    status = 502


class Manscdp:
    """Sends MANSCDP MESSAGEs to devices and pairs business answers with their queries."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._sn = itertools.count(1)
        self._waiters: dict[tuple[str, str, int], asyncio.Future[Message]] = {}

    def next_sn(self) -> int:
        """A fresh SN (positive, wraps far beyond any device's memory)."""
        return next(self._sn) % 2_000_000_000 or next(self._sn)

    def device(self, device_id: str) -> Device:
        """A registered device, or NotFound."""
        d = self.gw.registrar.devices.get(device_id)
        if d is None or not d.host:
            raise NotFound(f"device {device_id} not found")
        return d

    async def send(self, device: Device, msg: Message, *, to_user: str | None = None) -> Response:
        """Send one MANSCDP MESSAGE; the final SIP response (408 on timeout)."""
        cfg = self.gw.config.gateway
        ep = self.gw.endpoint
        user = to_user or device.device_id
        req = ep.build_request(
            "MESSAGE",
            SipUri(device.host, user, device.port or None),
            device.target,
            from_=NameAddr(SipUri(cfg.domain, cfg.id)),
            to=NameAddr(SipUri(cfg.domain, user)),
            body=encode(msg, device.charset or "GB2312"),
            content_type="Application/MANSCDP+xml",
        )
        return await ep.request(req, device.target)

    async def subscribe_catalog(self, device_id: str, expires: int) -> Response:
        """SUBSCRIBE (Event: Catalog) with a Catalog query body; the device's final answer."""
        device = self.device(device_id)
        cfg = self.gw.config.gateway
        ep = self.gw.endpoint
        sn = self.next_sn()
        req = ep.build_request(
            "SUBSCRIBE",
            SipUri(device.host, device_id, device.port or None),
            device.target,
            from_=NameAddr(SipUri(cfg.domain, cfg.id)),
            to=NameAddr(SipUri(cfg.domain, device_id)),
            contact_user=cfg.id,
            headers=(("Event", f"Catalog;id={sn}"), ("Expires", str(expires))),
            body=encode(
                CatalogQuery(sn=sn, device_id=DeviceId(device_id)), device.charset or "GB2312"
            ),
            content_type="Application/MANSCDP+xml",
        )
        return await ep.request(req, device.target)

    async def query(
        self, device: Device, msg: Message, cmd_type: str, timeout: float = QUERY_TIMEOUT
    ) -> Message:
        """Send a query and wait for its business Response (ServerTimeout past ``timeout``)."""
        sn = getattr(msg, "sn", None)
        if not isinstance(sn, int):
            raise ValueError("a query needs an SN")
        key = (device.device_id, cmd_type, sn)
        if len(self._waiters) >= MAX_WAITERS:
            raise ServerTimeout("too many queries in flight")
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiters[key] = fut
        try:
            resp = await self.send(device, msg)
            if resp.status >= 300:
                raise DeviceError(f"device answered {resp.status} {resp.reason}")
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise ServerTimeout(
                f"no {cmd_type} answer from {device.device_id} in {timeout:g}s"
            ) from None
        finally:
            self._waiters.pop(key, None)

    def deliver(self, device_id: str, cmd_type: str, msg: Message) -> bool:
        """A business Response arrived; True when a waiter took it."""
        sn: int = getattr(msg, "sn", -1)
        fut = self._waiters.get((device_id, cmd_type, sn))
        if fut is None:
            body_id = getattr(msg, "device_id", "")
            fut = self._waiters.get((body_id, cmd_type, sn))
        if fut is None or fut.done():
            return False
        fut.set_result(msg)
        return True

    # -- the queries and controls the API and services use ---------------------------------

    async def device_info(self, device_id: str) -> DeviceInfoResponse:
        """Query DeviceInfo and fill the device's name, manufacturer, model and firmware."""
        device = self.device(device_id)
        msg = await self.query(
            device, DeviceInfoQuery(sn=self.next_sn(), device_id=DeviceId(device_id)), "DeviceInfo"
        )
        assert isinstance(msg, DeviceInfoResponse)
        changed = False
        for attr, value in (
            ("name", msg.device_name),
            ("manufacturer", msg.manufacturer),
            ("model", msg.model),
            ("firmware", msg.firmware),
        ):
            if value and getattr(device, attr) != value:
                setattr(device, attr, value[:128])
                changed = True
        if changed:
            await self.gw.device_sink.save(device)
        return msg

    async def device_status(self, device_id: str) -> DeviceStatusResponse:
        """Query DeviceStatus."""
        device = self.device(device_id)
        msg = await self.query(
            device,
            DeviceStatusQuery(sn=self.next_sn(), device_id=DeviceId(device_id)),
            "DeviceStatus",
        )
        assert isinstance(msg, DeviceStatusResponse)
        return msg

    async def ptz(self, device_id: str, channel_id: str, cmd: PtzCmd) -> Response:
        """Send a PTZCmd to a channel; the device's SIP answer (PTZ has no business answer)."""
        device = self.device(device_id)
        msg = DeviceControl(sn=self.next_sn(), device_id=DeviceId(channel_id), ptz_cmd=cmd)
        resp = await self.send(device, msg, to_user=channel_id)
        if resp.status == 408:
            raise ServerTimeout(f"device {device_id} did not answer the PTZ command")
        if resp.status >= 300:
            raise DeviceError(f"device answered {resp.status} {resp.reason}")
        log.info(
            "ptz.sent device_id=%s channel_id=%s ptz_cmd=%s", device_id, channel_id, cmd.encode()
        )
        return resp
