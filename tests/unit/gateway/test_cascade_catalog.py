"""Catalog items sent upward (PROTOCOL §6.1 shapes), without I/O."""

from __future__ import annotations

from gateway.cascade_catalog import _channel_item, _node_item
from gateway.channels import Channel
from gateway.manscdp import ItemKind, decode, encode_catalog_fragments

LOCAL = "62090200002000000001"
CAM = "62090000001310001001"
VORG = "62090200002160000001"
BGROUP = "62090200002150000001"


def test_channel_without_known_group_hangs_from_the_cascade_id() -> None:
    item = _channel_item(Channel("d", CAM, name="cam", parent_id="34020000001320000001"), LOCAL, {})
    assert item.parent_id == LOCAL
    assert (item.parental, item.register_way, item.secrecy, item.status) == (0, 1, 0, "ON")
    assert item.civil_code == CAM[:6]
    assert item.business_group_id == ""


def test_channel_keeps_its_virtual_org_and_business_group() -> None:
    nodes = {
        VORG: Channel("d", VORG, kind="virtual_org", parent_id=BGROUP, business_group_id=BGROUP),
        BGROUP: Channel("d", BGROUP, kind="business_group"),
    }
    cam = Channel(
        "d",
        CAM,
        parent_id=VORG,
        business_group_id=BGROUP,
        status="OFF",
        secrecy=1,
        civil_code="620902",
    )
    item = _channel_item(cam, LOCAL, nodes)
    assert (item.parent_id, item.business_group_id) == (VORG, BGROUP)
    assert (item.status, item.secrecy, item.civil_code) == ("OFF", 1, "620902")
    vorg = _node_item(nodes[VORG])
    assert vorg.kind is ItemKind.VIRTUAL_ORG and vorg.parent_id == BGROUP
    region = _node_item(Channel("d", "620902", kind="region", name="county"))
    assert region.kind is ItemKind.REGION and region.parent_id == ""


def test_items_round_trip_through_fragments_with_the_upper_sn() -> None:
    items = [_channel_item(Channel("d", f"{CAM[:-1]}{i}"), LOCAL, {}) for i in range(5)]
    fragments = encode_catalog_fragments(77, LOCAL, items, 2)
    assert len(fragments) == 3
    got = []
    for body in fragments:
        msg, _ = decode(body)
        assert msg.sn == 77 and msg.sum_num == 5  # type: ignore[attr-defined]
        got += [i.device_id for i in msg.items]  # type: ignore[attr-defined]
    assert got == [i.device_id for i in items]
