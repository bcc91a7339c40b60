"""gateway.zones: classification, consumers, decisions, denial counting and logging."""

from __future__ import annotations

import logging
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.channels import Channel
from gateway.config import TokenConfig, UpstreamConfig, ZoneConfig
from gateway.metrics import Metrics
from gateway.zones import HIDDEN_REASON, Consumer, ZonePolicy
from sip.errors import Forbidden, NotFound

NVR = "62090200001180000001"
POLICE_CAM = "62090200001310000001"  # civil code 620902 by ID
CITY_CAM = "62090300001320000002"  # county 620903
OTHER_CAM = "62010000001310000003"

POLICE = ZoneConfig(name="police", civil_code=("620902",), class_=1)
TRAFFIC = ZoneConfig(name="traffic", devices=(NVR,), class_=2)
ALARMS = ZoneConfig(name="alarms", types=("134",), class_=2)
VIP = ZoneConfig(name="vip", channels=(OTHER_CAM,), class_=1, secrecy=True)

OPS = TokenConfig(name="ops", secret="ops-secret", zones=("police", "default"), ptz=True)
PUBLIC = TokenConfig(name="public", secret="public-secret", zones=("default",), ptz=False)


def chan(channel_id: str, device_id: str = NVR, **kw: object) -> Channel:
    return Channel(device_id, channel_id, **kw)  # type: ignore[arg-type]


def policy(
    zones: tuple[ZoneConfig, ...] = (POLICE, TRAFFIC),
    tokens: tuple[TokenConfig, ...] = (OPS, PUBLIC),
    upstreams: tuple[UpstreamConfig, ...] = (),
    metrics: Metrics | None = None,
    **kw: str,
) -> ZonePolicy:
    return ZonePolicy(zones, tokens, upstreams, metrics or Metrics(), **kw)


def denied(metrics: Metrics, consumer: str) -> float:
    value = metrics.registry.get_sample_value("gbgw_zone_denied_total", {"consumer": consumer})
    return value or 0.0


def token(p: ZonePolicy, secret: str) -> Consumer:
    consumer = p.consumer_for_token(secret)
    assert consumer is not None
    return consumer


# --- classification -----------------------------------------------------------------------


def test_first_matching_zone_wins() -> None:
    # The NVR criterion of TRAFFIC matches too, but POLICE comes first.
    assert policy().classify(chan(POLICE_CAM)) == ("police", 1)
    assert policy(zones=(TRAFFIC, POLICE)).classify(chan(POLICE_CAM)) == ("traffic", 2)


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        (chan(CITY_CAM, device_id=NVR), ("traffic", 2)),  # devices
        (chan(OTHER_CAM, device_id=OTHER_CAM), ("vip", 1)),  # channels
        (chan("62010000001340000009", device_id=OTHER_CAM), ("alarms", 2)),  # types
        (chan(CITY_CAM, device_id=CITY_CAM, civil_code="62090201"), ("police", 1)),  # civil code
        (chan(POLICE_CAM, device_id=POLICE_CAM), ("police", 1)),  # civil code from the ID
        (chan(POLICE_CAM, device_id=POLICE_CAM, civil_code="620903"), ("default", 3)),
        (chan(CITY_CAM, device_id=CITY_CAM), ("default", 3)),
        (chan("620902", device_id=CITY_CAM, kind="region"), ("police", 1)),  # region node
    ],
)
def test_each_criterion(channel: Channel, expected: tuple[str, int]) -> None:
    p = policy(zones=(VIP, POLICE, TRAFFIC, ALARMS))
    assert p.classify(channel) == expected
    p.apply(channel)
    assert (channel.zone, channel.class_) == expected


def test_any_criterion_of_a_zone_matches() -> None:
    both = ZoneConfig(name="both", devices=(NVR,), civil_code=("6201",), class_=2)
    p = policy(zones=(both,))
    assert p.classify(chan(CITY_CAM, device_id=NVR))[0] == "both"  # device only
    assert p.classify(chan(OTHER_CAM, device_id=OTHER_CAM))[0] == "both"  # civil code only
    assert p.classify(chan(CITY_CAM, device_id=CITY_CAM))[0] == "default"


def test_unmatched_channels_are_default_class_3() -> None:
    assert policy(zones=()).classify(chan(POLICE_CAM)) == ("default", 3)


def test_prefix_longer_than_the_code_does_not_match() -> None:
    deep = ZoneConfig(name="deep", civil_code=("6209020101",))
    assert policy(zones=(deep,)).classify(chan(POLICE_CAM, civil_code="620902"))[0] == "default"


def test_secrecy_from_catalog_or_zone() -> None:
    p = policy(zones=(VIP, POLICE))
    assert p.is_secret(chan(OTHER_CAM))
    assert p.is_secret(chan(POLICE_CAM, secrecy=1))
    assert not p.is_secret(chan(POLICE_CAM))


# --- consumers ----------------------------------------------------------------------------


def test_token_lookup() -> None:
    p = policy()
    assert token(p, "ops-secret").name == "ops"
    assert token(p, "public-secret").name == "public"
    assert p.consumer_for_token("nope") is None
    assert p.consumer_for_token("") is None
    assert p.consumer_for_token("ops-secret ") is None


def test_token_lookup_compares_every_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    p = policy()
    assert token(p, "ops-secret").name == "ops"  # the first token matches...
    assert len(calls) == 2  # ...and the second is still compared
    assert {len(a) for a, _ in calls} == {32}  # digests: the secret's length does not show


def test_token_lookup_time_does_not_depend_on_the_prefix() -> None:
    p = policy(tokens=(TokenConfig(name="t", secret="x" * 64),))

    def timed(secret: str) -> float:
        start = time.perf_counter()
        for _ in range(2000):
            p.consumer_for_token(secret)
        return time.perf_counter() - start

    near, far = "x" * 63 + "y", "y" * 64
    # Best of several runs, generous bound: equal-work code, not a benchmark.
    assert min(timed(near) for _ in range(5)) < 3 * min(timed(far) for _ in range(5))


def test_local_consumer_only_without_tokens() -> None:
    assert policy().local_consumer() is None
    assert policy(tokens=(), http_token="admin").local_consumer() is None
    local = policy(tokens=()).local_consumer()
    assert local is not None and local.kind == "local"
    assert policy(tokens=()).sees_all(local)


def test_http_token_is_an_all_seeing_operator() -> None:
    p = policy(http_token="admin")
    admin = token(p, "admin")
    assert admin.name == "http" and p.sees_all(admin)
    assert p.allows(admin, chan(POLICE_CAM, secrecy=1))


def test_consumer_for_upstream() -> None:
    up = UpstreamConfig(
        name="city",
        id="62000000002000000001",
        host="127.0.0.1",
        zones=("police",),
        classes=(1,),
        channels=(POLICE_CAM,),
    )
    p = policy(upstreams=(up,))
    c = p.consumer_for_upstream(up)
    assert (c.name, c.kind, c.zones, c.classes) == (
        "city",
        "upstream",
        frozenset({"police"}),
        frozenset({1}),
    )
    assert p.allows(c, chan(POLICE_CAM))
    assert not p.allows(c, chan("62090200001310000002"))  # police, not on the allow-list
    assert not p.sees_all(c)


def test_upstream_civil_code_allow_list_narrows() -> None:
    c = Consumer("u", "upstream", frozenset({"default"}), frozenset({3}), civil_code=("620903",))
    p = policy(zones=())
    assert p.allows(c, chan(CITY_CAM))
    assert not p.allows(c, chan(OTHER_CAM))


def test_consumer_is_validated() -> None:
    with pytest.raises(ValueError, match="kind"):
        Consumer("x", "robot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="classes"):
        Consumer("x", "token", classes=frozenset({4}))
    with pytest.raises(ValueError, match="name"):
        Consumer("", "token")


# --- decisions ----------------------------------------------------------------------------


def test_two_tokens_police_channel() -> None:
    metrics = Metrics()
    p = policy(metrics=metrics)
    ops, public = token(p, "ops-secret"), token(p, "public-secret")
    police, city = chan(POLICE_CAM), chan(CITY_CAM, device_id=CITY_CAM)
    assert p.filter(ops, [police, city]) == [police, city]
    assert p.filter(public, [police, city]) == [city]
    assert denied(metrics, "public") == 0  # hidden rows are not counted
    p.check(ops, police, "stream", "10.0.0.1:5000")
    p.check(ops, police, "ptz", "10.0.0.1:5000")
    for action in ("stream", "ptz"):
        with pytest.raises(Forbidden) as exc:
            p.check(public, police, action, "10.0.0.2:5000")
        assert exc.value.status == 403
    assert denied(metrics, "public") == 2
    assert denied(metrics, "ops") == 0


def test_class_filter() -> None:
    only_1 = Consumer("c1", "token", frozenset({"police", "default"}), frozenset({1}))
    p = policy()
    assert p.allows(only_1, chan(POLICE_CAM))
    assert not p.allows(only_1, chan(CITY_CAM, device_id=CITY_CAM))  # default, class 3


def test_secrecy_needs_an_explicit_grant() -> None:
    p = policy(zones=(VIP, POLICE))
    plain = Consumer("a", "token", frozenset({"vip", "police"}), frozenset({1, 2, 3}))
    cleared = Consumer("b", "token", plain.zones, plain.classes, secrecy=True)
    for channel in (chan(OTHER_CAM), chan(POLICE_CAM, secrecy=1)):
        assert not p.allows(plain, channel)
        assert p.allows(cleared, channel)
    assert p.allows(plain, chan(POLICE_CAM))


def test_ptz_needs_ptz_grant(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    p = policy(metrics=metrics)
    public, city = token(p, "public-secret"), chan(CITY_CAM, device_id=CITY_CAM)
    p.check(public, city, "stream", "")
    with caplog.at_level(logging.WARNING, logger="gbgw.zones"), pytest.raises(Forbidden):
        p.check(public, city, "ptz", "10.0.0.2:5000")
    assert denied(metrics, "public") == 1
    assert "reason=ptz" in caplog.text


def test_deny_by_default() -> None:
    nobody = Consumer("nobody", "token")
    p = policy(zones=())
    assert p.filter(nobody, [chan(POLICE_CAM), chan(CITY_CAM)]) == []
    with pytest.raises(Forbidden):
        p.check(nobody, chan(CITY_CAM), "stream", "")


def test_denial_is_counted_by_consumer_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    p = policy(metrics=metrics)
    assert denied(metrics, "public") == 0
    assert (
        metrics.registry.get_sample_value("gbgw_zone_denied_total", {"consumer": "public"}) == 0
    )  # the series exists before the first denial
    public = token(p, "public-secret")
    with caplog.at_level(logging.WARNING, logger="gbgw.zones"):
        for _ in range(3):
            with pytest.raises(Forbidden):
                p.check(public, chan(POLICE_CAM), "stream", "10.0.0.2:5000")
    assert denied(metrics, "public") == 3
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0] == (
        f"zone.denied consumer=public kind=token channel_id={POLICE_CAM} action=stream "
        "zone=police peer=10.0.0.2:5000 reason=hidden"
    )


def test_log_fields_cannot_be_forged(caplog: pytest.LogCaptureFixture) -> None:
    p = policy()
    with caplog.at_level(logging.WARNING, logger="gbgw.zones"), pytest.raises(Forbidden):
        p.check_unknown(token(p, "public-secret"), "x\nevent=fake y=1", "stream", "")
    message = caplog.records[0].getMessage()
    assert "\n" not in message and "channel_id=x_event_fake_y_1 " in message


def test_unknown_channel_answers_like_a_hidden_one() -> None:
    metrics = Metrics()
    p = policy(metrics=metrics)
    public = token(p, "public-secret")
    with pytest.raises(Forbidden) as hidden:
        p.check(public, chan(POLICE_CAM), "stream", "")
    with pytest.raises(Forbidden) as unknown:
        p.check_unknown(public, "62090200001319999999", "stream", "")
    assert (type(hidden.value), hidden.value.reason) == (type(unknown.value), unknown.value.reason)
    assert unknown.value.reason == HIDDEN_REASON
    assert denied(metrics, "public") == 2
    # Even a channel ID the consumer could see if it existed: no probing by ID.
    with pytest.raises(Forbidden):
        p.check_unknown(public, "62090300001329999999", "stream", "")


def test_unknown_channel_is_404_for_an_all_seeing_consumer() -> None:
    metrics = Metrics()
    p = policy(metrics=metrics, http_token="admin")
    with pytest.raises(NotFound):
        p.check_unknown(token(p, "admin"), POLICE_CAM, "stream", "")
    assert denied(metrics, "http") == 0


def test_allows_ignores_a_stale_zone_field() -> None:
    p = policy()
    stale = chan(POLICE_CAM)  # never applied: zone "default", class 3
    assert (stale.zone, stale.class_) == ("default", 3)
    assert not p.allows(token(p, "public-secret"), stale)


# --- properties ---------------------------------------------------------------------------

_ids = st.sampled_from([POLICE_CAM, CITY_CAM, OTHER_CAM, NVR, "62090200001340000004", "620902"])
_channels = st.builds(
    Channel,
    device_id=st.sampled_from([NVR, CITY_CAM, OTHER_CAM]),
    channel_id=_ids,
    civil_code=st.sampled_from(["", "620902", "62090301", "6201", "x"]),
    secrecy=st.sampled_from([0, 1]),
    kind=st.sampled_from(["channel", "region"]),
)
_consumers = st.builds(
    Consumer,
    name=st.sampled_from(["a", "b"]),
    kind=st.sampled_from(["token", "upstream", "local"]),
    zones=st.frozensets(st.sampled_from(["default", "police", "traffic", "alarms", "vip", "x"])),
    classes=st.frozensets(st.sampled_from([1, 2, 3])),
    secrecy=st.booleans(),
    ptz=st.booleans(),
    channels=st.frozensets(_ids, max_size=2),
    civil_code=st.lists(st.sampled_from(["62", "620902", "6201"]), max_size=2).map(tuple),
)
_PROPERTY_POLICY = policy(zones=(VIP, POLICE, TRAFFIC, ALARMS))


@settings(max_examples=300, deadline=None)
@given(
    consumer=_consumers,
    channels=st.lists(_channels, max_size=8),
    action=st.sampled_from(["stream", "ptz"]),
)
def test_filter_and_check_agree_with_allows(
    consumer: Consumer, channels: list[Channel], action: str
) -> None:
    p = _PROPERTY_POLICY
    assert p.filter(consumer, channels) == [c for c in channels if p.allows(consumer, c)]
    for c in channels:
        permitted = p.allows(consumer, c) and (action != "ptz" or consumer.ptz)
        try:
            p.check(consumer, c, action, "")
        except Forbidden:
            assert not permitted
        else:
            assert permitted
        zone, class_ = p.classify(c)
        if p.allows(consumer, c):
            assert zone in consumer.zones and class_ in consumer.classes
            assert consumer.secrecy or not p.is_secret(c)
        if not consumer.zones or not consumer.classes:
            assert not p.allows(consumer, c)
