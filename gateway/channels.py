"""The in-memory channel table: every channel (and tree node) behind every device.

Channels are keyed by (device_id, channel_id): two devices may report the same channel ID
(PROTOCOL Q-11). A secondary index by channel_id serves the API and INVITE routing (the first
device that reported it wins, as it is the one the stream would come from). Tree nodes from
lower platforms (regions, business groups 215, virtual organisations 216) live here too, with
``kind`` telling them apart; only ``kind == "channel"`` rows are cameras.

The zone and class of each channel are assigned by ``gateway.zones`` when the channel is
stored, never here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Channel", "ChannelTable"]


@dataclass(slots=True)
class Channel:
    """One catalog item of a device."""

    device_id: str
    channel_id: str
    name: str = ""
    kind: str = "channel"  # channel | region | business_group | virtual_org
    civil_code: str = ""
    parent_id: str = ""
    business_group_id: str = ""
    status: str = "ON"  # ON | OFF (VLOST/DEFECT map to OFF with the event kept in ``fault``)
    fault: str = ""
    manufacturer: str = ""
    model: str = ""
    owner: str = ""
    address: str = ""
    ip_address: str = ""
    port: int | None = None
    longitude: float | None = None
    latitude: float | None = None
    ptz_type: int | None = None
    secrecy: int = 0
    resolution: str = ""  # "WxH" once measured from the SPS, or the catalog's Info value
    zone: str = "default"
    class_: int = 3
    updated_at: datetime | None = None

    @property
    def online(self) -> bool:
        """Whether the device reports the channel as on."""
        return self.status == "ON"

    @property
    def type_code(self) -> str:
        """Digits 11-13 of a 20-digit ID ('' for region nodes)."""
        return self.channel_id[10:13] if len(self.channel_id) == 20 else ""

    @property
    def county(self) -> str:
        """The 6-digit county code: from the civil code, else from the ID's center code."""
        code = self.civil_code or self.channel_id[:8]
        return code[:6] if len(code) >= 6 else code


class ChannelTable:
    """All channels, keyed by (device_id, channel_id), with an index by channel_id."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Channel] = {}
        self._by_id: dict[str, Channel] = {}
        self._by_device: dict[str, dict[str, Channel]] = {}
        # channel_id -> other devices reporting it too (rare: only for duplicates, Q-11)
        self._also: dict[str, list[str]] = {}
        # device_id -> how many of its rows are cameras (kind == "channel"), kept up to date
        self._cameras: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Channel]:
        return iter(self._by_key.values())

    def get(self, channel_id: str, device_id: str | None = None) -> Channel | None:
        """A channel by ID (optionally of one device)."""
        if device_id is not None:
            return self._by_key.get((device_id, channel_id))
        return self._by_id.get(channel_id)

    def of_device(self, device_id: str) -> list[Channel]:
        """The channels of one device, in catalog order."""
        return list(self._by_device.get(device_id, {}).values())

    def count(self, device_id: str, kind: str | None = "channel") -> int:
        """How many channels (of ``kind``, or any) a device has."""
        chans = self._by_device.get(device_id, {})
        if kind is None:
            return len(chans)
        if kind == "channel":
            return self._cameras.get(device_id, 0)
        return sum(1 for c in chans.values() if c.kind == kind)

    def put(self, channel: Channel) -> None:
        """Insert or replace one channel."""
        key = (channel.device_id, channel.channel_id)
        old = self._by_key.get(key)
        if old is not None and old.kind == "channel":
            self._cameras[channel.device_id] -= 1
        if channel.kind == "channel":
            self._cameras[channel.device_id] = self._cameras.get(channel.device_id, 0) + 1
        self._by_key[key] = channel
        current = self._by_id.get(channel.channel_id)
        if current is None or current.device_id == channel.device_id:
            self._by_id[channel.channel_id] = channel
        else:
            also = self._also.setdefault(channel.channel_id, [])
            if channel.device_id not in also:
                also.append(channel.device_id)
        self._by_device.setdefault(channel.device_id, {})[channel.channel_id] = channel

    def replace_device(self, device_id: str, channels: Iterable[Channel]) -> None:
        """Swap a device's whole channel set (a complete catalog)."""
        self.remove_device(device_id)
        for c in channels:
            self.put(c)

    def remove(self, device_id: str, channel_id: str) -> Channel | None:
        """Remove one channel."""
        ch = self._by_key.pop((device_id, channel_id), None)
        if ch is None:
            return None
        if ch.kind == "channel":
            self._cameras[device_id] -= 1
        self._by_device.get(device_id, {}).pop(channel_id, None)
        also = self._also.get(channel_id)
        if also is not None and device_id in also:
            also.remove(device_id)
        if self._by_id.get(channel_id) is ch:
            del self._by_id[channel_id]
            if also:
                self._by_id[channel_id] = self._by_key[(also.pop(0), channel_id)]
        if also is not None and not also:
            del self._also[channel_id]
        return ch

    def remove_device(self, device_id: str) -> None:
        """Remove every channel of a device."""
        for cid in list(self._by_device.get(device_id, {})):
            self.remove(device_id, cid)
        self._by_device.pop(device_id, None)
        self._cameras.pop(device_id, None)
