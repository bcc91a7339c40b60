"""Durable state: devices, channels, audit and availability history, with write-behind."""

from gateway.store.records import AuditEntry, AvailabilityEvent, ChannelRecord, DeviceRecord
from gateway.store.store import Store
from gateway.store.writebehind import Job, WriteBehind

__all__ = [
    "AuditEntry",
    "AvailabilityEvent",
    "ChannelRecord",
    "DeviceRecord",
    "Job",
    "Store",
    "WriteBehind",
]
