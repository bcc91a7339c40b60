"""Catalog items: decoding, rendering, and fragmenting a catalog for an upper platform.

Decoding is the hot path (a 100,000-channel NVR sends thousands of fragments), so an item
is read in one pass over its children into a positional list, with exact tag spellings
looked up first. A malformed item (DeviceID neither 20 nor 2-8 digits) is skipped and
counted; every other field degrades to ``""``/None rather than failing the message.

Rendering follows PROTOCOL.md §6.1: a channel carries every §3.4 field, as an empty element
when unknown (uppers check presence); regions, business groups (215) and virtual
organisations (216) carry DeviceID and Name, 216 also ParentID and BusinessGroupID, plus
whatever else is set.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._values import canonical_tag, is_2022, render
from ._xml import Element
from .ids import is_device_id, is_region_id
from .messages import CATALOG_EVENTS, CatalogItem, ItemKind

__all__ = ["decode_items", "render_item"]

# Item children in CatalogItem field order; Info is read separately.
_FIELDS = (
    "DeviceID",
    "Name",
    "Manufacturer",
    "Model",
    "Owner",
    "CivilCode",
    "Block",
    "Address",
    "Parental",
    "ParentID",
    "SafetyWay",
    "RegisterWay",
    "Secrecy",
    "IPAddress",
    "Port",
    "Status",
    "Longitude",
    "Latitude",
    "PTZType",
    "BusinessGroupID",
    "Resolution",
    "Event",
)
_INDEX: dict[str, int] = {tag: i for i, tag in enumerate(_FIELDS)}
_INFO = -1
_INDEX["Info"] = _INFO
_INFO_FIELDS = frozenset({_INDEX["PTZType"], _INDEX["BusinessGroupID"], _INDEX["Resolution"]})
_NFIELDS = len(_FIELDS)

_ON = frozenset({"ON", "ONLINE", "OK"})


def _int(text: str, high: int = 2**31 - 1) -> int | None:
    # `text` is already stripped; small ASCII digit strings dominate.
    if not text or len(text) > 12 or not text.isascii():
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 <= value <= high else None


def _float(text: str) -> float | None:
    if not text or len(text) > 40 or not text.isascii():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    # Finite check without a call: NaN - NaN and inf - inf are NaN, and NaN != 0.0.
    return value if value - value == 0.0 else None


def _status(text: str) -> str | None:
    if not text:
        return None
    return "ON" if text.upper() in _ON else "OFF"


def _event(text: str) -> str | None:
    value = text.upper()
    return value if value in CATALOG_EVENTS else None


def _decode_item(item: Element) -> CatalogItem | None:
    raw: list[str | None] = [None] * _NFIELDS
    index_of = _INDEX.get
    for child in item:
        index = index_of(child.tag)
        if index is None:
            index = index_of(canonical_tag(child.tag))
            if index is None:
                continue
        if index == _INFO:
            for sub in child:
                sub_index = index_of(sub.tag)
                if sub_index is None:
                    sub_index = index_of(canonical_tag(sub.tag))
                # A field given directly under Item wins over the same one under Info.
                if sub_index in _INFO_FIELDS and raw[sub_index] is None:
                    raw[sub_index] = sub.text or ""
        else:
            raw[index] = child.text or ""
    v = [text.strip() if text else "" for text in raw]
    device_id = v[0]
    if not (is_device_id(device_id) or is_region_id(device_id)):
        return None
    return CatalogItem(
        device_id,
        v[1],
        v[2],
        v[3],
        v[4],
        v[5],
        v[6],
        v[7],
        _int(v[8]),
        v[9],
        _int(v[10]),
        _int(v[11]),
        _int(v[12]),
        v[13],
        _int(v[14], 65535),
        _status(v[15]),
        _float(v[16]),
        _float(v[17]),
        _int(v[18]),
        v[19],
        v[20],
        _event(v[21]),
    )


def decode_items(device_list: Element | None) -> tuple[tuple[CatalogItem, ...], int]:
    """Items of a ``DeviceList`` and the number skipped as malformed."""
    if device_list is None:
        return (), 0
    items: list[CatalogItem] = []
    skipped = 0
    for element in device_list:
        tag = element.tag
        if tag != "Item" and canonical_tag(tag) != "Item":
            continue
        item = _decode_item(element)
        if item is None:
            skipped += 1
        else:
            items.append(item)
    return tuple(items), skipped


def _set(value: str | int | float | None) -> bool:
    return value is not None and value != ""


def render_item(item: CatalogItem, gb_version: str = "2.0") -> str:
    """One ``<Item>...</Item>`` block (§6.1 shapes); `gb_version` "3.0" moves
    BusinessGroupID of channels out of Info."""
    kind = item.kind
    full = kind is ItemKind.CHANNEL
    parts = ["<Item>\r\n", render("DeviceID", item.device_id)]
    if item.event is not None:
        parts.append(render("Event", item.event))
    parts.append(render("Name", item.name))
    pairs: Iterable[tuple[str, str | int | float | None]] = (
        ("Manufacturer", item.manufacturer),
        ("Model", item.model),
        ("Owner", item.owner),
        ("CivilCode", item.civil_code),
        ("Block", item.block),
        ("Address", item.address),
        ("Parental", item.parental),
        ("ParentID", item.parent_id),
        ("SafetyWay", item.safety_way),
        ("RegisterWay", item.register_way),
        ("Secrecy", item.secrecy),
        ("IPAddress", item.ip_address),
        ("Port", item.port),
        ("Status", item.status),
        ("Longitude", item.longitude),
        ("Latitude", item.latitude),
    )
    virtual_org = kind is ItemKind.VIRTUAL_ORG
    for tag, value in pairs:
        if full or _set(value) or (virtual_org and tag == "ParentID"):
            parts.append(render(tag, value))
    group_in_info = full and not is_2022(gb_version)
    if not group_in_info and (virtual_org or item.business_group_id):
        parts.append(render("BusinessGroupID", item.business_group_id))
    info = []
    if item.ptz_type is not None:
        info.append(render("PTZType", item.ptz_type))
    if item.resolution:
        info.append(render("Resolution", item.resolution))
    if group_in_info and item.business_group_id:
        info.append(render("BusinessGroupID", item.business_group_id))
    if info:
        parts.append("<Info>\r\n")
        parts.extend(info)
        parts.append("</Info>\r\n")
    parts.append("</Item>\r\n")
    return "".join(parts)
