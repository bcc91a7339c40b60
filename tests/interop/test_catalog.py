"""Catalog interop: fragments over the wire into a real `gbgw serve`, read back from the API."""

from __future__ import annotations

import re
import threading

import pytest

from gateway.manscdp import CatalogItem, encode_catalog_fragments
from tests.interop.harness import GatewayProcess, wait_until
from tests.interop.rawdevice import RawDevice

pytestmark = pytest.mark.interop

DEV = "62090000001180000001"  # an NVR


def items(n: int, prefix: str = "6209020013100") -> list[CatalogItem]:
    return [
        CatalogItem(
            device_id=f"{prefix}{i:07d}"[-20:],
            name=f"北门通道摄像机{i}号",
            civil_code="620902",
            parent_id=DEV,
            status="ON",
            manufacturer="Hik",
        )
        for i in range(1, n + 1)
    ]


@pytest.fixture
def nopass(gateway_factory) -> GatewayProcess:
    """A gateway that lets devices in without a password (raw test devices do no digest)."""
    return gateway_factory(
        sip={"password": ""}, catalog={"query_on_register": False, "fragment_idle": 1.0}
    )


def channels(gw: GatewayProcess, device_id: str) -> list[dict]:
    with gw.api() as c:
        r = c.get(f"/api/devices/{device_id}/channels")
        assert r.status_code == 200, r.text
        return r.json()


def start_query(gw: GatewayProcess, device_id: str) -> dict:
    """POST the catalog query from a thread (it waits for the commit); returns a result box."""
    box: dict = {}

    def run() -> None:
        with gw.api() as c:
            c.timeout = 60
            r = c.post(f"/api/devices/{device_id}/catalog")
            box["status"], box["json"] = r.status_code, r.json()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    box["thread"] = t
    return box


def sn_of(body: bytes) -> int:
    m = re.search(rb"<SN>(\d+)</SN>", body)
    assert m
    return int(m.group(1))


def test_gb2312_fragments_land_with_chinese_names(nopass: GatewayProcess) -> None:
    dev = RawDevice(nopass.sip_port, DEV)
    assert dev.register().status == 200
    box = start_query(nopass, DEV)
    q = dev.next_request(method="MESSAGE")
    assert b"<CmdType>Catalog</CmdType>" in q.body
    sn = sn_of(q.body)
    want = items(6)
    for frag in encode_catalog_fragments(sn, DEV, want, per_fragment=2, encoding="GB2312"):
        assert b"GB2312" in frag
        assert dev.message(frag).status == 200
    box["thread"].join(30)
    assert box["status"] == 200 and box["json"] == {
        "device_id": DEV,
        "channels": 6,
        "complete": True,
    }
    got = {c["channel_id"]: c["name"] for c in channels(nopass, DEV)}
    assert got == {it.device_id: it.name for it in want}
    with nopass.api() as c:
        assert c.get(f"/api/devices/{DEV}").json()["channel_count"] == 6
    assert nopass.metric("gbgw_channels") == 6
    dev.close()


def test_2000_channels_in_1000_fragments(nopass: GatewayProcess) -> None:
    dev = RawDevice(nopass.sip_port, DEV)
    assert dev.register().status == 200
    box = start_query(nopass, DEV)
    sn = sn_of(dev.next_request(method="MESSAGE").body)
    want = items(2000)
    frags = encode_catalog_fragments(sn, DEV, want, per_fragment=2)
    assert len(frags) == 1000
    for frag in frags:
        assert dev.message(frag).status == 200
    box["thread"].join(60)
    assert box["json"]["channels"] == 2000 and box["json"]["complete"] is True
    assert len(channels(nopass, DEV)) == 2000
    with nopass.api() as c:
        page = c.get("/api/channels", params={"civil_code": "620902", "limit": 50, "offset": 100})
    assert page.json()["total"] == 2000 and len(page.json()["items"]) == 50
    dev.close()


def test_wrong_sum_num_commits_after_idle_and_reports_incomplete(nopass: GatewayProcess) -> None:
    dev = RawDevice(nopass.sip_port, DEV)
    assert dev.register().status == 200
    box = start_query(nopass, DEV)
    sn = sn_of(dev.next_request(method="MESSAGE").body)
    frags = encode_catalog_fragments(sn, DEV, items(4), per_fragment=2)
    for frag in frags:
        # the device claims 10 channels but has 4
        assert (
            dev.message(frag.replace(b"<SumNum>4</SumNum>", b"<SumNum>10</SumNum>")).status == 200
        )
    box["thread"].join(30)
    assert box["json"] == {"device_id": DEV, "channels": 4, "complete": False}
    assert len(channels(nopass, DEV)) == 4
    assert nopass.metric("gbgw_catalog_incomplete_total") == 1
    dev.close()


def test_malformed_fragment_in_the_middle(nopass: GatewayProcess) -> None:
    dev = RawDevice(nopass.sip_port, DEV)
    assert dev.register().status == 200
    box = start_query(nopass, DEV)
    sn = sn_of(dev.next_request(method="MESSAGE").body)
    want = items(6)
    frags = encode_catalog_fragments(sn, DEV, want, per_fragment=2)
    assert dev.message(frags[0]).status == 200
    broken = frags[1].replace(b"</DeviceList>", b"<Item><DeviceID>")  # not XML any more
    assert dev.message(broken).status == 400
    assert dev.message(frags[2]).status == 200
    box["thread"].join(30)
    assert box["json"]["complete"] is False
    got = {c["channel_id"] for c in channels(nopass, DEV)}
    assert got == {want[i].device_id for i in (0, 1, 4, 5)}
    assert nopass.metric("gbgw_catalog_incomplete_total") == 1
    assert nopass.metric("gbgw_manscdp_malformed_total") == 1
    dev.close()


def test_catalog_notify_changes_status_and_deletes(nopass: GatewayProcess) -> None:
    dev = RawDevice(nopass.sip_port, DEV)
    assert dev.register().status == 200
    box = start_query(nopass, DEV)
    sn = sn_of(dev.next_request(method="MESSAGE").body)
    want = items(3)
    for frag in encode_catalog_fragments(sn, DEV, want, per_fragment=3):
        dev.message(frag)
    box["thread"].join(30)
    notify = (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Catalog</CmdType>\r\n'
        f"<SN>77</SN>\r\n<DeviceID>{DEV}</DeviceID>\r\n<SumNum>2</SumNum>\r\n"
        '<DeviceList Num="2">\r\n'
        f"<Item><DeviceID>{want[0].device_id}</DeviceID><Event>OFF</Event></Item>\r\n"
        f"<Item><DeviceID>{want[1].device_id}</DeviceID><Event>DEL</Event></Item>\r\n"
        "</DeviceList>\r\n</Notify>\r\n"
    ).encode("gb2312")
    assert dev.message(notify).status == 200
    wait_until(lambda: len(channels(nopass, DEV)) == 2, what="DEL applied")
    status = {c["channel_id"]: c["status"] for c in channels(nopass, DEV)}
    assert status == {want[0].device_id: "OFF", want[2].device_id: "ON"}
    dev.close()


def test_channels_survive_restart(nopass: GatewayProcess) -> None:
    dev = RawDevice(nopass.sip_port, DEV)
    assert dev.register().status == 200
    box = start_query(nopass, DEV)
    sn = sn_of(dev.next_request(method="MESSAGE").body)
    want = items(5)
    for frag in encode_catalog_fragments(sn, DEV, want, per_fragment=5):
        dev.message(frag)
    box["thread"].join(30)
    dev.close()
    nopass.stop()
    nopass.start()
    got = {c["channel_id"]: c["name"] for c in channels(nopass, DEV)}
    assert got == {it.device_id: it.name for it in want}


def test_query_on_register_subscribe_and_notify(gateway_factory) -> None:
    gw = gateway_factory(sip={"password": ""}, catalog={"fragment_idle": 1.0})
    dev = RawDevice(gw.sip_port, DEV)
    assert dev.register().status == 200
    q = dev.next_request(method="MESSAGE")  # the catalog query follows the registration
    assert b"<CmdType>Catalog</CmdType>" in q.body
    want = items(2)
    for frag in encode_catalog_fragments(sn_of(q.body), DEV, want):
        assert dev.message(frag).status == 200
    sub = dev.next_request(method="SUBSCRIBE")
    assert (sub.headers.get("Event") or "").startswith("Catalog")
    assert sub.expires == 3600
    assert b"<CmdType>Catalog</CmdType>" in sub.body
    gw.wait_event("catalog.subscribed", device_id=DEV)
    # the device reports a channel going offline through the subscription
    notify = (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Catalog</CmdType>\r\n'
        f"<SN>5</SN>\r\n<DeviceID>{DEV}</DeviceID>\r\n<SumNum>1</SumNum>\r\n"
        f'<DeviceList Num="1">\r\n<Item><DeviceID>{want[1].device_id}</DeviceID>'
        "<Event>OFF</Event></Item>\r\n</DeviceList>\r\n</Notify>\r\n"
    ).encode()
    assert dev.message(notify).status == 200
    wait_until(
        lambda: (
            {c["channel_id"]: c["status"] for c in channels(gw, DEV)}
            == {want[0].device_id: "ON", want[1].device_id: "OFF"}
        ),
        what="OFF applied",
    )
    dev.close()


def test_lower_platform_business_groups_in_tree(nopass: GatewayProcess) -> None:
    platform = "62090000002000000099"  # a lower platform registers like a device (type 200)
    dev = RawDevice(nopass.sip_port, platform)
    assert dev.register().status == 200
    box = start_query(nopass, platform)
    sn = sn_of(dev.next_request(method="MESSAGE").body)
    group, org = "62090000002150000001", "62090000002160000001"
    cams = [f"6209020000131000000{i}" for i in (1, 2)]
    tree_items = [
        CatalogItem(device_id="620902", name="肃州区"),
        CatalogItem(device_id=group, name="治安卡口"),
        CatalogItem(device_id=org, name="城区组", parent_id=group, business_group_id=group),
        *[
            CatalogItem(
                device_id=c,
                name=f"卡口{i}",
                civil_code="620902",
                parent_id=org,
                business_group_id=group,
                status="ON",
            )
            for i, c in enumerate(cams)
        ],
    ]
    for frag in encode_catalog_fragments(sn, platform, tree_items, per_fragment=2):
        assert dev.message(frag).status == 200
    box["thread"].join(30)
    assert box["json"]["complete"] is True
    with nopass.api() as c:
        tree = c.get("/api/tree").json()
        chans = c.get("/api/channels").json()
    assert chans["total"] == 2  # cameras only; groups are tree nodes
    county = tree["civil"][0]["children"][0]["children"][0]
    assert county["id"] == "620902" and county["name"] == "肃州区"
    assert {n["id"] for n in county["children"]} == set(cams)
    bg = tree["business_groups"][0]
    assert bg["id"] == group and bg["name"] == "治安卡口"
    vo = bg["children"][0]
    assert vo["id"] == org and {n["id"] for n in vo["children"]} == set(cams)
    dev.close()
