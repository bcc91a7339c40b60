"""Device queries and control against `gbgw simulate` devices: DeviceInfo, DeviceStatus, PTZ,
catalog on registration (GB2312, Chinese names) and the KPI view of the fleet."""

from __future__ import annotations

import json
import signal
import subprocess
import threading

import pytest

from gateway.simdevice import DeviceProfile, channel_items
from tests.interop.harness import GBGW, GatewayProcess, wait_until

pytestmark = pytest.mark.interop

DEV = "62090000001320000001"


@pytest.fixture
def fleet(gateway: GatewayProcess):
    proc = subprocess.Popen(
        [
            *GBGW,
            "simulate",
            "--devices",
            "2",
            "--channels",
            "3",
            "--gateway",
            f"127.0.0.1:{gateway.sip_port}",
            "--password",
            "12345678",
            "--keepalive",
            "5",
            "--duration",
            "120",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())

    threading.Thread(target=read, daemon=True).start()

    def total() -> int:
        with gateway.api() as c:
            return int(c.get("/api/channels").json()["total"])

    wait_until(lambda: total() == 6, timeout=30, what="6 channels from 2 devices")
    yield lines
    proc.send_signal(signal.SIGINT)
    proc.wait(30)


def test_catalog_names_device_info_and_status(gateway: GatewayProcess, fleet: list[str]) -> None:
    want = {it.device_id: it.name for it in channel_items(DEV, DeviceProfile(channels=3))}
    with gateway.api() as c:
        got = {ch["channel_id"]: ch["name"] for ch in c.get(f"/api/devices/{DEV}/channels").json()}
        assert got == want  # GB2312 on the wire, UTF-8 in the API, names intact
        d = wait_until(
            lambda: (x := c.get(f"/api/devices/{DEV}").json())["manufacturer"] and x,
            what="DeviceInfo filled",
        )
        assert (d["manufacturer"], d["model"], d["firmware"]) == ("gbgw-sim", "SIM-IPC", "1.0")
        assert d["channel_count"] == 3
        st = c.get(f"/api/devices/{DEV}/status", timeout=15).json()
        assert st["online"] == "ONLINE" and st["result"] == "OK"


def test_ptz_reaches_the_device_as_ptzcmd_bytes(gateway: GatewayProcess, fleet: list[str]) -> None:
    channel = next(iter(channel_items(DEV, DeviceProfile(channels=3)))).device_id
    cases = {
        ("zoomin", 85): "A50F011000005015",
        ("up", 0x80): "A50F01080080003D",
        ("stop", 0): "A50F0100000000B5",
    }
    with gateway.api() as c:
        for (action, speed), cmd in cases.items():
            r = c.post(
                f"/api/devices/{DEV}/ptz",
                json={"channel_id": channel, "action": action, "speed": speed},
            )
            assert r.status_code == 200, r.text
            assert r.json()["ptz_cmd"] == cmd

    def seen() -> list[str]:
        return [json.loads(x)["ptz_cmd"] for x in list(fleet) if '"sim.ptz"' in x]

    wait_until(lambda: len(seen()) == 3, what="3 PTZ commands at the device")
    assert seen() == list(cases.values())
    with gateway.api() as c:
        audit = c.get("/api/audit").json()
    assert [e["target"] for e in audit if e["action"] == "ptz"] == [channel] * 3


def test_kpi_matches_the_fleet(gateway: GatewayProcess, fleet: list[str]) -> None:
    with gateway.api() as c:
        k = c.get("/api/kpi", params={"by": "county,class"}).json()
    assert k["target"] == 0.98
    [row] = k["rows"]
    assert (row["county"], row["class"]) == ("620902", 3)
    assert row["channels_known"] == 6 and row["channels_online"] == 6
    assert row["devices_known"] == 2 and row["online_rate"] == 1.0
    wait_until(
        lambda: gateway.metric("gbgw_kpi_channels", {"county": "620902", "class": "3"}) == 6,
        timeout=40,  # published every 15 s
        what="KPI gauges published",
    )
