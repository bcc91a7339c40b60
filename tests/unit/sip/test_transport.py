"""sip.transport: binding UDP and TCP on one ephemeral port number."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from sip.transport import TransportConfig, Transports


class _Occupier:
    """The running loop, except that before the first ``create_server`` a real TCP socket
    takes the port asked for: the collision another process could cause, made certain."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.taken: list[socket.socket] = []
        self.asked: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_server(self, factory: Any, host: str, port: int, **kw: Any) -> Any:
        self.asked.append(port)
        if not self.taken:
            occupant = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            occupant.bind((host, port))
            occupant.listen()
            self.taken.append(occupant)
        return await self._loop.create_server(factory, host, port, **kw)


async def test_ephemeral_port_taken_for_tcp_is_picked_again() -> None:
    loop = _Occupier(asyncio.get_running_loop())
    t = Transports(
        TransportConfig(listen="127.0.0.1", port=0),
        lambda data, target: None,
        lambda exc, data, target: None,
        loop,  # type: ignore[arg-type]  # a delegating wrapper
    )
    try:
        await t.start()
        assert t.udp_address is not None and t.tcp_address is not None
        assert t.udp_address[1] == t.tcp_address[1]  # one number for both, as configured
        assert len(loop.asked) == 2 and loop.asked[0] != t.tcp_address[1]  # the taken one left
        # the UDP socket of the first try is closed: its number can be bound again
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await asyncio.sleep(0)  # a yield: the closed transport lets its socket go next turn
        probe.bind(("127.0.0.1", loop.asked[0]))
        probe.close()
    finally:
        await t.close()
        for s in loop.taken:
            s.close()
