"""Decoders, one per (root, CmdType), and the dispatch table (PROTOCOL.md §3).

Each decoder reads the envelope strictly (SN, 20-digit DeviceID: ManscdpError(400) naming
the element) and everything else tolerantly (absent or unparsable optional values become
``""``/None). Keys of `READERS` are (canonical root, lower-cased CmdType).
"""

from __future__ import annotations

from collections.abc import Callable

from . import _catalog
from ._values import (
    Fields,
    canonical_tag,
    children,
    opt_float,
    opt_int,
    require_id,
    require_sn,
    text_of,
)
from .errors import ManscdpError
from .ids import DeviceId, is_device_id
from .messages import (
    Alarm,
    AlarmResponse,
    AlarmStatus,
    Broadcast,
    BroadcastResponse,
    CatalogNotify,
    CatalogQuery,
    CatalogResponse,
    DeviceControl,
    DeviceControlResponse,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusQuery,
    DeviceStatusResponse,
    Keepalive,
    MediaStatus,
    Message,
    MobilePosition,
    UnknownMessage,
)
from .ptz import PtzCmd

__all__ = ["READERS", "Reader", "read_unknown"]

_MAX_SUM_NUM = 2**31 - 1

Reader = Callable[[Fields], Message]


def _opt_text(fields: Fields, tag: str) -> str | None:
    text = text_of(fields.get(tag))
    return text or None


def _sub(fields: Fields, tag: str) -> Fields:
    element = fields.get(tag)
    return children(element) if element is not None else {}


def _keepalive(f: Fields) -> Message:
    sn, device_id = require_sn(f), require_id(f)
    failed: list[DeviceId] = []
    info = f.get("Info")
    if info is not None:
        for child in info:
            text = text_of(child)
            if canonical_tag(child.tag) == "DeviceID" and is_device_id(text):
                failed.append(DeviceId(text))
    return Keepalive(sn, device_id, text_of(f.get("Status")), tuple(failed))


def _sum_num(f: Fields, default: int) -> int:
    raw = text_of(f.get("SumNum"))
    if not raw:
        return default
    value = opt_int(raw, 0, _MAX_SUM_NUM)
    if value is None:
        raise ManscdpError(f"SumNum must be an integer 0..{_MAX_SUM_NUM}, got {raw[:40]!r}")
    return value


def _catalog_response(f: Fields) -> Message:
    sn, device_id = require_sn(f), require_id(f)
    items, skipped = _catalog.decode_items(f.get("DeviceList"))
    return CatalogResponse(sn, device_id, _sum_num(f, len(items) + skipped), items, skipped)


def _catalog_notify(f: Fields) -> Message:
    sn, device_id = require_sn(f), require_id(f)
    items, skipped = _catalog.decode_items(f.get("DeviceList"))
    return CatalogNotify(sn, device_id, _sum_num(f, len(items) + skipped), items, skipped)


def _query(cls: type[CatalogQuery | DeviceInfoQuery | DeviceStatusQuery]) -> Reader:
    def decode_query(f: Fields) -> Message:
        return cls(require_sn(f), require_id(f))

    return decode_query


def _result(cls: type[DeviceControlResponse | AlarmResponse | BroadcastResponse]) -> Reader:
    def decode_result(f: Fields) -> Message:
        return cls(require_sn(f), require_id(f), text_of(f.get("Result")))

    return decode_result


def _device_info(f: Fields) -> Message:
    return DeviceInfoResponse(
        require_sn(f),
        require_id(f),
        device_name=text_of(f.get("DeviceName")),
        result=text_of(f.get("Result")),
        manufacturer=text_of(f.get("Manufacturer")),
        model=text_of(f.get("Model")),
        firmware=text_of(f.get("Firmware")),
        channel=opt_int(text_of(f.get("Channel"))),
    )


def _device_status(f: Fields) -> Message:
    sn, device_id = require_sn(f), require_id(f)
    alarms: list[AlarmStatus] = []
    alarm_list = f.get("Alarmstatus")
    if alarm_list is not None:
        for item in alarm_list:
            fields = children(item)
            alarm_id = text_of(fields.get("DeviceID"))
            if canonical_tag(item.tag) == "Item" and is_device_id(alarm_id):
                duty = text_of(fields.get("DutyStatus"))
                alarms.append(AlarmStatus(DeviceId(alarm_id), duty))
    return DeviceStatusResponse(
        sn,
        device_id,
        result=text_of(f.get("Result")),
        online=text_of(f.get("Online")),
        status=text_of(f.get("Status")),
        encode=text_of(f.get("Encode")),
        record=text_of(f.get("Record")),
        device_time=text_of(f.get("DeviceTime")),
        alarms=tuple(alarms),
    )


def _device_control(f: Fields) -> Message:
    sn, device_id = require_sn(f), require_id(f)
    ptz_text = text_of(f.get("PTZCmd"))
    info = _sub(f, "Info")
    return DeviceControl(
        sn,
        device_id,
        ptz_cmd=PtzCmd.decode(ptz_text) if ptz_text else None,
        guard_cmd=_opt_text(f, "GuardCmd"),
        tele_boot=_opt_text(f, "TeleBoot"),
        record_cmd=_opt_text(f, "RecordCmd"),
        alarm_cmd=_opt_text(f, "AlarmCmd"),
        iframe_cmd=_opt_text(f, "IFameCmd") or _opt_text(f, "IFrameCmd"),
        control_priority=opt_int(text_of(info.get("ControlPriority"))),
    )


def _alarm(f: Fields) -> Message:
    sn, device_id = require_sn(f), require_id(f)
    info = _sub(f, "Info")
    return Alarm(
        sn,
        device_id,
        priority=opt_int(text_of(f.get("AlarmPriority"))),
        method=opt_int(text_of(f.get("AlarmMethod"))),
        time=text_of(f.get("AlarmTime")),
        description=text_of(f.get("AlarmDescription")),
        longitude=opt_float(text_of(f.get("Longitude"))),
        latitude=opt_float(text_of(f.get("Latitude"))),
        alarm_type=opt_int(text_of(info.get("AlarmType"))),
    )


def _mobile_position(f: Fields) -> Message:
    return MobilePosition(
        require_sn(f),
        require_id(f),
        time=text_of(f.get("Time")),
        longitude=opt_float(text_of(f.get("Longitude"))),
        latitude=opt_float(text_of(f.get("Latitude"))),
        speed=opt_float(text_of(f.get("Speed"))),
        direction=opt_float(text_of(f.get("Direction"))),
        altitude=opt_float(text_of(f.get("Altitude"))),
    )


def _media_status(f: Fields) -> Message:
    return MediaStatus(require_sn(f), require_id(f), opt_int(text_of(f.get("NotifyType"))))


def _broadcast(f: Fields) -> Message:
    return Broadcast(require_sn(f), require_id(f, "SourceID"), require_id(f, "TargetID"))


READERS: dict[tuple[str, str], Reader] = {
    ("Notify", "keepalive"): _keepalive,
    ("Query", "catalog"): _query(CatalogQuery),
    ("Response", "catalog"): _catalog_response,
    ("Notify", "catalog"): _catalog_notify,
    ("Query", "deviceinfo"): _query(DeviceInfoQuery),
    ("Response", "deviceinfo"): _device_info,
    ("Query", "devicestatus"): _query(DeviceStatusQuery),
    ("Response", "devicestatus"): _device_status,
    ("Control", "devicecontrol"): _device_control,
    ("Response", "devicecontrol"): _result(DeviceControlResponse),
    ("Notify", "alarm"): _alarm,
    ("Response", "alarm"): _result(AlarmResponse),
    ("Notify", "mobileposition"): _mobile_position,
    ("Notify", "mediastatus"): _media_status,
    ("Notify", "broadcast"): _broadcast,
    ("Response", "broadcast"): _result(BroadcastResponse),
}


def read_unknown(root: str, cmd_type: str, f: Fields) -> UnknownMessage:
    """An unhandled CmdType: SN and DeviceID are optional here, but checked when present."""
    sn = require_sn(f) if text_of(f.get("SN")) else None
    device_id = require_id(f) if text_of(f.get("DeviceID")) else None
    return UnknownMessage(root, cmd_type[:64], sn, device_id)
