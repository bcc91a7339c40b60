"""Raw MPEG-PS sink: the ``Muxer`` face of ``media.ps.PsMuxer``, for HTTP and the cascade.

With video, ``header()`` is empty: ``PsMuxer`` writes the system header and PSM in front of
every keyframe's pack, so the bytes from any keyframe on are a complete PS a reader can start
with. Without video (the hub then lets consumers join at any audio unit) ``header()`` is a
pack holding the system header and PSM, so a joiner learns the audio codec first. Video
before the first keyframe, and audio before it, are dropped (as in the FLV and TS sinks);
after that each ``mux()`` result is exactly one pack, which the cascade splits into RTP
payloads with the unit's PTS as the RTP timestamp.
"""

from __future__ import annotations

from media.codec_info import Codec
from media.ps import AccessUnit, PsMuxer

__all__ = ["PsSink"]


def _pack_header(mux_rate: int) -> bytes:
    """14-byte MPEG-2 pack header with SCR 0 (§2.5.3.3); readers of GB PS ignore the SCR."""
    rate = mux_rate << 2 | 0x03
    return b"\x00\x00\x01\xba\x44\x00\x04\x00\x04\x01" + rate.to_bytes(3, "big") + b"\xf8"


class PsSink:
    """GB-style PS packs for any codec the PSM can name (PROTOCOL §5.2)."""

    content_type = "video/mp2p"

    def __init__(
        self, video_codec: Codec | None, audio_codec: Codec | None = None, *, mux_rate: int = 25000
    ) -> None:
        """``mux_rate`` in units of 50 bytes/s, as in the pack header."""
        if video_codec is None and audio_codec is None:
            raise ValueError("a PS sink needs a video or an audio codec")
        self.video_codec = video_codec
        self.audio_codec = audio_codec
        self._muxer = PsMuxer(video_codec=video_codec, audio_codec=audio_codec, mux_rate=mux_rate)
        self._started = video_codec is None
        self._header = b""
        if video_codec is None:
            muxer = self._muxer
            self._header = _pack_header(mux_rate) + muxer.system_header()
            self._header += muxer.program_stream_map()

    def header(self) -> bytes:
        """b"" with video (keyframe packs carry the PSM); else a pack with the PSM."""
        return self._header

    def mux(self, unit: AccessUnit) -> bytes:
        """One pack for ``unit``; b"" before the first video keyframe."""
        if not self._started:
            if unit.kind != "video" or not unit.keyframe:
                return b""
            self._started = True
        return self._muxer.mux(unit)
