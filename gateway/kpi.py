"""KPIs of the plan: online, networking, availability and HD rates by county and class.

Definitions (issue item 5):
- Only video channels count: ``kind == "channel"`` rows whose type code is not a display,
  alarm or audio peripheral (133-137). Tree nodes (regions, groups) never count.
- A channel is online when the catalog says ON *and* its device is known and online: a channel
  behind an offline device (or lower platform) cannot be watched.
- A row groups by county (6-digit civil code of the channel, else of its ID; anything that is
  not 1-6 digits is ``"unknown"``) and/or class (``channel.class_``, set by
  ``ZonePolicy.apply`` when the catalog stores the channel). A device counts in a row when it
  owns at least one counted channel there, so one NVR may count in several classes.
- ``online_rate`` = channels online / channels known. ``networking_rate`` = channels online /
  planned channels (None without a plan or with a plan of 0; not clamped, so over-delivery
  shows above 1).
- ``availability`` = mean over the row's channels of each one's share of time online within
  the sliding window (24 h by default). A subject's share is measured over the part of the
  window since it was first observed: time before gbgw knew a channel is not counted as down.
- ``hd_rate`` = channels at least 720 lines high (the shorter side, so corridor mode counts)
  / channels whose resolution is known; None when none is known.
- ``meets_target`` compares availability with the plan's target (0.98).

Consumers: ``compute`` counts only the channels the consumer may see (``ZonePolicy.allows``),
so KPI detail cannot reveal a zone; rows of the plan that have no visible channel appear only
for a consumer that sees everything. ``publish`` (Prometheus, an operator view) counts all.

Availability tracking: ``AvailabilityTracker.observe(subject, online, now)`` records
transitions (monotonic seconds). Per subject it keeps three floats and, once it has gone
offline, a deque of closed online intervals inside the window, at most ``max_intervals``
(256). **Overflow policy:** the two oldest intervals are merged into one that ends where the
later ended and lasts as long as both, so online time inside the window is kept exactly and
only its position is approximated. ``compute`` and ``publish`` first observe the current state
of every channel and device they are given, so a transition that event wiring missed is caught
at the next call; event wiring (``observe_channel``/``observe_device`` on change) only makes
the timing exact. ``publish`` also forgets subjects that are gone.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Gauge

from gateway.channels import Channel
from gateway.metrics import Metrics
from gateway.zones import Consumer, ZonePolicy

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_WINDOW",
    "AvailabilityTracker",
    "DeviceLike",
    "KpiRow",
    "KpiService",
    "resolution_height",
]

DEFAULT_WINDOW = 86_400.0
"""Availability window, seconds."""
DEFAULT_TARGET = 0.98
"""The plan's availability target."""
MAX_INTERVALS = 256
"""Closed online intervals kept per subject (a channel flapping every 6 minutes for a day)."""
HD_LINES = 720
GROUP_KEYS = ("county", "class")
_NON_VIDEO_TYPES = frozenset({"133", "134", "135", "136", "137"})
# SDP f= / catalog Info Resolution codes (PROTOCOL §7): 1 QCIF, 2 CIF, 3 4CIF, 4 D1, 5 720P,
# 6 1080P/I, as lines.
_RESOLUTION_CODES = {"1": 144, "2": 288, "3": 576, "4": 576, "5": 720, "6": 1080}
_WXH = re.compile(r"\s*([0-9]{2,5})\s*[xX*×]\s*([0-9]{2,5})\s*")
_LINES = re.compile(r"\s*([0-9]{3,4})\s*[pPiI]\s*")
_COUNTY = re.compile(r"[0-9]{1,6}")


def resolution_height(text: str) -> int | None:
    """Lines of a resolution ("1920x1080", "720P", catalog codes "4/5/6"); None if unknown.

    For WxH the shorter side counts (a corridor-mode 1080x1920 stream is HD); for several
    catalog codes the best one does (the camera can deliver it).
    """
    if m := _WXH.fullmatch(text):
        return min(int(m[1]), int(m[2]))
    if m := _LINES.fullmatch(text):
        return int(m[1])
    heights = [
        _RESOLUTION_CODES[p.strip()] for p in text.split("/") if p.strip() in _RESOLUTION_CODES
    ]
    return max(heights) if heights else None


class DeviceLike(Protocol):
    """What KPIs need of a device (``gateway.registrar.Device`` fits)."""

    @property
    def device_id(self) -> str: ...

    @property
    def online(self) -> bool: ...


class _Subject:
    __slots__ = ("closed", "first", "online", "since")

    def __init__(self, online: bool, now: float) -> None:
        self.online = online
        self.since = now  # time of the last transition
        self.first = now  # first observation
        self.closed: deque[tuple[float, float]] | None = None  # online (start, end) pairs


class AvailabilityTracker:
    """Share of time online per subject over a sliding window; times in monotonic seconds."""

    def __init__(self, window: float = DEFAULT_WINDOW, max_intervals: int = MAX_INTERVALS) -> None:
        if window <= 0 or max_intervals < 2:
            raise ValueError("need window > 0 and max_intervals >= 2")
        self.window = window
        self._max = max_intervals
        self._subjects: dict[str, _Subject] = {}

    def __len__(self) -> int:
        return len(self._subjects)

    def __contains__(self, subject_id: object) -> bool:
        return subject_id in self._subjects

    def observe(self, subject_id: str, online: bool, now: float) -> bool:
        """Record the subject's state at ``now``; True when that is a transition (or new)."""
        s = self._subjects.get(subject_id)
        if s is None:
            self._subjects[subject_id] = _Subject(online, now)
            return True
        if s.online == online:
            return False
        now = max(now, s.since)  # a clock never runs backwards here
        if s.online:
            if s.closed is None:
                s.closed = deque()
            s.closed.append((s.since, now))
            if len(s.closed) > self._max:
                (a, b), (c, d) = s.closed.popleft(), s.closed.popleft()
                s.closed.appendleft((d - (b - a) - (d - c), d))
        s.online, s.since = online, now
        self._trim(s, now)
        return True

    def availability(self, subject_id: str, now: float) -> float | None:
        """Share (0-1) of the observed part of the window the subject was online; None if it
        was never observed."""
        s = self._subjects.get(subject_id)
        if s is None:
            return None
        start = now - self.window
        self._trim(s, now)
        lo = max(s.first, start)
        if now <= lo:
            return 1.0 if s.online else 0.0
        up = sum(max(0.0, min(e, now) - max(b, start)) for b, e in s.closed or ())
        if s.online:
            up += max(0.0, now - max(s.since, start))
        return min(1.0, up / (now - lo))

    def forget(self, subject_id: str) -> None:
        """Drop a subject (a deleted device or channel)."""
        self._subjects.pop(subject_id, None)

    def retain(self, subject_ids: set[str]) -> None:
        """Forget every subject not in ``subject_ids``."""
        for gone in [k for k in self._subjects if k not in subject_ids]:
            del self._subjects[gone]

    def _trim(self, s: _Subject, now: float) -> None:
        start = now - self.window
        while s.closed and s.closed[0][1] <= start:
            s.closed.popleft()
        if s.closed is not None and not s.closed:
            s.closed = None


@dataclass(frozen=True, slots=True)
class KpiRow:
    """One KPI row; ``county``/``class_`` are None when not grouped by them."""

    county: str | None
    class_: int | None
    devices_known: int
    devices_online: int
    channels_known: int
    channels_online: int
    online_rate: float | None
    planned: int | None
    networking_rate: float | None
    availability: float | None
    hd_rate: float | None
    target: float
    meets_target: bool | None


@dataclass(slots=True)
class _Acc:
    devices: set[str] = field(default_factory=set)
    devices_online: set[str] = field(default_factory=set)
    channels: int = 0
    online: int = 0
    available: float = 0.0
    observed: int = 0
    resolution_known: int = 0
    hd: int = 0


_Key = tuple[str | None, int | None]
_GAUGES = (
    "kpi_online_rate",
    "kpi_networking_rate",
    "kpi_availability",
    "kpi_hd_rate",
    "kpi_channels",
    "kpi_channels_online",
)


def _county(channel: Channel) -> str:
    county = channel.county
    return county if _COUNTY.fullmatch(county) else "unknown"


def _counted(channel: Channel) -> bool:
    return channel.kind == "channel" and channel.type_code not in _NON_VIDEO_TYPES


def _channel_key(device_id: str, channel_id: str) -> str:
    return f"{device_id}/{channel_id}"


def _check_by(by: Iterable[str]) -> tuple[str, ...]:
    by = tuple(dict.fromkeys(by))
    unknown = [k for k in by if k not in GROUP_KEYS]
    if unknown:
        raise ValueError(f"cannot group KPIs by {', '.join(unknown)} (county, class)")
    return tuple(k for k in GROUP_KEYS if k in by)


class KpiService:
    """KPIs for the API (per consumer) and Prometheus (all channels)."""

    def __init__(
        self,
        metrics: Metrics,
        clock_monotonic: Callable[[], float],
        planned: Mapping[tuple[str, int], int] | None = None,
        *,
        window: float = DEFAULT_WINDOW,
        target: float = DEFAULT_TARGET,
    ) -> None:
        """``planned`` maps (6-digit county, class) to planned channels; ``window`` is the
        availability window in seconds."""
        self._metrics = metrics
        self._clock = clock_monotonic
        self._planned = dict(planned or {})
        for (county, class_), n in self._planned.items():
            if not re.fullmatch("[0-9]{6}", county) or class_ not in (1, 2, 3) or n < 0:
                raise ValueError(f"bad plan entry ({county!r}, {class_!r}): {n!r}")
        self.target = target
        self.channels = AvailabilityTracker(window)
        """Availability per channel, keyed ``device_id/channel_id``."""
        self.devices = AvailabilityTracker(window)
        """Availability per device, keyed by device ID."""
        self._published: dict[str, set[tuple[str, str]]] = {name: set() for name in _GAUGES}

    # --- observations -------------------------------------------------------------------

    def observe_device(self, device_id: str, online: bool, now: float | None = None) -> None:
        """A device went online or offline (monotonic ``now``, default the clock)."""
        self.devices.observe(device_id, online, self._now(now))

    def observe_channel(
        self, device_id: str, channel_id: str, online: bool, now: float | None = None
    ) -> None:
        """A channel went online or offline (its effective state: see the module rules)."""
        self.channels.observe(_channel_key(device_id, channel_id), online, self._now(now))

    def channel_availability(
        self, device_id: str, channel_id: str, now: float | None = None
    ) -> float | None:
        """One channel's share of time online over the window (None if never observed)."""
        return self.channels.availability(_channel_key(device_id, channel_id), self._now(now))

    def device_availability(self, device_id: str, now: float | None = None) -> float | None:
        """One device's share of time online over the window (None if never observed)."""
        return self.devices.availability(device_id, self._now(now))

    # --- rows ---------------------------------------------------------------------------

    def compute(
        self,
        channels: Iterable[Channel],
        devices: Iterable[DeviceLike],
        by: Iterable[str],
        consumer: Consumer,
        policy: ZonePolicy,
        now: float | None = None,
    ) -> list[KpiRow]:
        """KPI rows grouped ``by`` county and/or class, counting only what ``consumer`` may
        see; sorted by (county, class)."""
        keys = _check_by(by)
        now = self._now(now)
        counted = [c for c in channels if _counted(c)]
        online = self._observe(counted, devices, now)
        visible = [c for c in counted if policy.allows(consumer, c)]
        groups = self._aggregate(visible, online, keys, now)
        plan = self._plan(keys)
        if policy.sees_all(consumer):
            for key in plan:
                groups.setdefault(key, _Acc())
        return [self._row(key, groups[key], plan.get(key)) for key in sorted(groups, key=_order)]

    def publish(
        self, channels: Iterable[Channel], devices: Iterable[DeviceLike], now: float | None = None
    ) -> None:
        """Set the ``gbgw_kpi_*{county,class}`` gauges from ALL channels (pass every channel
        and device: subjects not passed are forgotten); label sets that vanish are removed."""
        now = self._now(now)
        counted = [c for c in channels if _counted(c)]
        online = self._observe(counted, devices, now)
        self.channels.retain({_channel_key(c.device_id, c.channel_id) for c in counted})
        self.devices.retain(set(online))
        keys = ("county", "class")
        groups = self._aggregate(counted, online, keys, now)
        plan = self._plan(keys)
        for key in plan:
            groups.setdefault(key, _Acc())
        current: dict[str, set[tuple[str, str]]] = {name: set() for name in _GAUGES}
        for key, acc in groups.items():
            row = self._row(key, acc, plan.get(key))
            labels = (str(row.county), str(row.class_))
            values = {
                "kpi_online_rate": row.online_rate,
                "kpi_networking_rate": row.networking_rate,
                "kpi_availability": row.availability,
                "kpi_hd_rate": row.hd_rate,
                "kpi_channels": float(row.channels_known),
                "kpi_channels_online": float(row.channels_online),
            }
            for name, value in values.items():
                if value is not None:
                    self._gauge(name).labels(*labels).set(value)
                    current[name].add(labels)
        for name, labelsets in self._published.items():
            for gone in labelsets - current[name]:
                self._gauge(name).remove(*gone)
        self._published = current

    # --- internals ----------------------------------------------------------------------

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def _gauge(self, name: str) -> Gauge:
        gauge: Gauge = getattr(self._metrics, name)
        return gauge

    def _observe(
        self, counted: list[Channel], devices: Iterable[DeviceLike], now: float
    ) -> dict[str, bool]:
        """Observe every device and channel; returns device_id -> online."""
        online = {d.device_id: d.online for d in devices}
        for device_id, up in online.items():
            self.devices.observe(device_id, up, now)
        for c in counted:
            up = c.online and online.get(c.device_id, False)
            self.channels.observe(_channel_key(c.device_id, c.channel_id), up, now)
        return online

    def _aggregate(
        self, channels: list[Channel], online: Mapping[str, bool], keys: tuple[str, ...], now: float
    ) -> dict[_Key, _Acc]:
        groups: dict[_Key, _Acc] = {}
        for c in channels:
            key = (
                _county(c) if "county" in keys else None,
                c.class_ if "class" in keys else None,
            )
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = _Acc()
            acc.channels += 1
            acc.devices.add(c.device_id)
            device_up = online.get(c.device_id, False)
            if device_up:
                acc.devices_online.add(c.device_id)
            if c.online and device_up:
                acc.online += 1
            share = self.channels.availability(_channel_key(c.device_id, c.channel_id), now)
            if share is not None:
                acc.available += share
                acc.observed += 1
            lines = resolution_height(c.resolution) if c.resolution else None
            if lines is not None:
                acc.resolution_known += 1
                acc.hd += lines >= HD_LINES
        return groups

    def _plan(self, keys: tuple[str, ...]) -> dict[_Key, int]:
        plan: dict[_Key, int] = {}
        for (county, class_), n in self._planned.items():
            key = (county if "county" in keys else None, class_ if "class" in keys else None)
            plan[key] = plan.get(key, 0) + n
        return plan

    def _row(self, key: _Key, acc: _Acc, planned: int | None) -> KpiRow:
        availability = acc.available / acc.observed if acc.observed else None
        return KpiRow(
            county=key[0],
            class_=key[1],
            devices_known=len(acc.devices),
            devices_online=len(acc.devices_online),
            channels_known=acc.channels,
            channels_online=acc.online,
            online_rate=acc.online / acc.channels if acc.channels else None,
            planned=planned,
            networking_rate=acc.online / planned if planned else None,
            availability=availability,
            hd_rate=acc.hd / acc.resolution_known if acc.resolution_known else None,
            target=self.target,
            meets_target=None if availability is None else availability >= self.target,
        )


def _order(key: _Key) -> tuple[str, int]:
    return (key[0] or "", key[1] or 0)
