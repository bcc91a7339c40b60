"""Hypothesis properties of the codec: only ManscdpError escapes; encode/decode round-trip.

The strategies for every message type live here, next to the properties that use them.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import ParseError

import defusedxml
import defusedxml.ElementTree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.manscdp import (
    CATALOG_EVENTS,
    Alarm,
    AlarmResponse,
    AlarmStatus,
    Broadcast,
    BroadcastResponse,
    CatalogItem,
    CatalogNotify,
    CatalogQuery,
    CatalogResponse,
    DeviceControl,
    DeviceControlResponse,
    DeviceId,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusQuery,
    DeviceStatusResponse,
    Keepalive,
    ManscdpError,
    MediaStatus,
    Message,
    MobilePosition,
    PtzCmd,
    UnknownMessage,
    decode,
    encode,
    encode_catalog_fragments,
)

# --- strategies ---

digits = "0123456789"
device_ids = st.text(digits, min_size=20, max_size=20).map(DeviceId)
region_ids = st.text(digits, min_size=2, max_size=8)
sns = st.integers(0, 2**63 - 1)
# Text as it survives a round trip: XML 1.0 characters, no surrounding whitespace (decode
# strips it). CR is kept (escaped as &#13;); other controls are not XML characters.
texts = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Cn"), whitelist_characters="\r"),
    max_size=24,
).map(str.strip)
words = texts.filter(bool)
small_ints = st.none() | st.integers(0, 2**31 - 1)
coordinates = st.none() | st.floats(-180, 180).map(lambda x: round(x, 6))

catalog_items = st.builds(
    CatalogItem,
    device_id=device_ids | region_ids,
    name=texts,
    manufacturer=texts,
    model=texts,
    owner=texts,
    civil_code=texts,
    block=texts,
    address=texts,
    parental=small_ints,
    parent_id=texts,
    safety_way=small_ints,
    register_way=small_ints,
    secrecy=small_ints,
    ip_address=texts,
    port=st.none() | st.integers(0, 65535),
    status=st.sampled_from([None, "ON", "OFF"]),
    longitude=coordinates,
    latitude=coordinates,
    ptz_type=small_ints,
    business_group_id=texts,
    resolution=texts,
    event=st.none() | st.sampled_from(sorted(CATALOG_EVENTS)),
)
ptz_cmds = st.builds(
    PtzCmd,
    address=st.integers(0, 0xFFF),
    instruction=st.integers(0, 0xFF),
    data1=st.integers(0, 0xFF),
    data2=st.integers(0, 0xFF),
    zoom_speed=st.integers(0, 0xF),
)
known_cmd_types = {
    "keepalive",
    "catalog",
    "deviceinfo",
    "devicestatus",
    "devicecontrol",
    "alarm",
    "mobileposition",
    "mediastatus",
    "broadcast",
}

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Keepalive, sns, device_ids, texts, st.lists(device_ids, max_size=3).map(tuple)),
    st.builds(CatalogQuery, sns, device_ids),
    st.builds(
        CatalogResponse,
        sns,
        device_ids,
        st.integers(0, 2**31 - 1),
        st.lists(catalog_items, max_size=4).map(tuple),
    ),
    st.builds(
        CatalogNotify,
        sns,
        device_ids,
        st.integers(0, 2**31 - 1),
        st.lists(catalog_items, max_size=4).map(tuple),
    ),
    st.builds(DeviceInfoQuery, sns, device_ids),
    st.builds(DeviceInfoResponse, sns, device_ids, texts, texts, texts, texts, texts, small_ints),
    st.builds(DeviceStatusQuery, sns, device_ids),
    st.builds(
        DeviceStatusResponse,
        sns,
        device_ids,
        texts,
        texts,
        texts,
        texts,
        texts,
        texts,
        st.lists(st.builds(AlarmStatus, device_ids, texts), max_size=3).map(tuple),
    ),
    st.builds(
        DeviceControl,
        sns,
        device_ids,
        st.none() | ptz_cmds,
        st.none() | words,
        st.none() | words,
        st.none() | words,
        st.none() | words,
        st.none() | words,
        small_ints,
    ),
    st.builds(DeviceControlResponse, sns, device_ids, texts),
    st.builds(
        Alarm, sns, device_ids, small_ints, small_ints, texts, texts, coordinates, coordinates
    ),
    st.builds(AlarmResponse, sns, device_ids, texts),
    st.builds(
        MobilePosition,
        sns,
        device_ids,
        texts,
        coordinates,
        coordinates,
        coordinates,
        coordinates,
        coordinates,
    ),
    st.builds(MediaStatus, sns, device_ids, small_ints),
    st.builds(Broadcast, sns, device_ids, device_ids),
    st.builds(BroadcastResponse, sns, device_ids, texts),
    st.builds(
        UnknownMessage,
        st.sampled_from(["Query", "Control", "Notify", "Response"]),
        st.from_regex(r"\A[A-Za-z][A-Za-z0-9]{0,20}\Z").filter(
            lambda s: s.lower() not in known_cmd_types
        ),
        st.none() | sns,
        st.none() | device_ids,
    ),
)

# XML-ish text: nested elements with random and known tags, random text and attributes,
# sprinkled with the constructs a hostile peer would try.
tags = st.sampled_from(
    [
        "Query",
        "Notify",
        "Response",
        "Control",
        "CmdType",
        "SN",
        "DeviceID",
        "SumNum",
        "DeviceList",
        "Item",
        "Info",
        "Name",
        "Status",
        "PTZCmd",
        "Alarmstatus",
        "a",
    ]
) | st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,8}\Z")
leaf_texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "Catalog",
            "Keepalive",
            "DeviceControl",
            "DeviceStatus",
            "DeviceInfo",
            "Broadcast",
            "Alarm",
            "MediaStatus",
            "1",
            "34020000001320000001",
            "A50F0100000000B5",
            "&amp;",
            "&x;",
            "&#0;",
            "&#x4E2D;",
            "<![CDATA[x]]>",
            "<!-- c -->",
            "<!DOCTYPE x>",
            '<!ENTITY e "v">',
            "]]>",
            "<",
            "&",
        ]
    ),
)


def element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def build(tag: str, attr: str, inner: list[str]) -> str:
        return f"<{tag}{attr}>{''.join(inner)}</{tag}>"

    return st.builds(
        build,
        tags,
        st.sampled_from(["", ' Num="1"', " num='x'", ' a="&lt;"']),
        st.lists(children, max_size=4),
    )


xmlish = st.recursive(leaf_texts, element, max_leaves=40)
prologs = st.sampled_from(
    [
        "",
        '<?xml version="1.0" encoding="GB2312"?>\r\n',
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<?xml version='1.0'?>",
        "\ufeff",
        "<?xml",
    ]
)
body_encodings = st.sampled_from(["utf-8", "gb18030", "gbk", "latin-1"])


def decode_or_manscdp_error(data: bytes, override: str | None = None) -> Message | None:
    try:
        return decode(data, encoding_override=override)[0]
    except ManscdpError as error:
        assert error.status in (400, 415)
        return None


# --- properties ---


@given(st.binary(max_size=4096))
def test_random_bytes_raise_only_manscdp_error(data: bytes) -> None:
    decode_or_manscdp_error(data)


@given(st.binary(max_size=512), st.sampled_from(["GB2312", "UTF-8"]))
def test_random_bytes_with_override(data: bytes, override: str) -> None:
    decode_or_manscdp_error(data, override)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(prologs, xmlish, body_encodings)
def test_random_xmlish_text_raises_only_manscdp_error(prolog: str, xml: str, encoding: str) -> None:
    decode_or_manscdp_error((prolog + xml).encode(encoding, errors="replace"))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["Query", "Notify", "Response", "Control", "response"]),
    st.sampled_from([*sorted(known_cmd_types), "RecordInfo"]),
    st.sampled_from(["1", "0", "-1", "x", "9" * 30, ""]),
    st.sampled_from(["34020000001320000001", "1", ""]),
    st.lists(xmlish, max_size=4),
)
def test_valid_looking_envelopes_raise_only_manscdp_error(
    root: str, cmd_type: str, sn: str, device_id: str, extra: list[str]
) -> None:
    xml = (
        f"<{root}><CmdType>{cmd_type}</CmdType><SN>{sn}</SN><DeviceID>{device_id}</DeviceID>"
        f"<SourceID>{device_id}</SourceID><TargetID>{device_id}</TargetID>"
        f"{''.join(extra)}</{root}>"
    )
    decode_or_manscdp_error(xml.encode("gb18030", errors="replace"))


doctypes = st.sampled_from(
    [
        "",
        "<!DOCTYPE Notify>",
        "<!DOCTYPE Notify []>",
        '<!DOCTYPE Notify [<!ENTITY e "v">]>',
        '<!DOCTYPE Notify SYSTEM "http://example.invalid/x.dtd">',
        '<!DOCTYPE Notify [<!ENTITY e SYSTEM "file:///etc/passwd">]>',
    ]
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(doctypes, xmlish)
def test_whatever_defusedxml_refuses_we_refuse(doctype: str, xml: str) -> None:
    xml = doctype + xml
    try:
        defusedxml.ElementTree.fromstring(xml, forbid_dtd=True)
    except defusedxml.DefusedXmlException:
        refused = decode_or_manscdp_error(xml.encode()) is None
        assert refused
    except ParseError:
        pass  # malformed for defusedxml too: nothing to compare


@given(messages, st.sampled_from(["GB2312", "GBK", "GB18030", "UTF-8"]))
def test_encode_decode_round_trip(msg: Message, encoding: str) -> None:
    data = encode(msg, encoding)
    declared = re.match(rb'<\?xml version="1\.0" encoding="([\w-]+)"\?>\r\n', data)
    assert declared is not None
    assert declared.group(1).decode() in (encoding, "GB18030")
    # The override removes the UTF-8-or-GB guess, which random text could fool (§3.2).
    override = "UTF-8" if encoding == "UTF-8" else "GB18030"
    decoded, _ = decode(data, encoding_override=override)
    assert decoded == msg


@given(
    st.lists(catalog_items, max_size=30),
    st.integers(1, 12),
    st.none() | st.integers(0, 3000),
    st.sampled_from(["GB2312", "UTF-8"]),
)
def test_fragments_decode_to_the_same_items(
    items: list[CatalogItem], per_fragment: int, max_bytes: int | None, encoding: str
) -> None:
    device_id = DeviceId("34020000001110000001")
    fragments = encode_catalog_fragments(
        42, device_id, items, per_fragment, encoding, max_bytes=max_bytes
    )
    assert len(fragments) >= 1
    override = "UTF-8" if encoding == "UTF-8" else "GB18030"
    collected: list[CatalogItem] = []
    for fragment in fragments:
        msg, _ = decode(fragment, encoding_override=override)
        assert isinstance(msg, CatalogResponse)
        assert (msg.sn, msg.device_id, msg.sum_num) == (42, device_id, len(items))
        num = re.search(rb'<DeviceList Num="(\d+)">', fragment)
        assert num is not None and int(num.group(1)) == len(msg.items)
        assert 1 <= len(msg.items) <= per_fragment or not items
        if max_bytes is not None and len(msg.items) > 1:
            assert len(fragment) <= max_bytes
        collected.extend(msg.items)
    assert collected == items
