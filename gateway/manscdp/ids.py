"""GB/T 28181 20-digit identifiers (PROTOCOL.md §1).

An ID is a string, never an int: leading zeros matter. `DeviceId` marks a string that was
checked once, at parse time, to be exactly 20 ASCII digits. Layout (0-based slices):
center ``[0:8]``, industry ``[8:10]``, type ``[10:13]``, network ``[13]``, serial ``[14:]``.
"""

from __future__ import annotations

from typing import NewType

from .errors import ManscdpError

__all__ = [
    "DeviceId",
    "civil_code_of",
    "domain_of",
    "is_device_id",
    "is_region_id",
    "parse_device_id",
    "type_code",
]

DeviceId = NewType("DeviceId", str)
"""A 20-digit GB/T 28181 code (device, channel, platform, group, user)."""

_ID_LEN = 20


def is_device_id(value: str) -> bool:
    """True if `value` is exactly 20 ASCII digits."""
    return len(value) == _ID_LEN and value.isascii() and value.isdigit()


def parse_device_id(value: str) -> DeviceId:
    """Check `value` is exactly 20 ASCII digits (no whitespace) and brand it `DeviceId`."""
    if not is_device_id(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ManscdpError(f"DeviceID must be 20 ASCII digits, got {shown!r}")
    return DeviceId(value)


def is_region_id(value: str) -> bool:
    """True for a 2-8 digit administrative (civil) code used as a catalog region node."""
    return 2 <= len(value) <= 8 and value.isascii() and value.isdigit()


def type_code(device_id: DeviceId) -> str:
    """Digits 11-13 (1-based): ``"132"`` IP camera, ``"200"`` platform, ``"215"`` group..."""
    return device_id[10:13]


def civil_code_of(device_id: DeviceId) -> str:
    """Digits 1-8 as given: the center code (province, city, county, grassroots unit)."""
    return device_id[0:8]


def domain_of(device_id: DeviceId) -> str:
    """Digits 1-10: the SIP domain / digest realm derived from a server ID (§1.3)."""
    return device_id[0:10]
