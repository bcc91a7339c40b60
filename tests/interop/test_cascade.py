"""Cascade end to end (PROTOCOL §6): county -> city -> province, three real `gbgw serve`
processes on 127.0.0.1, simulated cameras at the county, zones deciding what goes up."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import (
    DATA,
    GBGW,
    GatewayProcess,
    free_port,
    gateway_config,
    require,
    wait_until,
)
from tests.interop.sipsend import fill, send_udp

pytestmark = pytest.mark.interop

H264 = DATA / "media" / "h264_640x360_25fps_10s.ps"

PROVINCE = ("62000000002000000001", "6200000000")
CITY = ("62090000002000000001", "6209000000")
COUNTY = ("62090200002000000001", "6209020000")
DEVICE = "62090000001320000001"  # the simulator's device, registered at the county
CH1, CH2, CH3 = (f"620900000013100010{n:02d}" for n in (1, 2, 3))
# County: CH3 is in zone "police", which the county does not share with the city.
# City: CH2 is in zone "secret", which the city does not share with the province.


def _toml_tables(name: str, tables: list[dict[str, Any]]) -> str:
    out = []
    for t in tables:
        out.append(f"[[{name}]]")
        out += [f"{k} = {json.dumps(v)}" for k, v in t.items()]
        out.append("")
    return "\n".join(out)


def node(
    workdir: Path,
    ident: tuple[str, str],
    rtp: str,
    *,
    upstream: dict[str, Any] | None = None,
    zones: list[dict[str, Any]] | None = None,
    sip_port: int = 0,
    sip: dict[str, Any] | None = None,
) -> GatewayProcess:
    """One gateway of the chain (not started)."""
    workdir.mkdir(parents=True, exist_ok=True)
    text = gateway_config(
        workdir,
        gateway={"id": ident[0], "domain": ident[1], "name": workdir.name},
        sip={"port": sip_port, "transports": ["udp", "tcp"], **(sip or {})},
        media={"listen": "127.0.0.1", "rtp_ports": rtp, "idle_close": 10},
    )
    if upstream is not None:
        text += "\n" + _toml_tables("upstream", [upstream])
    if zones:
        text += "\n" + _toml_tables("zone", zones)
    return GatewayProcess(workdir, text)


def upstream_of(name: str, upper: GatewayProcess, ident: tuple[str, str], **kw: Any) -> dict:
    return {
        "name": name,
        "id": ident[0],
        "domain": ident[1],
        "host": "127.0.0.1",
        "port": upper.sip_port,
        "transport": "udp",
        "password": "12345678",
        "keepalive_interval": 1,
        "register_expires": 60,
        "zones": ["default"],
        **kw,
    }


class Sim:
    """`gbgw simulate`: one device, three cameras, streaming the H.264 file. Its JSON
    stdout lines (``sim.ptz`` among them) are collected in ``lines``."""

    def __init__(self, gw: GatewayProcess, server_id: str) -> None:
        self.proc = subprocess.Popen(
            [
                *GBGW,
                "simulate",
                "--devices",
                "1",
                "--channels",
                "3",
                "--gateway",
                f"127.0.0.1:{gw.sip_port}",
                "--server-id",
                server_id,
                "--password",
                "12345678",
                "--media",
                str(H264),
                "--keepalive",
                "5",
                "--duration",
                "300",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def ptz_commands(self) -> list[tuple[str, str]]:
        """(channel, PTZCmd) of every PTZ command the cameras received, in order."""
        out = []
        for line in list(self.lines):
            if '"sim.ptz"' in line:
                event = json.loads(line)
                out.append((event["channel_id"], event["ptz_cmd"]))
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def channels_of(gw: GatewayProcess, device_id: str) -> set[str]:
    with gw.api() as c:
        r = c.get(f"/api/devices/{device_id}/channels")
    if r.status_code != 200:
        return set()
    return {ch["channel_id"] for ch in r.json() if ch.get("kind", "channel") == "channel"}


def upstream_state(gw: GatewayProcess) -> dict[str, Any]:
    with gw.api() as c:
        rows = c.get("/api/upstreams").json()
    assert len(rows) == 1, rows
    return rows[0]


@dataclass
class Chain:
    province: GatewayProcess
    city: GatewayProcess
    county: GatewayProcess
    sim: Sim


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("cascade")
    started: list[GatewayProcess] = []
    sim: Sim | None = None
    try:
        province = node(root / "province", PROVINCE, "35000-35099").start()
        started.append(province)
        city = node(
            root / "city",
            CITY,
            "35100-35199",
            upstream=upstream_of("province", province, PROVINCE),
            zones=[{"name": "secret", "channels": [CH2]}],
        ).start()
        started.append(city)
        county = node(
            root / "county",
            COUNTY,
            "35200-35299",
            upstream=upstream_of("city", city, CITY),
            zones=[{"name": "police", "channels": [CH3]}],
            # the camera goes offline 2 missed keepalives (10 s) after it dies
            sip={"keepalive_interval": 5, "keepalive_max_missed": 2},
        ).start()
        started.append(county)
        sim = Sim(county, COUNTY[0])
        yield Chain(province, city, county, sim)
    finally:
        if sim is not None:
            sim.kill()
        for gw in reversed(started):
            gw.stop()


def test_catalog_shares_exactly_what_zones_allow(chain: Chain) -> None:
    county, city, province = chain.county, chain.city, chain.province
    county.wait_event("upstream.registered", timeout=20, upstream="city")
    city.wait_event("upstream.registered", timeout=20, upstream="province")
    wait_until(lambda: channels_of(county, DEVICE) == {CH1, CH2, CH3}, 30, "cameras at county")
    # The city learns the county's channels by catalog query and subscription NOTIFY alike.
    wait_until(lambda: channels_of(city, COUNTY[0]) == {CH1, CH2}, 30, "county catalog at city")
    wait_until(lambda: channels_of(province, CITY[0]) == {CH1}, 30, "city catalog at province")
    assert channels_of(city, COUNTY[0]) == {CH1, CH2}
    assert channels_of(province, CITY[0]) == {CH1}
    assert CH3 not in channels_of(city, COUNTY[0]) | channels_of(province, CITY[0])

    state = upstream_state(county)
    assert state["registered"] is True and state["id"] == CITY[0]
    assert state["keepalives_ok"] >= 0 and state["last_error"] == ""
    assert county.metric("gbgw_upstream_registered", {"upstream": "city"}) == 1.0
    assert city.metric("gbgw_upstream_registered", {"upstream": "province"}) == 1.0
    with city.api() as c:
        dev = c.get(f"/api/devices/{COUNTY[0]}").json()
    assert dev["online"] is True and dev["model"] == "platform"

    # A forged INVITE for the unshared channel, claiming to be the city: 403, counted.
    before = county.metric("gbgw_zone_denied_total", {"consumer": "city"})
    resp = send_udp(_invite(CH3, county.sip_port), county.sip_port, timeout=5)
    assert resp is not None and resp.startswith(b"SIP/2.0 403"), resp
    after = county.metric("gbgw_zone_denied_total", {"consumer": "city"})
    assert after == before + 1


def _invite(channel: str, port: int, *, y: str | None = "0620900001", media_port: int = 9) -> bytes:
    sdp = (
        f"v=0\r\no={CITY[0]} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\n"
        f"t=0 0\r\nm=video {media_port} RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\n"
        + (f"y={y}\r\n" if y is not None else "")
    ).encode()
    head = (
        f"INVITE sip:{channel}@127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/{{transport}} {{local}};rport;branch={{branch}}\r\n"
        f"From: <sip:{CITY[0]}@{CITY[1]}>;tag={{{{tag}}}}\r\n"
        f"To: <sip:{channel}@{COUNTY[1]}>\r\n"
        "Call-ID: {{call_id}}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{CITY[0]}@{{{{local}}}}>\r\n"
        "Content-Type: APPLICATION/SDP\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n"
    ).encode()
    return head + sdp


def test_province_plays_a_county_camera_two_hops_down(chain: Chain, tmp_path: Path) -> None:
    from tests.interop.test_media import decode_frames, fetch, ffprobe

    province = chain.province
    wait_until(lambda: CH1 in channels_of(province, CITY[0]), 60, "CH1 at province")
    results: dict[int, int] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def view(i: int) -> None:
        try:
            barrier.wait(10)
            out = tmp_path / f"v{i}.flv"
            fetch(province, f"/live/{CH1}.flv", out, 250_000)
            v = ffprobe(out)
            assert (v.get("codec_name"), v.get("width"), v.get("height")) == ("h264", 640, 360)
            results[i] = decode_frames(out)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=view, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    assert all(n >= 50 for n in results.values()) and len(results) == 2, results
    # One stream per hop, whatever the number of province viewers.
    for gw in (chain.province, chain.city, chain.county):
        with gw.api() as c:
            streams = [s for s in c.get("/api/streams").json() if s["state"] != "closed"]
        assert [s["channel_id"] for s in streams] == [CH1], (gw.workdir.name, streams)
    assert chain.county.metric("gbgw_upstream_streams", {"upstream": "city"}) == 1.0
    assert chain.city.metric("gbgw_upstream_streams", {"upstream": "province"}) == 1.0
    assert chain.county.metric("gbgw_upstream_bytes_total", {"upstream": "city"}) > 250_000
    assert chain.city.metric("gbgw_upstream_bytes_total", {"upstream": "province"}) > 250_000
    assert upstream_state(chain.county)["streams"] == 1


def _ptz_message(channel: str, port: int, cmd: str) -> bytes:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n<Control>\r\n'
        f"<CmdType>DeviceControl</CmdType>\r\n<SN>77</SN>\r\n<DeviceID>{channel}</DeviceID>\r\n"
        f"<PTZCmd>{cmd}</PTZCmd>\r\n</Control>\r\n"
    ).encode()
    head = (
        f"MESSAGE sip:{channel}@127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/{{transport}} {{local}};rport;branch={{branch}}\r\n"
        f"From: <sip:{CITY[0]}@{CITY[1]}>;tag={{{{tag}}}}\r\n"
        f"To: <sip:{channel}@{COUNTY[1]}>\r\n"
        "Call-ID: {{call_id}}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
        "Content-Type: Application/MANSCDP+xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def test_ptz_from_the_province_reaches_the_camera_two_hops_down(chain: Chain) -> None:
    province, county = chain.province, chain.county
    wait_until(lambda: CH1 in channels_of(province, CITY[0]), 60, "CH1 at province")
    with province.api() as c:
        r = c.post(
            f"/api/devices/{CITY[0]}/ptz",
            json={"channel_id": CH1, "action": "zoomin", "speed": 85},
            timeout=15,
        )
    assert r.status_code == 200, r.text
    # Province -> city (DeviceControl to the county platform's channel) -> county -> camera.
    wait_until(
        lambda: (CH1, "A50F011000005015") in chain.sim.ptz_commands(), 15, "PTZ at the camera"
    )
    for gw, upper in ((chain.city, "province"), (county, "city")):
        with gw.api() as c:
            audit = c.get("/api/audit").json()
        assert any(
            e["action"] == "ptz" and e["target"] == CH1 and e["consumer"] == upper for e in audit
        ), (gw.workdir.name, audit[:5])

    # A forged PTZ for the unshared police camera, claiming to be the city: 403, counted,
    # and nothing reaches the camera.
    before = county.metric("gbgw_zone_denied_total", {"consumer": "city"})
    resp = send_udp(_ptz_message(CH3, county.sip_port, "A50F0100000000B5"), county.sip_port, 5)
    assert resp is not None and resp.startswith(b"SIP/2.0 403"), resp
    assert county.metric("gbgw_zone_denied_total", {"consumer": "city"}) == before + 1
    assert all(ch != CH3 for ch, _ in chain.sim.ptz_commands())


def _recv_sip(sock: socket.socket, want: bytes, timeout: float = 15.0) -> bytes:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        data = sock.recv(65535)
        if data.startswith(want):
            return data
    raise AssertionError(f"no {want!r} within {timeout} s")


def test_invite_without_y_gets_an_allocated_ssrc(chain: Chain) -> None:
    # an upper platform that offers no y= is told the SSRC in our answer's y=, and the
    # RTP comes with exactly that SSRC.
    county = chain.county
    wait_until(lambda: CH1 in channels_of(chain.city, COUNTY[0]), 60, "CH1 at city")
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sip,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp,
    ):
        sip.connect(("127.0.0.1", county.sip_port))
        rtp.bind(("127.0.0.1", 0))
        local = sip.getsockname()
        raw = fill(
            _invite(CH1, county.sip_port, y=None, media_port=rtp.getsockname()[1]), "udp", local
        )
        sip.send(raw)
        ok = _recv_sip(sip, b"SIP/2.0 200")
        head, _, sdp = ok.partition(b"\r\n\r\n")
        y = re.search(rb"^y=(\d{10})\r?$", sdp, re.M)
        assert y is not None, sdp
        ssrc = y.group(1).decode()
        assert ssrc[1:6] == COUNTY[1][3:8]  # PROTOCOL §4.3: the sender's domain digits
        call_id = re.search(rb"^Call-ID: *(.+?)\r$", raw, re.M | re.I).group(1)  # type: ignore[union-attr]
        to = re.search(rb"^To: *(.+?)\r$", head, re.M | re.I).group(1)  # type: ignore[union-attr]
        frm = re.search(rb"^From: *(.+?)\r$", raw, re.M | re.I).group(1)  # type: ignore[union-attr]

        def in_dialog(method: str, cseq: int) -> bytes:
            return fill(
                (
                    f"{method} sip:{CH1}@127.0.0.1:{county.sip_port} SIP/2.0\r\n"
                    "Via: SIP/2.0/UDP {{local}};rport;branch={{branch}}\r\n"
                ).encode()
                + b"From: "
                + frm
                + b"\r\nTo: "
                + to
                + b"\r\nCall-ID: "
                + call_id
                + f"\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n".encode(),
                "udp",
                local,
            )

        sip.send(in_dialog("ACK", 1))
        rtp.settimeout(10)
        packet = rtp.recv(2048)
        assert packet[0] >> 6 == 2 and int.from_bytes(packet[8:12], "big") == int(ssrc)
        sip.send(in_dialog("BYE", 2))
        _recv_sip(sip, b"SIP/2.0 200")


def test_camera_going_offline_at_the_bottom_is_notified_to_the_top(chain: Chain) -> None:
    # Last test of the chain: it kills the camera.
    def status_at(gw: GatewayProcess, device: str, channel: str) -> str | None:
        with gw.api() as c:
            rows = c.get(f"/api/devices/{device}/channels").json()
        return next((r["status"] for r in rows if r["channel_id"] == channel), None)

    wait_until(lambda: status_at(chain.province, CITY[0], CH1) == "ON", 60, "CH1 ON at top")
    chain.sim.kill()
    chain.county.wait_event("device.offline", timeout=30, device_id=DEVICE)
    # County NOTIFYs the city (its subscriber), the city NOTIFYs the province.
    wait_until(lambda: status_at(chain.city, COUNTY[0], CH1) == "OFF", 20, "CH1 OFF at city")
    wait_until(lambda: status_at(chain.province, CITY[0], CH1) == "OFF", 20, "CH1 OFF at top")


def test_requests_claiming_the_upstream_from_elsewhere_get_403(tmp_path: Path) -> None:
    # Anyone can write the city's ID in a From header: only its own addresses count.
    county = node(
        tmp_path / "county",
        COUNTY,
        "35500-35599",
        upstream={
            "name": "city",
            "id": CITY[0],
            "host": "127.0.0.1",
            "port": free_port(),  # nobody there: refusal does not depend on registration
            "sources": ["127.0.0.2/32"],
        },
    ).start()
    try:
        resp = send_udp(_invite(CH1, county.sip_port), county.sip_port, timeout=5)
        assert resp is not None and resp.startswith(b"SIP/2.0 403"), resp
        resp = send_udp(_ptz_message(CH1, county.sip_port, "A50F0100000000B5"), county.sip_port, 5)
        assert resp is not None and resp.startswith(b"SIP/2.0 403"), resp
        refused = county.wait_event("upstream.source_refused", upstream="city", method="INVITE")
        assert refused["peer"].startswith("127.0.0.1:")
        wait_until(lambda: upstream_state(county)["refused_sources"] == 2, 5, "refusals counted")
        with county.api() as c:
            assert c.get("/api/streams").json() == []
    finally:
        county.stop()


def _query(cmd: str, sn: int, device_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n'
        f"<CmdType>{cmd}</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n"
        "</Query>\r\n"
    ).encode()


def test_channel_status_and_info_queries_are_relayed_to_the_camera(tmp_path: Path) -> None:
    # The upstream is a raw socket here, so the test sees exactly what the county sends up.
    from gateway.manscdp import DeviceInfoResponse, DeviceStatusResponse, decode
    from tests.interop.rawdevice import RawDevice

    up = RawDevice(0, CITY[0])
    county = node(
        tmp_path / "county",
        COUNTY,
        "35600-35699",
        upstream={
            "name": "city",
            "id": CITY[0],
            "host": "127.0.0.1",
            "port": up.local[1],
            "keepalive_interval": 1,
            "register_expires": 60,
        },
        zones=[{"name": "police", "channels": [CH3]}],
    ).start()
    up.port = county.sip_port
    sim = Sim(county, COUNTY[0])
    try:
        up.next_request(method="REGISTER")  # answered 200: the county is registered
        wait_until(lambda: CH1 in channels_of(county, DEVICE), 30, "cameras at county")

        def answer_for(cmd: str, sn: int) -> object:
            assert up.message(_query(cmd, sn, CH1)).status == 200
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                req = up.next_request(timeout=15, method="MESSAGE")
                if f"<CmdType>{cmd}</CmdType>".encode() in req.body:
                    return decode(req.body)[0]
            raise AssertionError(f"no {cmd} response")

        status = answer_for("DeviceStatus", 4242)
        assert isinstance(status, DeviceStatusResponse)
        assert (status.sn, status.device_id, status.result, status.online) == (
            4242,
            CH1,
            "OK",
            "ONLINE",
        )
        info = answer_for("DeviceInfo", 4243)
        assert isinstance(info, DeviceInfoResponse)
        assert (info.sn, info.device_id, info.manufacturer) == (4243, CH1, "gbgw-sim")
        # the police camera is not shared: 403, as for its INVITE, and audited as denied
        assert up.message(_query("DeviceStatus", 4244, CH3)).status == 403
        with county.api() as c:
            audit = c.get("/api/audit").json()
        assert any(
            e["consumer"] == "city" and e["target"] == CH3 and e["result"] == "denied"
            for e in audit
        )
    finally:
        sim.kill()
        up.close()
        county.stop()


def test_upstream_restart_reregisters_and_shares_again(tmp_path: Path) -> None:
    city_port = free_port()
    city = node(tmp_path / "city", CITY, "35300-35399", sip_port=city_port).start()
    county = node(
        tmp_path / "county",
        COUNTY,
        "35400-35499",
        upstream=upstream_of("city", city, CITY),
        zones=[{"name": "police", "channels": [CH3]}],
    ).start()
    sim = Sim(county, COUNTY[0])
    try:
        county.wait_event("upstream.registered", timeout=20, upstream="city")
        wait_until(lambda: channels_of(city, COUNTY[0]) == {CH1, CH2}, 40, "county catalog")
        city.kill9()
        lost = county.wait_event("upstream.lost", timeout=30, upstream="city")
        assert lost["reason"].startswith("keepalive_")
        wait_until(lambda: upstream_state(county)["registered"] is False, 5, "registered=false")
        assert county.metric("gbgw_upstream_registered", {"upstream": "city"}) == 0.0
        registered_before = len(county.find("upstream.registered", upstream="city"))
        catalogs_before = len(county.find("upstream.catalog_sent", upstream="city"))
        city.start()
        assert city.sip_port == city_port
        # Backoff 1 s doubling: a handful of failed attempts at most before it gets through.
        wait_until(
            lambda: len(county.find("upstream.registered", upstream="city")) > registered_before,
            70,
            "re-registration",
        )
        wait_until(
            lambda: len(county.find("upstream.catalog_sent", upstream="city")) > catalogs_before,
            30,
            "catalog queried again",
        )
        wait_until(lambda: channels_of(city, COUNTY[0]) == {CH1, CH2}, 30, "catalog shared")
        with city.api() as c:
            assert c.get(f"/api/devices/{COUNTY[0]}").json()["online"] is True
        assert upstream_state(county)["registered"] is True
    finally:
        sim.kill()
        county.stop()
        city.stop()


def test_ffprobe_present() -> None:
    require("ffprobe")
