"""media.ports: parsing, exclusivity, try-bind skipping, round-robin, exhaustion.

The ranges are below Linux's ephemeral range (32768+), so only a port some other test or
process bound on purpose is busy, and the pool must then skip it.
"""

from __future__ import annotations

import socket

import pytest

from media.ports import NoPortAvailable, PortPool


def test_parse() -> None:
    pool = PortPool.parse("30000-30999")
    assert (pool.start, pool.end, pool.size, pool.in_use) == (30000, 30999, 1000, 0)
    assert PortPool.parse(" 30000 ").size == 1


@pytest.mark.parametrize("text", ["", "a-b", "30000-", "-1", "30999-30000", "0-10", "1-70000"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        PortPool.parse(text)


def test_allocations_are_exclusive_until_released() -> None:
    pool = PortPool(22000, 22009)
    got = [pool.allocate("udp", "127.0.0.1") for _ in range(5)]
    got += [pool.allocate("tcp", "127.0.0.1") for _ in range(5)]
    assert len(set(got)) == 10 and pool.in_use == 10
    assert all(22000 <= p <= 22009 and p in pool for p in got)
    with pytest.raises(NoPortAvailable):
        pool.allocate()
    pool.release(got[3])
    assert pool.allocate("tcp", "127.0.0.1") == got[3]  # the only free one
    for port in got:
        pool.release(port)
    assert pool.in_use == 0


def test_no_port_available_is_a_runtime_error() -> None:
    assert issubclass(NoPortAvailable, RuntimeError)


def test_round_robin_does_not_reuse_a_port_at_once() -> None:
    pool = PortPool(22010, 22019)
    first = pool.allocate("udp", "127.0.0.1")
    pool.release(first)
    seen = []
    for _ in range(9):
        port = pool.allocate("udp", "127.0.0.1")
        seen.append(port)
        pool.release(port)
    assert first not in seen and len(set(seen)) == 9
    assert pool.allocate("udp", "127.0.0.1") == first  # its turn comes round again


def test_ports_bound_elsewhere_are_skipped() -> None:
    pool = PortPool(22020, 22023)
    busy_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy_udp.bind(("127.0.0.1", 22020))
    busy_tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy_tcp.bind(("127.0.0.1", 22021))
    busy_tcp.listen()
    held: list[socket.socket] = [busy_udp, busy_tcp]
    try:
        udp = [pool.allocate_udp("127.0.0.1") for _ in range(3)]
        held += [sock for _, sock in udp]
        assert [p for p, _ in udp] == [22021, 22022, 22023]  # TCP's 22021 is free for UDP
        with pytest.raises(NoPortAvailable):
            pool.allocate_udp("127.0.0.1")  # 22020 is bound by someone else
        assert pool.in_use == 3
        tcp_pool = PortPool(22020, 22023)
        tcp = [tcp_pool.allocate_tcp_listener("127.0.0.1") for _ in range(3)]
        held += [sock for _, sock in tcp]
        # UDP sockets do not block a TCP listener; the listening 22021 does.
        assert [p for p, _ in tcp] == [22020, 22022, 22023]
    finally:
        for sock in held:
            sock.close()


def test_allocate_udp_returns_the_bound_socket() -> None:
    pool = PortPool(22030, 22031)
    port, sock = pool.allocate_udp("127.0.0.1")
    try:
        assert sock.getsockname() == ("127.0.0.1", port)
        assert sock.type == socket.SOCK_DGRAM and not sock.getblocking()
    finally:
        sock.close()
        pool.release(port)


def test_allocate_tcp_listener_accepts_connections() -> None:
    pool = PortPool(22032, 22033)
    port, listener = pool.allocate_tcp_listener("127.0.0.1")
    try:
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        client.close()
    finally:
        listener.close()
        pool.release(port)


def test_release_of_a_port_not_handed_out_raises() -> None:
    pool = PortPool(22040, 22041)
    with pytest.raises(ValueError, match="not allocated"):
        pool.release(22040)
    port = pool.allocate("udp", "127.0.0.1")
    pool.release(port)
    with pytest.raises(ValueError):
        pool.release(port)


def test_bad_kind() -> None:
    with pytest.raises(ValueError, match="udp"):
        PortPool(22042, 22043).allocate("sctp")  # type: ignore[arg-type]
