"""Rows as the rest of gbgw sees them: frozen, slotted dataclasses, checked on construction.

Timestamps are timezone-aware datetimes; the store writes them as UTC and reads them back as
UTC whatever the database (SQLite keeps naive UTC text, PostgreSQL ``timestamptz``).
Free-text fields a device may omit are ``None`` when unknown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeAlias

__all__ = [
    "AuditEntry",
    "AvailabilityEvent",
    "ChannelRecord",
    "DeviceRecord",
    "JsonValue",
]

JsonValue: TypeAlias = str | int | float | bool | list["JsonValue"] | dict[str, "JsonValue"] | None

_DEVICE_ID = re.compile("[0-9]{20}")


def _check_device_id(value: str) -> None:
    if not _DEVICE_ID.fullmatch(value):
        raise ValueError(f"device_id must be 20 digits, got {value!r}")


def _check_aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device or lower platform (one row of ``devices``)."""

    device_id: str
    name: str | None = None
    password: str | None = field(default=None, repr=False)
    """Per-device digest password; None = ``sip.password``. Never logged."""
    transport: str = "udp"
    address: str | None = None
    """Host the device registered from."""
    port: int | None = None
    registered_at: datetime | None = None
    last_seen: datetime | None = None
    expires_at: datetime | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    charset: str | None = None
    """Body charset the device speaks, e.g. ``GB2312``."""
    extra: Mapping[str, JsonValue] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_device_id(self.device_id)
        for name in ("registered_at", "last_seen", "expires_at"):
            _check_aware(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    """One catalog item of a device (one row of ``channels``); ``channel_id`` may be a region."""

    device_id: str
    channel_id: str
    name: str | None = None
    civil_code: str | None = None
    parent_id: str | None = None
    business_group_id: str | None = None
    kind: str | None = None
    status: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    owner: str | None = None
    address: str | None = None
    ip_address: str | None = None
    port: int | None = None
    longitude: float | None = None
    latitude: float | None = None
    ptz_type: int | None = None
    secrecy: bool = False
    resolution: str | None = None
    updated_at: datetime | None = None
    extra: Mapping[str, JsonValue] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_device_id(self.device_id)
        if not 1 <= len(self.channel_id) <= 20:
            raise ValueError(f"channel_id must be 1-20 characters, got {self.channel_id!r}")
        _check_aware("updated_at", self.updated_at)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who did what to which target (one row of ``audit``); ``id`` is set by the store."""

    at: datetime
    consumer: str
    """Token or upstream name, or ``"sip"``/``"system"``."""
    action: str
    target: str = ""
    peer: str = ""
    """Client address, ``host:port``."""
    result: str = ""
    detail: str = ""
    id: int | None = None

    def __post_init__(self) -> None:
        _check_aware("at", self.at)


@dataclass(frozen=True, slots=True)
class AvailabilityEvent:
    """A device or channel going online or offline (one row of ``availability``)."""

    at: datetime
    subject_id: str
    kind: Literal["device", "channel"]
    online: bool
    id: int | None = None

    def __post_init__(self) -> None:
        _check_aware("at", self.at)
        if self.kind not in ("device", "channel"):
            raise ValueError(f"kind must be 'device' or 'channel', got {self.kind!r}")
