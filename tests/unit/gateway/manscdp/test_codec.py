"""gateway.manscdp.codec: one decode per message type, envelopes, encoders (PROTOCOL.md §3)."""

from __future__ import annotations

import re

import pytest

from gateway.manscdp import (
    Alarm,
    AlarmResponse,
    AlarmStatus,
    Broadcast,
    BroadcastResponse,
    CatalogQuery,
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
    UnknownMessage,
    decode,
    encode,
    from_action,
)

CAMERA = DeviceId("34020000001320000001")
NVR = DeviceId("34020000001110000001")
GATEWAY = DeviceId("34020000002000000001")


def body(xml: str, declared: str = "GB2312") -> bytes:
    return f'<?xml version="1.0" encoding="{declared}"?>\r\n{xml}\r\n'.encode("gb18030")


def decoded(xml: str) -> Message:
    msg, _ = decode(body(xml))
    return msg


# --- one decode per type, bodies as in PROTOCOL.md §3 ---


def test_keepalive() -> None:
    msg = decoded(
        "<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>2749</SN>\r\n"
        f"<DeviceID>{CAMERA}</DeviceID>\r\n<Status>OK</Status>\r\n"
        "<Info><DeviceID>34020000001320000003</DeviceID><DeviceID>bad</DeviceID></Info>\r\n"
        "</Notify>"
    )
    assert msg == Keepalive(2749, CAMERA, "OK", (DeviceId("34020000001320000003"),))


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        ("Catalog", CatalogQuery(1708, NVR)),
        ("DeviceInfo", DeviceInfoQuery(1708, NVR)),
        ("DeviceStatus", DeviceStatusQuery(1708, NVR)),
    ],
)
def test_queries(xml: str, expected: Message) -> None:
    msg = decoded(
        f"<Query>\r\n<CmdType>{xml}</CmdType>\r\n<SN>1708</SN>\r\n<DeviceID>{NVR}</DeviceID>\r\n"
        "</Query>"
    )
    assert msg == expected


def test_device_info_response() -> None:
    msg = decoded(
        f"<Response><CmdType>DeviceInfo</CmdType><SN>17430</SN><DeviceID>{CAMERA}</DeviceID>"
        "<DeviceName>Gate North</DeviceName><Result>OK</Result><Manufacturer>Hikvision"
        "</Manufacturer><Model>DS-2CD3T45</Model><Firmware>V5.5.0</Firmware>"
        "<Channel>1</Channel></Response>"
    )
    assert msg == DeviceInfoResponse(
        17430, CAMERA, "Gate North", "OK", "Hikvision", "DS-2CD3T45", "V5.5.0", 1
    )


def test_device_status_response_with_lower_case_num() -> None:
    msg = decoded(
        f"<Response><CmdType>DeviceStatus</CmdType><SN>248</SN><DeviceID>{CAMERA}</DeviceID>"
        "<Result>OK</Result><Online>ONLINE</Online><Status>OK</Status><Encode>ON</Encode>"
        "<Record>OFF</Record><DeviceTime>2024-05-01T10:20:30</DeviceTime>"
        '<Alarmstatus num="2"><Item><DeviceID>34020000001340000001</DeviceID>'
        "<DutyStatus>OFFDUTY</DutyStatus></Item>"
        "<Item><DeviceID>nope</DeviceID><DutyStatus>ALARM</DutyStatus></Item>"
        "</Alarmstatus></Response>"
    )
    assert msg == DeviceStatusResponse(
        248,
        CAMERA,
        result="OK",
        online="ONLINE",
        status="OK",
        encode="ON",
        record="OFF",
        device_time="2024-05-01T10:20:30",
        alarms=(AlarmStatus(DeviceId("34020000001340000001"), "OFFDUTY"),),
    )


def test_device_control_ptz() -> None:
    msg = decoded(
        f"<Control>\r\n<CmdType>DeviceControl</CmdType>\r\n<SN>11</SN>\r\n<DeviceID>{CAMERA}"
        "</DeviceID>\r\n<PTZCmd>A50F010180000036</PTZCmd>\r\n"
        "<Info><ControlPriority>5</ControlPriority></Info>\r\n</Control>"
    )
    assert msg == DeviceControl(11, CAMERA, ptz_cmd=from_action("right", 0x80), control_priority=5)


@pytest.mark.parametrize("tag", ["IFameCmd", "IFrameCmd"])
def test_device_control_commands_and_both_iframe_spellings(tag: str) -> None:
    msg = decoded(
        f"<Control><CmdType>DeviceControl</CmdType><SN>12</SN><DeviceID>{CAMERA}</DeviceID>"
        f"<TeleBoot>Boot</TeleBoot><RecordCmd>Record</RecordCmd><GuardCmd>SetGuard</GuardCmd>"
        f"<AlarmCmd>ResetAlarm</AlarmCmd><{tag}>Send</{tag}></Control>"
    )
    assert msg == DeviceControl(
        12,
        CAMERA,
        guard_cmd="SetGuard",
        tele_boot="Boot",
        record_cmd="Record",
        alarm_cmd="ResetAlarm",
        iframe_cmd="Send",
    )


def test_device_control_with_bad_ptz_checksum_is_400() -> None:
    with pytest.raises(ManscdpError, match="checksum") as info:
        decoded(
            f"<Control><CmdType>DeviceControl</CmdType><SN>1</SN><DeviceID>{CAMERA}</DeviceID>"
            "<PTZCmd>A50F010180000037</PTZCmd></Control>"
        )
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("cmd", "cls"),
    [
        ("DeviceControl", DeviceControlResponse),
        ("Alarm", AlarmResponse),
        ("Broadcast", BroadcastResponse),
    ],
)
def test_result_responses(cmd: str, cls: type[DeviceControlResponse]) -> None:
    msg = decoded(
        f"<Response><CmdType>{cmd}</CmdType><SN>4</SN><DeviceID>{CAMERA}</DeviceID>"
        "<Result>ERROR</Result></Response>"
    )
    assert msg == cls(4, CAMERA, "ERROR")


def test_alarm() -> None:
    msg = decoded(
        "<Notify><CmdType>Alarm</CmdType><SN>4</SN><DeviceID>34020000001340000001</DeviceID>"
        "<AlarmPriority>1</AlarmPriority><AlarmMethod>2</AlarmMethod>"
        "<AlarmTime>2024-05-01T10:20:30</AlarmTime><AlarmDescription>motion</AlarmDescription>"
        "<Longitude>117.2</Longitude><Latitude>31.8</Latitude><Info><AlarmType>2</AlarmType>"
        "</Info></Notify>"
    )
    assert msg == Alarm(
        4,
        DeviceId("34020000001340000001"),
        priority=1,
        method=2,
        time="2024-05-01T10:20:30",
        description="motion",
        longitude=117.2,
        latitude=31.8,
        alarm_type=2,
    )


def test_mobile_position() -> None:
    msg = decoded(
        f"<Notify><CmdType>MobilePosition</CmdType><SN>5</SN><DeviceID>{CAMERA}</DeviceID>"
        "<Time>2024-05-01T10:20:30</Time><Longitude>117.1</Longitude><Latitude>31.1</Latitude>"
        "<Speed>40.5</Speed><Direction>270</Direction><Altitude>12</Altitude></Notify>"
    )
    assert msg == MobilePosition(5, CAMERA, "2024-05-01T10:20:30", 117.1, 31.1, 40.5, 270.0, 12.0)


def test_media_status() -> None:
    msg = decoded(
        f"<Notify><CmdType>MediaStatus</CmdType><SN>8</SN><DeviceID>{CAMERA}</DeviceID>"
        "<NotifyType>121</NotifyType></Notify>"
    )
    assert msg == MediaStatus(8, CAMERA, 121)


def test_broadcast_has_no_device_id() -> None:
    msg = decoded(
        f"<Notify><CmdType>Broadcast</CmdType><SN>992</SN><SourceID>{GATEWAY}</SourceID>"
        f"<TargetID>{CAMERA}</TargetID></Notify>"
    )
    assert msg == Broadcast(992, GATEWAY, CAMERA)
    with pytest.raises(ManscdpError, match="TargetID"):
        decoded(
            f"<Notify><CmdType>Broadcast</CmdType><SN>992</SN><SourceID>{GATEWAY}</SourceID>"
            "<TargetID>1234</TargetID></Notify>"
        )


# --- envelope rules ---


def test_unknown_cmd_type_under_a_known_root_is_acknowledged() -> None:
    msg = decoded(
        f"<Query><CmdType>RecordInfo</CmdType><SN>17431</SN><DeviceID>{CAMERA}</DeviceID>"
        "<StartTime>2024-05-01T00:00:00</StartTime></Query>"
    )
    assert msg == UnknownMessage("Query", "RecordInfo", 17431, CAMERA)
    assert decoded("<Notify><CmdType>Whatever</CmdType></Notify>") == UnknownMessage(
        "Notify", "Whatever"
    )


def test_unknown_root_is_415() -> None:
    with pytest.raises(ManscdpError) as info:
        decoded(f"<Request><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>{CAMERA}</DeviceID>")
    # Not even well-formed: 400 wins over 415.
    assert info.value.status == 400
    with pytest.raises(ManscdpError) as info:
        decoded(
            f"<Request><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>{CAMERA}</DeviceID></Request>"
        )
    assert info.value.status == 415


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (f"<Query><SN>1</SN><DeviceID>{CAMERA}</DeviceID></Query>", "CmdType"),
        (f"<Query><CmdType> </CmdType><DeviceID>{CAMERA}</DeviceID></Query>", "CmdType"),
        (f"<Query><CmdType>Catalog</CmdType><DeviceID>{CAMERA}</DeviceID></Query>", "SN"),
        ("<Query><CmdType>Catalog</CmdType><SN>1</SN></Query>", "DeviceID"),
        (f"<Query><CmdType>Catalog</CmdType><SN>-1</SN><DeviceID>{CAMERA}</DeviceID>", "SN"),
        (f"<Query><CmdType>Catalog</CmdType><SN>1.5</SN><DeviceID>{CAMERA}</DeviceID>", "SN"),
        (f"<Query><CmdType>Catalog</CmdType><SN>0x10</SN><DeviceID>{CAMERA}</DeviceID>", "SN"),
        (f"<Query><CmdType>Catalog</CmdType><SN>1_0</SN><DeviceID>{CAMERA}</DeviceID>", "SN"),
        (f"<Query><CmdType>Catalog</CmdType><SN>٣</SN><DeviceID>{CAMERA}</DeviceID>", "SN"),
        (
            f"<Query><CmdType>Catalog</CmdType><SN>{2**63}</SN><DeviceID>{CAMERA}</DeviceID>",
            "SN",
        ),
        (
            "<Query><CmdType>Catalog</CmdType><SN>1</SN>"
            "<DeviceID>3402000000132000000</DeviceID></Query>",
            "DeviceID",
        ),
        (
            "<Query><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>1</DeviceID></Query>",
            "DeviceID",
        ),
    ],
)
def test_bad_envelope_is_400(xml: str, message: str) -> None:
    if not xml.endswith("</Query>"):
        xml += "</Query>"
    with pytest.raises(ManscdpError, match=message) as info:
        decoded(xml)
    assert info.value.status == 400


def test_sn_bounds() -> None:
    top = 2**63 - 1
    xml = f"<Query><CmdType>Catalog</CmdType><SN>{top}</SN><DeviceID>{NVR}</DeviceID></Query>"
    assert decoded(xml) == CatalogQuery(top, NVR)
    xml = f"<Query><CmdType>Catalog</CmdType><SN>0</SN><DeviceID>{NVR}</DeviceID></Query>"
    assert decoded(xml) == CatalogQuery(0, NVR)
    # Beyond 32 bits is tolerated (bounded at 2**63).
    xml = f"<Query><CmdType>Catalog</CmdType><SN>{2**40}</SN><DeviceID>{NVR}</DeviceID></Query>"
    assert decoded(xml) == CatalogQuery(2**40, NVR)


def test_tolerates_case_whitespace_and_namespaces() -> None:
    msg = decoded(
        '<query xmlns="urn:x">\n\t<cmdtype> catalog </cmdtype>\n<sn>\n 12 \n</sn>'
        f"<deviceid>  {NVR}\t</deviceid></query>"
    )
    assert msg == CatalogQuery(12, NVR)


def test_messages_validate_on_construction() -> None:
    with pytest.raises(ManscdpError):
        Keepalive(-1, CAMERA)
    with pytest.raises(ManscdpError):
        Keepalive(2**63, CAMERA)
    with pytest.raises(ManscdpError):
        Keepalive(1, DeviceId("123"))
    with pytest.raises(ManscdpError):
        AlarmStatus(DeviceId("x"), "ONDUTY")
    with pytest.raises(ManscdpError):
        Broadcast(1, GATEWAY, DeviceId("1"))
    with pytest.raises(ManscdpError):
        UnknownMessage("Query", "X", sn=-5)


# --- encoders ---

ENVELOPE = re.compile(
    rb'^<\?xml version="1\.0" encoding="GB2312"\?>\r\n<(\w+)>\r\n<CmdType>(\w+)</CmdType>\r\n'
    rb"<SN>(\d+)</SN>\r\n<DeviceID>(\d{20})</DeviceID>\r\n"
)


@pytest.mark.parametrize(
    "msg",
    [
        Keepalive(1, CAMERA, "OK", (DeviceId("34020000001320000003"),)),
        CatalogQuery(2, NVR),
        DeviceInfoQuery(3, NVR),
        DeviceStatusQuery(4, NVR),
        DeviceControl(5, CAMERA, ptz_cmd=from_action("left"), control_priority=5),
        DeviceControlResponse(6, CAMERA, "OK"),
        Alarm(7, CAMERA, 1, 2, "2024-05-01T10:20:30", "motion", 117.2, 31.8, 2),
        AlarmResponse(8, CAMERA, "OK"),
        MediaStatus(9, CAMERA),
        MobilePosition(10, CAMERA, "2024-05-01T10:20:30", 117.2, 31.8),
        DeviceInfoResponse(11, CAMERA, "Gate", "OK", "Hik", "M", "V1", 1),
        DeviceStatusResponse(12, CAMERA, "OK", "ONLINE", "OK", "ON", "OFF", "2024-05-01T10:20:30"),
        BroadcastResponse(13, CAMERA, "OK"),
        UnknownMessage("Response", "RecordInfo", 14, CAMERA),
    ],
    ids=lambda msg: type(msg).__name__,
)
def test_encode_envelope_first_and_round_trip(msg: Message) -> None:
    data = encode(msg)
    match = ENVELOPE.match(data)
    assert match is not None, data[:200]
    assert int(match.group(3)) == msg.sn
    assert decode(data) == (msg, "GB2312")


def test_encode_broadcast() -> None:
    data = encode(Broadcast(992, GATEWAY, CAMERA))
    assert (
        b"<Notify>\r\n<CmdType>Broadcast</CmdType>\r\n<SN>992</SN>\r\n"
        b"<SourceID>34020000002000000001</SourceID>\r\n"
        b"<TargetID>34020000001320000001</TargetID>\r\n</Notify>\r\n"
    ) in data


def test_encode_iframe_spelling_follows_the_peer_version() -> None:
    msg = DeviceControl(1, CAMERA, iframe_cmd="Send")
    assert b"<IFameCmd>Send</IFameCmd>" in encode(msg)
    assert b"<IFrameCmd>Send</IFrameCmd>" in encode(msg, gb_version="3.0")
    assert decode(encode(msg, gb_version="3.0"))[0] == msg


def test_encode_escapes_markup_in_text() -> None:
    msg = DeviceInfoResponse(1, CAMERA, device_name='A&B <C> "D"\rE\x01')
    data = encode(msg)
    assert b"A&amp;B &lt;C&gt; &quot;D&quot;&#13;E</DeviceName>" in data
    decoded_msg = decode(data)[0]
    assert isinstance(decoded_msg, DeviceInfoResponse)
    assert decoded_msg.device_name == 'A&B <C> "D"\rE'


def test_unknown_message_root_is_checked_and_empty_envelope_fields_are_none() -> None:
    with pytest.raises(ManscdpError):
        UnknownMessage("Foo><x", "Bar")
    msg = decoded("<Response><CmdType>RecordInfo</CmdType><SN></SN><DeviceID/></Response>")
    assert msg == UnknownMessage("Response", "RecordInfo")
