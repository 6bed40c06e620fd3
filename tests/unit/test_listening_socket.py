"""The ports' listening sockets hand asyncio connections it turns Nagle off on: without it,
every keep-alive response written in two parts waits for the client's delayed ACK."""

from __future__ import annotations

import asyncio
import socket

from imagedepot.bootstrap import listening_socket


def test_accepted_connections_have_nagle_off() -> None:
    async def scenario() -> int:
        listener = listening_socket("127.0.0.1", 0, "test")
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            raw = writer.get_extra_info("socket")
            seen.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listener)
        async with server:
            port = listener.getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            value = await asyncio.wait_for(seen, 5)
            writer.close()
        return value

    assert asyncio.run(scenario()) != 0
