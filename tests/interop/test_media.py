"""Live media end to end: `gbgw simulate` cameras stream PS into `gbgw serve`; HTTP viewers
read FLV / MPEG-TS / PS and real decoders (ffprobe, PyAV) check what they got."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import httpx
import pytest

from tests.interop.harness import DATA, GBGW, GatewayProcess, require, wait_until

pytestmark = pytest.mark.interop

H264 = DATA / "media" / "h264_640x360_25fps_10s.ps"
H265 = DATA / "media" / "h265_640x360_25fps_10s.ps"
DEVICE = "62090000001320000001"
CHANNEL = "62090000001310001001"  # the simulator's first channel of its first device


class Sim:
    """A `gbgw simulate` camera fleet in the background."""

    def __init__(self, gw: GatewayProcess, media: Path, *, transport: str = "udp") -> None:
        self.proc = subprocess.Popen(
            [
                *GBGW,
                "simulate",
                "--devices",
                "1",
                "--channels",
                "2",
                "--gateway",
                f"127.0.0.1:{gw.sip_port}",
                "--password",
                "12345678",
                "--media",
                str(media),
                "--keepalive",
                "5",
                "--duration",
                "120",
                "--transport",
                transport,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        wait_until(lambda: self.lines and self.lines[-1].startswith("{"), what="sim summary")
        return json.loads(self.lines[-1])

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., Sim]]:
    sims: list[Sim] = []

    def make(gw: GatewayProcess, media: Path, **kw: str) -> Sim:
        s = Sim(gw, media, **kw)
        sims.append(s)
        wait_until(lambda: channel_listed(gw), timeout=30, what="simulated channel in the API")
        return s

    yield make
    for s in sims:
        if s.proc.poll() is None:
            s.kill()


def channel_listed(gw: GatewayProcess) -> bool:
    with gw.api() as c:
        r = c.get(f"/api/devices/{DEVICE}/channels")
    return r.status_code == 200 and any(ch["channel_id"] == CHANNEL for ch in r.json())


def fetch(gw: GatewayProcess, path: str, out: Path, limit: int) -> int:
    """Read a live response until ``limit`` bytes (or its end); bytes read."""
    got = 0
    with httpx.stream("GET", gw.http_url + path, timeout=30) as r:
        assert r.status_code == 200, r.read()
        with out.open("wb") as f:
            for chunk in r.iter_bytes():
                f.write(chunk)
                got += len(chunk)
                if got >= limit:
                    break
    return got


def ffprobe(path: Path) -> dict:
    r = subprocess.run(
        [
            require("ffprobe"),
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,codec_type,width,height,nb_read_frames",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    streams = json.loads(r.stdout or "{}").get("streams", [])
    return next((s for s in streams if s.get("codec_type") == "video"), {})


def decode_frames(path: Path) -> int:
    frames = 0
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            try:
                frames += len(packet.decode())
            except av.error.InvalidDataError:
                if packet.size:  # only the cut-off last packet may fail
                    continue
    return frames


def flv_video_codec_ids(raw: bytes) -> set[int]:
    """CodecIDs of the video tags of an FLV byte string (walking tag headers)."""
    ids: set[int] = set()
    pos = 13  # 9-byte header + PreviousTagSize0
    while pos + 11 < len(raw):
        kind, size = raw[pos], int.from_bytes(raw[pos + 1 : pos + 4], "big")
        if kind == 9 and pos + 11 < len(raw):
            ids.add(raw[pos + 11] & 0x0F)
        pos += 11 + size + 4
    return ids


def media_gateway(
    factory: Callable[..., GatewayProcess], transport: str, **media: object
) -> GatewayProcess:
    return factory(
        media={
            "listen": "127.0.0.1",
            "transport": transport,
            "rtp_ports": "33000-33199",
            "idle_close": 1,
            **media,
        },
    )


@pytest.mark.parametrize("transport", ["udp", "tcp-passive", "tcp-active"])
def test_h264_flv_and_ts_over_each_transport(
    gateway_factory, sim_factory, tmp_path, transport
) -> None:
    gw = media_gateway(gateway_factory, transport, idle_close=30)
    sim_factory(gw, H264)
    for fmt in ("flv", "ts"):
        out = tmp_path / f"live.{fmt}"
        fetch(gw, f"/live/{CHANNEL}.{fmt}", out, 250_000)
        v = ffprobe(out)
        assert (v.get("codec_name"), v.get("width"), v.get("height")) == ("h264", 640, 360), v
        assert decode_frames(out) >= 50
    with gw.api() as c:
        streams = c.get("/api/streams").json()
    assert streams and streams[0]["transport"] == transport
    assert streams[0]["codec"] == "h264" and streams[0]["resolution"] == "640x360"


@pytest.mark.parametrize("transport", ["udp", "tcp-passive", "tcp-active"])
def test_h265_ts_and_flv(gateway_factory, sim_factory, tmp_path, transport) -> None:
    gw = media_gateway(gateway_factory, transport)
    sim_factory(gw, H265)
    out = tmp_path / "live.ts"
    fetch(gw, f"/live/{CHANNEL}.ts", out, 200_000)
    v = ffprobe(out)
    assert (v.get("codec_name"), v.get("width"), v.get("height")) == ("hevc", 640, 360), v
    assert decode_frames(out) >= 50
    # H.265 in FLV (codec id 12): Debian's ffprobe cannot read it, PyAV's FFmpeg can
    flv = tmp_path / "live.flv"
    fetch(gw, f"/live/{CHANNEL}.flv", flv, 200_000)
    raw = flv.read_bytes()
    assert raw[:3] == b"FLV"
    assert 12 in flv_video_codec_ids(raw)  # CodecID 12 = HEVC, on every video tag
    assert decode_frames(flv) >= 50


def test_three_viewers_one_invite_then_idle_bye(gateway_factory, sim_factory, tmp_path) -> None:
    gw = media_gateway(gateway_factory, "udp", idle_close=2)
    sim = sim_factory(gw, H264)
    results: dict[int, int] = {}
    barrier = threading.Barrier(3)

    def view(i: int) -> None:
        barrier.wait(10)
        out = tmp_path / f"v{i}.flv"
        fetch(gw, f"/live/{CHANNEL}.flv", out, 200_000)
        results[i] = decode_frames(out)

    threads = [threading.Thread(target=view, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3 and all(n >= 50 for n in results.values()), results
    assert gw.metric("gbgw_sip_requests_total", {"method": "INVITE", "direction": "out"}) == 1
    gw.wait_event("stream.closed", timeout=20, reason="idle")
    wait_until(lambda: gw.metric("gbgw_streams_active") == 0, what="no stream")
    summary = sim.stop()
    assert summary["streams_started"] == 1 and summary["streams_ended"] == 1


def test_silence_ends_the_viewers_response(gateway_factory, sim_factory, tmp_path) -> None:
    gw = media_gateway(gateway_factory, "udp", timeout=2)
    sim = sim_factory(gw, H264)
    got: dict[str, int] = {}

    def view() -> None:
        got["bytes"] = fetch(gw, f"/live/{CHANNEL}.flv", tmp_path / "v.flv", 50_000_000)

    t = threading.Thread(target=view)
    t.start()
    gw.wait_event("stream.first_keyframe", timeout=20)
    sim.kill()  # the camera goes silent without a BYE
    ev = gw.wait_event("stream.closed", timeout=20)
    assert ev["reason"] == "media_timeout"
    t.join(20)
    assert not t.is_alive() and got["bytes"] > 1_000  # the response ended cleanly


def test_snapshot_jpeg(gateway_factory, sim_factory) -> None:
    gw = media_gateway(gateway_factory, "udp")
    sim_factory(gw, H264)
    with gw.api() as c:
        c.timeout = 30
        r = c.get(f"/api/channels/{CHANNEL}/snapshot.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    frame = next(av.open(__import__("io").BytesIO(r.content)).decode(video=0))
    assert (frame.width, frame.height) == (640, 360)


def test_unknown_channel_and_bad_format(gateway: GatewayProcess) -> None:
    with gateway.api() as c:
        assert c.get("/live/62090000001319999999.flv").status_code == 404
        assert c.get("/live/62090000001319999999.mp4").status_code == 404
