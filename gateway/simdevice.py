"""What a simulated device answers: Catalog, DeviceInfo, DeviceStatus and PTZ.

Used by ``gbgw simulate``. Each device has ``channels`` cameras (type 131) with Chinese names,
civil codes from ``civil_code`` and IDs derived from the device's serial; catalogs are sent in
fragments of ``per_fragment`` items, GB2312-encoded, each as its own MESSAGE with a fresh
Call-ID (as real devices do), the next one after the previous one's 200.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.manscdp import (
    CatalogItem,
    CatalogQuery,
    DeviceControl,
    DeviceId,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusQuery,
    DeviceStatusResponse,
    ManscdpError,
    Message,
    decode,
    encode,
    encode_catalog_fragments,
)

__all__ = ["DeviceProfile", "answer_manscdp", "channel_ids", "channel_items"]

# GB2312 names, so catalogs exercise the charset path as real devices do
_PLACES = (
    "东门入口",
    "西门停车场",
    "南广场",
    "北门通道",
    "一楼大厅",
    "机房",
    "二号路口",
    "河西大桥",
)


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """Catalog shape of every simulated device."""

    channels: int = 4
    civil_code: str = "620902"
    per_fragment: int = 2
    manufacturer: str = "gbgw-sim"
    model: str = "SIM-IPC"
    firmware: str = "1.0"


def channel_ids(device_id: str, count: int) -> list[str]:
    """Channel IDs of a device: its first 10 digits, type 131, 7-digit serial from its own."""
    base = int(device_id[-6:]) * 1000
    return [f"{device_id[:10]}131{(base + j) % 10_000_000:07d}" for j in range(1, count + 1)]


def channel_items(device_id: str, profile: DeviceProfile) -> list[CatalogItem]:
    """The catalog items a device reports."""
    items = []
    for j, cid in enumerate(channel_ids(device_id, profile.channels)):
        items.append(
            CatalogItem(
                device_id=cid,
                name=f"{_PLACES[j % len(_PLACES)]}摄像机{j + 1}号",
                manufacturer=profile.manufacturer,
                model=profile.model,
                owner="Owner",
                civil_code=profile.civil_code,
                address=_PLACES[j % len(_PLACES)],
                parental=0,
                parent_id=device_id,
                safety_way=0,
                register_way=1,
                secrecy=0,
                status="ON",
                longitude=98.49 + j / 1000,
                latitude=39.73,
                ptz_type=1 if j % 2 == 0 else 3,
            )
        )
    return items


SendMessage = Callable[[bytes], Awaitable[int]]
"""Sends one MANSCDP body to the gateway as a MESSAGE; returns the SIP status."""


async def answer_manscdp(
    device_id: str, body: bytes, profile: DeviceProfile, send: SendMessage
) -> None:
    """Act on a MANSCDP request the device got (after its SIP 200 has gone out)."""
    try:
        msg, encoding = decode(body)
    except ManscdpError:
        return
    reply: Message | None = None
    match msg:
        case CatalogQuery(sn=sn):
            items = channel_items(device_id, profile)
            for fragment in encode_catalog_fragments(
                sn, device_id, items, per_fragment=profile.per_fragment, encoding="GB2312"
            ):
                if await send(fragment) >= 300:
                    return
            return
        case DeviceInfoQuery(sn=sn):
            reply = DeviceInfoResponse(
                sn=sn,
                device_id=DeviceId(device_id),
                device_name=f"sim {device_id[-4:]}",
                result="OK",
                manufacturer=profile.manufacturer,
                model=profile.model,
                firmware=profile.firmware,
                channel=profile.channels,
            )
        case DeviceStatusQuery(sn=sn):
            reply = DeviceStatusResponse(
                sn=sn,
                device_id=DeviceId(device_id),
                result="OK",
                online="ONLINE",
                status="OK",
                encode="ON",
                record="OFF",
            )
        case DeviceControl(ptz_cmd=ptz) if ptz is not None:
            # PTZ has no business answer; report what arrived for tests and demos
            print(
                json.dumps(
                    {
                        "event": "sim.ptz",
                        "device_id": device_id,
                        "channel_id": msg.device_id,
                        "ptz_cmd": ptz.encode(),
                    }
                ),
                flush=True,
                file=sys.stdout,
            )
            return
        case _:
            return
    if reply is not None:
        await send(encode(reply, encoding if encoding else "GB2312"))
