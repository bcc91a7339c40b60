"""media.hub: GOP replay, one muxer per format, consumer overflow and lag, closing.

The hub is driven with the real sample's access units and a test clock; consumers are read
with ``get_nowait()`` where the order of events is the point, and with ``async for`` in a task
where iteration itself is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from functools import cache

import pytest

from media.codec_info import Codec
from media.events import MediaEvent, ReceiverClosed
from media.hub import Consumer, HubClosed, Muxer, StreamHub, StreamInfo
from media.ps import AccessUnit, PsDemuxer
from media.receiver import UdpReceiver
from tests.unit.media.rtpsend import H264, H264_G711A, Camera, sample, send_udp

DEADLINE = 5.0


@cache
def units(name: str = H264) -> tuple[AccessUnit, ...]:
    demux = PsDemuxer()
    out: list[AccessUnit] = []
    data = sample(name)
    for pos in range(0, len(data), 1400):
        demux.feed(data[pos : pos + 1400])
        out.extend(demux.pop_units())
    demux.flush()
    out.extend(demux.pop_units())
    return tuple(out)


def keyframe_indexes(seq: tuple[AccessUnit, ...]) -> list[int]:
    return [i for i, u in enumerate(seq) if u.kind == "video" and u.keyframe]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TagMuxer:
    """Counts its calls; each chunk names its unit, the header says what the muxer has seen."""

    content_type = "test/tags"

    def __init__(self) -> None:
        self.calls = 0
        self.keyframes = 0

    def header(self) -> bytes:
        return b"HDR%d;" % self.keyframes

    def mux(self, unit: AccessUnit) -> bytes:
        self.calls += 1
        if unit.kind == "video" and unit.keyframe:
            self.keyframes += 1
        return tag(unit)


def tag(unit: AccessUnit) -> bytes:
    kind = "K" if unit.kind == "video" and unit.keyframe else unit.kind[0]
    return f"{kind}{unit.pts};".encode()


class Factory:
    def __init__(self, make: Callable[[], Muxer] = TagMuxer) -> None:
        self.made: list[Muxer] = []
        self._make = make

    def __call__(self) -> Muxer:
        muxer = self._make()
        self.made.append(muxer)
        return muxer


def drain(consumer: Consumer[bytes]) -> list[bytes]:
    out: list[bytes] = []
    while (chunk := consumer.get_nowait()) is not None:
        out.append(chunk)
    return out


def make_hub(**kwargs: object) -> tuple[StreamHub, Clock, Factory]:
    clock = Clock()
    hub = StreamHub(clock, **kwargs)  # type: ignore[arg-type]  # test knobs only
    factory = Factory()
    hub.register_format("tags", factory)
    return hub, clock, factory


def push(hub: StreamHub, clock: Clock, seq: tuple[AccessUnit, ...] | list[AccessUnit]) -> None:
    for unit in seq:
        clock.now += 0.02 if unit.kind == "audio" else 0.04
        hub.push(unit)


# ---------------------------------------------------------------- joining


def test_joiner_mid_gop_starts_at_the_last_keyframe() -> None:
    hub, clock, factory = make_hub()
    seq = units()
    second_key = keyframe_indexes(seq)[1]
    push(hub, clock, seq[: second_key + 7])
    assert factory.made == []  # nobody watches: nothing is muxed
    consumer = hub.subscribe("tags")
    got = drain(consumer)  # at once: the viewer decodes without waiting for a keyframe
    assert got[0] == b"HDR0;"  # header as it was before the GOP's first chunk was muxed
    assert got[1:] == [tag(u) for u in seq[second_key : second_key + 7]]
    push(hub, clock, seq[second_key + 7 : second_key + 9])
    assert drain(consumer) == [tag(u) for u in seq[second_key + 7 : second_key + 9]]
    assert consumer.content_type == "test/tags"  # from the muxer, as none was registered


def test_joiner_before_the_first_keyframe_waits_for_it() -> None:
    hub, clock, factory = make_hub()
    seq = units()
    consumer = hub.subscribe("tags")
    p_frames = [replace(u, keyframe=False) for u in seq[:3]]  # a stream joined mid-GOP
    push(hub, clock, p_frames)
    assert factory.made == [] and drain(consumer) == []  # no muxer before a keyframe
    push(hub, clock, seq[:5])
    assert drain(consumer) == [b"HDR0;"] + [tag(u) for u in seq[:5]]
    second = hub.subscribe("tags")
    assert drain(second) == [b"HDR0;"] + [tag(u) for u in seq[:5]]


def test_later_gops_replay_with_the_grown_header() -> None:
    hub, clock, _ = make_hub()
    seq = units()
    keys = keyframe_indexes(seq)
    early = hub.subscribe("tags")
    push(hub, clock, seq[: keys[2] + 1])
    late = hub.subscribe("tags")
    assert drain(late) == [b"HDR2;", tag(seq[keys[2]])]
    assert drain(early)[0] == b"HDR0;"


def test_three_consumers_share_one_muxer_and_one_mux_call_per_unit() -> None:
    hub, clock, factory = make_hub(max_lag=60.0)  # read at the end: must not lag out
    seq = units()
    keys = keyframe_indexes(seq)
    push(hub, clock, seq[: keys[1] + 3])  # 3 units in the cached GOP
    consumers = [hub.subscribe("tags") for _ in range(3)]
    push(hub, clock, seq[keys[1] + 3 :])
    assert len(factory.made) == 1
    muxer = factory.made[0]
    assert isinstance(muxer, TagMuxer)
    assert muxer.calls == len(seq) - keys[1]  # the cached GOP once, then each unit once
    streams = [drain(c) for c in consumers]
    assert streams[0] == streams[1] == streams[2]
    assert all(a is b is c for a, b, c in zip(*streams, strict=True))  # the same bytes objects
    assert hub.formats() == ("tags",)


def test_muxer_goes_with_the_last_consumer() -> None:
    hub, clock, factory = make_hub()
    seq = units()
    push(hub, clock, seq[:10])
    a, b = hub.subscribe("tags"), hub.subscribe("tags")
    a.close()
    b.close()
    assert hub.formats() == () and hub.consumers == 0
    push(hub, clock, seq[10:20])
    c = hub.subscribe("tags")
    assert len(factory.made) == 2  # a new muxer, caught up on the cached GOP
    assert drain(c) == [b"HDR0;"] + [tag(u) for u in seq[:20]]


def test_formats_are_muxed_separately_and_raw_needs_no_muxer() -> None:
    hub, clock, factory = make_hub()
    other = Factory()
    hub.register_format("other", other, content_type="video/x-other")
    seq = units()
    push(hub, clock, seq[:5])
    a = hub.subscribe("tags")
    b = hub.subscribe("other")
    raw = hub.subscribe_units()
    assert b.content_type == "video/x-other"
    push(hub, clock, seq[5:8])
    assert len(factory.made) == len(other.made) == 1
    assert drain(a) == drain(b)
    got: list[AccessUnit] = []
    while (unit := raw.get_nowait()) is not None:
        got.append(unit)
    assert got == list(seq[:8]) and all(x is y for x, y in zip(got, seq, strict=False))
    with pytest.raises(ValueError, match="unknown stream format"):
        hub.subscribe("nope")
    with pytest.raises(ValueError, match="reserved"):
        hub.register_format("raw", Factory())


def test_consumer_count_is_reported() -> None:
    counts: list[int] = []
    hub, _, _ = make_hub(on_consumers=counts.append)
    a = hub.subscribe("tags")
    b = hub.subscribe_units()
    a.close()
    a.close()
    b.close()
    c = hub.subscribe("tags")
    hub.close("bye")
    assert counts == [1, 2, 1, 0, 1, 0]
    assert c.close_reason == "bye"


# ---------------------------------------------------------------- slow and stalled consumers


def test_slow_consumer_skips_to_the_next_keyframe_while_a_fast_one_gets_all() -> None:
    hub, clock, _ = make_hub(max_chunks=8)
    seq = units()
    keys = keyframe_indexes(seq)
    push(hub, clock, seq[: keys[1]])
    fast = hub.subscribe("tags")
    slow = hub.subscribe("tags")
    fast_got = drain(fast)
    slow_got = drain(slow)
    end = keys[3] + 2
    for i in range(keys[1], end):
        push(hub, clock, [seq[i]])
        fast_got += drain(fast)
        if i in (keys[2] - 1, keys[3] - 1):  # the slow reader catches up now and then
            slow_got += drain(slow)
    slow_got += drain(slow)
    assert fast_got[1:] == [tag(u) for u in seq[:end]]
    assert slow.skips == 2 and slow.skipped > 0
    # What the slow one got: GOP 0 and 1 up to its queue size, then from keyframes on.
    assert tag(seq[keys[2]]) in slow_got and tag(seq[keys[3]]) in slow_got
    resumed = slow_got.index(tag(seq[keys[3]]))
    assert slow_got[resumed:] == [tag(u) for u in seq[keys[3] : end]]
    assert not slow.closed and not fast.skips


async def test_stalled_consumer_is_closed_as_lagging() -> None:
    hub, clock, _ = make_hub(max_lag=5.0)
    seq = units()
    stalled = hub.subscribe("tags")
    fast = hub.subscribe("tags")
    received: list[bytes] = []
    t0 = clock.now
    i = 0
    while not stalled.closed:
        push(hub, clock, [seq[i]])
        received += drain(fast)
        i += 1
    assert stalled.close_reason == "lagging"
    assert 5.0 < clock.now - t0 < 5.2  # closed as soon as its oldest chunk passed 5 s
    assert stalled.queued_chunks == 0  # its queue is dropped
    with pytest.raises(StopAsyncIteration):
        await anext(stalled)
    assert hub.stats()["lagging_closed"] == 1 and hub.consumers == 1
    for unit in seq[i:]:
        push(hub, clock, [unit])
        received += drain(fast)
    assert received[1:] == [tag(u) for u in seq]


async def test_async_iteration_and_close_drain_the_queue() -> None:
    hub, _, _ = make_hub()
    seq = units()
    consumer = hub.subscribe("tags")
    got: list[bytes] = []

    async def read() -> None:
        async for chunk in consumer:
            got.append(chunk)

    task = asyncio.create_task(read())
    for unit in seq[:50]:
        hub.push(unit)
    await asyncio.sleep(0)  # let the reader wake (ordering only; nothing waits on time)
    for unit in seq[50:]:
        hub.push(unit)
    hub.close("device_bye")  # queued chunks are still delivered, then the loop ends
    await asyncio.wait_for(task, DEADLINE)
    assert got == [b"HDR0;"] + [tag(u) for u in seq]
    assert consumer.close_reason == "device_bye"
    with pytest.raises(HubClosed):
        hub.subscribe("tags")
    hub.push(seq[0])  # ignored after close
    hub.close("again")
    assert hub.close_reason == "device_bye"


async def test_consumer_close_ends_a_waiting_reader() -> None:
    hub, _, _ = make_hub()
    consumer = hub.subscribe_units()
    task = asyncio.create_task(anext(consumer))
    await asyncio.sleep(0)  # the reader is now waiting for a chunk
    consumer.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(task, DEADLINE)
    assert consumer.close_reason == "closed" and hub.consumers == 0


# ---------------------------------------------------------------- GOP cache bounds


def _key(pts: int, size: int) -> AccessUnit:
    return AccessUnit("video", Codec.H264, pts, pts, True, b"\x00\x00\x01\x65" + bytes(size))


def _p(pts: int, size: int = 100) -> AccessUnit:
    return AccessUnit("video", Codec.H264, pts, pts, False, b"\x00\x00\x01\x41" + bytes(size))


def test_huge_keyframe_is_not_cached() -> None:
    hub, clock, _ = make_hub(gop_max_bytes=1 << 20)
    watcher = hub.subscribe("tags")  # its muxer keeps a muxed GOP too
    push(hub, clock, [_key(0, 2 << 20), _p(3600)])
    assert hub.stats()["gop_overflows"] == 1
    assert hub.info().gop_units == 0 and hub.info().gop_bytes == 0
    assert len(drain(watcher)) == 3  # live consumers still get everything
    joiner = hub.subscribe("tags")
    push(hub, clock, [_p(7200)])
    assert drain(joiner) == []  # nothing to replay: it waits for the next keyframe
    push(hub, clock, [_key(10800, 1000), _p(14400)])
    assert drain(joiner) == [b"HDR1;", b"K10800;", b"v14400;"]
    assert hub.info().gop_units == 2


def test_gop_unit_cap() -> None:
    hub, clock, _ = make_hub(gop_max_units=10)
    push(hub, clock, [_key(0, 10)] + [_p(3600 * i) for i in range(1, 12)])
    assert hub.stats()["gop_overflows"] == 1 and hub.info().gop_units == 0
    push(hub, clock, [_key(50 * 3600, 10)])
    assert hub.info().gop_units == 1


def test_gop_bytes_count_the_muxed_copies() -> None:
    hub, clock, _ = make_hub(gop_max_bytes=10_000)
    hub.register_format("fat", Factory(lambda: _Fat()))
    hub.subscribe("fat")
    push(hub, clock, [_key(0, 3000), _p(3600, 1000)])
    assert hub.stats()["gop_overflows"] == 1  # 4 KB of units, 8 KB of muxed copies


class _Fat(TagMuxer):
    def mux(self, unit: AccessUnit) -> bytes:
        super().mux(unit)
        return bytes(2 * len(unit.data))


# ---------------------------------------------------------------- failures, audio, info


class _Broken(TagMuxer):
    def mux(self, unit: AccessUnit) -> bytes:
        if self.calls == 3:
            raise RuntimeError("muxer bug")
        return super().mux(unit)


def test_a_failing_muxer_ends_only_its_consumers() -> None:
    hub, clock, _ = make_hub()
    hub.register_format("broken", Factory(_Broken))
    seq = units()
    ok = hub.subscribe("tags")
    bad = hub.subscribe("broken")
    push(hub, clock, seq[:10])
    assert bad.close_reason == "muxer_error"
    assert drain(bad) == [b"HDR0;"] + [tag(u) for u in seq[:3]]  # what it had, then the end
    assert not ok.closed and len(drain(ok)) == 11
    assert hub.formats() == ("tags",) and hub.stats()["muxer_errors"] == 1


def test_audio_only_stream_starts_anywhere() -> None:
    hub, clock, _ = make_hub()
    audio = [u for u in units(H264_G711A) if u.kind == "audio"][:20]
    push(hub, clock, audio[:10])
    consumer = hub.subscribe("tags")
    assert drain(consumer) == [b"HDR0;", tag(audio[9])]  # each audio unit is a sync point


def test_info_describes_the_stream() -> None:
    hub, clock, _ = make_hub()
    assert hub.info() == StreamInfo(None, None, None, None, None, None, None, 0, 0, 0, 0, 0, 0)
    seq = units(H264_G711A)
    push(hub, clock, seq)
    info = hub.info()
    assert (info.video_codec, info.audio_codec) == (Codec.H264, Codec.PCMA)
    assert (info.width, info.height) == (640, 360)
    assert info.fps is not None and info.fps == pytest.approx(25.0, rel=0.05)
    total = sum(len(u.data) for u in seq)
    assert info.bytes == total and info.units == len(seq) and info.keyframes == 10
    assert info.bitrate is not None and info.bitrate == pytest.approx(total * 8 / 15.0, rel=0.2)
    assert info.first_keyframe_at is not None and info.first_keyframe_at > 100.0


# ---------------------------------------------------------------- with a real receiver


class _ToHub:
    def __init__(self, hub: StreamHub) -> None:
        self.hub = hub
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_unit(self, unit: AccessUnit) -> None:
        self.hub.push(unit)
        if self.hub.info().units == 250 and not self.done.done():
            self.done.set_result(None)

    def on_event(self, event: MediaEvent) -> None:
        if isinstance(event, ReceiverClosed):
            self.hub.close(event.reason)


async def test_receiver_to_hub_to_a_late_joiner() -> None:
    loop = asyncio.get_running_loop()
    hub = StreamHub(loop.time)
    factory = Factory()
    hub.register_format("tags", factory)
    sink = _ToHub(hub)
    rx = UdpReceiver(sink, host="127.0.0.1")
    await rx.start()
    early = hub.subscribe("tags")
    await send_udp(Camera(H264).packets(), rx.port)
    await asyncio.wait_for(sink.done, DEADLINE)
    late = hub.subscribe("tags")
    replay = drain(late)  # a late viewer's first frame is there at once
    seq = units()
    last_key = keyframe_indexes(seq)[-1]
    assert replay == [b"HDR9;"] + [tag(u) for u in seq[last_key:]]
    rx.close()
    await rx.wait_closed()
    got = [chunk async for chunk in early]  # the hub ended with the receiver
    assert got == [b"HDR0;"] + [tag(u) for u in seq]
    assert early.close_reason == late.close_reason == "closed" and len(factory.made) == 1
    info = hub.info()
    assert (info.video_codec, info.width, info.height, info.keyframes) == (Codec.H264, 640, 360, 10)
