"""MANSCDP messages as frozen dataclasses (PROTOCOL.md §3).

One class per (root, CmdType) that gbgw acts on; `UnknownMessage` for the rest, which are
only acknowledged. XML spellings (``DeviceID``, ``SumNum``) stay in the codec; fields here are
snake_case. Each class validates on construction, so an invalid message cannot exist:
`sn` is 0 <= sn < 2**63 and 20-digit ids are checked. Optional text fields are ``""`` when
absent; optional numbers are ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from .errors import ManscdpError
from .ids import DeviceId, is_device_id, is_region_id
from .ptz import PtzCmd

__all__ = [
    "CATALOG_EVENTS",
    "Alarm",
    "AlarmResponse",
    "AlarmStatus",
    "Broadcast",
    "BroadcastResponse",
    "CatalogItem",
    "CatalogNotify",
    "CatalogQuery",
    "CatalogResponse",
    "DeviceControl",
    "DeviceControlResponse",
    "DeviceInfoQuery",
    "DeviceInfoResponse",
    "DeviceStatusQuery",
    "DeviceStatusResponse",
    "ItemKind",
    "Keepalive",
    "MediaStatus",
    "Message",
    "MobilePosition",
    "UnknownMessage",
]

SN_LIMIT = 2**63
"""SN values must be below this (tolerant of > 32 bits, but bounded)."""

ROOTS = ("Query", "Control", "Notify", "Response")
"""The root elements of MANSCDP bodies (§3.1)."""

CATALOG_EVENTS = frozenset({"ON", "OFF", "VLOST", "DEFECT", "ADD", "DEL", "UPDATE"})
"""`CatalogItem.event` values of a catalog change notification (§3.4)."""


def _check_sn(sn: int) -> None:
    if not 0 <= sn < SN_LIMIT:
        raise ManscdpError(f"SN out of range: {sn}")


def _check_id(value: str, what: str = "DeviceID") -> None:
    if not is_device_id(value):
        raise ManscdpError(f"{what} must be 20 ASCII digits, got {value[:40]!r}")


@dataclass(frozen=True, slots=True)
class _Envelope:
    """CmdType-independent head of most messages: SN and 20-digit DeviceID."""

    sn: int
    device_id: DeviceId

    def __post_init__(self) -> None:
        _check_sn(self.sn)
        _check_id(self.device_id)


@dataclass(frozen=True, slots=True)
class Keepalive(_Envelope):
    """Notify/Keepalive (§3.3): `status` ``OK`` or ``ERROR``; failed sub-devices in Info."""

    status: str = "OK"
    info_device_ids: tuple[DeviceId, ...] = ()


@dataclass(frozen=True, slots=True)
class CatalogQuery(_Envelope):
    """Query/Catalog (§3.4), also the body of a catalog SUBSCRIBE."""


class ItemKind(StrEnum):
    """Catalog node classification (§3.4)."""

    REGION = "region"
    BUSINESS_GROUP = "business_group"
    VIRTUAL_ORG = "virtual_org"
    CHANNEL = "channel"


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One catalog ``Item``: a region, business group, virtual organisation or channel."""

    device_id: str
    """20 digits, or a 2-8 digit civil code for a region node."""
    name: str = ""
    manufacturer: str = ""
    model: str = ""
    owner: str = ""
    civil_code: str = ""
    block: str = ""
    address: str = ""
    parental: int | None = None
    """1 if the node has children."""
    parent_id: str = ""
    safety_way: int | None = None
    register_way: int | None = None
    secrecy: int | None = None
    ip_address: str = ""
    port: int | None = None
    status: str | None = None
    """``ON`` or ``OFF`` (normalised from ON/ONLINE/OK and anything else), None if absent."""
    longitude: float | None = None
    """Decimal degrees."""
    latitude: float | None = None
    """Decimal degrees."""
    ptz_type: int | None = None
    """Info/PTZType: 1 dome, 2 half-dome, 3 fixed box, 4 remote-controlled box."""
    business_group_id: str = ""
    """The owning 215 group (216 items; channels under Info in 2016, directly in 2022)."""
    resolution: str = ""
    """Info/Resolution, as given."""
    event: str | None = None
    """Change notifications only: one of CATALOG_EVENTS."""

    def __post_init__(self) -> None:
        if not (is_device_id(self.device_id) or is_region_id(self.device_id)):
            raise ManscdpError(
                f"catalog item DeviceID must be 20 or 2-8 digits, got {self.device_id[:40]!r}"
            )
        if self.status not in (None, "ON", "OFF"):
            raise ManscdpError(f"catalog item Status must be ON or OFF, got {self.status!r}")
        if self.event is not None and self.event not in CATALOG_EVENTS:
            raise ManscdpError(f"catalog item Event not recognised: {self.event!r}")

    @property
    def kind(self) -> ItemKind:
        """Region (<= 8 digits), business group (type 215), virtual org (216) or channel."""
        if len(self.device_id) <= 8:
            return ItemKind.REGION
        code = self.device_id[10:13]
        if code == "215":
            return ItemKind.BUSINESS_GROUP
        if code == "216":
            return ItemKind.VIRTUAL_ORG
        return ItemKind.CHANNEL


@dataclass(frozen=True, slots=True)
class CatalogResponse(_Envelope):
    """One Response/Catalog fragment; `sum_num` is the total over all fragments."""

    sum_num: int = 0
    items: tuple[CatalogItem, ...] = ()
    skipped_items: int = 0
    """Items dropped while decoding (bad DeviceID); the valid ones still land."""


@dataclass(frozen=True, slots=True)
class CatalogNotify(_Envelope):
    """Notify/Catalog change report; each item carries an `event`."""

    sum_num: int = 0
    items: tuple[CatalogItem, ...] = ()
    skipped_items: int = 0
    """Items dropped while decoding (bad DeviceID)."""


@dataclass(frozen=True, slots=True)
class DeviceInfoQuery(_Envelope):
    """Query/DeviceInfo (§3.5)."""


@dataclass(frozen=True, slots=True)
class DeviceInfoResponse(_Envelope):
    """Response/DeviceInfo (§3.5); `channel` is the channel count."""

    device_name: str = ""
    result: str = ""
    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    channel: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceStatusQuery(_Envelope):
    """Query/DeviceStatus (§3.5)."""


@dataclass(frozen=True, slots=True)
class AlarmStatus:
    """One ``Alarmstatus/Item``: an alarm input and its ``DutyStatus``."""

    device_id: DeviceId
    duty_status: str
    """``ONDUTY``, ``OFFDUTY`` or ``ALARM``, as given."""

    def __post_init__(self) -> None:
        _check_id(self.device_id)


@dataclass(frozen=True, slots=True)
class DeviceStatusResponse(_Envelope):
    """Response/DeviceStatus (§3.5); text fields as given (``ONLINE``, ``OK``, ``ON``...)."""

    result: str = ""
    online: str = ""
    status: str = ""
    encode: str = ""
    record: str = ""
    device_time: str = ""
    """Local zone-less time, as given (``2024-05-01T10:20:30``)."""
    alarms: tuple[AlarmStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceControl(_Envelope):
    """Control/DeviceControl (§3.7); `device_id` is the channel. Unset commands are None."""

    ptz_cmd: PtzCmd | None = None
    guard_cmd: str | None = None
    """``SetGuard`` or ``ResetGuard``."""
    tele_boot: str | None = None
    """``Boot``."""
    record_cmd: str | None = None
    """``Record`` or ``StopRecord``."""
    alarm_cmd: str | None = None
    """``ResetAlarm``."""
    iframe_cmd: str | None = None
    """``Send``; read from IFameCmd (2016) or IFrameCmd (2022), Q-18."""
    control_priority: int | None = None
    """Info/ControlPriority."""


@dataclass(frozen=True, slots=True)
class DeviceControlResponse(_Envelope):
    """Response/DeviceControl: `result` ``OK`` or ``ERROR``."""

    result: str = "OK"


@dataclass(frozen=True, slots=True)
class Alarm(_Envelope):
    """Notify/Alarm (§3.8)."""

    priority: int | None = None
    """AlarmPriority, 1 (highest) to 4."""
    method: int | None = None
    """AlarmMethod: 1 phone, 2 device, 3 SMS, 4 GPS, 5 video, 6 device fault, 7 other."""
    time: str = ""
    """AlarmTime, local, as given."""
    description: str = ""
    longitude: float | None = None
    latitude: float | None = None
    alarm_type: int | None = None
    """Info/AlarmType."""


@dataclass(frozen=True, slots=True)
class AlarmResponse(_Envelope):
    """Response/Alarm: the business answer to an Alarm notify."""

    result: str = "OK"


@dataclass(frozen=True, slots=True)
class MobilePosition(_Envelope):
    """Notify/MobilePosition (§3.8)."""

    time: str = ""
    longitude: float | None = None
    latitude: float | None = None
    speed: float | None = None
    """km/h."""
    direction: float | None = None
    """Degrees, 0-360."""
    altitude: float | None = None
    """Metres."""


@dataclass(frozen=True, slots=True)
class MediaStatus(_Envelope):
    """Notify/MediaStatus (§3.11); `notify_type` 121 = end of file."""

    notify_type: int | None = 121


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Notify/Broadcast (§3.10): play audio from `source_id` on channel `target_id`."""

    sn: int
    source_id: DeviceId
    target_id: DeviceId

    def __post_init__(self) -> None:
        _check_sn(self.sn)
        _check_id(self.source_id, "SourceID")
        _check_id(self.target_id, "TargetID")


@dataclass(frozen=True, slots=True)
class BroadcastResponse(_Envelope):
    """Response/Broadcast: `result` ``OK`` or ``ERROR``."""

    result: str = "OK"


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A known root with a CmdType gbgw does not act on; acknowledge it and move on."""

    root: str
    """``Query``, ``Control``, ``Notify`` or ``Response``."""
    cmd_type: str
    sn: int | None = None
    device_id: DeviceId | None = None

    def __post_init__(self) -> None:
        if self.root not in ROOTS:
            raise ManscdpError(f"MANSCDP root must be one of {ROOTS}, got {self.root[:40]!r}")
        if self.sn is not None:
            _check_sn(self.sn)
        if self.device_id is not None:
            _check_id(self.device_id)


Message: TypeAlias = (
    Keepalive
    | CatalogQuery
    | CatalogResponse
    | CatalogNotify
    | DeviceInfoQuery
    | DeviceInfoResponse
    | DeviceStatusQuery
    | DeviceStatusResponse
    | DeviceControl
    | DeviceControlResponse
    | Alarm
    | AlarmResponse
    | MobilePosition
    | MediaStatus
    | Broadcast
    | BroadcastResponse
    | UnknownMessage
)
"""Everything `decode` returns and `encode` accepts."""
