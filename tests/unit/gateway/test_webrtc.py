"""gateway.webrtc: offers, codec decisions, passthrough packetization, SPS/PPS, G.711, buffers,
H.265 transcoding and service limits; real aiortc, PyAV and FFmpeg throughout."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import aioice.ice
import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver
from aiortc.codecs.g711 import PcmaEncoder
from aiortc.codecs.h264 import PACKET_MAX, H264Encoder, h264_depayload
from aiortc.mediastreams import MediaStreamError

from gateway.app import Gateway
from gateway.config import load_config
from gateway.webrtc import (
    AudioTrack,
    ParameterSets,
    PtsLine,
    UnitBuffer,
    VideoTrack,
    WhepError,
    audio_plan,
    check_offer,
    ensure_parameter_sets,
    g711_decode,
    video_plan,
)
from gateway.zones import Consumer
from media.codec_info import Codec, iter_nals
from media.ps import AccessUnit, PsDemuxer
from sip.errors import NotFound

DATA = Path(__file__).resolve().parents[2] / "data" / "media"


def units(name: str) -> list[AccessUnit]:
    d = PsDemuxer(max_units=100_000)
    d.feed((DATA / name).read_bytes())
    d.flush()
    return d.pop_units()


H264 = units("h264_640x360_25fps_10s.ps")
H265 = units("h265_640x360_25fps_10s.ps")
G711A = [u for u in units("h264_640x360_25fps_10s_g711a.ps") if u.kind == "audio"]
VIDEO = [u for u in H264 if u.kind == "video"]


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


async def offer(audio: bool = True, video_codecs: tuple[str, ...] = ()) -> str:
    """A real aiortc viewer's offer (recvonly), optionally limited to some video codecs."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    t = pc.addTransceiver("video", direction="recvonly")
    if video_codecs:
        caps = RTCRtpReceiver.getCapabilities("video").codecs
        t.setCodecPreferences([c for c in caps if c.mimeType in video_codecs])
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    await pc.close()
    return sdp


# -- offers -----------------------------------------------------------------------------------


async def test_a_viewer_offer_is_accepted_with_its_audio_codecs() -> None:
    info = check_offer(await offer())
    assert info.audio[:4] == ("audio/opus", "audio/g722", "audio/pcmu", "audio/pcma")
    assert check_offer(await offer(audio=False)).audio == ()


async def test_offers_the_gateway_cannot_serve() -> None:
    good = await offer()

    def status(text: str) -> tuple[int, str]:
        with pytest.raises(WhepError) as info:
            check_offer(text)
        return info.value.status, info.value.reason

    assert status(await offer(video_codecs=("video/VP8",)))[0] == 415
    assert status("hello")[0] == 400
    assert status("v=0\r\nm=video x y\r\n")[0] == 400
    assert status(re.sub(r"m=video.*?(?=m=audio)", "", good, flags=re.S)) == (
        400,
        "the offer has no video m-line",
    )
    assert status(good.replace("a=recvonly", "a=sendonly", 1))[0] == 400
    assert "ufrag" in status(re.sub(r"a=ice-ufrag:.*\r\n", "", good))[1]
    assert "fingerprint" in status(re.sub(r"a=fingerprint:.*\r\n", "", good))[1]
    assert "rtcp-mux" in status(good.replace("a=rtcp-mux\r\n", ""))[1]
    audio_only_ilbc = re.sub(r"(m=audio \d+ \S+) .*", r"\1 102", good)
    audio_only_ilbc = re.sub(r"a=rtpmap:\d+ (?!H264|rtx|VP8).*\r\n", "", audio_only_ilbc)
    audio_only_ilbc = audio_only_ilbc.replace(
        "a=mid:1\r\n", "a=mid:1\r\na=rtpmap:102 iLBC/8000\r\n"
    )
    assert status(audio_only_ilbc)[0] == 415


# -- decisions ---------------------------------------------------------------------------------


def test_video_plan_passthrough_transcode_and_limits() -> None:
    assert video_plan(Codec.H264, 0, 0) is False
    assert video_plan(Codec.H265, 2, 1) is True
    with pytest.raises(WhepError) as info:
        video_plan(Codec.H265, 0, 0)
    assert (info.value.status, info.value.reason) == (
        415,
        "H.265 channel and transcoding is disabled",
    )
    with pytest.raises(WhepError) as info:
        video_plan(Codec.H265, 2, 2)
    assert info.value.status == 503 and "webrtc.max_transcodes" in info.value.reason
    for other in (Codec.MPEG4, Codec.SVAC, None):
        with pytest.raises(WhepError) as info:
            video_plan(other, 2, 0)
        assert info.value.status == 415


def test_audio_plan() -> None:
    browser = ("audio/opus", "audio/g722", "audio/pcmu", "audio/pcma")
    assert audio_plan(Codec.PCMA, browser) == ("audio/PCMA", False)
    assert audio_plan(Codec.PCMU, browser) == ("audio/PCMU", False)
    assert audio_plan(Codec.PCMA, ("audio/opus",)) == (None, True)  # decoded, aiortc encodes
    assert audio_plan(Codec.AAC, browser) == (None, False)
    assert audio_plan(None, browser) == (None, False)
    assert audio_plan(Codec.PCMA, ()) == (None, False)


# -- H.264 passthrough ------------------------------------------------------------------------


def _strip(data: bytes, types: set[int]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in iter_nals(data) if n[0] & 0x1F not in types)


def test_keyframes_get_the_last_sps_and_pps() -> None:
    sets = ParameterSets()
    key1 = VIDEO[0]
    assert key1.keyframe and ensure_parameter_sets(key1.data, True, sets) is key1.data
    assert sets.sps is not None and sets.pps is not None
    p_frame = VIDEO[1]
    assert ensure_parameter_sets(p_frame.data, False, sets) is p_frame.data
    key2 = next(u for u in VIDEO[1:] if u.keyframe)
    bare = _strip(key2.data, {7, 8})
    fixed = ensure_parameter_sets(bare, True, sets)
    assert [n[0] & 0x1F for n in iter_nals(fixed)][:2] == [7, 8]
    # the fixed keyframe decodes on a fresh decoder; the bare one does not
    for data, frames in ((fixed, 1), (bare, 0)):
        ctx = av.CodecContext.create("h264", "r")
        got = []
        for packet in (av.Packet(data), None):
            with contextlib.suppress(av.FFmpegError):
                got += ctx.decode(packet)
        assert len(got) == frames
    # an access unit delimiter stays first (H.264 §7.4.1.2.3)
    with_aud = b"\x00\x00\x00\x01\x09\xf0" + bare
    assert [n[0] & 0x1F for n in iter_nals(ensure_parameter_sets(with_aud, True, sets))][:3] == [
        9,
        7,
        8,
    ]
    assert ensure_parameter_sets(bare, True, ParameterSets()) is bare  # nothing seen yet


async def test_passthrough_packets_packetize_and_decode() -> None:
    buffer = UnitBuffer(video=True, max_units=1000)
    track = VideoTrack(buffer, transcode=False)
    encoder, decoder = H264Encoder(), av.CodecContext.create("h264", "r")
    frames, stamps = [], []
    for unit in VIDEO[:50]:
        buffer.put(unit)
        packet = await track.recv()
        assert isinstance(packet, av.Packet)
        payloads, timestamp = encoder.pack(packet)  # what RTCRtpSender does with a Packet
        assert payloads and all(len(p) <= PACKET_MAX for p in payloads)
        stamps.append(timestamp)
        frames += decoder.decode(av.Packet(b"".join(h264_depayload(p) for p in payloads)))
    assert stamps[0] == VIDEO[0].pts
    assert {b - a for a, b in itertools.pairwise(stamps)} == {3600}
    assert len(frames) >= 48 and {(f.width, f.height) for f in frames} == {(640, 360)}


async def test_h265_is_decoded_to_frames_aiortc_encodes() -> None:
    buffer = UnitBuffer(video=True, max_units=1000)
    track = VideoTrack(buffer, transcode=True)
    for unit in H265[:25]:  # one GOP, held until the sender first reads
        buffer.put(unit)
    frames = [await track.recv()]
    for unit in H265[25:60]:
        buffer.put(unit)
    frames += [await track.recv() for _ in range(24)]
    assert all(isinstance(f, av.VideoFrame) for f in frames)
    assert {(f.width, f.height, f.format.name) for f in frames} == {(640, 360, "yuv420p")}
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and pts[0] == H265[0].pts
    payloads, timestamp = await asyncio.to_thread(H264Encoder().encode, frames[0], True)
    assert payloads and timestamp == H265[0].pts
    track.stop()
    buffer.close()
    with pytest.raises(MediaStreamError):
        await track.recv()


# -- G.711 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "ffmpeg"), [(Codec.PCMA, "pcm_alaw"), (Codec.PCMU, "pcm_mulaw")])
def test_g711_tables_match_ffmpeg(codec: Codec, ffmpeg: str) -> None:
    ctx = av.CodecContext.create(ffmpeg, "r")
    ctx.sample_rate, ctx.layout, ctx.format = 8000, "mono", "s16"
    every = bytes(range(256))
    reference = np.concatenate([f.to_ndarray().reshape(-1) for f in ctx.decode(av.Packet(every))])
    assert np.array_equal(g711_decode(codec, every), reference)


async def test_g711_passthrough_and_decoded_frames() -> None:
    buffer = UnitBuffer(video=False, max_units=100)
    for unit in G711A[:4]:
        buffer.put(unit)
    passthrough = AudioTrack(buffer, decode=False)
    packet = await passthrough.recv()
    payloads, timestamp = PcmaEncoder().pack(packet)
    assert payloads == [G711A[0].data] and timestamp == G711A[0].pts * 8000 // 90000
    decoded = AudioTrack(buffer, decode=True)
    frame = await decoded.recv()
    assert isinstance(frame, av.AudioFrame)
    assert (frame.sample_rate, frame.format.name, frame.layout.name) == (8000, "s16", "mono")
    assert frame.samples == len(G711A[1].data) == 320
    assert np.array_equal(frame.to_ndarray().reshape(-1), g711_decode(Codec.PCMA, G711A[1].data))
    assert frame.pts == G711A[1].pts * 8000 // 90000


# -- buffers and timestamps -------------------------------------------------------------------


def _key(n: int) -> Iterator[AccessUnit]:
    """n GOPs of 25 video units (a keyframe, then 24 others), each 1 kB."""
    for i in range(25 * n):
        yield AccessUnit("video", Codec.H264, i * 3600, i * 3600, i % 25 == 0, b"x" * 1000)


async def test_video_buffer_keeps_the_latest_gop_until_read_then_skips_to_keyframes() -> None:
    buffer = UnitBuffer(video=True, max_units=30)
    late = AccessUnit("video", Codec.H264, 0, 0, False, b"p")
    buffer.put(late)
    assert len(buffer) == 0  # never starts mid-GOP
    for unit in _key(3):
        buffer.put(unit)
    assert len(buffer) == 25 and (await buffer.get()).pts == 50 * 3600  # latest GOP only
    for unit in _key(2):  # reading has begun: 24 + 25 units overflow 30
        buffer.put(unit)
    assert len(buffer) == 25  # dropped to the next keyframe, then queued from it
    assert (await buffer.get()).keyframe and buffer.dropped > 0
    bytes_capped = UnitBuffer(video=True, max_units=1000, max_bytes=5000)
    for unit in _key(1):
        bytes_capped.put(unit)
    assert len(bytes_capped) == 5


async def test_audio_buffer_drops_oldest_and_close_wakes_the_reader() -> None:
    buffer = UnitBuffer(video=False, max_units=3)
    for unit in G711A[:5]:
        buffer.put(unit)
    assert len(buffer) == 3 and buffer.dropped == 2
    assert (await buffer.get()).pts == G711A[2].pts
    buffer.clear()
    reader = asyncio.ensure_future(buffer.get())
    await asyncio.sleep(0)  # let the reader start waiting (a yield, not a timed wait)
    buffer.close()
    with pytest.raises(MediaStreamError):
        await reader
    buffer.put(G711A[0])
    assert len(buffer) == 0


def test_pts_line_follows_33_bit_wraps() -> None:
    line = PtsLine()
    top = (1 << 33) - 1800
    assert line(top) == top
    assert line(1800) == top + 3600  # wrapped forward
    assert line((1 << 33) - 3600) == top - 1800  # B-frame style step back across the wrap
    assert line(None) == top - 1800
    assert line(4_000_000) == top - 1800 + 3600  # an encoder restart: one normal step on
    assert line(4_003_600) == top - 1800 + 7200


# -- the service ------------------------------------------------------------------------------


def make_gateway(tmp_path: Path, **env: str) -> Gateway:
    """A gateway built from defaults plus ``GBGW_*`` overrides (nothing started)."""
    return Gateway(load_config(None, {"GBGW_GATEWAY__DATA_DIR": str(tmp_path), **env}))


def _result(gw: Gateway, result: str) -> float:
    return (
        gw.metrics.registry.get_sample_value("gbgw_webrtc_sessions_total", {"result": result})
        or 0.0
    )


async def test_service_rejections_are_counted_and_leave_no_session(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, GBGW_WEBRTC__HOST_ADDRESSES='["127.0.0.1", "::1"]')
    svc = gw.webrtc
    assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
    assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
    viewer = Consumer("ops", "token", frozenset({"default"}), frozenset({1, 2, 3}))
    channel = "62090000001310001001"
    with pytest.raises(WhepError) as info:
        await svc.create(channel, viewer, "garbage", "127.0.0.1:1")
    assert info.value.status == 400
    with pytest.raises(WhepError) as info:
        await svc.create(channel, viewer, await offer(video_codecs=("video/VP8",)), "")
    assert info.value.status == 415
    operator = gw.zones.local_consumer()
    assert operator is not None
    with pytest.raises(NotFound):  # a good offer reaches the stream manager: no such channel
        await svc.create(channel, operator, await offer(), "127.0.0.1:1")
    counts = [_result(gw, r) for r in ("ok", "bad_offer", "unsupported", "busy", "failed")]
    assert counts == [0, 1, 1, 0, 1]
    assert svc.info() == [] and not svc.close("nope", "delete")
    await svc.close_all()
    assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]  # the test's own patch


async def test_max_sessions_zero_refuses_every_offer(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, GBGW_WEBRTC__MAX_SESSIONS="0")
    viewer = gw.zones.local_consumer()
    assert viewer is not None
    with pytest.raises(WhepError) as info:
        await gw.webrtc.create("62090000001310001001", viewer, await offer(), "")
    assert info.value.status == 503 and "0 WebRTC sessions" in info.value.reason
    assert _result(gw, "busy") == 1


def test_host_addresses_default_to_a_local_media_advertise(tmp_path: Path) -> None:
    saved = aioice.ice.get_host_addresses

    def service(advertise: str) -> tuple[str, ...]:
        gw = make_gateway(tmp_path, GBGW_MEDIA__ADVERTISE=advertise)
        aioice.ice.get_host_addresses = saved
        return gw.webrtc.host_addresses()

    assert service("127.0.0.1") == ("127.0.0.1",)
    assert service("192.0.2.1") == ()  # TEST-NET-1: not an address of this machine
    assert service("camera-gw.example") == ()
    assert service("") == ()
