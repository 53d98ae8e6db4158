"""Reading responses as the bytes arrive: a Kubernetes watch stream (newline-delimited JSON) and a
whole body with the time its first byte came. One helper each for every benchmark, so each measures
the same thing when it timestamps an event or a list."""

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


async def body_with_first_byte(response: aiohttp.ClientResponse) -> tuple[bytes, float]:
    """The whole body of `response` and when its first byte was read (`time.perf_counter()`; 0.0
    for an empty body)."""
    first = 0.0
    chunks = []
    async for chunk in response.content.iter_any():
        if not first:
            first = time.perf_counter()
        chunks.append(chunk)
    return b"".join(chunks), first
