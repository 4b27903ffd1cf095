"""Bounds on what one client can make the server do: request body size, and inference queued at once."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

MAX_BODY = 10 * 1024 * 1024  # bytes: the limit (a phone photo fits; a 10 MB JSON of strokes is absurd)
MAX_DRAIN = 64 * 1024 * 1024  # bytes of an oversized body read and dropped before the 413, so that clients
# which send the whole body before reading (urllib, requests) see the answer instead of a reset connection


BODY_SECONDS = 30.0  # the whole request body must arrive within this (a 10 MB upload at 3 Mbit/s); slower: 408
MAX_CONNECTIONS = 100  # connections served at once (uvicorn's limit_concurrency); beyond them: 503 at once
KEEP_ALIVE_SECONDS = 5  # an idle keep-alive connection is closed after this (uvicorn's timeout_keep_alive)


class Busy(Exception):
    """The inference queue is full: the client should retry later (HTTP 429)."""


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


async def send_json(send: Callable, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """A whole JSON response through raw ASGI `send`."""
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


async def drain(receive: Callable, limit: int) -> None:
    """Reads and drops the rest of a request body, at most `limit` bytes (then the connection is closed anyway)."""
    dropped = 0
    while dropped <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets 413, told by Content-Length up front, or counted as it
    streams in (chunked uploads), before the app has buffered more than the limit. Before answering it reads and
    drops up to `max_drain` more bytes (in memory one chunk at a time), unless the client waits for
    `Expect: 100-continue` and has sent nothing yet. A body that has not all arrived `body_seconds` after the
    app first asked for it gets 408 (a slow upload never reaches an inference worker: the app reads the whole
    body first)."""

    def __init__(self, app: Callable, limit: int = MAX_BODY, max_drain: int = MAX_DRAIN,
                 body_seconds: float = BODY_SECONDS):
        self.app, self.limit, self.max_drain, self.body_seconds = app, limit, max_drain, body_seconds

    async def _refuse(self, headers: dict, receive: Callable, send: Callable, body_done: bool = False) -> None:
        """413; body_done: the body's last message was already read (reading again would wait for the client to
        leave)."""
        if not body_done and headers.get(b"expect", b"").lower() != b"100-continue":
            await drain(receive, self.max_drain)
        await send_json(send, 413, {"error": f"request body over {self.limit} bytes"}, [(b"connection", b"close")])

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(headers, receive, send)
        received, started, body_done, deadline = 0, False, False, None

        async def counted() -> dict:
            nonlocal received, body_done, deadline
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.body_seconds
            if body_done:
                return await receive()  # after the body: only the client's disconnect is left to hear
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except TimeoutError:
                raise _TooSlow from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
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
                await self._refuse(headers, receive, send, body_done)
        except _TooSlow:
            if not started:
                await send_json(send, 408, {"error": f"request body not received within {self.body_seconds:g} s"},
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
