"""A site at a distance, for the benchmarks: a TCP proxy in a process of its own that delays every chunk of
bytes by a fixed time in each direction, as a WAN link would (latency only, no loss, no bandwidth cap).

This machine's kernel has no ``netem`` qdisc, so ``tc`` cannot add the delay. A separate process keeps the
proxy's work off the benchmark's own event loop and CPU figures. Connections are kept alive as the client
wishes, so the delay is paid per request, not per TCP handshake (httpx pools its connections).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk leaving ``delay`` seconds after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def feed() -> None:
        while True:
            data = await reader.read(65536)
            await queue.put((loop.time() + delay, data))
            if not data:
                return

    feeding = asyncio.create_task(feed())
    try:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        feeding.cancel()
        with suppress(Exception):
            writer.close()


async def _serve(listener: socket.socket, upstream_port: int, delay: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer, delay), _pipe(up_reader, writer, delay))

    server = await asyncio.start_server(handle, sock=listener)
    async with server:
        await server.serve_forever()


def _main(listener: socket.socket, upstream_port: int, delay: float) -> None:
    asyncio.run(_serve(listener, upstream_port, delay))


@contextmanager
def delayed(upstream_port: int, one_way_ms: float) -> Iterator[int]:
    """A loopback port that reaches ``upstream_port`` with ``one_way_ms`` added each way; yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    context: Any = multiprocessing.get_context("forkserver")  # not fork: the caller runs an event loop
    proxy = context.Process(target=_main, args=(listener, upstream_port, one_way_ms / 1000), daemon=True)
    proxy.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        proxy.kill()
        proxy.join(10)
        listener.close()
