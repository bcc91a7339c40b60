"""WebRTC (WHEP) end to end: `gbgw simulate` cameras stream PS into `gbgw serve`; an aiortc
peer in this process posts an offer, connects over 127.0.0.1 and decodes what it receives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aioice.ice
import av
import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from tests.interop.harness import DATA, GatewayProcess, gateway_config, wait_until
from tests.interop.test_media import CHANNEL, H264, H265, Sim

pytestmark = pytest.mark.interop

G711A = DATA / "media" / "h264_640x360_25fps_10s_g711a.ps"
ADMIN, OPS, COP = "admin-secret-1", "ops-secret-2", "cop-secret-3"
ZONES = f"""
[[zone]]
name = "police"
civil_code = ["620902"]

[[token]]
name = "ops"
secret = "{OPS}"
zones = ["default"]

[[token]]
name = "cop"
secret = "{COP}"
zones = ["police", "default"]
"""


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's aiortc peers gather 127.0.0.1 only (aioice skips loopback otherwise)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., tuple[GatewayProcess, Sim]]]:
    """A gateway (WHEP on 127.0.0.1) and one simulated camera streaming ``media``."""
    running: list[tuple[GatewayProcess, Sim]] = []

    def make(media: Path, *, tokens: bool = False, **webrtc: Any) -> tuple[GatewayProcess, Sim]:
        text = gateway_config(
            tmp_path,
            media={
                "listen": "127.0.0.1",
                "rtp_ports": "36000-36199",
                "idle_close": 1,
            },
            webrtc={"host_addresses": ["127.0.0.1"], "connect_timeout": 10, **webrtc},
            **({"http": {"token": ADMIN}} if tokens else {}),
        )
        gw = GatewayProcess(tmp_path, text + (ZONES if tokens else "")).start()
        sim = Sim(gw, media)
        running.append((gw, sim))
        wait_until(lambda: _listed(gw, ADMIN if tokens else None), 30, "simulated channel")
        return gw, sim

    yield make
    for gw, sim in running:
        if sim.proc.poll() is None:
            sim.kill()
        gw.stop()
        trouble = [x for x in gw.raw if '"level": "error"' in x or x.startswith("Traceback")]
        assert trouble == [], "\n".join(trouble)


def _listed(gw: GatewayProcess, token: str | None) -> bool:
    with gw.api(token) as c:
        r = c.get("/api/channels")
    return r.status_code == 200 and any(ch["channel_id"] == CHANNEL for ch in r.json()["items"])


class Viewer:
    """An aiortc WHEP client: offer, POST, answer, then decoded frames per kind."""

    def __init__(self, audio: bool = True, codecs: dict[str, list[str]] | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.tracks: dict[str, MediaStreamTrack] = {}
        self.location = ""
        self.answer = ""
        for kind in ("video", "audio") if audio else ("video",):
            t = self.pc.addTransceiver(kind, direction="recvonly")
            wanted = (codecs or {}).get(kind)
            if wanted:
                caps = RTCRtpReceiver.getCapabilities(kind).codecs
                t.setCodecPreferences([c for c in caps if c.mimeType in wanted])
        self.pc.on("track", lambda track: self.tracks.__setitem__(track.kind, track))

    async def post(self, gw: GatewayProcess, channel: str, token: str | None = None) -> int:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as c:
            r = await c.post(
                f"/whep/{channel}", content=self.pc.localDescription.sdp, headers=headers
            )
        if r.status_code == 201:
            assert r.headers["content-type"].startswith("application/sdp")
            self.location = r.headers["location"]
            self.answer = r.text
            await self.pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        else:
            self.error = r.json()["detail"]
        return r.status_code

    async def frames(self, kind: str, count: int, timeout: float = 30) -> list[av.frame.Frame]:
        """The first ``count`` decoded frames of ``kind`` (fails past ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        assert kind in self.tracks, f"no {kind} track in the answer"  # set with the answer
        got: list[av.frame.Frame] = []
        while len(got) < count:
            got.append(await asyncio.wait_for(self.tracks[kind].recv(), deadline - loop.time()))
        return got

    async def close(self) -> None:
        await self.pc.close()


async def api(gw: GatewayProcess, method: str, path: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=10, headers=headers) as c:
        return await c.request(method, path)


async def until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    """``wait_until`` off the loop, so the aiortc peers keep running meanwhile."""
    return await asyncio.to_thread(wait_until, cond, timeout, what)


def streams(gw: GatewayProcess, token: str | None = None) -> list[dict[str, Any]]:
    with gw.api(token) as c:
        return c.get("/api/streams").json()


async def test_h264_passthrough_then_delete_idles_the_stream(start) -> None:
    gw, _ = start(H264, connect_timeout=3)
    viewer, ghost = Viewer(), RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        # a peer that never applies the answer is dropped after webrtc.connect_timeout
        ghost.addTransceiver("video", direction="recvonly")
        await ghost.setLocalDescription(await ghost.createOffer())
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as c:
            r = await c.post(
                f"/whep/{CHANNEL}",
                content=ghost.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            )
        assert r.status_code == 201
        assert await viewer.post(gw, CHANNEL) == 201
        assert viewer.location.startswith(f"/whep/{CHANNEL}/")
        assert "H264/90000" in viewer.answer and "a=candidate:" in viewer.answer
        frames = await viewer.frames("video", 25)
        assert {(f.width, f.height) for f in frames} == {(640, 360)}
        sessions = (await api(gw, "GET", "/api/webrtc")).json()
        mine = [s for s in sessions if viewer.location.endswith(s["session_id"])]
        assert len(sessions) == 2 and mine[0]["codec"] == "h264"
        assert mine[0]["state"] == "connected" and mine[0]["audio_codec"] is None
        await until(lambda: gw.find("webrtc.session_closed", reason="connect_timeout"), 10, "drop")
        assert [s["consumers"] for s in (await api(gw, "GET", "/api/streams")).json()] == [1]
        # the stream has no audio: the audio m-line is answered inactive
        assert "audio" not in viewer.tracks and "a=inactive" in viewer.answer
        r = await api(gw, "DELETE", viewer.location)
        assert r.status_code == 204
        assert (await api(gw, "GET", "/api/webrtc")).json() == []
        assert (await api(gw, "DELETE", viewer.location)).status_code == 404
        await until(lambda: [s["consumers"] for s in streams(gw)] in ([0], []), 10, "0 consumers")
        await until(lambda: gw.find("stream.closed", reason="idle"), 15, "idle close")
        ended = gw.wait_event("webrtc.session_closed", reason="delete")
        assert ended["channel_id"] == CHANNEL
        assert gw.metric("gbgw_webrtc_sessions_active") == 0
        assert gw.metric("gbgw_webrtc_sessions_total", {"result": "ok"}) == 2
    finally:
        await viewer.close()
        await ghost.close()


async def test_g711_audio_passes_through_and_decodes_for_opus_offers(start) -> None:
    gw, _ = start(G711A)
    pcma, opus = Viewer(), Viewer(codecs={"audio": ["audio/opus"]})
    try:
        assert await pcma.post(gw, CHANNEL) == 201
        assert "PCMA/8000" in pcma.answer
        audio = await pcma.frames("audio", 25)
        assert all(f.sample_rate == 8000 for f in audio)
        assert len(await pcma.frames("video", 25)) == 25
        # an offer without PCMA gets the G.711 decoded, then encoded by aiortc as Opus
        assert await opus.post(gw, CHANNEL) == 201
        assert "opus/48000" in opus.answer and "PCMA" not in opus.answer
        assert len(await opus.frames("audio", 25)) == 25
        sessions = (await api(gw, "GET", "/api/webrtc")).json()
        assert sorted(s["audio_codec"] for s in sessions) == ["pcma", "pcma"]
        assert gw.metric("gbgw_sip_requests_total", {"method": "INVITE", "direction": "out"}) == 1
    finally:
        await pcma.close()
        await opus.close()
    # peers gone: ICE/DTLS close ends both sessions without a DELETE
    await until(lambda: gw.metric("gbgw_webrtc_sessions_active") == 0, 40, "sessions ended")


async def test_zones_limits_and_bad_offers(start) -> None:
    gw, _ = start(H264, tokens=True)
    ops = Viewer()
    assert await ops.post(gw, CHANNEL, OPS) == 403
    await ops.close()
    invites = {"method": "INVITE", "direction": "out"}
    assert gw.metric("gbgw_sip_requests_total", invites, token=ADMIN) == 0
    assert gw.metric("gbgw_zone_denied_total", {"consumer": "ops"}, token=ADMIN) == 1
    unknown = Viewer()
    assert await unknown.post(gw, "62090000001310009999", ADMIN) == 404
    await unknown.close()
    vp8 = Viewer(codecs={"video": ["video/VP8"]})
    assert await vp8.post(gw, CHANNEL, ADMIN) == 415
    assert "H.264" in vp8.error
    await vp8.close()
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=10) as c:
        auth = {"Authorization": f"Bearer {ADMIN}"}
        r = await c.post(f"/whep/{CHANNEL}", content=b"hello", headers=auth)
        assert r.status_code == 415  # not application/sdp
        sdp = {**auth, "Content-Type": "application/sdp"}
        r = await c.post(f"/whep/{CHANNEL}", content=b"v=0\r\nm=video x\r\n", headers=sdp)
        assert r.status_code == 400
        r = await c.post(f"/whep/{CHANNEL}", content=b"v=0" + b"a" * 70_000, headers=sdp)
        assert r.status_code == 413
        assert (await c.post(f"/whep/{CHANNEL}", content=b"v=0", headers={})).status_code == 401
    assert gw.metric("gbgw_sip_requests_total", invites, token=ADMIN) == 0
    # cop may watch; ops can neither list nor end that session; the operator can
    cop = Viewer()
    try:
        assert await cop.post(gw, CHANNEL, COP) == 201
        assert len(await cop.frames("video", 25)) == 25
        assert len((await api(gw, "GET", "/api/webrtc", COP)).json()) == 1
        assert (await api(gw, "GET", "/api/webrtc", OPS)).json() == []
        assert (await api(gw, "DELETE", cop.location, OPS)).status_code == 404
        assert (await api(gw, "DELETE", cop.location, ADMIN)).status_code == 204
    finally:
        await cop.close()
    assert gw.metric("gbgw_webrtc_sessions_total", {"result": "unsupported"}, token=ADMIN) == 1
    assert gw.metric("gbgw_webrtc_sessions_total", {"result": "bad_offer"}, token=ADMIN) == 1


async def test_h265_is_transcoded_within_the_limit(start) -> None:
    gw, _ = start(H265, max_transcodes=1)
    first, second = Viewer(audio=False), Viewer(audio=False)
    try:
        assert await first.post(gw, CHANNEL) == 201
        frames = await first.frames("video", 25)
        assert {(f.width, f.height) for f in frames} == {(640, 360)}
        assert (await api(gw, "GET", "/api/webrtc")).json()[0]["codec"] == "h265>h264"
        assert gw.metric("gbgw_webrtc_transcodes") == 1
        assert await second.post(gw, CHANNEL) == 503
        assert "transcoders are busy" in second.error
        # the stream ends (here by the API): so does every session on it
        [stream] = (await api(gw, "GET", "/api/streams")).json()
        assert (await api(gw, "DELETE", f"/api/streams/{stream['stream_id']}")).status_code == 200
        await until(lambda: gw.find("webrtc.session_closed", reason="stream_api"), 10, "end")
        assert gw.metric("gbgw_webrtc_transcodes") == 0
        assert gw.metric("gbgw_webrtc_sessions_active") == 0
    finally:
        await first.close()
        await second.close()


async def test_h265_without_transcoding_is_415(start) -> None:
    gw, _ = start(H265, max_transcodes=0)
    viewer = Viewer()
    try:
        assert await viewer.post(gw, CHANNEL) == 415
        assert viewer.error == "H.265 channel and transcoding is disabled"
    finally:
        await viewer.close()
