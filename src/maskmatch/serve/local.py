"""A local server that stays local: the Host-header allow-list (against DNS rebinding) and security headers.

A page on another site can make the browser send requests to 127.0.0.1 under a name it controls (DNS
rebinding); refusing every Host header but the server's own names stops that. Every answer carries a
Content-Security-Policy with no inline or outside script (KaTeX's inline style attributes stay allowed,
images may be data: URLs, the attention picture), and no CORS header unless `--allow-origin` asks for one.
"""

from __future__ import annotations

from typing import Callable

from maskmatch.serve.limits import send_json

LOOPBACK = ("localhost", "127.0.0.1", "::1")
ALL_INTERFACES = ("0.0.0.0", "::", "")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer")]


def allowed_hosts(bind: str, extra: list[str] | tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The Host names a server bound to `bind` answers for: loopback names, the bound address and `extra`;
    None (any) when bound to all interfaces with no `extra` (the warning says so)."""
    if bind in ALL_INTERFACES and not extra:
        return None
    return tuple(dict.fromkeys([*LOOPBACK, *([] if bind in ALL_INTERFACES else [bind]), *extra]))


def host_name(header: str) -> str:
    """'localhost:8000' -> 'localhost', '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def exposure_warning(bind: str) -> str | None:
    """The one-line warning for an address other machines can reach, None for loopback."""
    if bind in LOOPBACK or bind.startswith("127."):
        return None
    return (f"maskmatch: warning: listening on {bind or 'all interfaces'}: other machines on the network can "
            "use this server (there is no authentication)")


class LocalOnly:
    """ASGI middleware: 400 for a Host header not in `hosts` (None: any), and HEADERS on every answer."""

    def __init__(self, app: Callable, hosts: tuple[str, ...] | None = LOOPBACK):
        self.app, self.hosts = app, None if hosts is None else {h.lower() for h in hosts}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        host = host_name(dict(scope["headers"]).get(b"host", b"").decode("latin-1"))
        if self.hosts is not None and host not in self.hosts:
            shown = ", ".join(sorted(self.hosts))
            return await send_json(with_headers, 400, {"error": f"Host {host!r} is not allowed: this server answers "
                                                                f"for {shown} (see --allow-host)"})
        await self.app(scope, receive, with_headers)
