"""Idle and trickling connections (issue 12): an idle keep-alive connection outlives a normal
client gap (uvicorn's own default would close it after 5 s), a client trickling its request
head or sending nothing is disconnected after the request-head deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from vwproxy.server import serving
from vwproxy.testing.server import ServerThread

pytestmark = pytest.mark.timeout(30)

# Longer than uvicorn's 5 s keep-alive default, shorter than any client's idle timeout.
CLIENT_GAP_SECONDS = 6.0
# The deadline the test server gets for a request head (production: serving.REQUEST_HEAD_SECONDS).
HEAD_SECONDS = 1.0
GET = b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n"


async def ping(request: Request) -> PlainTextResponse:
    return PlainTextResponse("pong")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    running = ServerThread(Starlette(routes=[Route("/ping", ping)]), request_head_seconds=HEAD_SECONDS).start()
    yield running
    running.stop()


def connect(server: ServerThread) -> socket.socket:
    sock = socket.create_connection((server.host, server.port))
    sock.settimeout(CLIENT_GAP_SECONDS + 5)
    return sock


def ask(sock: socket.socket) -> bytes:
    """Send one GET on `sock` and read its whole answer (head and the 4-byte body)."""
    sock.sendall(GET)
    answer = b""
    while not answer.endswith(b"pong"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        answer += chunk
    return answer


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` (EOF) within `seconds`."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_keep_alive_is_deliberate() -> None:
    assert serving.KEEP_ALIVE_SECONDS > 90  # client-go drops idle connections after 90 s
    assert serving.REQUEST_HEAD_SECONDS <= 60


def test_idle_connection_survives_a_client_gap_and_trickling_ones_are_closed(server: ServerThread) -> None:
    results: dict[str, object] = {}

    def trickle() -> None:
        sock = connect(server)
        started = time.monotonic()
        try:
            for byte in GET[:-4]:  # never finishes its head
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass
        results["trickle"] = closed_within(sock, HEAD_SECONDS * 2)
        results["trickle_seconds"] = time.monotonic() - started
        sock.close()

    def silent() -> None:
        sock = connect(server)
        results["silent"] = closed_within(sock, HEAD_SECONDS * 3)
        sock.close()

    threads = [threading.Thread(target=trickle), threading.Thread(target=silent)]
    for thread in threads:
        thread.start()
    idle = connect(server)
    assert ask(idle).startswith(b"HTTP/1.1 200")
    time.sleep(CLIENT_GAP_SECONDS)
    assert ask(idle).startswith(b"HTTP/1.1 200"), "the idle keep-alive connection was closed"
    idle.close()
    for thread in threads:
        thread.join()
    assert results["silent"] is True
    assert results["trickle"] is True
    assert float(results["trickle_seconds"]) < HEAD_SECONDS + 2.5  # type: ignore[arg-type]
