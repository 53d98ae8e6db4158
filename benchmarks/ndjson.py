"""Reading a Kubernetes watch stream (newline-delimited JSON) as the bytes arrive: one helper for
every benchmark, so each measures the same thing when it timestamps an event."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson


async def watch_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[float, bytes, dict[str, Any]]]:
    """(arrival time, raw line, decoded event) for each event of `response`, in order; a line split
    across chunks is joined first. The arrival time is taken when the chunk holding it is read."""
    buf = b""
    async for chunk in response.content.iter_any():  # ends when the server ends the stream
        now = time.perf_counter()
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.strip():
                yield now, line, orjson.loads(line)
