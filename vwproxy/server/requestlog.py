"""One INFO line per request a client sent: method, path, status, duration.

Wraps the outermost app only, so the proxy's in-process hops to the embedded shard (an
`httpx.ASGITransport` straight into the shard app) are not logged as user traffic. A watch is
logged when it ends, with how long it stayed open.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("vwproxy.requests")

# Probes hit these every few seconds; logging them would drown the real traffic.
_QUIET_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})


class RequestLog:
    """ASGI middleware logging each HTTP request once it has been answered (or dropped)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _QUIET_PATHS or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            path = scope["path"] + (f"?{query}" if query else "")
            log.info("%s %s %s %.1fms", scope["method"], path, status or "-", (time.monotonic() - started) * 1000)
