"""uvicorn on a background thread, for tests and the load test: `with BackgroundServer(app) as url: ...`."""

from __future__ import annotations

import threading
import time

import uvicorn

from maskmatch.serve.limits import KEEP_ALIVE_SECONDS, MAX_CONNECTIONS


def server_config(app, host: str, port: int, max_connections: int = MAX_CONNECTIONS) -> uvicorn.Config:
    """uvicorn's settings for `maskmatch serve` and the tests alike: beyond max_connections at once, new
    connections get 503 at once; idle keep-alive connections close after KEEP_ALIVE_SECONDS."""
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          limit_concurrency=max_connections, timeout_keep_alive=KEEP_ALIVE_SECONDS)


class BackgroundServer:
    """Serves an ASGI app on host (loopback by default) and a free port (0) until the block ends."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0,
                 max_connections: int = MAX_CONNECTIONS):
        config = server_config(app, host, port, max_connections)
        self.server, self.timeout = uvicorn.Server(config), timeout
        self.thread = threading.Thread(target=self.server.run, name="maskmatch-serve", daemon=True)
        self.url = ""

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(self.timeout)
