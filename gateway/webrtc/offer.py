"""WHEP offers and what the gateway decides about them, without I/O: is the SDP usable (400),
does it carry H.264 (415), can the channel's codecs be sent to it (415, or 503 when every
transcoder is busy)."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.sdp import SessionDescription

from media.codec_info import Codec

__all__ = [
    "MAX_OFFER_BYTES",
    "OfferInfo",
    "WhepError",
    "audio_plan",
    "check_offer",
    "video_plan",
]

MAX_OFFER_BYTES = 64 << 10
"""Largest SDP offer read from a request (a browser's is 4-8 KiB)."""
_G711 = {Codec.PCMA: "audio/PCMA", Codec.PCMU: "audio/PCMU"}


class WhepError(Exception):
    """An offer this gateway cannot serve; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OfferInfo:
    """What an offer asks for: one H.264 video m-line, maybe audio."""

    sdp: str
    audio: tuple[str, ...]
    """MIME types (``audio/pcma`` ...) of the first audio m-line that aiortc can send, in the
    offer's order; empty when the offer has no audio m-line that may receive."""


def check_offer(text: str) -> OfferInfo:
    """Validate a WHEP offer: 400 when it is not usable SDP, 415 when it has no H.264."""
    if not text.lstrip().startswith("v=0"):
        raise WhepError(400, "the body is not an SDP offer (it must start with v=0)")
    try:
        desc = SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever a bad line trips over
        raise WhepError(400, f"malformed SDP offer: {type(exc).__name__} {exc}".strip()) from None
    video = [m for m in desc.media if m.kind == "video"]
    if not video:
        raise WhepError(400, "the offer has no video m-line")
    audio: tuple[str, ...] = ()
    seen_audio = False
    for media in desc.media:
        if media.kind not in ("audio", "video"):
            continue
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise WhepError(400, f"the {media.kind} m-line has no ICE ufrag/pwd")
        if media.dtls is None or not media.dtls.fingerprints:
            raise WhepError(400, f"the {media.kind} m-line has no DTLS fingerprint or setup")
        if not media.rtcp_mux:
            raise WhepError(400, f"the {media.kind} m-line lacks a=rtcp-mux")
        common = find_common_codecs(CODECS[media.kind], media.rtp.codecs)
        names = tuple(c.mimeType.lower() for c in common if c.name.lower() != "rtx")
        receives = (media.direction or "sendrecv") in ("recvonly", "sendrecv")
        if media is video[0]:
            if not receives:
                raise WhepError(400, "the offer's video m-line must be recvonly (or sendrecv)")
            if "video/h264" not in names:
                raise WhepError(
                    415,
                    "the offer has no usable H.264 (packetization-mode=1, baseline or "
                    "constrained baseline profile-level-id); this gateway sends only H.264",
                )
        elif media.kind == "audio" and not seen_audio:
            seen_audio = True
            if not names:
                raise WhepError(415, "the offer's audio m-line has no codec this gateway can send")
            audio = names if receives else ()
    return OfferInfo(text, audio)


def video_plan(codec: Codec | None, max_transcodes: int, transcodes: int) -> bool:
    """Whether the channel's video must be transcoded (H.265); WhepError 415/503 if it cannot
    be sent: another codec, transcoding disabled, or all transcoders busy."""
    if codec == Codec.H264:
        return False
    if codec == Codec.H265:
        if max_transcodes == 0:
            raise WhepError(415, "H.265 channel and transcoding is disabled")
        if transcodes >= max_transcodes:
            raise WhepError(
                503,
                f"H.265 channel: all {max_transcodes} transcoders are busy "
                "(webrtc.max_transcodes); try again later",
            )
        return True
    name = str(codec) if codec is not None else "unknown"
    raise WhepError(415, f"the channel's video is {name}; WebRTC here carries H.264 and H.265")


def audio_plan(codec: Codec | None, offered: tuple[str, ...]) -> tuple[str | None, bool]:
    """(MIME type to prefer, whether to decode to PCM) for the stream's audio codec against the
    offer's audio codecs; (None, False) when no audio track is sent."""
    mime = _G711.get(codec) if codec is not None else None
    if mime is None or not offered:
        return None, False
    if mime.lower() in offered:
        return mime, False
    return None, True  # aiortc encodes the PCM to the offer's first codec (e.g. opus)
