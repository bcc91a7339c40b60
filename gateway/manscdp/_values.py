"""Element text conversions shared by the decoders and encoders.

Decoding is tolerant but bounded: surrounding whitespace is ignored, element names match
case-insensitively (exact spelling first, which is the fast path), optional numbers that do
not parse become None. Envelope values (SN, DeviceID) are strict and raise ManscdpError(400).
"""

from __future__ import annotations

import math
from decimal import Decimal

from ._xml import Element, escape, local_name
from .errors import ManscdpError
from .ids import DeviceId, is_device_id
from .messages import SN_LIMIT

__all__ = [
    "Fields",
    "canonical_tag",
    "children",
    "fmt_float",
    "is_2022",
    "opt_float",
    "opt_int",
    "render",
    "require_id",
    "require_sn",
    "text_of",
]

Fields = dict[str, Element]

# fmt: off
_KNOWN_TAGS = (
    "Query", "Control", "Notify", "Response", "CmdType", "SN", "DeviceID", "Status", "Info",
    "SumNum", "DeviceList", "Item", "Name", "Manufacturer", "Model", "Owner", "CivilCode", "Block",
    "Address", "Parental", "ParentID", "SafetyWay", "RegisterWay", "Secrecy", "IPAddress", "Port",
    "Longitude", "Latitude", "PTZType", "BusinessGroupID", "Resolution", "Event", "DeviceName",
    "Result", "Firmware", "Channel", "Online", "Encode", "Record", "DeviceTime", "Alarmstatus",
    "DutyStatus", "PTZCmd", "GuardCmd", "TeleBoot", "RecordCmd", "AlarmCmd", "IFameCmd",
    "IFrameCmd", "ControlPriority", "AlarmPriority", "AlarmMethod", "AlarmTime",
    "AlarmDescription", "AlarmType", "Time", "Speed", "Direction", "Altitude", "NotifyType",
    "SourceID", "TargetID",
)
# fmt: on
_CANON: dict[str, str] = {tag.lower(): tag for tag in _KNOWN_TAGS}
_EXACT = frozenset(_KNOWN_TAGS)


def canonical_tag(tag: str) -> str:
    """The known spelling of `tag` (namespace dropped, case-insensitive), else `tag`."""
    if tag in _EXACT:
        return tag
    return _CANON.get(local_name(tag).lower(), tag)


def children(parent: Element) -> Fields:
    """Direct children of `parent` by canonical tag; the last of duplicates wins."""
    return {canonical_tag(child.tag): child for child in parent}


def text_of(element: Element | None) -> str:
    """Stripped text of `element`; ``""`` when absent or empty."""
    if element is None:
        return ""
    text = element.text
    return text.strip() if text else ""


def require_sn(fields: Fields) -> int:
    """The envelope SN: ASCII digits, 0 <= SN < 2**63, else ManscdpError(400)."""
    raw = text_of(fields.get("SN"))
    if not raw:
        raise ManscdpError("missing SN")
    if len(raw) > 19 or not (raw.isascii() and raw.isdigit()):
        raise ManscdpError(f"SN must be a non-negative integer below 2**63, got {raw[:40]!r}")
    sn = int(raw)
    if sn >= SN_LIMIT:
        raise ManscdpError(f"SN out of range: {raw}")
    return sn


def require_id(fields: Fields, tag: str = "DeviceID") -> DeviceId:
    """A mandatory 20-digit id element, else ManscdpError(400) naming `tag`."""
    raw = text_of(fields.get(tag))
    if not raw:
        raise ManscdpError(f"missing {tag}")
    if not is_device_id(raw):
        raise ManscdpError(f"{tag} must be 20 ASCII digits, got {raw[:40]!r}")
    return DeviceId(raw)


def opt_int(raw: str | None, low: int = 0, high: int = 2**31 - 1) -> int | None:
    """An optional integer in [low, high]; None when absent or unparsable."""
    if not raw:
        return None
    raw = raw.strip()
    if not raw or len(raw) > 12 or not raw.isascii():
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if low <= value <= high else None


def opt_float(raw: str | None) -> float | None:
    """An optional finite float; None when absent, unparsable, NaN or infinite."""
    if not raw:
        return None
    raw = raw.strip()
    if not raw or len(raw) > 40 or not raw.isascii():
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def fmt_float(value: float) -> str:
    """Shortest text that reads back as `value`, never in exponent notation."""
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text


def render(tag: str, value: str | int | float | None) -> str:
    """One ``<tag>value</tag>`` line; None and ``""`` give an empty element."""
    if value is None:
        return f"<{tag}></{tag}>\r\n"
    if isinstance(value, str):
        return f"<{tag}>{escape(value)}</{tag}>\r\n"
    if isinstance(value, float):
        return f"<{tag}>{fmt_float(value)}</{tag}>\r\n"
    return f"<{tag}>{value}</{tag}>\r\n"


def is_2022(gb_version: str) -> bool:
    """True for ``X-GB-Ver`` 3.0 and later (GB/T 28181-2022 spellings and layout)."""
    major = gb_version.strip().partition(".")[0]
    return major.isdigit() and int(major) >= 3
