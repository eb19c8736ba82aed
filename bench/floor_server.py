"""The floor: the least a Python loopback HTTP round trip can cost on this machine.

``python -m bench.floor_server PORT BODY_BYTES [asyncio|aiohttp]`` answers every request on a
kept-alive connection with one prebuilt response of BODY_BYTES bytes. ``asyncio`` (the floor): a
bare protocol, no parsing beyond finding the end of the headers, no routing, no cache.
``aiohttp``: the smallest aiohttp server (one route, no middleware), to tell aiohttp's own cost
per request from the extension's. Both on asyncio's default event loop, as the extension.
"""

from __future__ import annotations

import asyncio
import signal
import sys


def response_bytes(body_size: int) -> bytes:
    body = b"x" * body_size
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


class FloorProtocol(asyncio.Protocol):
    """Writes the canned response once per request head seen (pipelining-safe)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.buffer = self.buffer[end + 4 :]
            assert self.transport is not None
            self.transport.write(self.reply)


async def serve(port: int, body_size: int) -> None:
    loop = asyncio.get_running_loop()
    reply = response_bytes(body_size)
    server = await loop.create_server(lambda: FloorProtocol(reply), "127.0.0.1", port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("listening", flush=True)
    async with server:
        await stop.wait()


async def serve_aiohttp(port: int, body_size: int) -> None:
    from aiohttp import web

    body = b"x" * body_size

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/secretsmanager/get", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("listening", flush=True)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    mode = sys.argv[3] if len(sys.argv) > 3 else "asyncio"
    serve_fn = serve_aiohttp if mode == "aiohttp" else serve
    asyncio.run(serve_fn(int(sys.argv[1]), int(sys.argv[2])))
