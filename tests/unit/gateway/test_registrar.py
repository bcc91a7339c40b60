"""Registrar state machine, driven with messages and `now` values (no sockets, no loop)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from gateway.events import DeviceOffline, DeviceOnline, GatewayEvent
from gateway.metrics import Metrics
from gateway.registrar import Device, Registrar, RegistrarConfig, gb_date
from sip.auth import (
    DigestVerifier,
    NonceCounter,
    NonceManager,
    build_authorization,
    parse_digest_params,
)
from sip.errors import BadRequest, Forbidden, IntervalTooBrief, NotFound
from sip.message import Request, Response, parse_message

SERVER = "62090000002000000001"
DOMAIN = "6209000000"
DEV = "62090000001320000001"
SRC = ("udp", "10.0.0.7", 5060)
T0 = datetime(2026, 5, 1, 2, 20, 30, 123000, tzinfo=UTC)


class FakeSink:
    def __init__(self) -> None:
        self.saved: list[str] = []
        self.touched: list[str] = []

    async def save(self, device: Device) -> None:
        self.saved.append(device.device_id)

    def touch(self, device_id: str, last_seen: datetime) -> None:
        self.touched.append(device_id)

    async def delete(self, device_id: str) -> None:
        pass


class Harness:
    def __init__(self, **cfg: object) -> None:
        self.sink = FakeSink()
        self.metrics = Metrics()
        self.sent: list[Response] = []
        self.events: list[GatewayEvent] = []
        self.wall = T0
        self.reg = Registrar(
            RegistrarConfig(server_id=SERVER, domain=DOMAIN, password="12345678", **cfg),  # type: ignore[arg-type]
            DigestVerifier(DOMAIN, NonceManager(b"k" * 32), NonceCounter()),
            self.sink,
            self.metrics,
            lambda: self.wall,
            self.sent.append,
            self.events.append,
        )
        self.cseq = 0

    def register(
        self,
        *,
        expires: int = 3600,
        auth: str | None = None,
        device: str = DEV,
        ruri_user: str = SERVER,
    ) -> Request:
        self.cseq += 1
        raw = (
            f"REGISTER sip:{ruri_user}@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 10.0.0.7:5060;rport;branch=z9hG4bK{self.cseq}\r\n"
            f"From: <sip:{device}@{DOMAIN}>;tag=f1\r\nTo: <sip:{device}@{DOMAIN}>\r\n"
            f"Call-ID: c1@10.0.0.7\r\nCSeq: {self.cseq} REGISTER\r\n"
            f"Contact: <sip:{device}@10.0.0.7:5060>\r\nExpires: {expires}\r\n"
            + (f"Authorization: {auth}\r\n" if auth else "")
            + "Content-Length: 0\r\n\r\n"
        )
        msg = parse_message(raw.encode())
        assert isinstance(msg, Request)
        return msg

    def answer(self, challenge: Response, password: str = "12345678", nc: int = 1) -> str:
        params = parse_digest_params(challenge.headers.get("WWW-Authenticate") or "")
        return build_authorization(
            params,
            username=DEV,
            password=password,
            method="REGISTER",
            uri=f"sip:{SERVER}@{DOMAIN}",
            cnonce="0a4f113b",
            nc=nc,
        )

    def count(self, result: str) -> float:
        return self.metrics.registrations.labels(result)._value.get()

    async def full_register(self, now: float, expires: int = 3600) -> Response:
        ch = self.reg.handle_register(self.register(expires=expires), SRC, now)
        assert ch is not None and ch.status == 401
        resp = self.reg.handle_register(
            self.register(expires=expires, auth=self.answer(ch)), SRC, now
        )
        if resp is None:  # new device: the 200 goes out after the durable save
            await asyncio.gather(*self.reg._tasks)
            resp = self.sent.pop()
        return resp


async def test_challenge_then_ok_with_gb_date() -> None:
    h = Harness()
    resp = await h.full_register(now=0.0)
    assert resp.status == 200
    assert resp.headers.get("Date") == gb_date(T0)
    assert resp.headers.get("Expires") == "3600"
    assert h.sink.saved == [DEV]
    dev = h.reg.devices[DEV]
    assert dev.online and dev.target == SRC
    assert (h.count("unauthorized"), h.count("ok")) == (1, 1)
    assert DeviceOnline(DEV) in h.events


def test_gb_date_format() -> None:
    text = gb_date(T0)
    assert len(text) == 23 and text[10] == "T" and text[19] == "."


async def test_wrong_password_is_403_and_counted_unauthorized() -> None:
    h = Harness()
    ch = h.reg.handle_register(h.register(), SRC, 0.0)
    assert ch is not None
    with pytest.raises(Forbidden):
        h.reg.handle_register(h.register(auth=h.answer(ch, "bad")), SRC, 0.0)
    assert h.count("unauthorized") == 2
    assert DEV not in h.reg.devices


async def test_lockout_after_repeated_failures_then_released() -> None:
    h = Harness(auth_max_failures=3, auth_lockout=60.0)
    for _ in range(3):
        ch = h.reg.handle_register(h.register(), SRC, 1.0)
        assert ch is not None
        with pytest.raises(Forbidden):
            h.reg.handle_register(h.register(auth=h.answer(ch, "bad")), SRC, 1.0)
    assert h.metrics.auth_lockouts._value.get() == 1
    # locked: no challenge at all for this source and device
    with pytest.raises(Forbidden):
        h.reg.handle_register(h.register(), SRC, 30.0)
    # another source is not affected
    assert h.reg.handle_register(h.register(), ("udp", "10.0.0.8", 5060), 30.0) is not None
    # after the lockout the right password works
    resp = await h.full_register(now=62.0)
    assert resp.status == 200


async def test_expires_bounds_and_missing() -> None:
    h = Harness(register_min_expires=60, register_max_expires=7200)
    ch = h.reg.handle_register(h.register(expires=30), SRC, 0.0)
    assert ch is not None
    with pytest.raises(IntervalTooBrief) as exc:
        h.reg.handle_register(h.register(expires=30, auth=h.answer(ch)), SRC, 0.0)
    assert ("Min-Expires", "60") in exc.value.headers
    resp = await h.full_register(now=0.0, expires=99999)
    assert resp.headers.get("Expires") == "7200"
    req = h.register()
    req.headers.remove("Expires")
    with pytest.raises(BadRequest):
        h.reg.handle_register(req, SRC, 0.0)


def test_wrong_server_id_is_forbidden() -> None:
    h = Harness()
    with pytest.raises(Forbidden):
        h.reg.handle_register(h.register(ruri_user="34020000002000000001"), SRC, 0.0)


def test_bad_device_id_is_400() -> None:
    h = Harness()
    with pytest.raises(BadRequest):
        h.reg.handle_register(h.register(device="1234"), SRC, 0.0)


async def test_keepalive_window_then_offline_then_back() -> None:
    h = Harness(keepalive_interval=60.0, keepalive_max_missed=3)
    await h.full_register(now=0.0)
    h.reg.sweep(179.0)
    assert h.reg.devices[DEV].online
    h.reg.handle_keepalive(DEV, SRC, 100.0)  # window moves to 280
    h.reg.sweep(279.0)
    assert h.reg.devices[DEV].online
    h.reg.sweep(280.0)
    assert not h.reg.devices[DEV].online
    assert DeviceOffline(DEV, "keepalive_timeout") in h.events
    h.reg.handle_keepalive(DEV, SRC, 300.0)  # registration still valid: back online
    assert h.reg.devices[DEV].online
    assert h.metrics.keepalives._value.get() == 2


async def test_registration_expiry_and_404_keepalive_after_it() -> None:
    h = Harness(keepalive_interval=600.0)
    await h.full_register(now=0.0, expires=100)
    h.reg.sweep(100.0)
    assert not h.reg.devices[DEV].online
    assert h.count("expired") == 1
    with pytest.raises(NotFound):
        h.reg.handle_keepalive(DEV, SRC, 101.0)


async def test_unregister_goes_offline() -> None:
    h = Harness()
    await h.full_register(now=0.0)
    resp = await h.full_register(now=5.0, expires=0)
    assert resp.status == 200 and resp.headers.get("Expires") == "0"
    assert not h.reg.devices[DEV].online


async def test_keepalive_from_new_address_moves_device() -> None:
    h = Harness()
    await h.full_register(now=0.0)
    h.reg.handle_keepalive(DEV, ("udp", "10.9.9.9", 6000), 10.0)
    await asyncio.gather(*h.reg._tasks)
    assert h.reg.devices[DEV].target == ("udp", "10.9.9.9", 6000)
    assert h.sink.saved == [DEV, DEV]


async def test_refresh_of_known_device_is_write_behind() -> None:
    h = Harness()
    await h.full_register(now=0.0)
    h.wall = T0 + timedelta(seconds=60)
    ch = h.reg.handle_register(h.register(), SRC, 60.0)
    assert ch is not None
    resp = h.reg.handle_register(h.register(auth=h.answer(ch)), SRC, 60.0)
    assert resp is not None and resp.status == 200  # no durable wait for a refresh
    assert h.sink.touched == [DEV]
