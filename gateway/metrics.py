"""Prometheus metrics of the public contract (ARCHITECTURE.md), on a registry passed in.

Names carry the ``gbgw_`` prefix, base units and ``_total`` on counters; no per-device or
per-SSRC labels (that detail lives in the API).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sip.transport import Target

__all__ = ["Metrics"]

_METHODS = frozenset(
    [
        "REGISTER",
        "MESSAGE",
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "SUBSCRIBE",
        "NOTIFY",
        "INFO",
        "UPDATE",
        "PRACK",
        "REFER",
    ]
)


class Metrics:
    """Every gbgw metric, created on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._requests: dict[tuple[str, str], Any] = {}
        self._responses: dict[tuple[int, str], Any] = {}
        r = self.registry
        self.devices_registered = Gauge(
            "gbgw_devices_registered", "Devices known to the registrar", registry=r
        )
        self.devices_online = Gauge("gbgw_devices_online", "Devices online now", registry=r)
        self.channels = Gauge("gbgw_channels", "Channels known", registry=r)
        self.sip_requests = Counter(
            "gbgw_sip_requests_total", "SIP requests", ["method", "direction"], registry=r
        )
        self.sip_responses = Counter(
            "gbgw_sip_responses_total", "SIP responses", ["code", "direction"], registry=r
        )
        self.registrations = Counter(
            "gbgw_registrations_total",
            "REGISTER outcomes (ok, unauthorized, forbidden, expired, malformed)",
            ["result"],
            registry=r,
        )
        for result in ("ok", "unauthorized", "forbidden", "expired", "malformed"):
            self.registrations.labels(result)
        self.keepalives = Counter("gbgw_keepalives_total", "Keepalives received", registry=r)
        self.sip_malformed = Counter(
            "gbgw_sip_malformed_total",
            "SIP messages with a syntax defect (rejected, or repaired and counted)",
            registry=r,
        )
        self.manscdp_malformed = Counter(
            "gbgw_manscdp_malformed_total", "MANSCDP bodies rejected", registry=r
        )
        self.auth_lockouts = Counter(
            "gbgw_auth_lockouts_total",
            "Sources locked out after repeated auth failures",
            registry=r,
        )
        self.tcp_connections = Gauge(
            "gbgw_sip_tcp_connections", "Open SIP TCP connections", registry=r
        )
        self.streams_active = Gauge("gbgw_streams_active", "Live streams", registry=r)
        self.stream_consumers = Gauge(
            "gbgw_stream_consumers", "Consumers attached to live streams", registry=r
        )
        self.rtp_packets = Counter(
            "gbgw_rtp_packets_total", "RTP packets", ["direction"], registry=r
        )
        self.rtp_bytes = Counter("gbgw_rtp_bytes_total", "RTP bytes", ["direction"], registry=r)
        self.rtp_lost = Counter("gbgw_rtp_packets_lost_total", "RTP packets lost", registry=r)
        self.stream_start = Histogram(
            "gbgw_stream_start_seconds",
            "INVITE to first keyframe",
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20),
            registry=r,
        )
        self.catalog_incomplete = Counter(
            "gbgw_catalog_incomplete_total", "Catalogs committed incomplete", registry=r
        )
        self.media_faults = Counter(
            "gbgw_media_faults_total", "Media faults by kind", ["kind"], registry=r
        )
        self.zone_denied = Counter(
            "gbgw_zone_denied_total", "Zone policy denials", ["consumer"], registry=r
        )
        self.upstream_registered = Gauge(
            "gbgw_upstream_registered",
            "1 when registered to the upstream",
            ["upstream"],
            registry=r,
        )
        self.upstream_streams = Gauge(
            "gbgw_upstream_streams",
            "Streams being sent to the upstream",
            ["upstream"],
            registry=r,
        )
        self.upstream_bytes = Counter(
            "gbgw_upstream_bytes_total",
            "RTP bytes sent to the upstream (TCP: with RFC 4571 framing)",
            ["upstream"],
            registry=r,
        )
        self.store_flushes = Counter(
            "gbgw_store_flushes_total", "Write-behind batches written", registry=r
        )
        kpi = ["county", "class"]
        self.kpi_online_rate = Gauge(
            "gbgw_kpi_online_rate", "Share of channels online (0-1)", kpi, registry=r
        )
        self.kpi_networking_rate = Gauge(
            "gbgw_kpi_networking_rate", "Channels online per planned channel", kpi, registry=r
        )
        self.kpi_availability = Gauge(
            "gbgw_kpi_availability",
            "Mean share of time channels were online over the KPI window (0-1)",
            kpi,
            registry=r,
        )
        self.kpi_hd_rate = Gauge(
            "gbgw_kpi_hd_rate", "Share of channels of known resolution that are HD", kpi, registry=r
        )
        self.kpi_channels = Gauge("gbgw_kpi_channels", "Channels known", kpi, registry=r)
        self.kpi_channels_online = Gauge(
            "gbgw_kpi_channels_online", "Channels online", kpi, registry=r
        )

    # EndpointObserver -----------------------------------------------------------------------

    def request(self, method: str, direction: str) -> None:
        """Count a SIP request (label children cached: this runs for every message)."""
        key = (method if method in _METHODS else "OTHER", direction)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.sip_requests.labels(*key)
        child.inc()

    def response(self, status: int, direction: str) -> None:
        """Count a SIP response."""
        key = (status, direction)
        child = self._responses.get(key)
        if child is None:
            if len(self._responses) > 2000:  # status codes are bounded, but stay safe
                self._responses.clear()
            child = self._responses[key] = self.sip_responses.labels(str(status), direction)
        child.inc()

    def malformed(self, reason: str, target: Target) -> None:
        """Count a malformed SIP message."""
        self.sip_malformed.inc()
