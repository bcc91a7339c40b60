"""What every sink muxer shares: the ``Muxer`` protocol the hub drives, and the errors."""

from __future__ import annotations

from typing import Protocol

from media.ps import AccessUnit

__all__ = ["Muxer", "UnsupportedCodec"]


class Muxer(Protocol):
    """Access units in, one container byte stream out; the hub runs one per stream and format.

    ``header()`` is what a new consumer gets first (it may grow once the first keyframe has
    given the codec configuration); ``mux(unit)`` gives the bytes for one unit, b"" when the
    unit is dropped. Both are pure Python and cheap enough for the event loop.
    """

    content_type: str

    def header(self) -> bytes: ...

    def mux(self, unit: AccessUnit) -> bytes: ...


class UnsupportedCodec(ValueError):
    """The container cannot carry this codec (raised when the muxer is built)."""
