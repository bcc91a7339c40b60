"""PTZCmd: the 8-byte front-end control command of DeviceControl (PROTOCOL.md §3.7).

Byte layout (1-based), written as 16 upper-case hex digits:

    1 A5 | 2 0F (version 0, check nibble (A+5+0) mod 16) | 3 address bits 7-0
    4 instruction | 5 data 1 | 6 data 2
    7 high nibble zoom speed, low nibble address bits 11-8 | 8 sum of bytes 1-7 mod 256

Instruction byte: PTZ ``00bbbbbb`` (bit5 zoom out, bit4 zoom in, bit3 up, bit2 down, bit1
left, bit0 right; ``00`` stops); FI ``0100bbbb`` (bit3 iris close, bit2 iris open, bit1
focus near, bit0 focus far; ``40`` stops); presets ``81`` set, ``82`` call, ``83`` delete.
Older wvp code added the zoom speed to the checksum unshifted; we use the shifted form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import ManscdpError

__all__ = [
    "PTZ_ACTIONS",
    "PtzCmd",
    "focus_iris",
    "from_action",
    "preset",
    "ptz_move",
    "ptz_stop",
]

_HEADER = 0xA5
_VERSION_CHECK = 0x0F  # version 0, check nibble (0xA + 0x5 + 0) % 16

_ZOOM_OUT, _ZOOM_IN, _UP, _DOWN, _LEFT, _RIGHT = 0x20, 0x10, 0x08, 0x04, 0x02, 0x01
_FI = 0x40
_IRIS_CLOSE, _IRIS_OPEN, _FOCUS_NEAR, _FOCUS_FAR = 0x08, 0x04, 0x02, 0x01
_PRESET_OPS = {"set": 0x81, "call": 0x82, "delete": 0x83}

Direction = Literal[-1, 0, 1]
PresetOp = Literal["set", "call", "delete"]


def _check_byte(name: str, value: int, top: int = 0xFF) -> None:
    if not 0 <= value <= top:
        raise ManscdpError(f"PTZ {name} must be 0..{top}, got {value}")


@dataclass(frozen=True, slots=True)
class PtzCmd:
    """One PTZCmd. Speeds are device units: 0-255 for bytes, 0-15 for the zoom nibble."""

    address: int = 1
    """Device address, 0-4095 (12 bits: byte 3 plus the low nibble of byte 7)."""
    instruction: int = 0
    """Byte 4: PTZ, FI, preset, cruise, scan or auxiliary instruction code."""
    data1: int = 0
    """Byte 5: pan speed (PTZ), focus speed (FI), cruise group, or 0."""
    data2: int = 0
    """Byte 6: tilt speed (PTZ), iris speed (FI), preset number, or 0."""
    zoom_speed: int = 0
    """High nibble of byte 7, 0-15."""

    def __post_init__(self) -> None:
        _check_byte("address", self.address, 0xFFF)
        _check_byte("instruction", self.instruction)
        _check_byte("data1", self.data1)
        _check_byte("data2", self.data2)
        _check_byte("zoom speed", self.zoom_speed, 0x0F)

    def to_bytes(self) -> bytes:
        """The 8 wire bytes, checksum included."""
        head = bytes(
            (
                _HEADER,
                _VERSION_CHECK,
                self.address & 0xFF,
                self.instruction,
                self.data1,
                self.data2,
                (self.zoom_speed << 4) | (self.address >> 8),
            )
        )
        return head + bytes((sum(head) & 0xFF,))

    def encode(self) -> str:
        """16 upper-case hex digits, as carried in ``<PTZCmd>``."""
        return self.to_bytes().hex().upper()

    @classmethod
    def decode(cls, text: str) -> PtzCmd:
        """Parse 16 hex digits (either case); check header, version/check nibble, checksum."""
        text = text.strip()
        if len(text) != 16 or not text.isascii():
            raise ManscdpError(f"PTZCmd must be 16 hex digits, got {text[:40]!r}")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ManscdpError(f"PTZCmd is not hex: {text!r}") from None
        if raw[0] != _HEADER:
            raise ManscdpError(f"PTZCmd header must be A5, got {raw[0]:02X}")
        if raw[1] != _VERSION_CHECK:
            raise ManscdpError(f"PTZCmd version/check byte must be 0F, got {raw[1]:02X}")
        if sum(raw[:7]) & 0xFF != raw[7]:
            raise ManscdpError(
                f"PTZCmd checksum {raw[7]:02X} != {sum(raw[:7]) & 0xFF:02X} in {text!r}"
            )
        return cls(
            address=raw[2] | ((raw[6] & 0x0F) << 8),
            instruction=raw[3],
            data1=raw[4],
            data2=raw[5],
            zoom_speed=raw[6] >> 4,
        )

    @property
    def is_stop(self) -> bool:
        """True for the PTZ stop (``00``) or FI stop (``40``) instruction."""
        return self.instruction in (0x00, _FI)


def _direction(name: str, value: int) -> None:
    if value not in (-1, 0, 1):
        raise ManscdpError(f"PTZ {name} must be -1, 0 or 1, got {value}")


def ptz_move(
    pan: Direction = 0,
    tilt: Direction = 0,
    zoom: Direction = 0,
    pan_speed: int = 0,
    tilt_speed: int = 0,
    zoom_speed: int = 0,
    *,
    address: int = 1,
) -> PtzCmd:
    """Pan (-1 left, 1 right), tilt (-1 down, 1 up), zoom (-1 out, 1 in); all 0 is stop.

    Speeds of an axis that does not move are sent as 0, as the §3.7 vectors do.
    """
    _direction("pan", pan)
    _direction("tilt", tilt)
    _direction("zoom", zoom)
    code = 0
    code |= _RIGHT if pan == 1 else _LEFT if pan == -1 else 0
    code |= _UP if tilt == 1 else _DOWN if tilt == -1 else 0
    code |= _ZOOM_IN if zoom == 1 else _ZOOM_OUT if zoom == -1 else 0
    return PtzCmd(
        address=address,
        instruction=code,
        data1=pan_speed if pan else 0,
        data2=tilt_speed if tilt else 0,
        zoom_speed=zoom_speed if zoom else 0,
    )


def ptz_stop(*, address: int = 1) -> PtzCmd:
    """Stop pan, tilt and zoom: ``A50F0100000000B5`` at address 1."""
    return PtzCmd(address=address)


def focus_iris(
    focus: Direction = 0,
    iris: Direction = 0,
    focus_speed: int = 0,
    iris_speed: int = 0,
    *,
    address: int = 1,
) -> PtzCmd:
    """Focus (-1 near, 1 far) and iris (-1 close, 1 open); both 0 is the FI stop ``40``."""
    _direction("focus", focus)
    _direction("iris", iris)
    code = _FI
    code |= _FOCUS_FAR if focus == 1 else _FOCUS_NEAR if focus == -1 else 0
    code |= _IRIS_OPEN if iris == 1 else _IRIS_CLOSE if iris == -1 else 0
    return PtzCmd(
        address=address,
        instruction=code,
        data1=focus_speed if focus else 0,
        data2=iris_speed if iris else 0,
    )


def preset(op: PresetOp, number: int, *, address: int = 1) -> PtzCmd:
    """Set, call or delete preset `number` (1-255)."""
    code = _PRESET_OPS.get(op)
    if code is None:
        raise ManscdpError(f"preset op must be set, call or delete, got {op!r}")
    if not 1 <= number <= 0xFF:
        raise ManscdpError(f"preset number must be 1..255, got {number}")
    return PtzCmd(address=address, instruction=code, data2=number)


# action -> (kind, a, b, c): "ptz" (pan, tilt, zoom) or "fi" (focus, iris, unused).
_ACTIONS: dict[str, tuple[str, Direction, Direction, Direction]] = {
    "stop": ("ptz", 0, 0, 0),
    "left": ("ptz", -1, 0, 0),
    "right": ("ptz", 1, 0, 0),
    "up": ("ptz", 0, 1, 0),
    "down": ("ptz", 0, -1, 0),
    "upleft": ("ptz", -1, 1, 0),
    "upright": ("ptz", 1, 1, 0),
    "downleft": ("ptz", -1, -1, 0),
    "downright": ("ptz", 1, -1, 0),
    "zoomin": ("ptz", 0, 0, 1),
    "zoomout": ("ptz", 0, 0, -1),
    "focusnear": ("fi", -1, 0, 0),
    "focusfar": ("fi", 1, 0, 0),
    "irisopen": ("fi", 0, 1, 0),
    "irisclose": ("fi", 0, -1, 0),
}

PTZ_ACTIONS: tuple[str, ...] = tuple(_ACTIONS)
"""The API action names `from_action` accepts."""


def from_action(action: str, speed: int = 0x80, *, address: int = 1) -> PtzCmd:
    """Build the command for an API action at `speed` 0-255.

    Pan, tilt, focus and iris use `speed` as is; zoom uses its high nibble (``speed >> 4``,
    at least 1 when `speed` > 0). ``stop`` is the PTZ stop; send ``focus_iris()`` to stop FI.
    """
    entry = _ACTIONS.get(action.strip().lower())
    if entry is None:
        raise ManscdpError(f"unknown PTZ action {action[:40]!r}")
    _check_byte("speed", speed)
    kind, a, b, c = entry
    if kind == "fi":
        return focus_iris(a, b, speed, speed, address=address)
    zoom_speed = max(1, speed >> 4) if speed else 0
    return ptz_move(a, b, c, speed, speed, zoom_speed, address=address)
