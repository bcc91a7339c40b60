"""Hostile media (the media issue's acceptance point): truncated PS, garbage between packs, 5%
random packet loss, a wrong SSRC, RTP from a foreign source port. A camera of our own
(``hostile_camera.py``) streams the H.264 sample into ``gbgw serve`` through a fault injector
while an HTTP-FLV viewer watches: the gateway keeps serving, recovers at the next keyframe and
counts the faults (``gbgw_media_faults_total{kind}``, ``gbgw_rtp_packets_lost_total``).

Every run has the same shape, in frames of the camera's 25 fps clock: frames [0, 50) clean,
[50, 150) hostile, [150, 250) clean; the viewer reads until the camera has sent frame 250,
then leaves, and the gateway closes the idle stream with a BYE the camera answers. Counters
are compared at the end, when the closing stream has flushed them, with what the injector did.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from gateway.simmedia import PsFile
from tests.interop.harness import DATA, GatewayProcess, wait_until
from tests.interop.hostile_camera import (
    CAMERA_ID,
    FPS,
    ForeignSource,
    GarbageBetweenPacks,
    HostileCamera,
    Injector,
    RandomLoss,
    TruncatePFrames,
    WrongSsrc,
)

pytestmark = pytest.mark.interop

Factory = Callable[..., GatewayProcess]

H264 = DATA / "media" / "h264_640x360_25fps_10s.ps"
FAULTS = range(50, 150)
"""Frames (at 25 fps) sent through the injector's fault; the rest go out clean."""
END = 250
"""The viewer leaves once the camera has sent this many frames."""
HOLD_AFTER = 2
"""The camera holds after frames 0 (the first keyframe) and 1 (which ends it in the demuxer)
until the viewer has bytes, so the viewer's FLV starts at frame 0 however loaded the host."""
RTP_PORTS = "34000-34199"  # test_media.py has 33000-33199, test_shared_kit.py 32000-32099
WINDOW_BYTES = 20_000
"""FLV bytes the viewer must get during the fault window (the stream is ~16 KB/s)."""
AFTER_BYTES = 30_000
"""FLV bytes the viewer must get after the fault window."""
STALL = 2 * FPS
"""Frames sent by the camera between two chunks of the response that count as a stall."""
MIN_RECOVERED = 60
"""Frames of [150, 250) that must decode: the clean tail is 100 frames with 4 keyframes."""
FAULT_KINDS = (
    "garbage", "truncated", "oversize", "no_psm", "bad_pes", "bad_psm", "bad_pack", "loss",
    "overflow", "mpeg_ts", "rtp_malformed", "rtp_framing", "ssrc_mismatch", "foreign_source",
)  # fmt: skip


@pytest.fixture(scope="module")
def sample() -> PsFile:
    return PsFile.load(H264)


class Viewer:
    """An HTTP-FLV client in a thread; each chunk is stamped with the camera's frame count
    at its arrival, so bytes can be split by phase of the run without a wall clock."""

    def __init__(self, gw: GatewayProcess, camera: HostileCamera, out: Path) -> None:
        self.url = f"{gw.http_url}/live/{CAMERA_ID}.flv"
        self.camera = camera
        self.out = out
        self.status: int | None = None
        self.arrivals: list[tuple[int, int]] = []  # (camera.frames_sent, chunk bytes)
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._leave = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flv-viewer")

    def start(self) -> Viewer:
        self._thread.start()
        return self

    def leave(self, *, check: bool = True) -> None:
        """Disconnect after the next chunk (or the read timeout) and wait for the thread."""
        self._leave.set()
        if self._thread.is_alive():
            self._thread.join(25)
        assert not check or not self._thread.is_alive(), "the viewer did not leave"

    def bytes_from(self, frame: int) -> int:
        """Bytes that arrived once the camera had sent at least ``frame`` frames."""
        return sum(n for at, n in self.arrivals if at >= frame)

    def _run(self) -> None:
        try:
            timeout = httpx.Timeout(10.0, read=20.0)  # the first byte waits for the keyframe
            with httpx.stream("GET", self.url, timeout=timeout) as r, self.out.open("wb") as f:
                self.status = r.status_code
                if r.status_code != 200:
                    return
                for chunk in r.iter_bytes():
                    f.write(chunk)
                    self.arrivals.append((self.camera.frames_sent, len(chunk)))
                    self.camera.release()
                    if self._leave.is_set():
                        return
        except BaseException as exc:  # reported to the test
            self.error = exc
        finally:
            self.done.set()


@dataclass
class Decoded:
    frames: int = 0
    recovered: int = 0
    """Frames decoded with a time in the clean tail, at or after frame ``FAULTS.stop``."""
    recovered_keyframes: int = 0
    errors: int = 0
    times: list[float] = field(default_factory=list)


def decode(path: Path) -> Decoded:
    """Decode the FLV with PyAV; times are relative to the first frame (the viewer joined
    before the first keyframe, so time t is camera frame t * FPS)."""
    d = Decoded()
    t0: float | None = None
    with av.open(str(path)) as container:
        try:
            for packet in container.demux(video=0):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    d.errors += 1
                    continue
                for frame in frames:
                    if frame.pts is None or frame.time_base is None:
                        continue
                    t = float(frame.pts * frame.time_base)
                    t0 = t if t0 is None else t0
                    d.frames += 1
                    d.times.append(t - t0)
                    if t - t0 >= FAULTS.stop / FPS - 0.001:
                        d.recovered += 1
                        d.recovered_keyframes += bool(frame.key_frame)
        except av.error.EOFError:
            pass  # the viewer left mid-tag
    return d


@dataclass
class Run:
    gw: GatewayProcess
    camera: HostileCamera
    viewer: Viewer
    streams: list[dict[str, Any]]
    """``/api/streams`` while the viewer was still watching, after the fault window."""
    faults: dict[str, float]
    """``gbgw_media_faults_total`` by kind, after the stream closed."""
    lost: float
    decoded: Decoded


def metric_faults(gw: GatewayProcess) -> dict[str, float]:
    return {k: gw.metric("gbgw_media_faults_total", {"kind": k}) for k in FAULT_KINDS}


def run_hostile(
    factory: Factory,
    tmp_path: Path,
    sample: PsFile,
    injector: Injector,
    watch: tuple[str, dict[str, str] | None] | None,
    **media: object,
) -> Run:
    """One run (see the module docstring). ``watch`` is a metric that must rise while the
    stream runs (the gateway exports once a second), before the viewer leaves."""
    gw = factory(
        sip={"password": ""},
        media={"listen": "127.0.0.1", "rtp_ports": RTP_PORTS, "idle_close": 1, **media},
    )
    with HostileCamera(gw.sip_port, sample, injector, hold_after=HOLD_AFTER) as camera:
        assert camera.register().status == 200
        viewer = Viewer(gw, camera, tmp_path / "live.flv").start()
        try:
            streams = watch_run(gw, camera, viewer, watch)
            viewer.leave()
        finally:
            viewer.leave(check=False)  # a failed run leaves no thread behind either
        assert viewer.error is None and viewer.status == 200, (viewer.status, viewer.error)
        gw.wait_event("stream.closed", timeout=10, channel_id=CAMERA_ID, reason="idle")
        wait_until(camera.bye.is_set, timeout=10, what="the gateway's BYE at the camera")
        assert camera.error is None, camera.error
        assert len(camera.invites) == 1
    run = Run(
        gw=gw,
        camera=camera,
        viewer=viewer,
        streams=streams,
        faults=metric_faults(gw),
        lost=gw.metric("gbgw_rtp_packets_lost_total"),
        decoded=decode(viewer.out),
    )
    d = run.decoded
    print(  # shown when the test fails
        f"{type(injector).__name__}: injected={injector.injected} lost={run.lost:g} "
        f"faults={nonzero(run.faults)} datagrams={camera.datagrams} "
        f"bytes total={viewer.bytes_from(0)} from {FAULTS.start}={viewer.bytes_from(FAULTS.start)} "
        f"from {FAULTS.stop + 5}={viewer.bytes_from(FAULTS.stop + 5)} decoded={d.frames} "
        f"recovered={d.recovered} keyframes after={d.recovered_keyframes} errors={d.errors}"
    )
    return run


def watch_run(
    gw: GatewayProcess,
    camera: HostileCamera,
    viewer: Viewer,
    watch: tuple[str, dict[str, str] | None] | None,
) -> list[dict[str, Any]]:
    """Wait for the camera to send ``END`` frames while the viewer watches; then the metric
    ``watch`` must have risen, and ``/api/streams`` (returned) is read, the viewer still on."""

    def finished() -> bool:
        if viewer.done.is_set() or camera.error is not None:
            raise AssertionError(
                f"viewer status={viewer.status} error={viewer.error!r} "
                f"camera error={camera.error!r} frames sent={camera.frames_sent}"
            )
        return camera.frames_sent >= END

    wait_until(finished, timeout=END / FPS + 20, what=f"the camera to send {END} frames")
    if watch is not None:
        name, labels = watch
        wait_until(lambda: gw.metric(name, labels) > 0, timeout=5, what=f"{name}{labels} > 0")
    with gw.api() as c:
        streams: list[dict[str, Any]] = c.get("/api/streams").json()
    return streams


def assert_kept_serving(run: Run) -> None:
    """What every hostile run must show, whatever the fault."""
    v, d = run.viewer, run.decoded
    # The camera held until the first bytes came (before keyframe 25), so the FLV starts at
    # frame 0 and a decoded frame's time t is camera frame t * FPS (the window checks use it).
    assert v.arrivals and v.arrivals[0][0] == HOLD_AFTER, v.arrivals[:1]
    assert v.bytes_from(FAULTS.start) - v.bytes_from(FAULTS.stop) > WINDOW_BYTES
    assert v.bytes_from(FAULTS.stop + 5) > AFTER_BYTES, v.bytes_from(FAULTS.stop + 5)
    # The response never went quiet: consecutive chunks are less than STALL frames apart,
    # from the first keyframe to the end of the run.
    stamps = [at for at, _ in v.arrivals]
    stalls = [(a, b) for a, b in pairwise(stamps) if b - a >= STALL]
    assert not stalls and stamps[-1] >= END, (stalls, stamps[-1])
    [s] = [s for s in run.streams if s["channel_id"] == CAMERA_ID]
    assert s["state"] == "running" and s["codec"] == "h264" and s["resolution"] == "640x360", s
    assert s["packets"] > 0
    assert d.frames >= 50, d
    assert d.recovered >= MIN_RECOVERED and d.recovered_keyframes >= 1, d
    assert run.gw.proc is not None and run.gw.proc.poll() is None, "gbgw exited"


def frames_in(decoded: Decoded, frames: range) -> int:
    """Decoded frames whose time falls on camera frames ``frames``."""
    return sum(1 for t in decoded.times if frames.start <= round(t * FPS) < frames.stop)


def nonzero(faults: dict[str, float]) -> dict[str, int]:
    return {k: int(v) for k, v in faults.items() if v}


# ---------------------------------------------------------------- the cases


def test_truncated_p_frames(gateway_factory: Factory, tmp_path: Path, sample: PsFile) -> None:
    inj = TruncatePFrames(FAULTS, every=4)
    run = run_hostile(
        gateway_factory, tmp_path, sample, inj, ("gbgw_media_faults_total", {"kind": "truncated"})
    )
    assert_kept_serving(run)
    assert inj.injected >= 20
    # Each cut PES is found (and dropped) when the next pack header shows up inside it.
    assert nonzero(run.faults) == {"truncated": inj.injected}, (inj.injected, run.faults)
    assert run.lost == 0


def test_garbage_between_packs(gateway_factory: Factory, tmp_path: Path, sample: PsFile) -> None:
    inj = GarbageBetweenPacks(FAULTS, every=5)
    run = run_hostile(
        gateway_factory, tmp_path, sample, inj, ("gbgw_media_faults_total", {"kind": "garbage"})
    )
    assert_kept_serving(run)
    # One fault per run of junk, however many RTP packets it spans; no frame is lost to it.
    assert nonzero(run.faults) == {"garbage": inj.injected}, (inj.injected, run.faults)
    assert run.lost == 0
    assert frames_in(run.decoded, FAULTS) == len(FAULTS), run.decoded.times


def test_five_percent_random_loss(gateway_factory: Factory, tmp_path: Path, sample: PsFile) -> None:
    inj = RandomLoss(FAULTS, rate=0.05, seed=7)
    run = run_hostile(gateway_factory, tmp_path, sample, inj, ("gbgw_rtp_packets_lost_total", None))
    assert_kept_serving(run)
    assert inj.injected >= 3, (inj.injected, inj.offered)
    assert run.lost == inj.injected, (run.lost, inj.injected)
    [s] = [s for s in run.streams if s["channel_id"] == CAMERA_ID]
    assert s["lost"] == inj.injected
    # Each gap (adjacent drops make one) makes the demuxer resync at the next pack header.
    assert nonzero(run.faults) == {"loss": inj.gaps}, (inj.gaps, run.faults)


def test_wrong_ssrc_burst_tolerant(
    gateway_factory: Factory, tmp_path: Path, sample: PsFile
) -> None:
    burst = range(90, 110)
    inj = WrongSsrc(burst)
    run = run_hostile(
        gateway_factory, tmp_path, sample, inj,
        ("gbgw_media_faults_total", {"kind": "ssrc_mismatch"}),
    )  # fmt: skip
    assert_kept_serving(run)
    # media.ssrc_tolerant (the default): the switch to the new SSRC and the switch back are
    # counted and followed, each as a restart the demuxer resyncs after (``loss``); no packet
    # is dropped, so none is lost.
    assert nonzero(run.faults) == {"ssrc_mismatch": 2, "loss": 2}, run.faults
    assert run.lost == 0
    # Only the frame open at each switch is dropped with the resync.
    assert frames_in(run.decoded, burst) >= len(burst) - 2, run.decoded.times


def test_wrong_ssrc_burst_strict(gateway_factory: Factory, tmp_path: Path, sample: PsFile) -> None:
    burst = range(90, 110)
    inj = WrongSsrc(burst)
    run = run_hostile(
        gateway_factory, tmp_path, sample, inj,
        ("gbgw_media_faults_total", {"kind": "ssrc_mismatch"}), ssrc_tolerant=False,
    )  # fmt: skip
    assert_kept_serving(run)
    # Strict: every packet of the burst is dropped and counted; its sequence numbers are then
    # a gap (lost), and the demuxer resyncs once after it.
    assert nonzero(run.faults) == {"ssrc_mismatch": inj.injected, "loss": 1}, (
        inj.injected, run.faults,
    )  # fmt: skip
    assert run.lost == inj.injected
    assert frames_in(run.decoded, burst) == 0, run.decoded.times


def test_rtp_from_a_foreign_source_port(
    gateway_factory: Factory, tmp_path: Path, sample: PsFile
) -> None:
    inj = ForeignSource(FAULTS)
    run = run_hostile(
        gateway_factory, tmp_path, sample, inj,
        ("gbgw_media_faults_total", {"kind": "foreign_source"}),
    )  # fmt: skip
    assert_kept_serving(run)
    assert run.camera.datagrams["foreign"] == inj.injected == len(FAULTS)
    # The forged packets never reach the demuxer: no garbage, no duplicate, nothing lost.
    assert nonzero(run.faults) == {"foreign_source": inj.injected}, run.faults
    assert run.lost == 0
    assert frames_in(run.decoded, FAULTS) == len(FAULTS), run.decoded.times


def test_device_bye_ends_every_viewer(
    gateway_factory: Factory, tmp_path: Path, sample: PsFile
) -> None:
    """The camera hangs up: the stream ends for every consumer with the reason logged, the
    HTTP responses end cleanly, and the gateway does not BYE back."""
    gw = gateway_factory(
        sip={"password": ""},
        media={"listen": "127.0.0.1", "rtp_ports": RTP_PORTS, "idle_close": 30},
    )
    with HostileCamera(gw.sip_port, sample, Injector()) as camera:
        assert camera.register().status == 200
        viewers = [Viewer(gw, camera, tmp_path / f"v{i}.flv").start() for i in range(2)]
        wait_until(lambda: all(v.arrivals for v in viewers), timeout=20, what="both viewers fed")
        wait_until(lambda: camera.frames_sent >= 50, timeout=20, what="2 s of video")
        camera.send_bye()
        ev = gw.wait_event("stream.closed", timeout=10, channel_id=CAMERA_ID)
        assert ev["reason"] == "device_bye"
        gw.wait_event("stream.device_bye", channel_id=CAMERA_ID)
        for v in viewers:
            assert v.done.wait(10), "the viewer's response did not end"
            assert v.error is None and v.status == 200
            assert v.bytes_from(0) > 10_000
        assert not camera.bye.is_set()  # the device ended the dialog: no BYE back
        wait_until(lambda: gw.metric("gbgw_streams_active") == 0, what="no stream left")
