"""Fault injection in front of a real slurmrestd: a small HTTP/1.1 proxy on a loopback port, in its own thread.

Each request is forwarded to the daemon on a fresh connection (``Connection: close`` both ways, so every
request is seen and counted). The proxy can hold requests until released (a site that answers slowly; all
of them, or those of some methods), hold the answer to a submission after the site has produced it (the
gateway's crash window), drop the answers of some methods after the site produced them (a connection cut
after sending: the site did the work, the gateway never hears of it), or answer 429 with ``Retry-After``
(Slurm's rate limit), and it counts what it saw.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

_CONNECTION = re.compile(rb"(?im)^connection:[^\r\n]*\r\n")


@dataclass
class ProxyState:
    requests: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    throttled: int = 0  # answered 429
    holding: int = 0  # requests or answers held right now
    submissions_answered: int = 0
    dropped: int = 0  # answers dropped after the site produced them


class SlurmrestdProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.state = ProxyState()
        self.release = threading.Event()  # cleared: every request waits before reaching the daemon
        self.release.set()
        self.hold_methods: set[str] | None = None  # while release is cleared, hold only these methods' requests
        self.drop_answers: set[str] = set()  # methods whose answers are dropped after the site produced them
        self.throttle_seconds = 0  # > 0: answer 429 with this Retry-After instead of forwarding
        self.hold_answers = False  # hold each submission's answer, after the site produced it, until released
        self.answers = threading.Event()  # cleared: held answers wait
        self.answers.set()
        self.held = threading.Event()  # set while some request or answer is held
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._serving: set[asyncio.Task[None] | None] = set()
        self.port = 0

    # --- control, from the test's thread ------------------------------------------------------------

    def start(self) -> SlurmrestdProxy:
        self._thread.start()
        self._started.wait(10)
        return self

    def close(self) -> None:
        self.release.set()
        self.answers.set()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> ProxyState:
        with self._lock:
            return ProxyState(
                self.state.requests,
                dict(self.state.by_method),
                self.state.throttled,
                self.state.holding,
                self.state.submissions_answered,
                self.state.dropped,
            )

    # --- the server ---------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    def _count(self, **changes: int) -> None:
        with self._lock:
            for name, delta in changes.items():
                setattr(self.state, name, getattr(self.state, name) + delta)
            if "holding" in changes:
                (self.held.set if self.state.holding > 0 else self.held.clear)()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._serving.add(task)  # held here: asyncio keeps only a weak reference to a connection's task
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            body = await reader.readexactly(int(length.group(1))) if length else b""
            method = head.split(b" ", 1)[0].decode()
            with self._lock:
                self.state.requests += 1
                self.state.by_method[method] = self.state.by_method.get(method, 0) + 1
            if self.throttle_seconds:
                self._count(throttled=1)
                writer.write(
                    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: %d\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n" % self.throttle_seconds
                )
                return
            if not self.release.is_set() and (self.hold_methods is None or method in self.hold_methods):
                self._count(holding=1)
                try:
                    await asyncio.to_thread(self.release.wait)
                finally:
                    self._count(holding=-1)
            answer = await self._forward(_CONNECTION.sub(b"", head)[:-2] + b"Connection: close\r\n\r\n" + body)
            if method == "POST" and self.hold_answers and not self.answers.is_set():
                # The site has accepted the job; the gateway does not know yet.
                self._count(holding=1)
                try:
                    await asyncio.to_thread(self.answers.wait)
                finally:
                    self._count(holding=-1)
            if method in self.drop_answers:
                self._count(dropped=1)
                return  # the connection closes unanswered
            if method == "POST":
                self._count(submissions_answered=1)
            writer.write(answer)
            await asyncio.wait_for(writer.drain(), 10)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, TimeoutError):
            pass  # the client went away (a killed forwarder): nothing to answer
        finally:
            writer.close()
            with suppress(ConnectionError, OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 10)
            self._serving.discard(task)

    async def _forward(self, request: bytes) -> bytes:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            return b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        writer.write(request)
        await writer.drain()
        answer = await reader.read(-1)
        writer.close()
        head, sep, rest = answer.partition(b"\r\n\r\n")
        return _CONNECTION.sub(b"", head + b"\r\n") + b"Connection: close\r\n" + sep[2:] + rest if sep else answer


@contextmanager
def proxy_to(upstream_url: str) -> Iterator[SlurmrestdProxy]:
    port = int(upstream_url.rsplit(":", 1)[1])
    proxy = SlurmrestdProxy(port).start()
    try:
        yield proxy
    finally:
        proxy.close()
