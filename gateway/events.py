"""Gateway events: what the registrar and services announce to each other."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeviceOffline", "DeviceOnline", "DeviceUnregistered", "GatewayEvent"]


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    """Base of all gateway events."""


@dataclass(frozen=True, slots=True)
class DeviceOnline(GatewayEvent):
    """A device registered or came back with a keepalive."""

    device_id: str


@dataclass(frozen=True, slots=True)
class DeviceOffline(GatewayEvent):
    """A device went offline (``reason``: keepalive timeout, registration expired, ...)."""

    device_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceUnregistered(GatewayEvent):
    """A device unregistered (Expires: 0) or was deleted through the API."""

    device_id: str
