"""Registrar interop: sipp devices and `gbgw simulate` against a real `gbgw serve`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.interop.harness import (
    DATA,
    GBGW,
    GatewayProcess,
    run_sipp,
    wait_until,
)
from tests.interop.sipsend import options, send_tcp, send_udp

pytestmark = pytest.mark.interop

SIPP = DATA / "sipp"
DEVICE = "34020000001320000001"


def device(gw: GatewayProcess, device_id: str) -> dict | None:
    with gw.api() as c:
        r = c.get(f"/api/devices/{device_id}")
    return r.json() if r.status_code == 200 else None


def online_ids(gw: GatewayProcess) -> set[str]:
    with gw.api() as c:
        return {d["device_id"] for d in c.get("/api/devices", params={"online": "true"}).json()}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_register_with_digest(gateway: GatewayProcess, transport: str) -> None:
    r = run_sipp(SIPP / "gb_register.xml", gateway, transport=transport)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    d = wait_until(lambda: device(gateway, DEVICE), what="device listed")
    assert d["online"] is True
    assert d["transport"] == transport
    assert d["address"].startswith("127.0.0.1:")
    assert gateway.metric("gbgw_registrations_total", {"result": "ok"}) == 1
    assert gateway.metric("gbgw_registrations_total", {"result": "unauthorized"}) == 1
    assert gateway.metric("gbgw_devices_online") == 1
    ev = gateway.wait_event("register.ok", device_id=DEVICE)
    assert ev["transport"] == transport


def test_wrong_password_is_refused_and_counted(gateway: GatewayProcess) -> None:
    r = run_sipp(SIPP / "gb_wrong_password.xml", gateway, keys={"password": "WRONG"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # challenge + wrong digest: both are authentication failures
    assert gateway.metric("gbgw_registrations_total", {"result": "unauthorized"}) == 2
    assert gateway.metric("gbgw_registrations_total", {"result": "ok"}) == 0
    assert device(gateway, DEVICE) is None
    gateway.wait_event("register.auth_failed", device_id=DEVICE)


def test_repeated_failures_lock_the_source_out(gateway_factory) -> None:
    gw = gateway_factory(sip={"auth_max_failures": 2, "auth_lockout": 30})
    for _ in range(2):
        r = run_sipp(SIPP / "gb_wrong_password.xml", gw, keys={"password": "WRONG"})
        assert r.returncode == 0
    assert gw.metric("gbgw_auth_lockouts_total") == 1
    # locked out: even the right password is refused for now (the first REGISTER gets 403)
    r = run_sipp(SIPP / "gb_register.xml", gw)
    assert r.returncode != 0
    assert gw.metric("gbgw_registrations_total", {"result": "forbidden"}) >= 1
    assert gw.metric("gbgw_registrations_total", {"result": "ok"}) == 0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_keepalive_then_offline_when_silent(gateway_factory, transport: str) -> None:
    gw = gateway_factory(sip={"keepalive_interval": 1, "keepalive_max_missed": 2})
    r = run_sipp(SIPP / "gb_keepalive.xml", gw, transport=transport, extra=["-d", "300"])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert gw.metric("gbgw_keepalives_total") == 3
    assert DEVICE in online_ids(gw)
    # no more keepalives: offline after interval * max_missed (2 s) plus the 1 s sweep
    ev = gw.wait_event("device.offline", timeout=10, device_id=DEVICE)
    assert ev["reason"] == "keepalive_timeout" or "keepalive" in ev["reason"]
    assert DEVICE not in online_ids(gw)
    assert device(gw, DEVICE)["online"] is False


def test_unregister_removes_from_online(gateway: GatewayProcess) -> None:
    assert run_sipp(SIPP / "gb_register.xml", gateway).returncode == 0
    assert DEVICE in online_ids(gateway)
    r = run_sipp(SIPP / "gb_unregister.xml", gateway)
    assert r.returncode == 0, r.stdout[-2000:]
    wait_until(lambda: DEVICE not in online_ids(gateway), what="device offline")
    assert device(gateway, DEVICE)["online"] is False


def test_keepalive_from_unknown_device_gets_404(gateway: GatewayProcess) -> None:
    raw = (DATA / "sip" / "keepalive_unknown.sip").read_bytes()
    resp = send_udp(raw, gateway.sip_port)
    assert resp is not None and resp.startswith(b"SIP/2.0 404")


BAD = sorted((DATA / "bad_inputs").glob("*.sip"))


def test_hostile_inputs_get_4xx_or_drop_and_are_counted(gateway: GatewayProcess) -> None:
    port = gateway.sip_port
    before = gateway.metric("gbgw_sip_malformed_total")
    outcomes: dict[str, str] = {}
    for path in BAD:
        raw = path.read_bytes()
        for transport in ("udp", "tcp"):
            if transport == "udp":
                if len(raw) > 65000:
                    continue
                resp = send_udp(raw, port)
                closed = False
            else:
                resp, closed = send_tcp(raw, port)
            status = resp.split(b"\r\n", 1)[0].decode("latin-1") if resp else ""
            outcomes[f"{path.name}/{transport}"] = status or ("closed" if closed else "dropped")
            if resp:
                code = int(status.split()[1])
                assert 400 <= code < 500 or code == 513, (path.name, transport, status)
            # the gateway is still alive and answering after every single hostile message
            assert options(port, "udp") is not None, (path.name, transport)
    after = gateway.metric("gbgw_sip_malformed_total")
    # every file is malformed somewhere: in its SIP syntax or in its MANSCDP body
    assert after - before >= len(BAD), outcomes
    # and a valid device still registers right after the barrage, over both transports
    for transport in ("udp", "tcp"):
        r = run_sipp(SIPP / "gb_register.xml", gateway, transport=transport)
        assert r.returncode == 0, (transport, r.stdout[-1500:])
    assert options(port, "tcp") is not None
    assert not gateway.find("error"), gateway.find("error")


def test_kill9_and_restart_keeps_every_device(gateway_factory, tmp_path: Path) -> None:
    gw = gateway_factory()
    ids = [f"3402000000132000{i:04d}" for i in range(1, 6)]
    for dev in ids:
        r = run_sipp(SIPP / "gb_register.xml", gw, keys={"device_id": dev})
        assert r.returncode == 0
    wait_until(lambda: online_ids(gw) >= set(ids), what="all registered")
    gw.kill9()
    gw.start()
    with gw.api() as c:
        listed = {d["device_id"]: d for d in c.get("/api/devices").json()}
    assert set(ids) <= set(listed)
    assert all(listed[d]["online"] is False for d in ids)
    # and a device comes back online when it registers again
    assert run_sipp(SIPP / "gb_register.xml", gw, keys={"device_id": ids[0]}).returncode == 0
    assert ids[0] in online_ids(gw)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_simulate_200_devices(gateway: GatewayProcess, transport: str) -> None:
    proc = subprocess.run(
        [
            *GBGW,
            "simulate",
            "--devices",
            "200",
            "--gateway",
            f"127.0.0.1:{gateway.sip_port}",
            "--password",
            "12345678",
            "--transport",
            transport,
            "--keepalive",
            "1",
            "--duration",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["registered"] == 200 and summary["failed"] == 0
    assert summary["keepalives"] > 0
    assert "simulate: registered" in proc.stderr  # progress lines
    with gateway.api() as c:
        devices = c.get("/api/devices").json()
    assert len(devices) == 200
    assert all(d["transport"] == transport for d in devices)
    assert gateway.metric("gbgw_registrations_total", {"result": "ok"}) == 200
