"""Bounds on what one client can make the server do: request body size, and inference queued at once."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

MAX_BODY = 10 * 1024 * 1024  # bytes: the limit (a phone photo fits; a 10 MB JSON of strokes is absurd)


class Busy(Exception):
    """The inference queue is full: the client should retry later (HTTP 429)."""


class _TooLarge(Exception):
    pass


async def send_json(send: Callable, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """A whole JSON response through raw ASGI `send`."""
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets 413, told by Content-Length up front, or counted as it
    streams in (chunked uploads), before the app has buffered more than the limit."""

    def __init__(self, app: Callable, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await send_json(send, 413, {"error": f"request body over {self.limit} bytes"},
                                   [(b"connection", b"close")])
        received, started = 0, False

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await send_json(send, 413, {"error": f"request body over {self.limit} bytes"},
                                [(b"connection", b"close")])


class InferencePool:
    """`workers` threads run inference; at most `queue` more calls wait for one. A call beyond that raises
    Busy at once instead of waiting, so a flood of requests gets 429s, not an ever-growing queue."""

    def __init__(self, workers: int = 1, queue: int = 8):
        if workers < 1 or queue < 0:
            raise ValueError(f"workers must be at least 1 and queue at least 0, got {workers} and {queue}")
        self.workers, self.queue = workers, queue
        self.in_flight = 0  # running plus waiting; only touched on the event loop's thread
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="maskmatch-infer")

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.in_flight >= self.workers + self.queue:
            raise Busy(f"busy: {self.in_flight} requests already running or queued; retry shortly")
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self.in_flight -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
