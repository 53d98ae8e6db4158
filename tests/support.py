"""Helpers shared by the test modules: bounded polling, free loopback ports, status conditions."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vwproxy.testing.process import free_port

__all__ = ["WAIT_SECONDS", "POLL_SECONDS", "eventually", "free_port", "client_go_openapi_url", "conditions"]

# How long a test waits for an asynchronous effect (a reconciler, a reflector) by default.
WAIT_SECONDS = 10.0
# Polling step: short, since the effects usually land within milliseconds.
POLL_SECONDS = 0.05


def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
    """Poll `check` until it returns something truthy (bounded): reconcilers run asynchronously."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"timed out waiting for {what}; last saw {last!r}")


def client_go_openapi_url(base_path: str, server_relative_url: str) -> str:
    """Where client-go (kubectl) fetches a group-version document listed in /openapi/v3.

    A URL rooted at /openapi/v3 keeps the client's path prefix (kubernetes#117463); any other is
    taken as server-relative, with the client's prefix added unless it already starts with it.
    """
    if server_relative_url.startswith("/openapi/v3") or not server_relative_url.startswith(base_path + "/"):
        return base_path + server_relative_url
    return server_relative_url


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    """An object's status conditions as type → status ("True", "False", "Unknown")."""
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
