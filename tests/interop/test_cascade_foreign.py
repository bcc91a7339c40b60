"""Cascade with an upstream platform of another vendor (issue 6 acceptance, PROTOCOL §6).

The upstream is sipp (tests/data/sipp/upstream_platform.xml with its registrar half,
upstream_platform_ooc.xml): it challenges gbgw's REGISTER and verifies the digest, answers
keepalives, sends a Catalog query and checks the Response, then INVITEs a shared channel with
its own SDP (UDP, TCP with the upstream passive, TCP with the upstream active) and hangs up. An
independent receiver takes the RTP/PS where the upstream's SDP said: ours
(tests/interop/rtp_ps_receiver.py) or, when ../shared is beside the clone, the peers kit's
rtp_ps_recv.py. ffprobe decodes what arrived. Below gbgw, `gbgw simulate` is one device with
three cameras streaming the H.264 sample; zones share two of them with the upstream.

Sequencing: sipp starts first and waits for the REGISTER; once the cameras are in gbgw's
catalog, the test sends an OPTIONS to sipp (the upstream operator's "query now"), and the
scenario goes on by itself. Every wait is for something observable (log line, API state,
metric, packet, process exit) under a deadline.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.interop.harness import (
    DATA,
    GBGW,
    SHARED,
    GatewayProcess,
    free_port,
    gateway_config,
    require,
    wait_until,
)
from tests.interop.rtp_ps_receiver import RtpPsReceiver
from tests.interop.sipsend import options
from tests.interop.test_media import ffprobe

pytestmark = pytest.mark.interop

SIPP = DATA / "sipp"
H264 = DATA / "media" / "h264_640x360_25fps_10s.ps"
KIT_RECEIVER = SHARED / "peers" / "media" / "rtp_ps_recv.py"

# The foreign upstream: another province's platform, its own domain and password.
UPSTREAM_ID, UPSTREAM_DOMAIN = "44010000002000000001", "4401000000"
UPSTREAM_PASSWORD = "Gd-4401-cascade"
UPSTREAM_NAME = "guangdong"
# This node, and the ID it presents to that upstream (not its gateway.id).
GATEWAY_ID, GATEWAY_DOMAIN = "62090000002000000001", "6209000000"
LOCAL_ID = "62090000002000000077"
DEVICE = "62090000001320000001"  # the simulator's device
CH1, CH2, CH3 = (f"620900000013100010{n:02d}" for n in (1, 2, 3))
SHARED_CHANNELS = {CH1, CH2}  # CH3 is in zone "police", which the upstream may not see
CATALOG_SN = "4711"
HOLD_MS = 6000  # how long the upstream watches before its BYE
RECEIVER_PORTS = range(37900, 38000)


# -- the gbgw node with a camera fleet ----------------------------------------------------


def _toml_tables(name: str, tables: list[dict[str, Any]]) -> str:
    out = []
    for t in tables:
        out.append(f"[[{name}]]")
        out += [f"{k} = {json.dumps(v)}" for k, v in t.items()]
        out.append("")
    return "\n".join(out)


def channels_of(gw: GatewayProcess) -> set[str]:
    with gw.api() as c:
        r = c.get(f"/api/devices/{DEVICE}/channels")
    if r.status_code != 200:
        return set()
    return {ch["channel_id"] for ch in r.json() if ch.get("kind", "channel") == "channel"}


def upstream_state(gw: GatewayProcess) -> dict[str, Any]:
    with gw.api() as c:
        rows: list[dict[str, Any]] = c.get("/api/upstreams").json()
    assert [r["name"] for r in rows] == [UPSTREAM_NAME], rows
    return rows[0]


@dataclass
class Node:
    gw: GatewayProcess
    sim: subprocess.Popen[bytes]


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """``make(upstream_port, rtp_ports, sip_port=0, password=...)``: gbgw serve with one
    ``[[upstream]]`` (the foreign platform on 127.0.0.1:upstream_port, UDP) and `gbgw simulate`
    registered under it, its three cameras in the catalog."""
    nodes: list[Node] = []

    def make(
        upstream_port: int, rtp_ports: str, sip_port: int = 0, password: str = UPSTREAM_PASSWORD
    ) -> Node:
        workdir = tmp_path / "gbgw"
        workdir.mkdir()
        text = gateway_config(
            workdir,
            gateway={"id": GATEWAY_ID, "domain": GATEWAY_DOMAIN, "name": "county"},
            sip={"port": sip_port, "transports": ["udp"]},
            media={"listen": "127.0.0.1", "rtp_ports": rtp_ports, "idle_close": 10},
        )
        text += "\n" + _toml_tables(
            "upstream",
            [
                {
                    "name": UPSTREAM_NAME,
                    "id": UPSTREAM_ID,
                    "domain": UPSTREAM_DOMAIN,
                    "host": "127.0.0.1",
                    "port": upstream_port,
                    "transport": "udp",
                    "password": password,
                    "local_id": LOCAL_ID,
                    "register_expires": 3600,
                    "keepalive_interval": 1,
                    "zones": ["default"],
                }
            ],
        )
        text += "\n" + _toml_tables("zone", [{"name": "police", "channels": [CH3]}])
        gw = GatewayProcess(workdir, text)
        gw.start()
        sim = subprocess.Popen(
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
                GATEWAY_ID,
                "--password",
                "12345678",
                "--media",
                str(H264),
                "--keepalive",
                "5",
                "--duration",
                "300",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        node = Node(gw, sim)
        nodes.append(node)
        wait_until(lambda: channels_of(gw) == {CH1, CH2, CH3}, 30, "three cameras in gbgw")
        return node

    yield make
    for n in nodes:
        if n.sim.poll() is None:
            n.sim.kill()
            n.sim.wait(10)
        n.gw.stop()


# -- the foreign upstream (sipp) ----------------------------------------------------------


class ForeignUpstream:
    """sipp playing the upstream platform; its logs are in ``workdir``."""

    def __init__(
        self, workdir: Path, gw_port: int, *, media: str, rtp_port: int, ssrc: str
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "upstream_logs.log"
        self.screen = workdir / "upstream_screen.txt"
        keys = {
            "upstream_id": UPSTREAM_ID,
            "domain": UPSTREAM_DOMAIN,
            "gateway_id": LOCAL_ID,
            "password": UPSTREAM_PASSWORD,
            "gb_date": datetime.now().strftime("%Y-%m-%dT%H:%M:%S.000"),
            "catalog_sn": CATALOG_SN,
            "channel": CH1,
            "ssrc": ssrc,
            "media": media,
            "media_host": "127.0.0.1",
            "rtp_port": str(rtp_port),
        }
        args = [
            require("sipp"),
            "-sf",
            str(SIPP / "upstream_platform.xml"),
            "-oocsf",
            str(SIPP / "upstream_platform_ooc.xml"),
            "-m",
            "1",
            "-nostdin",
            "-p",
            str(self.port),
            "-i",
            "127.0.0.1",
            "-d",
            str(HOLD_MS),
            "-timeout",
            "150s",
            "-timeout_error",
            "-trace_logs",
            "-log_file",
            str(self.log),
            "-trace_msg",
            "-message_file",
            str(workdir / "upstream_messages.log"),
            "-trace_err",
            "-error_file",
            str(workdir / "upstream_errors.log"),
        ]
        for k, v in keys.items():
            args += ["-key", k, v]
        args.append(f"127.0.0.1:{gw_port}")
        with self.screen.open("wb") as out:
            self.proc = subprocess.Popen(args, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)

    def go(self) -> None:
        """The operator's "query now": any OPTIONS to the upstream's port."""
        resp = options(self.port)
        assert resp is not None and resp.startswith(b"SIP/2.0 200"), resp

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def logs(self) -> bytes:
        return self.log.read_bytes() if self.log.exists() else b""

    def answer(self) -> dict[str, str] | None:
        """The fields of the scenario's ``ANSWER`` log line (gbgw's SDP answer), once sent."""
        m = re.search(rb"ANSWER ((?:\w+=\S* ?)+)", self.logs())
        if m is None:
            return None
        return dict(kv.split("=", 1) for kv in m.group(1).decode().split())

    def catalog_fragments(self) -> list[bytes]:
        """Every Catalog Response MESSAGE the upstream received, as logged."""
        return re.findall(rb"CATALOG-FRAGMENT-BEGIN (.*?) CATALOG-FRAGMENT-END", self.logs(), re.S)

    def report(self) -> str:
        parts = []
        for name in ("upstream_screen.txt", "upstream_logs.log", "upstream_errors.log"):
            p = self.workdir / name
            if p.exists():
                parts.append(f"--- {name}\n" + p.read_bytes()[-3000:].decode("utf-8", "replace"))
        return "\n".join(parts)


@pytest.fixture
def upstream_factory(tmp_path: Path) -> Iterator[Callable[..., ForeignUpstream]]:
    made: list[ForeignUpstream] = []

    def make(gw_port: int, **kw: Any) -> ForeignUpstream:
        up = ForeignUpstream(tmp_path / "upstream", gw_port, **kw)
        made.append(up)
        return up

    yield make
    for up in made:
        up.kill()


# -- receivers ----------------------------------------------------------------------------


def free_rtp_port() -> int:
    """A port of 37900-37999 free for UDP and TCP on 127.0.0.1."""
    for port in RECEIVER_PORTS:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port in 37900-37999")


class Receiver(Protocol):
    output: Path

    def started(self) -> bool: ...
    def finish(self, timeout: float) -> dict[str, Any]: ...
    def close(self) -> None: ...


class OwnReceiver:
    """tests/interop/rtp_ps_receiver.py in a thread."""

    def __init__(self, output: Path, mode: str, host: str, port: int, ssrc: str) -> None:
        self.output = output
        self.rx = RtpPsReceiver(
            output, mode, host, port, ssrc=int(ssrc), idle=3.0, first_timeout=90.0
        ).start()

    def started(self) -> bool:
        return self.rx.first_packet.is_set()

    def finish(self, timeout: float) -> dict[str, Any]:
        stats = self.rx.wait(timeout)
        assert not self.rx.running, "the receiver did not stop"
        return {
            "packets": stats.packets,
            "ssrc": stats.ssrc,
            "lost": stats.lost,
            "other_ssrc": stats.other_ssrc,
            "malformed": stats.malformed,
            "frames": stats.frames,
            "stop_reason": stats.stop_reason,
            "payload_types": list(stats.payload_types),
        }

    def close(self) -> None:
        self.rx.stop()
        self.rx.wait(5)


class KitReceiver:
    """../shared/peers/media/rtp_ps_recv.py as a subprocess (JSON stats on stderr)."""

    def __init__(self, output: Path, mode: str, host: str, port: int, ssrc: str) -> None:
        self.output = output
        self.err = output.with_suffix(".stderr")
        args = [sys.executable, str(KIT_RECEIVER), str(output), mode]
        if mode == "tcp-active":
            args += [host, str(port)]
        else:
            args += ["--listen", f"{host}:{port}"]
        args += ["--ssrc", ssrc, "--idle", "3", "--first-timeout", "90"]
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                args, cwd=KIT_RECEIVER.parent, stdout=subprocess.DEVNULL, stderr=err
            )
        # It prints "...: listening on" once bound; the INVITE must not go out before.
        if mode != "tcp-active":
            wait_until(lambda: b"listening on" in self.err.read_bytes(), 10, "kit receiver bound")

    def started(self) -> bool:
        return self.output.exists() and self.output.stat().st_size > 0

    def finish(self, timeout: float) -> dict[str, Any]:
        self.proc.wait(timeout)
        lines = [ln for ln in self.err.read_text().splitlines() if ln.startswith("{")]
        assert lines, self.err.read_text()
        st = json.loads(lines[-1])
        return {
            "packets": st["packets"],
            "ssrc": st["ssrc"],
            "lost": st["lost"],
            "other_ssrc": st["other_ssrc"],
            "malformed": st["not_rtp"],
            "frames": st["frames"],
            "stop_reason": st["stop_reason"],
            "payload_types": st["payload_types"],
        }

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# -- one cascade session, end to end ------------------------------------------------------


@dataclass
class Outcome:
    node: Node
    upstream: ForeignUpstream
    stats: dict[str, Any]
    video: dict[str, Any]
    ssrc: str


def play_through_foreign_upstream(
    node_factory: Callable[..., Node],
    upstream_factory: Callable[..., ForeignUpstream],
    tmp_path: Path,
    *,
    media: str,
    ssrc: str,
    rtp_ports: str,
    receiver: type[OwnReceiver] | type[KitReceiver] = OwnReceiver,
) -> Outcome:
    """Register, catalog, INVITE ``CH1`` with ``media``, receive, BYE; what came of it."""
    require("ffprobe")
    out = tmp_path / f"upstream_{media}.ps"
    rx_port = free_rtp_port()
    rx: Receiver | None = None
    if media != "tcp-active":  # the upstream's media node listens before it INVITEs
        rx = receiver(out, "udp" if media == "udp" else "tcp-passive", "127.0.0.1", rx_port, ssrc)
    gw_port = free_port()
    up = upstream_factory(gw_port, media=media, rtp_port=rx_port, ssrc=ssrc)
    try:
        # A fixed SIP port: sipp, started first, has gbgw's address on its command line.
        node = node_factory(up.port, rtp_ports, gw_port)
        node.gw.wait_event("upstream.registered", timeout=30, upstream=UPSTREAM_NAME)
        state = upstream_state(node.gw)
        assert state["registered"] is True and state["local_id"] == LOCAL_ID, state
        up.go()
        if rx is None:  # a=setup:active: gbgw listens on the port of its answer
            answer = wait_until(up.answer, 30, "gbgw's SDP answer logged by the upstream")
            rx = receiver(out, "tcp-active", answer["ip"], int(answer["port"]), ssrc)
        wait_until(rx.started, 30, "RTP at the upstream's receiver")
        # While the upstream watches: one stream up, counted and visible in the API.
        wait_until(
            lambda: node.gw.metric("gbgw_upstream_streams", {"upstream": UPSTREAM_NAME}) == 1,
            10,
            "gbgw_upstream_streams == 1",
        )
        assert upstream_state(node.gw)["streams"] == 1
        with node.gw.api() as c:
            streams = [s for s in c.get("/api/streams").json() if s["state"] != "closed"]
        assert [s["channel_id"] for s in streams] == [CH1], streams
        rc = up.wait(60)
        assert rc == 0, up.report()
        stats = rx.finish(20)
    finally:
        if rx is not None:
            rx.close()
    return Outcome(node, up, stats, ffprobe(out), ssrc)


def check_outcome(o: Outcome, mode: str) -> None:
    """Everything the acceptance asks of one session."""
    gw, up = o.node.gw, o.upstream
    # Media: the upstream's SSRC, nothing lost on loopback, decodable H.264 640x360.
    st = o.stats
    assert st["ssrc"] == int(o.ssrc), st
    assert st["other_ssrc"] == 0 and st["malformed"] == 0 and st["lost"] == 0, st
    assert st["packets"] >= st["frames"] >= 100, st  # 25 fps for HOLD_MS (6 s)
    v = o.video
    assert (v.get("codec_name"), v.get("width"), v.get("height")) == ("h264", 640, 360), v
    assert int(v.get("nb_read_frames", 0)) >= 100, v
    # Catalog: exactly the shared channels, in two fragments (a UDP MESSAGE holds one
    # simulated camera's item within gbgw's ~1300-byte budget), each with the upstream's SN,
    # SumNum 2 and our presented ID.
    fragments = up.catalog_fragments()
    assert len(fragments) == 2, up.report()
    items: list[str] = []
    for raw in fragments:
        body = raw.split(b"\r\n\r\n", 1)[1]
        assert b"<CmdType>Catalog</CmdType>" in body and b"<Response>" in body, body
        assert b"<SN>" + CATALOG_SN.encode() + b"</SN>" in body, body
        assert b"<SumNum>2</SumNum>" in body and b'<DeviceList Num="1">' in body, body
        assert b"<DeviceID>" + LOCAL_ID.encode() + b"</DeviceID>" in body, body
        items += [i.decode() for i in re.findall(rb"<Item>\s*<DeviceID>(\d{20})</", body)]
    assert sorted(items) == sorted(SHARED_CHANNELS), items
    sent = gw.wait_event("upstream.catalog_sent", upstream=UPSTREAM_NAME)
    assert (sent["items"], sent["fragments"], sent["acknowledged"]) == ("2", "2", "2"), sent
    # Signalling and state at gbgw.
    ans = gw.wait_event("upstream.stream_answered", upstream=UPSTREAM_NAME)
    assert (ans["channel_id"], ans["mode"], str(ans["ssrc"])) == (CH1, mode, o.ssrc), ans
    gw.wait_event("upstream.bye", upstream=UPSTREAM_NAME, channel_id=CH1)
    wait_until(
        lambda: gw.metric("gbgw_upstream_streams", {"upstream": UPSTREAM_NAME}) == 0,
        10,
        "the upstream stream closed after BYE",
    )
    assert gw.metric("gbgw_upstream_bytes_total", {"upstream": UPSTREAM_NAME}) > 100_000
    assert gw.metric("gbgw_upstream_registered", {"upstream": UPSTREAM_NAME}) == 1.0
    state = upstream_state(gw)
    assert state["registered"] is True and state["keepalives_ok"] >= 1, state
    with gw.api() as c:
        audit = c.get("/api/audit").json()
    assert any(
        e["consumer"] == UPSTREAM_NAME and e["action"] == "upstream_stream" and e["target"] == CH1
        for e in audit
    ), audit
    assert not gw.find("upstream.bad_offer") and not gw.find("upstream.invite_refused")


# -- the tests ----------------------------------------------------------------------------


NodeFactory = Callable[..., Node]
UpstreamFactory = Callable[..., ForeignUpstream]


def test_udp_media_to_foreign_upstream(
    node_factory: NodeFactory, upstream_factory: UpstreamFactory, tmp_path: Path
) -> None:
    """(a) RTP/PS over UDP to the address in the upstream's SDP."""
    o = play_through_foreign_upstream(
        node_factory,
        upstream_factory,
        tmp_path,
        media="udp",
        ssrc="0440100101",
        rtp_ports="37000-37049",
    )
    check_outcome(o, "udp")


def test_tcp_passive_upstream_media(
    node_factory: NodeFactory, upstream_factory: UpstreamFactory, tmp_path: Path
) -> None:
    """(b) The upstream offers TCP a=setup:passive and listens; gbgw connects (RFC 4571)."""
    o = play_through_foreign_upstream(
        node_factory,
        upstream_factory,
        tmp_path,
        media="tcp-passive",
        ssrc="0440100102",
        rtp_ports="37050-37099",
    )
    check_outcome(o, "tcp-connect")
    assert o.stats["stop_reason"] == "peer closed", o.stats  # gbgw hung up after the BYE


def test_tcp_active_upstream_media(
    node_factory: NodeFactory, upstream_factory: UpstreamFactory, tmp_path: Path
) -> None:
    """The upstream offers TCP a=setup:active; gbgw listens on its answer's port."""
    o = play_through_foreign_upstream(
        node_factory,
        upstream_factory,
        tmp_path,
        media="tcp-active",
        ssrc="0440100103",
        rtp_ports="37100-37149",
    )
    check_outcome(o, "tcp-accept")


@pytest.mark.shared
@pytest.mark.skipif(not KIT_RECEIVER.is_file(), reason="../shared/peers not present")
@pytest.mark.parametrize("media", ["udp", "tcp-passive"])
def test_kit_receiver_takes_the_upstream_stream(
    node_factory: NodeFactory, upstream_factory: UpstreamFactory, tmp_path: Path, media: str
) -> None:
    """(c) The same session received by the peers kit's rtp_ps_recv.py."""
    o = play_through_foreign_upstream(
        node_factory,
        upstream_factory,
        tmp_path,
        media=media,
        ssrc="0440100104" if media == "udp" else "0440100105",
        rtp_ports="37150-37199" if media == "udp" else "37200-37249",
        receiver=KitReceiver,
    )
    check_outcome(o, "udp" if media == "udp" else "tcp-connect")


def test_invite_for_a_channel_not_shared_is_403(node_factory: NodeFactory, tmp_path: Path) -> None:
    """(d) The upstream INVITEs the channel zones keep from it, then one that does not exist:
    403 both times (a hidden channel and a missing one look the same), counted per consumer,
    logged as zone.denied and audited as denied; no stream starts and no access is audited as
    allowed."""
    sipp = require("sipp")
    # Nothing listens at the upstream's address: denial does not depend on registration.
    node = node_factory(free_port(), "37250-37299")
    gw = node.gw
    for n, channel in enumerate((CH3, "62090000001319999999"), start=1):
        before = gw.metric("gbgw_zone_denied_total", {"consumer": UPSTREAM_NAME})
        keys = {
            "upstream_id": UPSTREAM_ID,
            "domain": UPSTREAM_DOMAIN,
            "channel": channel,
            "ssrc": "0440100106",
            "media_host": "127.0.0.1",
            "rtp_port": str(free_rtp_port()),
        }
        args = [sipp, "-sf", str(SIPP / "upstream_invite_denied.xml"), "-m", "1", "-nostdin"]
        args += ["-p", str(free_port()), "-i", "127.0.0.1", "-timeout", "20s", "-timeout_error"]
        for k, v in keys.items():
            args += ["-key", k, v]
        args.append(f"127.0.0.1:{gw.sip_port}")
        r = subprocess.run(
            args, cwd=tmp_path, capture_output=True, text=True, timeout=40, check=False
        )
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

        def counted(want: float = before + 1) -> bool:
            return gw.metric("gbgw_zone_denied_total", {"consumer": UPSTREAM_NAME}) == want

        wait_until(counted, 10, "the denial counted")
        denied = gw.wait_event("zone.denied", consumer=UPSTREAM_NAME, channel_id=channel)
        assert denied["kind"] == "upstream" and denied["reason"] == "hidden", denied
        assert len(gw.find("upstream.invite_refused", status=403)) == n
    assert gw.metric("gbgw_upstream_streams", {"upstream": UPSTREAM_NAME}) == 0
    with gw.api() as c:
        assert [s for s in c.get("/api/streams").json() if s["state"] != "closed"] == []
        audit = c.get("/api/audit").json()
    assert not any(e["consumer"] == UPSTREAM_NAME and e["result"] == "allowed" for e in audit), (
        audit
    )
    denied = [
        (e["action"], e["target"], e["detail"])
        for e in audit
        if e["consumer"] == UPSTREAM_NAME and e["result"] == "denied"
    ]
    assert sorted(denied) == sorted(
        [
            ("upstream_stream", CH3, "hidden"),
            ("upstream_stream", "62090000001319999999", "hidden"),
        ]
    ), audit


def test_wrong_cascade_password_is_refused_by_the_upstream(
    node_factory: NodeFactory, upstream_factory: UpstreamFactory, tmp_path: Path
) -> None:
    """The upstream's registrar really checks the digest: with a password it does not know,
    gbgw's REGISTER is answered 403 and the upstream stays unregistered in the API."""
    gw_port = free_port()
    up = upstream_factory(gw_port, media="udp", rtp_port=free_rtp_port(), ssrc="0440100107")
    node = node_factory(up.port, "37300-37349", gw_port, password="not-the-password")
    failed = node.gw.wait_event("upstream.register_failed", timeout=30, upstream=UPSTREAM_NAME)
    assert failed["reason"] == "403", failed
    assert b"FAIL: REGISTER digest of user " + LOCAL_ID.encode() in up.logs(), up.report()
    state = upstream_state(node.gw)
    assert state["registered"] is False and state["last_error"] == "403", state
    assert node.gw.metric("gbgw_upstream_registered", {"upstream": UPSTREAM_NAME}) == 0
    assert not node.gw.find("upstream.registered")


def test_own_receiver_reorders_and_keeps_one_ssrc(tmp_path: Path) -> None:
    """The receiver the tests above rely on (no ../shared needed): packets sent out of order,
    duplicated and mixed with another SSRC come out in order, once, of the expected SSRC."""
    from media.rtp import RtpPacket

    out = tmp_path / "rx.ps"
    rx = RtpPsReceiver(out, "udp", "127.0.0.1", 0, ssrc=440100108, idle=0.5).start()
    seqs = [65534, 0, 65535, 1, 1, 3, 2]  # wraps, swaps, a duplicate
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n, seq in enumerate(seqs):
            p = RtpPacket(96, seq, 9000 * n, 440100108, f"<{seq}>".encode(), marker=seq == 3)
            s.sendto(p.serialize(), ("127.0.0.1", rx.port))
            s.sendto(RtpPacket(96, seq, 0, 7, b"x").serialize(), ("127.0.0.1", rx.port))
        s.sendto(b"\x00" * 5, ("127.0.0.1", rx.port))
    st = rx.wait(10)
    assert st.stop_reason == "idle", st
    assert out.read_bytes() == b"<65534><65535><0><1><2><3>"
    assert (st.packets, st.duplicates, st.other_ssrc, st.malformed, st.lost) == (6, 1, 7, 1, 0)
    assert st.frames == 1 and st.ssrc_decimal == "0440100108" and st.payload_types == (96,)
