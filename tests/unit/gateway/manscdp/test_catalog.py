"""Catalog decoding (sipp GB2312 capture, tolerance), rendering and fragments (§3.4, §6.1)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from gateway.manscdp import (
    DEFAULT_FRAGMENT_BYTES,
    CatalogItem,
    CatalogNotify,
    CatalogResponse,
    DeviceId,
    ItemKind,
    ManscdpError,
    decode,
    encode,
    encode_catalog_fragments,
)

DATA = Path(__file__).parents[3] / "data" / "manscdp"
DEVICE = DeviceId("34020000001320000001")
NVR = DeviceId("34020000001110000001")

SIPP_NAMES = {
    "34020000001310000001": ("东门入口摄像机", "东门"),
    "34020000001310000002": ("西门停车场枪机", "西门停车场"),
    "34020000001310000003": ("南广场球机", "南广场"),
    "34020000001310000004": ("北门通道", "北门"),
    "34020000001310000005": ("一楼大厅全景", "办公楼一楼"),
    "34020000001310000006": ("机房监控", "办公楼三楼"),
}


def catalog(items_xml: str, root: str = "Response", sum_num: str = "<SumNum>9</SumNum>") -> bytes:
    return (
        f"<{root}><CmdType>Catalog</CmdType><SN>3</SN><DeviceID>{NVR}</DeviceID>{sum_num}"
        f'<DeviceList Num="9">{items_xml}</DeviceList></{root}>'
    ).encode("gb18030")


def one_item(item_xml: str) -> CatalogItem:
    msg, _ = decode(catalog(f"<Item>{item_xml}</Item>"))
    assert isinstance(msg, CatalogResponse)
    assert len(msg.items) == 1, msg
    return msg.items[0]


# --- the sipp device kit's GB2312 catalog (peers/sipp/device_catalog.xml) ---


@pytest.mark.parametrize("n", [1, 2, 3])
def test_sipp_gb2312_fragment(n: int) -> None:
    data = (DATA / f"catalog_gb2312_{n}.xml").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # really GB2312 bytes on the wire
    msg, encoding = decode(data)
    assert encoding == "GB2312"
    assert isinstance(msg, CatalogResponse)
    assert (msg.sn, msg.device_id, msg.sum_num, msg.skipped_items) == (1708, DEVICE, 6, 0)
    assert len(msg.items) == 2
    for item in msg.items:
        assert (item.name, item.address) == SIPP_NAMES[item.device_id]
        assert item.kind is ItemKind.CHANNEL
        assert (item.manufacturer, item.model, item.owner) == ("gbgw-peers", "sipp-ipc", "Owner")
        assert (item.civil_code, item.parental, item.parent_id) == ("340200", 0, DEVICE)
        assert (item.safety_way, item.register_way, item.secrecy) == (0, 1, 0)
        assert item.status == "ON"
        assert (item.ip_address, item.port, item.longitude, item.ptz_type) == ("", None, None, None)
        assert item.event is None


def test_sipp_fragments_assemble_to_sum_num() -> None:
    seen: dict[str, CatalogItem] = {}
    for n in (1, 2, 3):
        msg, _ = decode((DATA / f"catalog_gb2312_{n}.xml").read_bytes())
        assert isinstance(msg, CatalogResponse)
        seen.update((item.device_id, item) for item in msg.items)
        assert msg.sum_num == 6
    assert set(seen) == set(SIPP_NAMES)


def test_sipp_fragment_re_encodes_to_the_same_gb2312_names() -> None:
    msg, _ = decode((DATA / "catalog_gb2312_1.xml").read_bytes())
    data = encode(msg)
    assert data.startswith(b'<?xml version="1.0" encoding="GB2312"?>')
    assert "东门入口摄像机".encode("gb2312") in data
    assert decode(data) == (msg, "GB2312")


# --- tolerance ---


def test_bad_items_are_skipped_and_counted() -> None:
    msg, _ = decode(
        catalog(
            "<Item><DeviceID>34020000001310000001</DeviceID><Name>ok</Name></Item>"
            "<Item><DeviceID>3402000000131000000X</DeviceID><Name>bad</Name></Item>"
            "<Item><Name>no id</Name></Item>"
            "<Item><DeviceID>123456789</DeviceID></Item>"
            "<Item><DeviceID>3</DeviceID></Item>"
            "<Item><DeviceID>340200</DeviceID><Name>region</Name></Item>"
            "<NotAnItem><DeviceID>34020000001310000009</DeviceID></NotAnItem>"
        )
    )
    assert isinstance(msg, CatalogResponse)
    assert [item.device_id for item in msg.items] == ["34020000001310000001", "340200"]
    assert msg.skipped_items == 4
    assert msg.sum_num == 9


def test_missing_fields_become_empty_or_none() -> None:
    item = one_item("<DeviceID>34020000001310000001</DeviceID>")
    assert item == CatalogItem("34020000001310000001")
    assert (item.name, item.parental, item.status, item.longitude) == ("", None, None, None)


def test_unparsable_numbers_become_none() -> None:
    item = one_item(
        "<DeviceID>34020000001310000001</DeviceID><Parental>yes</Parental><Port>70000</Port>"
        "<Secrecy>-1</Secrecy><Longitude>east</Longitude><Latitude>nan</Latitude>"
        "<RegisterWay>99999999999999999999</RegisterWay><Info><PTZType>x</PTZType></Info>"
    )
    assert (item.parental, item.port, item.secrecy, item.register_way) == (None, None, None, None)
    assert (item.longitude, item.latitude, item.ptz_type) == (None, None, None)


def test_all_fields_and_info() -> None:
    item = one_item(
        "<DeviceID>34020000001320000001</DeviceID><Name> Gate North </Name>"
        "<Manufacturer>Hikvision</Manufacturer><Model>IP Camera</Model><Owner>Owner</Owner>"
        "<CivilCode>340200</CivilCode><Block>B1</Block><Address>Gate</Address>"
        "<Parental>0</Parental><ParentID>34020000001110000001</ParentID>"
        "<SafetyWay>0</SafetyWay><RegisterWay>1</RegisterWay><Secrecy>0</Secrecy>"
        "<IPAddress>192.168.1.101</IPAddress><Port>8000</Port><Status>ON</Status>"
        "<Longitude>117.2272</Longitude><Latitude>31.8206</Latitude>"
        "<Info><PTZType>1</PTZType><Resolution>6/4</Resolution>"
        "<BusinessGroupID>34020000002150000001</BusinessGroupID></Info>"
    )
    assert item == CatalogItem(
        "34020000001320000001",
        "Gate North",
        "Hikvision",
        "IP Camera",
        "Owner",
        "340200",
        "B1",
        "Gate",
        0,
        "34020000001110000001",
        0,
        1,
        0,
        "192.168.1.101",
        8000,
        "ON",
        117.2272,
        31.8206,
        1,
        "34020000002150000001",
        "6/4",
    )


def test_business_group_directly_under_item_wins_over_info() -> None:
    item = one_item(
        "<DeviceID>34020000002160000001</DeviceID>"
        "<Info><BusinessGroupID>34020000002150000009</BusinessGroupID></Info>"
        "<BusinessGroupID>34020000002150000001</BusinessGroupID>"
    )
    assert item.business_group_id == "34020000002150000001"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("ON", "ON"),
        ("on", "ON"),
        ("ONLINE", "ON"),
        ("Online", "ON"),
        ("OK", "ON"),
        ("ok", "ON"),
        ("OFF", "OFF"),
        ("offline", "OFF"),
        ("ERROR", "OFF"),
        ("", None),
    ],
)
def test_status_is_normalised(raw: str, status: str | None) -> None:
    item = one_item(f"<DeviceID>34020000001310000001</DeviceID><Status>{raw}</Status>")
    assert item.status == status


@pytest.mark.parametrize(
    ("device_id", "kind"),
    [
        ("34", ItemKind.REGION),
        ("34020000", ItemKind.REGION),
        ("34020000002150000001", ItemKind.BUSINESS_GROUP),
        ("34020000002160000001", ItemKind.VIRTUAL_ORG),
        ("34020000001310000001", ItemKind.CHANNEL),
        ("34020000001190000001", ItemKind.CHANNEL),
        ("34020000002000000001", ItemKind.CHANNEL),
    ],
)
def test_kind(device_id: str, kind: ItemKind) -> None:
    assert CatalogItem(device_id).kind is kind
    assert CatalogItem(device_id).kind == kind.value


def test_catalog_notify_events() -> None:
    msg, _ = decode(
        catalog(
            "<Item><DeviceID>34020000001310000001</DeviceID><Event>add</Event></Item>"
            "<Item><DeviceID>34020000001310000002</DeviceID><Event>VLOST</Event></Item>"
            "<Item><DeviceID>34020000001310000003</DeviceID><Event>EXPLODE</Event></Item>",
            root="Notify",
            sum_num="<SumNum>3</SumNum>",
        )
    )
    assert isinstance(msg, CatalogNotify)
    assert [item.event for item in msg.items] == ["ADD", "VLOST", None]


def test_sum_num() -> None:
    msg, _ = decode(catalog("", sum_num="<SumNum>0</SumNum>"))
    assert isinstance(msg, CatalogResponse) and (msg.sum_num, msg.items) == (0, ())
    msg, _ = decode(catalog("<Item><DeviceID>34020000001310000001</DeviceID></Item>", sum_num=""))
    assert isinstance(msg, CatalogResponse) and msg.sum_num == 1
    with pytest.raises(ManscdpError, match="SumNum"):
        decode(catalog("", sum_num="<SumNum>-1</SumNum>"))
    with pytest.raises(ManscdpError, match="SumNum"):
        decode(catalog("", sum_num=f"<SumNum>{2**31}</SumNum>"))


def test_item_validation() -> None:
    with pytest.raises(ManscdpError):
        CatalogItem("3")
    with pytest.raises(ManscdpError):
        CatalogItem("34020000001310000001", status="ONLINE")
    with pytest.raises(ManscdpError):
        CatalogItem("34020000001310000001", event="BOOM")


# --- rendering for an upper platform (§6.1) ---


def rendered_tags(item: CatalogItem, gb_version: str = "2.0") -> list[str]:
    text = encode(CatalogResponse(1, NVR, 1, (item,)), gb_version=gb_version).decode("gb18030")
    inner = text.split("<Item>", 1)[1].split("</Item>", 1)[0]
    return re.findall(r"<(\w+)>", inner)


def test_channel_emits_every_field_even_empty() -> None:
    tags = rendered_tags(CatalogItem("34020000001310000001", name="x"))
    assert tags == [
        "DeviceID",
        "Name",
        "Manufacturer",
        "Model",
        "Owner",
        "CivilCode",
        "Block",
        "Address",
        "Parental",
        "ParentID",
        "SafetyWay",
        "RegisterWay",
        "Secrecy",
        "IPAddress",
        "Port",
        "Status",
        "Longitude",
        "Latitude",
    ]


def test_channel_info_and_2022_business_group() -> None:
    item = CatalogItem("34020000001310000001", ptz_type=1, business_group_id="34020000002150000001")
    assert rendered_tags(item)[-3:] == ["Info", "PTZType", "BusinessGroupID"]
    tags = rendered_tags(item, "3.0")
    assert tags[-3:] == ["BusinessGroupID", "Info", "PTZType"]


def test_region_group_and_virtual_org_shapes() -> None:
    assert rendered_tags(CatalogItem("340200", name="Hefei")) == ["DeviceID", "Name"]
    assert rendered_tags(CatalogItem("34020000002150000001", name="G")) == ["DeviceID", "Name"]
    assert rendered_tags(
        CatalogItem("34020000002150000001", name="G", parent_id="34020000002000000001")
    ) == ["DeviceID", "Name", "ParentID"]
    assert rendered_tags(CatalogItem("34020000002160000001", name="V")) == [
        "DeviceID",
        "Name",
        "ParentID",
        "BusinessGroupID",
    ]


def test_event_is_emitted_only_when_set() -> None:
    item = CatalogItem("340200", name="R", event="DEL")
    assert rendered_tags(item) == ["DeviceID", "Event", "Name"]


# --- fragments ---


def channels(n: int, name: str = "南门入口球机") -> list[CatalogItem]:
    return [
        CatalogItem(
            f"340200000013100{i:05d}",
            name=f"{name}{i}",
            manufacturer="Hikvision",
            model="IP Camera",
            owner="Owner",
            civil_code="340200",
            address="南门",
            parental=0,
            parent_id=str(NVR),
            safety_way=0,
            register_way=1,
            secrecy=0,
            ip_address="192.168.1.101",
            port=8000,
            status="ON",
            longitude=117.2272,
            latitude=31.8206,
            ptz_type=1,
        )
        for i in range(n)
    ]


def decode_fragments(fragments: list[bytes]) -> list[CatalogItem]:
    items: list[CatalogItem] = []
    for fragment in fragments:
        msg, _ = decode(fragment)
        assert isinstance(msg, CatalogResponse | CatalogNotify)
        num = re.search(rb'<DeviceList Num="(\d+)">', fragment)
        assert num is not None and int(num.group(1)) == len(msg.items) >= 0
        assert msg.skipped_items == 0
        items.extend(msg.items)
    return items


def test_fragments_fit_the_udp_budget_and_decode_back() -> None:
    items = channels(25)
    fragments = encode_catalog_fragments(77, NVR, items)
    assert len(fragments) > 1
    assert all(len(f) <= DEFAULT_FRAGMENT_BYTES for f in fragments)
    assert decode_fragments(fragments) == items
    for fragment in fragments:
        msg, _ = decode(fragment)
        assert isinstance(msg, CatalogResponse)
        assert (msg.sn, msg.device_id, msg.sum_num) == (77, NVR, 25)
    # Greedy: no two neighbours could have been merged.
    sizes = [len(f) for f in fragments]
    assert all(a + b > DEFAULT_FRAGMENT_BYTES for a, b in itertools.pairwise(sizes))


def test_per_fragment_limit_without_budget() -> None:
    fragments = encode_catalog_fragments(1, NVR, channels(25), 10, max_bytes=None)
    assert [f.count(b"<Item>") for f in fragments] == [10, 10, 5]
    assert decode_fragments(fragments) == channels(25)


def test_an_item_bigger_than_the_budget_travels_alone() -> None:
    items = channels(3)
    items[1] = CatalogItem("34020000001310000009", name="长" * 1000)
    fragments = encode_catalog_fragments(1, NVR, items, max_bytes=1300)
    assert [f.count(b"<Item>") for f in fragments] == [1, 1, 1]
    assert len(fragments[1]) > 1300
    assert decode_fragments(fragments) == items


def test_empty_catalog_is_one_fragment_with_sum_num_zero() -> None:
    (fragment,) = encode_catalog_fragments(5, NVR, [])
    assert b"<SumNum>0</SumNum>" in fragment and b'<DeviceList Num="0">' in fragment
    assert decode(fragment)[0] == CatalogResponse(5, NVR, 0, ())


def test_only_fragments_with_rare_names_widen_to_gb18030() -> None:
    items = channels(4)
    items[3] = CatalogItem("34020000001310000009", name="朱镕基路")
    fragments = encode_catalog_fragments(1, NVR, items, 2, max_bytes=None)
    assert [b'encoding="GB18030"' in f for f in fragments] == [False, True]
    assert decode_fragments(fragments) == items


def test_notify_and_utf8_fragments() -> None:
    items = [CatalogItem("34020000001310000001", name="东门", event="ADD")]
    (fragment,) = encode_catalog_fragments(9, NVR, items, encoding="UTF-8", notify=True)
    assert fragment.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\r\n<Notify>')
    msg, encoding = decode(fragment)
    assert encoding == "UTF-8"
    assert msg == CatalogNotify(9, NVR, 1, tuple(items))


def test_fragment_argument_errors() -> None:
    with pytest.raises(ManscdpError):
        encode_catalog_fragments(1, NVR, [], 0)
    with pytest.raises(ManscdpError):
        encode_catalog_fragments(-1, NVR, [])
    with pytest.raises(ManscdpError):
        encode_catalog_fragments(1, "123", [])
