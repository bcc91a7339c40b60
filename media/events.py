"""Media events: what a receiver reports to its owner (the gateway's stream), past tense.

A receiver calls ``sink.on_event(event)`` with one of these; the owner ``match``-es on them.
They carry facts, never SIP: the control plane decides what a timeout means for the dialog.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from media.codec_info import Codec

__all__ = [
    "CloseReason",
    "FirstKeyframe",
    "FirstPacket",
    "MediaEvent",
    "MediaTimedOut",
    "ReceiverClosed",
    "SsrcMismatch",
]


class CloseReason(StrEnum):
    """Why a receiver ended; compares equal to its string value (a metric or log field)."""

    CLOSED = "closed"
    """The owner called ``close()`` (BYE, stream stopped, shutdown)."""
    MEDIA_TIMEOUT = "media_timeout"
    """No packet for the timeout (or none at all before the first-packet timeout)."""
    PEER_CLOSED = "peer_closed"
    """TCP active: the device closed the connection."""
    CONNECT_FAILED = "connect_failed"
    """TCP active: no connection to the device's address within the connect budget."""
    MPEG_TS = "mpeg_ts"
    """The payload is MPEG-TS, not PS; gbgw rejects such a stream (PROTOCOL §5.4)."""
    ERROR = "error"
    """A socket error ended the receiver (the log line has the detail)."""


@dataclass(frozen=True, slots=True)
class MediaEvent:
    """Base of all media events."""


@dataclass(frozen=True, slots=True)
class FirstPacket(MediaEvent):
    """The first RTP packet was accepted; ``source`` is the sender's (host, port)."""

    source: tuple[str, int]

    def __post_init__(self) -> None:
        if not 0 <= self.source[1] <= 0xFFFF:
            raise ValueError(f"source port {self.source[1]} is not in 0..65535")


@dataclass(frozen=True, slots=True)
class FirstKeyframe(MediaEvent):
    """The first video keyframe was demuxed. ``width``/``height`` in pixels come from its
    SPS; None when the codec has no parser here (SVAC, MPEG-4) or the SPS is unreadable."""

    codec: Codec
    width: int | None
    height: int | None

    def __post_init__(self) -> None:
        if (self.width is None) != (self.height is None):
            raise ValueError("width and height are both known or both None")
        if (
            self.width is not None
            and self.height is not None
            and (self.width <= 0 or self.height <= 0)
        ):
            raise ValueError(f"picture size {self.width}x{self.height} is not positive")


@dataclass(frozen=True, slots=True)
class MediaTimedOut(MediaEvent):
    """No packet arrived for ``seconds``; a ``ReceiverClosed`` follows."""

    seconds: float
    before_first_packet: bool = False
    """True when not a single packet was accepted (wrong address, port, SSRC or firewall)."""

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError(f"timeout {self.seconds} s is negative")


@dataclass(frozen=True, slots=True)
class ReceiverClosed(MediaEvent):
    """The receiver ended and gave back its socket and port; the last event it sends."""

    reason: CloseReason

    def __post_init__(self) -> None:
        CloseReason(self.reason)  # raises ValueError for anything else


@dataclass(frozen=True, slots=True)
class SsrcMismatch(MediaEvent):
    """Packets carry SSRC ``got`` where ``expected`` (the SDP ``y=``, or the SSRC followed so
    far) was due. Strict receivers drop them; tolerant ones follow the device (a known camera
    quirk, PROTOCOL §4.2). Reported once per new ``got`` value, a few times at most."""

    expected: int
    got: int

    def __post_init__(self) -> None:
        for value in (self.expected, self.got):
            if not 0 <= value <= 0xFFFFFFFF:
                raise ValueError(f"SSRC {value} is not 32-bit")
