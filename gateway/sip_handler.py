"""Routes SIP requests that reach the gateway to the service that owns them.

REGISTER goes to the registrar; MESSAGE bodies are decoded as MANSCDP once, here, and handed
on by CmdType (Keepalive to the registrar; later capabilities add their own); OPTIONS answers
200 so peers and monitors can probe liveness. A malformed body is a 400 and is counted both as
a malformed MANSCDP body and as a malformed SIP message.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gateway.manscdp import (
    CatalogNotify,
    CatalogResponse,
    DeviceControlResponse,
    DeviceInfoResponse,
    DeviceStatusResponse,
    Keepalive,
    ManscdpError,
    decode,
)
from sip.endpoint import new_tag
from sip.errors import BadRequest, NotFound, SipError, UnsupportedMediaType
from sip.message import Request, Response, make_response
from sip.transport import Target

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.cascade import UpstreamClient

__all__ = ["GatewaySipHandler"]

log = logging.getLogger("gbgw.sip")

MANSCDP = "application/manscdp+xml"
_CASCADE_METHODS = frozenset({"MESSAGE", "SUBSCRIBE", "INVITE", "ACK", "BYE"})


class _MethodNotAllowed(SipError):
    status = 405


class GatewaySipHandler:
    """The gateway's transaction user: one entry point for every new request."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def handle(self, req: Request, source: Target) -> Response | None:
        """Dispatch a request by method; SipError becomes its response in the endpoint."""
        now = self.gw.endpoint.loop.time()
        method = req.method
        if method in _CASCADE_METHODS:
            # PROTOCOL §6: requests from an upstream platform (From user = its ID)
            upstream = self.gw.cascade.upstream_of(req, source)
            if upstream is not None:
                if method == "MESSAGE":
                    return self._message(req, source, now, upstream)
                return self.gw.cascade.handle(upstream, req, source)
        if method == "REGISTER":
            return self.gw.registrar.handle_register(req, source, now)
        if method in ("MESSAGE", "NOTIFY"):
            return self._message(req, source, now)
        if method == "OPTIONS":
            return make_response(
                req,
                200,
                to_tag=new_tag(),
                headers=(("Allow", "REGISTER, MESSAGE, OPTIONS, INVITE, ACK, BYE, CANCEL"),),
            )
        if method == "ACK":
            return None
        if method == "BYE":
            return self.gw.streams.on_bye(req)
        if method == "CANCEL":
            return make_response(req, 481, to_tag=new_tag())
        raise _MethodNotAllowed(f"{method} is not handled here")

    def _message(
        self, req: Request, source: Target, now: float, upstream: UpstreamClient | None = None
    ) -> Response | None:
        ctype = req.content_type
        if ctype != MANSCDP:
            raise UnsupportedMediaType(f"Content-Type {ctype} is not {MANSCDP}")
        try:
            msg, _encoding = decode(req.body)
        except ManscdpError as exc:
            self.gw.metrics.manscdp_malformed.inc()
            self.gw.metrics.sip_malformed.inc()
            log.warning(
                "manscdp.malformed call_id=%s peer=%s:%d reason=%s",
                req.call_id,
                source[1],
                source[2],
                exc.reason.replace(" ", "_")[:80],
            )
            self.gw.catalog.on_malformed_fragment(req.from_.uri.user or "")
            if exc.status == 415:
                raise UnsupportedMediaType(exc.reason) from None
            raise BadRequest(exc.reason) from None
        if upstream is not None:
            return self.gw.cascade.on_message(upstream, req, msg, source)
        device_id = req.from_.uri.user or ""
        if isinstance(msg, Keepalive):
            self.gw.registrar.handle_keepalive(device_id, source, now)
            return make_response(req, 200, to_tag=new_tag())
        device = self.gw.registrar.seen(device_id, now)
        if device is None:
            raise NotFound("device not registered")
        if _encoding and device.charset != _encoding:
            device.charset = _encoding  # replies use the encoding the device uses
        match msg:
            case CatalogResponse():
                self.gw.catalog.on_response(device_id, msg, now)
            case CatalogNotify():
                self.gw.catalog.on_notify(device_id, msg, now)
            case DeviceInfoResponse():
                self.gw.manscdp.deliver(device_id, "DeviceInfo", msg)
            case DeviceStatusResponse():
                self.gw.manscdp.deliver(device_id, "DeviceStatus", msg)
            case DeviceControlResponse():
                self.gw.manscdp.deliver(device_id, "DeviceControl", msg)
            case _:
                pass
        return make_response(req, 200, to_tag=new_tag())
