"""Sans-I/O MANSCDP codec (GB/T 28181 XML over SIP MESSAGE): bytes in, dataclasses out.

Imports nothing from the rest of gateway, sip or media. See PROTOCOL.md §3.
"""

from __future__ import annotations

from ._xml import MAX_BODY_BYTES, MAX_DEPTH
from .charset import GB2312, GB18030, GBK, UTF8, canonical_encoding, decode_body, encode_body
from .codec import DEFAULT_FRAGMENT_BYTES, decode, encode, encode_catalog_fragments
from .errors import ManscdpError
from .ids import (
    DeviceId,
    civil_code_of,
    domain_of,
    is_device_id,
    is_region_id,
    parse_device_id,
    type_code,
)
from .messages import (
    CATALOG_EVENTS,
    Alarm,
    AlarmResponse,
    AlarmStatus,
    Broadcast,
    BroadcastResponse,
    CatalogItem,
    CatalogNotify,
    CatalogQuery,
    CatalogResponse,
    DeviceControl,
    DeviceControlResponse,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusQuery,
    DeviceStatusResponse,
    ItemKind,
    Keepalive,
    MediaStatus,
    Message,
    MobilePosition,
    UnknownMessage,
)
from .ptz import PTZ_ACTIONS, PtzCmd, focus_iris, from_action, preset, ptz_move, ptz_stop

__all__ = [
    "CATALOG_EVENTS",
    "DEFAULT_FRAGMENT_BYTES",
    "GB2312",
    "GB18030",
    "GBK",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "PTZ_ACTIONS",
    "UTF8",
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
    "DeviceId",
    "DeviceInfoQuery",
    "DeviceInfoResponse",
    "DeviceStatusQuery",
    "DeviceStatusResponse",
    "ItemKind",
    "Keepalive",
    "ManscdpError",
    "MediaStatus",
    "Message",
    "MobilePosition",
    "PtzCmd",
    "UnknownMessage",
    "canonical_encoding",
    "civil_code_of",
    "decode",
    "decode_body",
    "domain_of",
    "encode",
    "encode_body",
    "encode_catalog_fragments",
    "focus_iris",
    "from_action",
    "is_device_id",
    "is_region_id",
    "parse_device_id",
    "preset",
    "ptz_move",
    "ptz_stop",
    "type_code",
]
