"""The request body size limit, enforced while the body is read.

A declared ``Content-Length`` over the limit is refused before anything is read; a body without one
(chunked transfer encoding) is counted as it arrives and refused as soon as it passes the limit, so a
client cannot make the gateway buffer an unbounded body by leaving the length out.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.problems import problem


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> str:
        return f"the request body exceeds {self.limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            response = problem(
                413, "payload-too-large", "Payload too large", self._too_large(), field="body", limit=self.limit
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI re-raises an HTTPException met while reading the body; problems.py answers it.
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, counted, send)
