"""An ASGI middleware that turns hostile request bodies into 4xx answers before BentoML parses them.

BentoML answers pydantic validation errors with 400, but it would read a body of any size into
memory, and it routes form-encoded or multipart bodies to a form parser whose failures surface as
500s. This guard, in front of every route:

* 415 when a request with a body declares a Content-Type other than JSON (``curl -d`` without
  ``-H 'Content-Type: application/json'`` sends a form: the message says what to send);
* 413 when the body exceeds ``max_body_bytes``: at once from Content-Length, or while buffering a
  chunked body (never more than the limit is held);
* 400 for a malformed Content-Length.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPES = {b"", b"application/json"}


class RequestGuard:
    """Rejects oversized and non-JSON request bodies with a 4xx JSON error naming the limit."""

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = int(max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type not in JSON_TYPES:
            return await _error(
                send,
                415,
                f"Content-Type {media_type.decode('latin-1')!r} is not supported; "
                "send the request body as JSON with 'Content-Type: application/json'",
            )
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return await _error(send, 400, "malformed Content-Length header")
            if size > self.max_body_bytes:
                return await _error(send, 413, self._too_large())
            return await self.app(scope, receive, send)
        return await self._buffered(scope, receive, send)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A body without Content-Length (chunked): read it up to the limit, then replay it."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await _error(send, 413, self._too_large())
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"request body larger than {self.max_body_bytes} bytes (serve.max_body_bytes)"


async def _error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
