"""gateway.kpi: availability tracking, rows by county/class, consumer filtering, gauges."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.channels import Channel
from gateway.config import TokenConfig, ZoneConfig
from gateway.kpi import AvailabilityTracker, KpiRow, KpiService, resolution_height
from gateway.metrics import Metrics
from gateway.zones import Consumer, ZonePolicy

NVR_A = "62090200001180000001"  # county 620902
NVR_B = "62090300001180000002"  # county 620903
POLICE = ZoneConfig(name="police", devices=(NVR_A,), class_=1)
TOKENS = (
    TokenConfig(name="ops", secret="ops", zones=("police", "default")),
    TokenConfig(name="public", secret="public", zones=("default",)),
)


@dataclass
class Dev:
    device_id: str
    online: bool = True


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cam(device_id: str, n: int, **kw: object) -> Channel:
    return Channel(device_id, f"{device_id[:10]}131{n:07d}", **kw)  # type: ignore[arg-type]


def setup(planned: dict[tuple[str, int], int] | None = None) -> tuple[KpiService, ZonePolicy]:
    metrics = Metrics()
    policy = ZonePolicy((POLICE,), TOKENS, (), metrics)
    return KpiService(metrics, FakeClock(), planned, window=100.0), policy


def fleet(policy: ZonePolicy) -> tuple[list[Channel], list[Dev]]:
    channels = [
        cam(NVR_A, 1, resolution="1920x1080"),
        cam(NVR_A, 2, resolution="704x576"),
        cam(NVR_A, 3, status="OFF"),
        cam(NVR_B, 1, resolution="5/6"),
        cam(NVR_B, 2, resolution="4"),
        cam(NVR_B, 3, civil_code="62090201"),  # county 620902, device NVR_B
        Channel(NVR_B, "62090300", kind="region"),  # tree node: not counted
        Channel(NVR_B, "62090300001340000001"),  # alarm input: not counted
    ]
    for c in channels:
        policy.apply(c)
    return channels, [Dev(NVR_A), Dev(NVR_B)]


def consumer(policy: ZonePolicy, secret: str) -> Consumer:
    c = policy.consumer_for_token(secret)
    assert c is not None
    return c


def everyone(policy: ZonePolicy) -> Consumer:
    return Consumer("all", "local", policy.zone_names, frozenset({1, 2, 3}), secrecy=True)


def gauge(service_metrics: Metrics, name: str, county: str, class_: int) -> float | None:
    return service_metrics.registry.get_sample_value(
        f"gbgw_kpi_{name}", {"county": county, "class": str(class_)}
    )


# --- availability -------------------------------------------------------------------------


def test_online_60_offline_40_is_60_percent() -> None:
    t = AvailabilityTracker(window=100.0)
    assert t.availability("c", 0.0) is None
    t.observe("c", True, 0.0)
    t.observe("c", False, 60.0)
    assert t.availability("c", 100.0) == pytest.approx(0.6)
    assert t.availability("c", 60.0) == pytest.approx(1.0)
    assert t.availability("c", 80.0) == pytest.approx(0.75)


def test_window_slides() -> None:
    t = AvailabilityTracker(window=100.0)
    t.observe("c", True, 0.0)
    t.observe("c", False, 60.0)
    t.observe("c", True, 150.0)
    # window 100..200: offline 100..150, online 150..200
    assert t.availability("c", 200.0) == pytest.approx(0.5)
    # window 160..260: online throughout; the old interval has been trimmed
    assert t.availability("c", 260.0) == pytest.approx(1.0)


def test_repeated_state_is_not_a_transition() -> None:
    t = AvailabilityTracker(window=100.0)
    assert t.observe("c", False, 0.0)
    assert not t.observe("c", False, 10.0)
    assert t.observe("c", True, 50.0)
    assert t.availability("c", 100.0) == pytest.approx(0.5)


def test_unobserved_time_is_not_downtime() -> None:
    t = AvailabilityTracker(window=100.0)
    t.observe("c", True, 70.0)
    t.observe("c", False, 90.0)
    assert t.availability("c", 100.0) == pytest.approx(20 / 30)


def test_flapping_is_bounded_and_keeps_online_time() -> None:
    t = AvailabilityTracker(window=10_000.0, max_intervals=8)
    for i in range(100):  # online 7 s, offline 3 s, 100 times
        t.observe("c", True, i * 10.0)
        t.observe("c", False, i * 10.0 + 7)
    assert t.availability("c", 1000.0) == pytest.approx(0.7)
    closed = t._subjects["c"].closed
    assert closed is not None and len(closed) <= 8


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 50.0), st.booleans()), min_size=1, max_size=60))
def test_availability_is_a_share(steps: list[tuple[float, bool]]) -> None:
    t = AvailabilityTracker(window=300.0, max_intervals=4)
    now = 0.0
    for dt, online in steps:
        now += dt
        t.observe("c", online, now)
        share = t.availability("c", now + 1.0)
        assert share is not None and 0.0 <= share <= 1.0


def test_forget_and_retain() -> None:
    t = AvailabilityTracker()
    for s in ("a", "b", "c"):
        t.observe(s, True, 0.0)
    t.forget("a")
    t.retain({"b"})
    assert "b" in t and "a" not in t and "c" not in t and len(t) == 1


# --- resolution ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("1920x1080", 1080),
        ("1280*720", 720),
        ("1080x1920", 1080),
        ("704x576", 576),
        ("720P", 720),
        ("1080i", 1080),
        ("6", 1080),
        ("4/5", 720),
        ("2", 288),
        ("", None),
        ("HD", None),
        ("9", None),
    ],
)
def test_resolution_height(text: str, lines: int | None) -> None:
    assert resolution_height(text) == lines


# --- rows ---------------------------------------------------------------------------------


def test_rates_by_county_and_class() -> None:
    kpi, policy = setup()
    channels, devices = fleet(policy)
    rows = kpi.compute(channels, devices, ("county", "class"), everyone(policy), policy, 10.0)
    assert [(r.county, r.class_) for r in rows] == [("620902", 1), ("620902", 3), ("620903", 3)]
    a, b, c = rows
    assert (a.devices_known, a.channels_known, a.channels_online) == (1, 3, 2)
    assert a.online_rate == pytest.approx(2 / 3)
    assert a.hd_rate == pytest.approx(0.5)  # 1080 yes, 576 no, unknown not counted
    assert (b.devices_known, b.channels_known, b.hd_rate) == (1, 1, None)
    assert (c.channels_known, c.channels_online, c.online_rate) == (2, 2, 1.0)
    assert c.hd_rate == pytest.approx(0.5)  # "5/6" is HD, "4" (D1) is not
    assert a.planned is None and a.networking_rate is None
    assert a.target == 0.98


def test_rows_by_county_only_and_class_only() -> None:
    kpi, policy = setup()
    channels, devices = fleet(policy)
    all_ = everyone(policy)
    by_county = kpi.compute(channels, devices, ["county"], all_, policy, 0.0)
    assert [(r.county, r.class_, r.channels_known, r.devices_known) for r in by_county] == [
        ("620902", None, 4, 2),
        ("620903", None, 2, 1),
    ]
    by_class = kpi.compute(channels, devices, ["class"], all_, policy, 0.0)
    assert [(r.class_, r.channels_known) for r in by_class] == [(1, 3), (3, 3)]
    [total] = kpi.compute(channels, devices, (), all_, policy, 0.0)
    assert (total.county, total.class_, total.channels_known, total.devices_known) == (
        None,
        None,
        6,
        2,
    )
    with pytest.raises(ValueError, match="zone"):
        kpi.compute(channels, devices, ["zone"], all_, policy, 0.0)


def test_offline_device_takes_its_channels_offline() -> None:
    kpi, policy = setup()
    channels, _ = fleet(policy)
    devices = [Dev(NVR_A, online=False), Dev(NVR_B)]
    rows = kpi.compute(channels, devices, ["county"], everyone(policy), policy, 0.0)
    assert [(r.channels_online, r.devices_online) for r in rows] == [(1, 1), (2, 1)]


def test_consumer_sees_only_its_zones() -> None:
    kpi, policy = setup({("620902", 1): 10, ("620904", 2): 5})
    channels, devices = fleet(policy)
    public = consumer(policy, "public")
    rows = kpi.compute(channels, devices, ("county", "class"), public, policy, 0.0)
    # No police row, no police device, no plan-only row for a county it cannot see.
    assert [(r.county, r.class_) for r in rows] == [("620902", 3), ("620903", 3)]
    assert sum(r.devices_known for r in rows) == 2  # NVR_B twice; NVR_A not at all
    assert all(r.class_ != 1 for r in rows)
    ops_rows = kpi.compute(channels, devices, ("county", "class"), consumer(policy, "ops"), policy)
    assert ("620902", 1) in [(r.county, r.class_) for r in ops_rows]


def test_planned_and_networking_rate() -> None:
    kpi, policy = setup({("620902", 1): 4, ("620902", 3): 2, ("620904", 2): 5})
    channels, devices = fleet(policy)
    all_ = everyone(policy)
    rows = {
        (r.county, r.class_): r
        for r in kpi.compute(channels, devices, ("county", "class"), all_, policy, 0.0)
    }
    assert (rows["620902", 1].planned, rows["620902", 1].networking_rate) == (4, 0.5)
    assert rows["620902", 3].networking_rate == pytest.approx(0.5)
    plan_only = rows["620904", 2]
    assert (plan_only.channels_known, plan_only.planned, plan_only.networking_rate) == (0, 5, 0)
    assert plan_only.online_rate is None and plan_only.availability is None
    assert rows["620903", 3].planned is None
    by_county = {r.county: r for r in kpi.compute(channels, devices, ["county"], all_, policy, 0)}
    assert by_county["620902"].planned == 6
    assert by_county["620902"].networking_rate == pytest.approx(3 / 6)


def test_bad_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="plan"):
        KpiService(Metrics(), FakeClock(), {("6209", 1): 3})


def test_availability_rows_and_target() -> None:
    kpi, policy = setup()
    a = cam(NVR_A, 1)
    b = cam(NVR_A, 2)
    for c in (a, b):
        policy.apply(c)
    devices = [Dev(NVR_A)]
    all_ = everyone(policy)
    kpi.compute([a, b], devices, (), all_, policy, 0.0)
    b.status = "OFF"
    kpi.compute([a, b], devices, (), all_, policy, 60.0)
    [row] = kpi.compute([a, b], devices, (), all_, policy, 100.0)
    assert row.availability == pytest.approx((1.0 + 0.6) / 2)
    assert row.meets_target is False
    assert kpi.channel_availability(NVR_A, b.channel_id, 100.0) == pytest.approx(0.6)
    assert kpi.device_availability(NVR_A, 100.0) == 1.0
    b.status = "ON"
    [row] = kpi.compute([a], devices, (), all_, policy, 100.0)
    assert row.meets_target is True


def test_event_wiring_and_clock_default() -> None:
    metrics = Metrics()
    clock = FakeClock()
    kpi = KpiService(metrics, clock, window=100.0)
    kpi.observe_device(NVR_A, True)
    kpi.observe_channel(NVR_A, "c1", True)
    clock.now = 60.0
    kpi.observe_channel(NVR_A, "c1", False)
    clock.now = 100.0
    assert kpi.channel_availability(NVR_A, "c1") == pytest.approx(0.6)
    assert kpi.device_availability(NVR_A) == 1.0
    assert kpi.device_availability("unknown") is None


# --- gauges -------------------------------------------------------------------------------


def test_publish_sets_gauges_for_all_channels() -> None:
    kpi, policy = setup({("620902", 1): 4, ("620904", 2): 5})
    metrics = kpi._metrics
    channels, devices = fleet(policy)
    kpi.publish(channels, devices, 0.0)
    assert gauge(metrics, "channels", "620902", 1) == 3  # police counts: operator view
    assert gauge(metrics, "channels_online", "620902", 1) == 2
    assert gauge(metrics, "online_rate", "620902", 1) == pytest.approx(2 / 3)
    assert gauge(metrics, "networking_rate", "620902", 1) == pytest.approx(0.5)
    assert gauge(metrics, "hd_rate", "620902", 1) == pytest.approx(0.5)
    assert gauge(metrics, "availability", "620902", 1) == pytest.approx(2 / 3)
    assert gauge(metrics, "channels", "620903", 3) == 2
    assert gauge(metrics, "networking_rate", "620903", 3) is None  # no plan: no series
    assert gauge(metrics, "hd_rate", "620902", 3) is None  # no resolution known
    assert gauge(metrics, "channels", "620904", 2) == 0  # planned, none yet
    assert gauge(metrics, "networking_rate", "620904", 2) == 0


def test_publish_removes_vanished_label_sets_and_subjects() -> None:
    kpi, policy = setup()
    metrics = kpi._metrics
    channels, devices = fleet(policy)
    kpi.publish(channels, devices, 0.0)
    assert gauge(metrics, "channels", "620903", 3) == 2
    a_only = [c for c in channels if c.device_id == NVR_A]
    kpi.publish(a_only, devices[:1], 10.0)
    for name in ("channels", "channels_online", "online_rate", "availability", "hd_rate"):
        assert gauge(metrics, name, "620903", 3) is None
    assert gauge(metrics, "channels", "620902", 1) == 3
    assert len(kpi.channels) == 3 and len(kpi.devices) == 1


def test_rows_are_frozen() -> None:
    kpi, policy = setup()
    channels, devices = fleet(policy)
    row = kpi.compute(channels, devices, (), everyone(policy), policy, 0.0)[0]
    assert isinstance(row, KpiRow)
    with pytest.raises(AttributeError):
        row.channels_known = 0  # type: ignore[misc]
