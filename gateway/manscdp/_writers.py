"""Encoders: message to XML text (PROTOCOL.md §3), prolog and envelope helpers.

The envelope comes first: root, CmdType, SN, DeviceID (Broadcast: SourceID, TargetID).
Lines end in CRLF. Text is escaped by `_values.render`; bytes are made by the caller.
"""

from __future__ import annotations

from . import _catalog
from ._values import is_2022, render
from .errors import ManscdpError
from .messages import (
    Alarm,
    AlarmResponse,
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

__all__ = ["head", "prolog", "write_message"]


def prolog(declared: str) -> bytes:
    """The XML declaration naming the charset the body bytes are in, with its CRLF."""
    return f'<?xml version="1.0" encoding="{declared}"?>\r\n'.encode("ascii")


def head(root: str, cmd_type: str, sn: int, device_id: str | None) -> list[str]:
    """Opening root tag, CmdType, SN and (unless None) DeviceID lines."""
    parts = [f"<{root}>\r\n", render("CmdType", cmd_type), render("SN", sn)]
    if device_id is not None:
        parts.append(render("DeviceID", device_id))
    return parts


def _body(msg: Message, gb_version: str) -> tuple[str, str, list[str]]:
    """(root, CmdType, elements after the envelope) for `msg`."""
    match msg:
        case Keepalive():
            parts = [render("Status", msg.status)]
            if msg.info_device_ids:
                parts.append("<Info>\r\n")
                parts.extend(render("DeviceID", d) for d in msg.info_device_ids)
                parts.append("</Info>\r\n")
            return "Notify", "Keepalive", parts
        case CatalogQuery():
            return "Query", "Catalog", []
        case CatalogResponse() | CatalogNotify():
            root = "Response" if isinstance(msg, CatalogResponse) else "Notify"
            parts = [render("SumNum", msg.sum_num), f'<DeviceList Num="{len(msg.items)}">\r\n']
            parts.extend(_catalog.render_item(item, gb_version) for item in msg.items)
            parts.append("</DeviceList>\r\n")
            return root, "Catalog", parts
        case DeviceInfoQuery():
            return "Query", "DeviceInfo", []
        case DeviceInfoResponse():
            return (
                "Response",
                "DeviceInfo",
                [
                    render("DeviceName", msg.device_name),
                    render("Result", msg.result),
                    render("Manufacturer", msg.manufacturer),
                    render("Model", msg.model),
                    render("Firmware", msg.firmware),
                    render("Channel", msg.channel),
                ],
            )
        case DeviceStatusQuery():
            return "Query", "DeviceStatus", []
        case DeviceStatusResponse():
            parts = [
                render("Result", msg.result),
                render("Online", msg.online),
                render("Status", msg.status),
                render("Encode", msg.encode),
                render("Record", msg.record),
                render("DeviceTime", msg.device_time),
            ]
            if msg.alarms:
                parts.append(f'<Alarmstatus Num="{len(msg.alarms)}">\r\n')
                for alarm in msg.alarms:
                    parts.append("<Item>\r\n")
                    parts.append(render("DeviceID", alarm.device_id))
                    parts.append(render("DutyStatus", alarm.duty_status))
                    parts.append("</Item>\r\n")
                parts.append("</Alarmstatus>\r\n")
            return "Response", "DeviceStatus", parts
        case DeviceControl():
            iframe_tag = "IFrameCmd" if is_2022(gb_version) else "IFameCmd"
            commands: tuple[tuple[str, str | None], ...] = (
                ("PTZCmd", msg.ptz_cmd.encode() if msg.ptz_cmd is not None else None),
                ("TeleBoot", msg.tele_boot),
                ("RecordCmd", msg.record_cmd),
                ("GuardCmd", msg.guard_cmd),
                ("AlarmCmd", msg.alarm_cmd),
                (iframe_tag, msg.iframe_cmd),
            )
            parts = [render(tag, value) for tag, value in commands if value]
            if msg.control_priority is not None:
                parts.append("<Info>\r\n")
                parts.append(render("ControlPriority", msg.control_priority))
                parts.append("</Info>\r\n")
            return "Control", "DeviceControl", parts
        case DeviceControlResponse():
            return "Response", "DeviceControl", [render("Result", msg.result)]
        case Alarm():
            parts = [
                render("AlarmPriority", msg.priority),
                render("AlarmMethod", msg.method),
                render("AlarmTime", msg.time),
                render("AlarmDescription", msg.description),
            ]
            if msg.longitude is not None:
                parts.append(render("Longitude", msg.longitude))
            if msg.latitude is not None:
                parts.append(render("Latitude", msg.latitude))
            if msg.alarm_type is not None:
                parts.append(f"<Info>\r\n{render('AlarmType', msg.alarm_type)}</Info>\r\n")
            return "Notify", "Alarm", parts
        case AlarmResponse():
            return "Response", "Alarm", [render("Result", msg.result)]
        case MobilePosition():
            return (
                "Notify",
                "MobilePosition",
                [
                    render("Time", msg.time),
                    render("Longitude", msg.longitude),
                    render("Latitude", msg.latitude),
                    render("Speed", msg.speed),
                    render("Direction", msg.direction),
                    render("Altitude", msg.altitude),
                ],
            )
        case MediaStatus():
            return "Notify", "MediaStatus", [render("NotifyType", msg.notify_type)]
        case BroadcastResponse():
            return "Response", "Broadcast", [render("Result", msg.result)]
        case _:
            raise ManscdpError(f"cannot encode {type(msg).__name__}", status=500)


def write_message(msg: Message, gb_version: str = "2.0") -> str:
    """The XML text of `msg`, without the prolog."""
    if isinstance(msg, Broadcast):
        root = "Notify"
        parts = head(root, "Broadcast", msg.sn, None)
        parts += [render("SourceID", msg.source_id), render("TargetID", msg.target_id)]
    elif isinstance(msg, UnknownMessage):
        root = msg.root
        parts = [f"<{root}>\r\n", render("CmdType", msg.cmd_type)]
        if msg.sn is not None:
            parts.append(render("SN", msg.sn))
        if msg.device_id is not None:
            parts.append(render("DeviceID", msg.device_id))
    else:
        root, cmd_type, body = _body(msg, gb_version)
        parts = head(root, cmd_type, msg.sn, msg.device_id)
        parts += body
    parts.append(f"</{root}>\r\n")
    return "".join(parts)
