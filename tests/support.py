"""Helpers shared by the test modules: bounded polling and free loopback ports."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client_go_openapi_url(base_path: str, server_relative_url: str) -> str:
    """Where client-go (kubectl) fetches a group-version document listed in /openapi/v3.

    A URL rooted at /openapi/v3 keeps the client's path prefix (kubernetes#117463); any other is
    taken as server-relative, with the client's prefix added unless it already starts with it.
    """
    if server_relative_url.startswith("/openapi/v3") or not server_relative_url.startswith(base_path + "/"):
        return base_path + server_relative_url
    return server_relative_url
