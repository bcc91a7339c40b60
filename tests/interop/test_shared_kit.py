"""Cross-checks with the ../shared/peers kit (present in CI beside the clone).

These run the kit's own sipp scenarios and hostile-input sender against `gbgw serve`. A fresh
clone has no ../shared; only then are they skipped, with that reason. The same behaviour is
covered without the kit by test_registrar.py with our own scenarios and copies of the inputs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.interop.harness import SHARED, GatewayProcess, run_sipp, wait_until

PEERS = SHARED / "peers"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.shared,
    pytest.mark.skipif(not PEERS.is_dir(), reason="../shared/peers is absent (fresh clone)"),
]

DEVICE = "34020000001320000001"


def online(gw: GatewayProcess) -> set[str]:
    with gw.api() as c:
        return {d["device_id"] for d in c.get("/api/devices", params={"online": "true"}).json()}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_kit_register_digest(gateway: GatewayProcess, transport: str) -> None:
    r = run_sipp(PEERS / "sipp" / "register_digest.xml", gateway, transport=transport, cwd=PEERS)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # registered, then un-registered by the scenario
    assert gateway.metric("gbgw_registrations_total", {"result": "ok"}) >= 2
    assert gateway.metric("gbgw_registrations_total", {"result": "unauthorized"}) >= 1
    assert DEVICE not in online(gateway)
    gateway.wait_event("register.unregistered", device_id=DEVICE)


def test_kit_wrong_password_fails(gateway: GatewayProcess) -> None:
    r = run_sipp(
        PEERS / "sipp" / "register_digest.xml", gateway, keys={"password": "WRONG"}, timeout=15
    )
    assert r.returncode != 0
    assert gateway.metric("gbgw_registrations_total", {"result": "ok"}) == 0
    assert gateway.metric("gbgw_registrations_total", {"result": "unauthorized"}) >= 2


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_kit_keepalive(gateway: GatewayProcess, transport: str) -> None:
    r = run_sipp(
        PEERS / "sipp" / "keepalive.xml", gateway, transport=transport, extra=["-d", "200"]
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wait_until(lambda: gateway.metric("gbgw_keepalives_total") == 3, what="3 keepalives")


def test_kit_send_bad(gateway: GatewayProcess) -> None:
    before = gateway.metric("gbgw_sip_malformed_total")
    r = subprocess.run(
        [
            sys.executable,
            str(PEERS / "bad_inputs" / "send_bad.py"),
            "127.0.0.1",
            str(gateway.sip_port),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=PEERS,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert gateway.metric("gbgw_sip_malformed_total") > before
    # a valid registration still works afterwards
    r = run_sipp(PEERS / "sipp" / "register_digest.xml", gateway, cwd=PEERS)
    assert r.returncode == 0, r.stdout[-2000:]


KIT_NAMES = {
    "东门入口摄像机",
    "西门停车场枪机",
    "南广场球机",
    "北门通道",
    "一楼大厅全景",
    "机房监控",
}


def test_kit_catalog_gb2312(gateway: GatewayProcess) -> None:
    """The kit's device registers, the gateway queries its catalog on registration, and the
    six GB2312 channel names arrive intact (as UTF-8 JSON)."""
    import threading

    box: dict = {}

    def run() -> None:
        box["r"] = run_sipp(
            PEERS / "sipp" / "device_online.xml",
            gateway,
            extra=["-oocsf", str(PEERS / "sipp" / "device_catalog.xml")],
            timeout=90,
            cwd=PEERS,
        )

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def names() -> set[str]:
        with gateway.api() as c:
            r = c.get(f"/api/devices/{DEVICE}/channels")
        return {ch["name"] for ch in r.json()} if r.status_code == 200 else set()

    got = wait_until(lambda: names() == KIT_NAMES and names(), timeout=60, what="6 channels")
    assert got == KIT_NAMES
    t.join(100)
    assert box["r"].returncode == 0, box["r"].stdout[-2000:] + box["r"].stderr[-2000:]


def _ffprobe(path: str) -> dict:
    import json as _json

    r = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "json",
            path,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return _json.loads(r.stdout or "{}")


@pytest.mark.parametrize("transport", ["udp", "tcp-passive", "tcp-active"])
def test_kit_invite_uas_live_flv(gateway_factory, tmp_path, transport: str) -> None:
    """The kit's device answers our INVITE and its sender streams the H.264 sample; an HTTP-FLV
    viewer gets decodable video; after the viewer leaves, idle_close BYEs the device."""
    import threading

    import httpx

    gw = gateway_factory(
        media={
            "listen": "127.0.0.1",
            "transport": transport,
            "idle_close": 1,
            "rtp_ports": "32000-32099",
        }
    )
    media_port = str(6000 + (hash(transport) % 500))
    box: dict = {}

    def run() -> None:
        box["r"] = run_sipp(
            PEERS / "sipp" / "device_online.xml",
            gw,
            extra=[
                "-oocsf",
                str(PEERS / "sipp" / "device_invite_uas.xml"),
                "-mi",
                "127.0.0.1",
                "-mp",
                media_port,
                "-set",
                "media_cmd",
                f"{sys.executable} media/rtp_ps_send.py samples/h264_640x360_25fps_10s.ps "
                "--loop 0 --duration 60",
            ],
            timeout=120,
            cwd=PEERS,
        )

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_until(lambda: DEVICE in online(gw), timeout=30, what="device online")
    out = tmp_path / "live.flv"
    got = 0
    with httpx.stream("GET", f"{gw.http_url}/live/{DEVICE}.flv", timeout=30) as r:
        assert r.status_code == 200, r.read()
        with out.open("wb") as f:
            for chunk in r.iter_bytes():
                f.write(chunk)
                got += len(chunk)
                if got > 150_000:
                    break
    info = _ffprobe(str(out))
    s = info["streams"][0]
    assert (s["codec_name"], s["width"], s["height"]) == ("h264", 640, 360)
    assert int(s["nb_read_frames"]) >= 50
    gw.wait_event("stream.closed", timeout=20, reason="idle")
    t.join(130)
    assert box["r"].returncode == 0, box["r"].stdout[-2000:] + box["r"].stderr[-2000:]
