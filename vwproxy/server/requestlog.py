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
        if scope["type"] != "http" or scope["path"] in _QUIET_PATHS or not log.isEnabledFor(logging.INFO) or _is_probe(scope):
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


def _is_probe(scope: Scope) -> bool:
    """Another vwproxy's reflector heartbeat (a one-item GET every few seconds per watch: a proxy
    shard following this control plane, a proxy in front of this shard): not traffic worth a line."""
    if scope.get("method") != "GET" or scope.get("query_string") != b"limit=1":
        return False
    return any(name == b"user-agent" and value.startswith(b"vwproxy/") for name, value in scope.get("headers") or ())
