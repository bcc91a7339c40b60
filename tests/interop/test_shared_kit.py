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


KIT_NAMES = {"东门入口摄像机", "西门停车场枪机", "南广场球机", "北门通道", "一楼大厅全景", "机房监控"}


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
