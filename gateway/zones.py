"""Security zones: the one place that answers "may consumer C see channel X?".

Rules (ARCHITECTURE.md, issue item 4):
- Every listing, tree, KPI detail, stream open, PTZ command, WebRTC offer and upstream catalog
  share asks this module; nothing else decides visibility. Deny by default: a consumer with no
  zones or no classes sees nothing.
- Classification is config-driven and pure. ``[[zone]]`` tables are tried in order and the
  first that matches wins; a channel no zone matches is in zone ``"default"`` with class
  ``DEFAULT_CLASS`` (3, "social", the same default as a ``[[zone]]`` without ``class``).
- A zone with several criteria (``channels``, ``devices``, ``types``, ``civil_code``) matches a
  channel when ANY of them matches: each list names channels that belong to the zone, so more
  lists widen the zone, they never narrow it.
- The civil-code prefixes are compared with the channel's catalog ``CivilCode``, or, when it
  has none, with the first 8 digits (the center code) of the channel ID.
- A channel is secret when its catalog ``Secrecy`` is non-zero or its zone has
  ``secrecy = true``; only a consumer with ``secrecy`` may see it.
- An upstream's ``channels`` / ``civil_code`` lists restrict it further (AND: each non-empty
  list must match); empty lists add no restriction. Allow-lists never widen what zones and
  classes grant.

Theory of operation: ``allows`` classifies the channel itself on every call (dictionary look-
ups, a handful per channel) instead of trusting ``channel.zone``/``class_``, so a channel that
was never passed to ``apply`` cannot leak into a zone it does not belong to. ``apply`` only
copies the answer onto the channel for display.

Denials: ``check`` and ``check_unknown`` (direct access: stream, PTZ, snapshot, share) count
``gbgw_zone_denied_total{consumer}`` and log one ``zone.denied`` warning per denial.
``filter`` (listings, tree, KPI detail) hides rows silently: counting every hidden row would
make the counter measure listing sizes, not access attempts.

Existence is not leaked: a consumer that may not see every channel gets the same 403, with the
same reason, for a channel it may not see and for a channel that does not exist. Only a
consumer that sees everything (``sees_all``) gets 404 for an unknown channel.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn

from gateway.channels import Channel
from gateway.config import TokenConfig, UpstreamConfig, ZoneConfig
from gateway.metrics import Metrics
from sip.errors import Forbidden, NotFound

__all__ = [
    "ACTION_PTZ",
    "ALL_CLASSES",
    "DEFAULT_CLASS",
    "DEFAULT_ZONE",
    "Consumer",
    "ConsumerKind",
    "ZonePolicy",
]

log = logging.getLogger("gbgw.zones")

ConsumerKind = Literal["token", "upstream", "local"]

DEFAULT_ZONE = "default"
DEFAULT_CLASS = 3
"""Class of unmatched channels: 3 (social resources), as for a ``[[zone]]`` without ``class``."""
ALL_CLASSES = frozenset({1, 2, 3})
ACTION_PTZ = "ptz"

HIDDEN_REASON = "channel not available to this consumer"
"""The 403 reason for a hidden channel and, identically, for an unknown one (no leak)."""
PTZ_REASON = "PTZ control not permitted for this consumer"

_LOG_FIELD = re.compile(r"[^\x21-\x7e]|=")
_LOG_FIELD_MAX = 64


def _field(value: str) -> str:
    """A value safe for one ``k=v`` log field: no spaces, controls or '=', at most 64 chars."""
    return _LOG_FIELD.sub("_", value[:_LOG_FIELD_MAX]) or "-"


def _code_of(channel: Channel) -> str:
    """The code civil-code prefixes are compared with: CivilCode, else the ID's center code."""
    return channel.civil_code or channel.channel_id[:8]


@dataclass(frozen=True, slots=True)
class Consumer:
    """Who is asking: an API token, an upstream platform, or the local all-seeing developer."""

    name: str
    """Token or upstream name; the ``consumer`` label of metrics and audit entries."""
    kind: ConsumerKind
    zones: frozenset[str] = frozenset()
    classes: frozenset[int] = frozenset()
    secrecy: bool = False
    """May see secret channels (catalog Secrecy=1 or a zone with secrecy = true)."""
    ptz: bool = False
    channels: frozenset[str] = frozenset()
    """Upstream allow-list of channel IDs; empty = no extra restriction."""
    civil_code: tuple[str, ...] = ()
    """Upstream allow-list of civil-code prefixes; empty = no extra restriction."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a consumer needs a name")
        if self.kind not in ("token", "upstream", "local"):
            raise ValueError(f"kind must be token, upstream or local, got {self.kind!r}")
        if not self.classes <= ALL_CLASSES:
            raise ValueError(f"classes must be among 1, 2, 3, got {sorted(self.classes)}")


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    class_: int
    secrecy: bool


_DEFAULT_RULE = _Rule(DEFAULT_ZONE, DEFAULT_CLASS, False)


class ZonePolicy:
    """Zone classification and access decisions, built from ``[[zone]]``/``[[token]]``/
    ``[[upstream]]``; denials are counted on ``metrics.zone_denied``."""

    def __init__(
        self,
        zones: Sequence[ZoneConfig],
        tokens: Sequence[TokenConfig],
        upstreams: Sequence[UpstreamConfig],
        metrics: Metrics,
        *,
        http_token: str = "",
    ) -> None:
        """``http_token`` (``[http] token``), when set, is an all-seeing operator token named
        ``"http"``; it also turns ``local_consumer`` off."""
        self._metrics = metrics
        self.on_denied: Callable[[Consumer, str, str, str, str], None] | None = None
        """Called with (consumer, channel_id, action, peer, reason) for every refusal: the
        composition root points it at the audit log, so denials are audited as well."""
        self._rules = tuple(_Rule(z.name, z.class_, z.secrecy) for z in zones)
        self.zone_names = frozenset({DEFAULT_ZONE, *(z.name for z in zones)})
        """Every zone a channel can be in."""
        # Criterion value -> index of the first zone naming it; the smallest index among the
        # criteria a channel matches is the first matching zone.
        self._by_channel: dict[str, int] = {}
        self._by_device: dict[str, int] = {}
        self._by_type: dict[str, int] = {}
        self._by_prefix: dict[str, int] = {}
        for i, z in enumerate(zones):
            for table, values in (
                (self._by_channel, z.channels),
                (self._by_device, z.devices),
                (self._by_type, z.types),
                (self._by_prefix, z.civil_code),
            ):
                for value in values:
                    table.setdefault(value, i)
        self._prefix_lengths = tuple(sorted({len(p) for p in self._by_prefix}))
        self._tokens: list[tuple[bytes, Consumer]] = [
            (_digest(t.secret), self._token_consumer(t)) for t in tokens
        ]
        if http_token:
            everything = self._all_seeing("http", "token")
            self._tokens.append((_digest(http_token), everything))
        for _, consumer in self._tokens:
            metrics.zone_denied.labels(consumer.name)
        for u in upstreams:
            metrics.zone_denied.labels(u.name)

    # --- classification -----------------------------------------------------------------

    def _rule(self, channel: Channel) -> _Rule:
        candidates = [
            self._by_channel.get(channel.channel_id),
            self._by_device.get(channel.device_id),
            self._by_type.get(channel.type_code),
        ]
        code = _code_of(channel)
        for n in self._prefix_lengths:
            if n > len(code):
                break
            candidates.append(self._by_prefix.get(code[:n]))
        found = [i for i in candidates if i is not None]
        return self._rules[min(found)] if found else _DEFAULT_RULE

    def classify(self, channel: Channel) -> tuple[str, int]:
        """Zone name and class (1, 2 or 3) of ``channel``: the first matching ``[[zone]]``."""
        rule = self._rule(channel)
        return rule.name, rule.class_

    def is_secret(self, channel: Channel) -> bool:
        """Catalog Secrecy non-zero, or a zone with ``secrecy = true``."""
        return bool(channel.secrecy) or self._rule(channel).secrecy

    def apply(self, channel: Channel) -> None:
        """Write the channel's zone and class onto it (for display; decisions reclassify)."""
        channel.zone, channel.class_ = self.classify(channel)

    # --- consumers ----------------------------------------------------------------------

    @staticmethod
    def _token_consumer(t: TokenConfig) -> Consumer:
        return Consumer(t.name, "token", frozenset(t.zones), frozenset(t.classes), t.secrecy, t.ptz)

    def _all_seeing(self, name: str, kind: ConsumerKind) -> Consumer:
        return Consumer(name, kind, self.zone_names, ALL_CLASSES, secrecy=True, ptz=True)

    def consumer_for_token(self, secret: str) -> Consumer | None:
        """The consumer a bearer secret names, or None; every token is compared, in constant
        time (SHA-256 digests, so neither a token's length nor its position leaks)."""
        if not secret:
            return None
        presented = _digest(secret)
        found: Consumer | None = None
        for digest, consumer in self._tokens:
            if hmac.compare_digest(presented, digest) and found is None:
                found = consumer
        return found

    def local_consumer(self) -> Consumer | None:
        """The all-seeing loopback-development consumer; None as soon as any ``[[token]]`` or
        ``http.token`` is configured (then every request must present a token)."""
        if self._tokens:
            return None
        return self._all_seeing("local", "local")

    def consumer_for_upstream(self, cfg: UpstreamConfig) -> Consumer:
        """The consumer an ``[[upstream]]`` acts as (PTZ on what it may see, if ``ptz``)."""
        return Consumer(
            cfg.name,
            "upstream",
            frozenset(cfg.zones),
            frozenset(cfg.classes),
            cfg.secrecy,
            ptz=cfg.ptz,
            channels=frozenset(cfg.channels),
            civil_code=tuple(cfg.civil_code),
        )

    def sees_all(self, consumer: Consumer) -> bool:
        """Whether ``consumer`` may see every channel there could be."""
        return (
            consumer.zones >= self.zone_names
            and consumer.classes >= ALL_CLASSES
            and consumer.secrecy
            and not consumer.channels
            and not consumer.civil_code
        )

    # --- decisions ----------------------------------------------------------------------

    def allows(self, consumer: Consumer, channel: Channel) -> bool:
        """Whether ``consumer`` may see ``channel`` (pure: no counting, no logging)."""
        rule = self._rule(channel)
        if rule.name not in consumer.zones or rule.class_ not in consumer.classes:
            return False
        if (channel.secrecy or rule.secrecy) and not consumer.secrecy:
            return False
        if consumer.channels and channel.channel_id not in consumer.channels:
            return False
        if consumer.civil_code:
            code = _code_of(channel)
            return any(code.startswith(p) for p in consumer.civil_code)
        return True

    def filter(self, consumer: Consumer, channels: Iterable[Channel]) -> list[Channel]:
        """The channels ``consumer`` may see, in order; hidden rows are not counted."""
        return [c for c in channels if self.allows(consumer, c)]

    def check(self, consumer: Consumer, channel: Channel, action: str, peer: str = "") -> None:
        """Raise ``Forbidden`` (counted, logged) unless ``consumer`` may do ``action`` on
        ``channel``; ``action == "ptz"`` also needs ``consumer.ptz``."""
        if not self.allows(consumer, channel):
            zone = self.classify(channel)[0]
            self._deny(consumer, channel.channel_id, action, peer, zone, HIDDEN_REASON)
        if action == ACTION_PTZ and not consumer.ptz:
            zone = self.classify(channel)[0]
            self._deny(consumer, channel.channel_id, action, peer, zone, PTZ_REASON)

    def check_unknown(
        self, consumer: Consumer, channel_id: str, action: str, peer: str = ""
    ) -> NoReturn:
        """Answer a request for a channel that does not exist: ``NotFound`` for a consumer that
        sees everything, else the same counted ``Forbidden`` a hidden channel gets."""
        if self.sees_all(consumer):
            raise NotFound("unknown channel")
        self._deny(consumer, channel_id, action, peer, "-", HIDDEN_REASON)

    def _deny(
        self, consumer: Consumer, channel_id: str, action: str, peer: str, zone: str, reason: str
    ) -> NoReturn:
        self._metrics.zone_denied.labels(consumer.name).inc()
        if self.on_denied is not None:
            self.on_denied(
                consumer, channel_id, action, peer, "ptz" if reason is PTZ_REASON else "hidden"
            )
        log.warning(
            "zone.denied consumer=%s kind=%s channel_id=%s action=%s zone=%s peer=%s reason=%s",
            _field(consumer.name),
            consumer.kind,
            _field(channel_id),
            _field(action),
            _field(zone),
            _field(peer),
            "ptz" if reason is PTZ_REASON else "hidden",
        )
        raise Forbidden(reason)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
