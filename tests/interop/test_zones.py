"""Zones end to end: two tokens, a police channel, listings, tree, KPI, PTZ and audit."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest

from gateway.manscdp import CatalogItem, PtzCmd, encode_catalog_fragments
from tests.interop.harness import GatewayProcess, gateway_config
from tests.interop.rawdevice import RawDevice

pytestmark = pytest.mark.interop

DEV = "62090000001180000001"
POLICE = "62090200001310000001"  # civil code 620902: zone police
PUBLIC = "62092100001310000002"  # civil code 620921: zone default
OPS, COP, ADMIN = "ops-secret-1", "police-secret-2", "admin-secret-3"


def _config_extra() -> str:
    return f"""
[[zone]]
name = "police"
civil_code = ["620902"]
class = 1

[[token]]
name = "ops"
secret = "{OPS}"
zones = ["default"]
classes = [1, 2, 3]
ptz = true

[[token]]
name = "cop"
secret = "{COP}"
zones = ["police", "default"]
classes = [1, 2, 3]
ptz = true
"""


@pytest.fixture
def gw(tmp_path) -> Iterator[GatewayProcess]:
    text = (
        gateway_config(
            tmp_path,
            sip={"password": ""},
            catalog={"query_on_register": False},
            http={"token": ADMIN},
        )
        + _config_extra()
    )
    proc = GatewayProcess(tmp_path, text).start()
    yield proc
    proc.stop()


def load_catalog(gw: GatewayProcess) -> RawDevice:
    dev = RawDevice(gw.sip_port, DEV)
    assert dev.register().status == 200
    box: dict = {}

    def run() -> None:
        with gw.api(ADMIN) as c:
            c.timeout = 30
            box["r"] = c.post(f"/api/devices/{DEV}/catalog")

    t = threading.Thread(target=run)
    t.start()
    q = dev.next_request(method="MESSAGE")
    sn = int(re.search(rb"<SN>(\d+)</SN>", q.body).group(1))
    items = [
        CatalogItem(
            device_id=POLICE, name="警务摄像机", civil_code="620902", status="ON", ptz_type=1
        ),
        CatalogItem(
            device_id=PUBLIC, name="公共摄像机", civil_code="620921", status="ON", ptz_type=1
        ),
    ]
    for frag in encode_catalog_fragments(sn, DEV, items):
        assert dev.message(frag).status == 200
    t.join(30)
    assert box["r"].status_code == 200, box["r"].text
    return dev


def test_police_channel_invisible_and_forbidden_for_ops(gw: GatewayProcess) -> None:
    dev = load_catalog(gw)
    with gw.api() as anon:
        assert anon.get("/api/channels").status_code == 401
    with gw.api(OPS) as ops, gw.api(COP) as cop:
        ids_ops = {c["channel_id"] for c in ops.get("/api/channels").json()["items"]}
        ids_cop = {c["channel_id"] for c in cop.get("/api/channels").json()["items"]}
        assert ids_ops == {PUBLIC}
        assert ids_cop == {POLICE, PUBLIC}
        assert POLICE not in ops.get("/api/tree").text
        assert POLICE in cop.get("/api/tree").text
        assert POLICE not in ops.get(f"/api/devices/{DEV}/channels").text
        kpi_ops = ops.get("/api/kpi", params={"by": "county"}).json()
        assert {r["county"] for r in kpi_ops["rows"]} == {"620921"}
        kpi_cop = cop.get("/api/kpi", params={"by": "county,class"}).json()
        assert {r["county"] for r in kpi_cop["rows"]} == {"620902", "620921"}
        # live stream and snapshot: forbidden for ops (checked before any INVITE), counted
        assert ops.get(f"/live/{POLICE}.flv").status_code == 403
        assert ops.get(f"/api/channels/{POLICE}/snapshot.jpg").status_code == 403
        assert gw.metric("gbgw_zone_denied_total", {"consumer": "ops"}, token=ADMIN) == 2
        assert (
            gw.metric(
                "gbgw_sip_requests_total", {"method": "INVITE", "direction": "out"}, token=ADMIN
            )
            == 0
        )
        # PTZ: forbidden for ops, and counted
        r = ops.post(
            f"/api/devices/{DEV}/ptz", json={"channel_id": POLICE, "action": "left", "speed": 128}
        )
        assert r.status_code == 403
        assert gw.metric("gbgw_zone_denied_total", {"consumer": "ops"}, token=ADMIN) == 3
        # a channel that does not exist looks the same to ops (no existence leak)
        r = ops.post(
            f"/api/devices/{DEV}/ptz", json={"channel_id": "62090200001319999999", "action": "left"}
        )
        assert r.status_code == 403
        # allowed for cop: the device gets exactly the PTZCmd bytes of the standard
        box: dict = {}
        t = threading.Thread(
            target=lambda: box.setdefault(
                "r",
                cop.post(
                    f"/api/devices/{DEV}/ptz",
                    json={"channel_id": POLICE, "action": "left", "speed": 128},
                ),
            )
        )
        t.start()
        req = dev.next_request(method="MESSAGE")  # answers 200, as a device does
        t.join(15)
        r = box["r"]
        assert r.status_code == 200, r.text
        assert r.json()["ptz_cmd"] == "A50F010280000037"
    assert req.uri.user == POLICE
    assert b"<PTZCmd>A50F010280000037</PTZCmd>" in req.body
    assert PtzCmd.decode("A50F010280000037").encode() == "A50F010280000037"
    with gw.api(ADMIN) as admin:
        audit = admin.get("/api/audit").json()
    assert any(
        e["consumer"] == "cop" and e["action"] == "ptz" and e["target"] == POLICE for e in audit
    )
    assert not any(e["consumer"] == "ops" and e["result"] == "allowed" for e in audit)
    # every refusal is audited too: live, snapshot, PTZ and the PTZ on a missing channel
    denied = [(e["action"], e["target"]) for e in audit if e["result"] == "denied"]
    assert sorted(denied) == sorted(
        [("stream", POLICE), ("snapshot", POLICE), ("ptz", POLICE), ("ptz", "62090200001319999999")]
    ), denied
    dev.close()
