"""gateway.manscdp.charset and charset handling of decode/encode (PROTOCOL.md §3.2, Q-1)."""

from __future__ import annotations

import pytest

from gateway.manscdp import (
    GB2312,
    GB18030,
    GBK,
    UTF8,
    CatalogItem,
    CatalogResponse,
    DeviceId,
    Keepalive,
    ManscdpError,
    canonical_encoding,
    decode,
    decode_body,
    encode,
    encode_body,
)

DEVICE = DeviceId("34020000001320000001")


def catalog_body(name: str, declared: str = "GB2312") -> str:
    return (
        f'<?xml version="1.0" encoding="{declared}"?>\r\n'
        "<Response><CmdType>Catalog</CmdType><SN>7</SN>"
        f"<DeviceID>{DEVICE}</DeviceID><SumNum>1</SumNum>"
        '<DeviceList Num="1"><Item><DeviceID>34020000001310000001</DeviceID>'
        f"<Name>{name}</Name><Status>ON</Status></Item></DeviceList></Response>\r\n"
    )


def first_name(body: bytes, **kwargs: str) -> tuple[str, str]:
    msg, encoding = decode(body, **kwargs)
    assert isinstance(msg, CatalogResponse)
    return msg.items[0].name, encoding


def test_gb2312_bytes() -> None:
    body = catalog_body("南门入口").encode("gb2312")
    assert first_name(body) == ("南门入口", GB2312)


def test_utf8_declared_as_gb2312_is_read_as_utf8() -> None:
    # wvp#260: lower platforms send UTF-8 but declare GB2312.
    body = catalog_body("南门入口").encode("utf-8")
    assert first_name(body) == ("南门入口", UTF8)


def test_gbk_rare_characters_declared_as_gb2312() -> None:
    # wvp#1344: names outside GB2312 arrive as GBK bytes.
    name = "朱镕基路口堃喆"
    body = catalog_body(name).encode("gbk")
    with pytest.raises(UnicodeDecodeError):
        body.decode("gb2312")
    assert first_name(body) == (name, GB2312)


def test_gb18030_four_byte_characters() -> None:
    name = "𠀀䶮测试"
    body = catalog_body(name, "GB18030").encode("gb18030")
    assert first_name(body) == (name, GB18030)


def test_invalid_gb_bytes_are_replaced_not_fatal() -> None:
    body = catalog_body("东门").encode("gb2312").replace("东门".encode("gb2312"), b"\xb6\xab\xff")
    name, encoding = first_name(body)
    assert name.startswith("东") and "\ufffd" in name
    assert encoding == GB2312


def test_declared_utf8_but_gb_bytes_replies_in_gb2312() -> None:
    body = catalog_body("南门", "UTF-8").encode("gb2312")
    assert first_name(body) == ("南门", GB2312)


@pytest.mark.parametrize(
    ("declared", "expected"),
    [("UTF-8", UTF8), ("utf8", UTF8), ("GBK", GBK), ("gb18030", GB18030), ("GB2312", GB2312)],
)
def test_ascii_body_reports_the_declared_charset(declared: str, expected: str) -> None:
    body = catalog_body("Gate North", declared).encode("ascii")
    assert first_name(body) == ("Gate North", expected)


def test_ascii_body_without_declaration_defaults_to_gb2312() -> None:
    body = catalog_body("Gate").split("?>", 1)[1].encode("ascii")
    assert first_name(body)[1] == GB2312


def test_unknown_declaration_is_ignored() -> None:
    body = catalog_body("Gate", "ISO-8859-1").encode("ascii")
    assert first_name(body)[1] == GB2312


def test_override_wins_over_detection() -> None:
    body = catalog_body("南门").encode("gb2312")
    assert first_name(body, encoding_override="gbk") == ("南门", GBK)
    # Forcing UTF-8 on GB bytes garbles the name but never fails.
    name, encoding = first_name(body, encoding_override="UTF-8")
    assert encoding == UTF8 and "\ufffd" in name


def test_unknown_override_is_a_local_error() -> None:
    with pytest.raises(ManscdpError) as info:
        decode(catalog_body("x").encode(), encoding_override="big5")
    assert info.value.status == 500


def test_trailing_nuls_and_whitespace_are_stripped() -> None:
    body = catalog_body("南门").encode("gb2312") + b"\x00\x00\r\n \x00"
    assert first_name(body) == ("南门", GB2312)
    text, _ = decode_body(b"<a/>\x00\n")
    assert text == "<a/>"


def test_leading_bom_and_whitespace_are_tolerated() -> None:
    body = b"\xef\xbb\xbf\r\n" + catalog_body("南门").encode("utf-8")
    assert first_name(body) == ("南门", UTF8)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("gb2312", GB2312),
        ("EUC-CN", GB2312),
        ("GBK", GBK),
        ("cp936", GBK),
        ("GB18030", GB18030),
        ("utf-8", UTF8),
        ("UTF8", UTF8),
    ],
)
def test_canonical_encoding(name: str, canonical: str) -> None:
    assert canonical_encoding(name) == canonical


# --- encoding ---


def test_encode_defaults_to_gb2312_and_declares_it() -> None:
    data = encode(Keepalive(1, DEVICE))
    assert data.startswith(b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>')


def test_name_outside_gb2312_widens_to_gb18030() -> None:
    item = CatalogItem("34020000001310000001", name="朱镕基")
    data = encode(CatalogResponse(1, DEVICE, 1, (item,)))
    assert b'encoding="GB18030"' in data
    assert "朱镕基".encode("gb18030") in data
    msg, encoding = decode(data)
    assert isinstance(msg, CatalogResponse) and msg.items == (item,)
    assert encoding == GB18030


def test_gbk_request_keeps_gbk_for_gbk_names() -> None:
    item = CatalogItem("34020000001310000001", name="朱镕基")
    data = encode(CatalogResponse(1, DEVICE, 1, (item,)), "GBK")
    assert b'encoding="GBK"' in data


def test_utf8_request() -> None:
    item = CatalogItem("34020000001310000001", name="南门𠀀")
    data = encode(CatalogResponse(1, DEVICE, 1, (item,)), "utf-8")
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert "南门𠀀".encode() in data
    assert decode(data)[0] == CatalogResponse(1, DEVICE, 1, (item,))


@pytest.mark.parametrize(
    ("text", "declared"),
    [
        ("张三·李四—东门", GB2312),  # U+00B7 / U+2014: GB2312 bytes A1A4 / A1AA
        ("片仮名・", GB18030),  # U+30FB is not A1A4 under the GB18030 mapping
        ("―", GB18030),  # U+2015 likewise
        ("plain", GB2312),
    ],
)
def test_gb2312_fit_follows_the_gb18030_mapping(text: str, declared: str) -> None:
    data, used = encode_body(text, "GB2312")
    assert used == declared
    assert decode_body(data, used)[0] == text
    if "·" in text:
        assert b"\xa1\xa4" in data and b"\xa1\xaa" in data


def test_lone_surrogates_cannot_crash_the_encoder() -> None:
    assert encode_body("a\udcff", "GB2312")[0] == b"a?"
    assert encode_body("a\udcff", "UTF-8")[0] == b"a?"


def test_unknown_encode_charset() -> None:
    with pytest.raises(ManscdpError) as info:
        encode(Keepalive(1, DEVICE), "latin-1")
    assert info.value.status == 500
