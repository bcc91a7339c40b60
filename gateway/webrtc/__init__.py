"""WebRTC live view: WHEP (RFC 9725) sessions served by aiortc, one per viewer.

Rules:
- One POST, one answer: the offer carries the viewer's candidates and the answer carries all of
  ours (non-trickle), so ``create`` returns only after ICE gathering. Candidates are only the
  configured host addresses (``webrtc.host_addresses``, else ``media.advertise`` when it is a
  local IP, else aioice's own interface scan) and, if configured, STUN; never a default server.
- H.264 is never decoded: access units from the hub go to aiortc as ``av.Packet`` objects,
  which its sender packetizes (RFC 6184) without encoding. The first unit sent is a keyframe
  and every keyframe carries SPS and PPS (the last ones seen are prepended when missing).
  G.711 passes through the same way when the offer has the stream's law; any other audio codec
  of the offer gets decoded PCM that aiortc encodes. H.265 is decoded on a worker thread and
  aiortc's own H.264 encoder re-encodes it, under ``webrtc.max_transcodes``.
- Every buffer is bounded. The hub consumer is read at once by a pump task into one
  ``UnitBuffer`` per track. Before a track's sender first reads (ICE and DTLS still under way)
  a video buffer keeps only the latest GOP; a full video buffer drops units until the next
  keyframe, then starts over from it; a full audio buffer drops its oldest unit.
- A session ends on DELETE, a failed or closed peer connection, no connection within
  ``webrtc.connect_timeout`` seconds, or the end of the stream. Ending it closes its hub
  consumer, so the stream's idle timer sees one consumer fewer.

Errors: an offer the gateway cannot serve raises ``WhepError`` with an HTTP status (400 bad or
unusable SDP, 415 no H.264 in the offer or a channel codec it cannot send, 503 over a limit);
stream failures keep their ``SipError`` (403 zone, 404 channel, 502/504 device).

Modules: ``offer`` (SDP checks and codec decisions, pure), ``tracks`` (buffers, timestamps,
SPS/PPS repair, G.711, the aiortc tracks), ``service`` (sessions, ICE addresses, metrics).
"""

from gateway.webrtc.offer import (
    MAX_OFFER_BYTES,
    OfferInfo,
    WhepError,
    audio_plan,
    check_offer,
    video_plan,
)
from gateway.webrtc.service import RESULTS, WebRtcMetrics, WebRtcService, WebRtcSession
from gateway.webrtc.tracks import (
    AudioTrack,
    ParameterSets,
    PtsLine,
    UnitBuffer,
    VideoTrack,
    ensure_parameter_sets,
    g711_decode,
)

__all__ = [
    "MAX_OFFER_BYTES",
    "RESULTS",
    "AudioTrack",
    "OfferInfo",
    "ParameterSets",
    "PtsLine",
    "UnitBuffer",
    "VideoTrack",
    "WebRtcMetrics",
    "WebRtcService",
    "WebRtcSession",
    "WhepError",
    "audio_plan",
    "check_offer",
    "ensure_parameter_sets",
    "g711_decode",
    "video_plan",
]
