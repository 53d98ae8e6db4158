"""The watch stream's response on its own, driven as raw ASGI: how a stream ends.

The HTTP tests (test_shard_api, test_python_client) show a stream's frames, bookmarks and a client
going away through uvicorn; these show the ends uvicorn does not produce on demand."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
from typing import Any

import httpx
import pytest

from vwproxy.core.watch import Watcher
from vwproxy.kube.listoptions import ListOptions
from vwproxy.kube.selectors import FieldSelector, LabelSelector
from vwproxy.server import serving, watchstream
from vwproxy.testing.proxy import RunningProxy
from vwproxy.testing.shard import EmbeddedShard


def _stream(timeout_seconds: int) -> tuple[Watcher, list[str], Any]:
    watcher = Watcher(None, "", LabelSelector(), FieldSelector(), "json", lambda obj: obj.raw)
    opts = ListOptions(labels=LabelSelector(), fields=FieldSelector(), watch=True, timeout_seconds=timeout_seconds)
    stopped: list[str] = []
    response = watchstream.stream_watch(watcher, opts, ("v1", "Widget"), lambda: 1, lambda: stopped.append("stop"), 3600.0)
    return watcher, stopped, response


def test_a_stream_whose_receive_fails_ends_and_unregisters() -> None:
    """A server whose `receive` raises has lost the client: the stream ends at once (not at its
    timeout), its watcher is unregistered, and nothing is left for the loop to complain about."""
    _, stopped, response = _stream(timeout_seconds=60)
    sent: list[dict[str, Any]] = []
    unhandled: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.05)
        raise RuntimeError("the connection's state is gone")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unhandled.append(context))
        await asyncio.wait_for(response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send), 5)

    asyncio.run(run())
    assert stopped == ["stop"]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert unhandled == []


def test_a_stream_ends_its_body_at_its_timeout_with_the_frames_it_had() -> None:
    """timeoutSeconds ends the stream: its frames, then the end of the body, then unregistered."""
    watcher, stopped, response = _stream(timeout_seconds=1)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        task = asyncio.ensure_future(response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send))
        await asyncio.sleep(0.1)
        watcher.push(b'{"type":"ADDED","object":{}}\n')
        await asyncio.wait_for(task, 5)

    asyncio.run(run())
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert [m["body"] for m in bodies] == [b'{"type":"ADDED","object":{}}\n', b""]
    assert [m["more_body"] for m in bodies] == [True, False]
    assert stopped == ["stop"]


class _Connection:
    """Stands in for `serving.DirectBody`: takes chunks while `open`, refuses them otherwise."""

    def __init__(self, piece: int = 0) -> None:
        self.open = True
        self.chunks: list[bytes] = []
        self.piece = piece

    def writable(self) -> bool:
        return self.open

    def write(self, chunk: bytes) -> None:
        assert self.open, "written to while it said it was not writable"
        self.chunks.append(chunk)


def test_frames_go_straight_to_the_connection_while_it_takes_them_and_through_send_when_it_does_not() -> None:
    """A flush writes a waiting stream's frames to its connection without waking the coroutine;
    a connection that cannot take them (paused, gone) hands them to the coroutine, whose `send`
    waits for it; nothing is lost or reordered either way, and the body ends through `send`."""
    watcher, stopped, response = _stream(timeout_seconds=1)
    sent: list[dict[str, Any]] = []
    connection = _Connection()

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def frame(i: int) -> bytes:
        return b'{"type":"ADDED","object":{"i":%d}}\n' % i

    async def run() -> None:
        scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "extensions": {serving.DIRECT_BODY: connection}}
        task = asyncio.ensure_future(response(scope, receive, send))
        await asyncio.sleep(0.05)
        watcher.push(frame(1))
        watcher.push(frame(2))
        await asyncio.sleep(0.05)
        connection.open = False
        watcher.push(frame(3))
        await asyncio.sleep(0.05)
        connection.open = True
        watcher.push(frame(4))
        await asyncio.wait_for(task, 5)

    asyncio.run(run())
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert connection.chunks == [frame(1) + frame(2), frame(4)]
    assert bodies == [frame(3), b""]
    assert stopped == ["stop"]


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes | memoryview) -> None:
        self.writes.append(bytes(data))

    def writelines(self, pieces: tuple[bytes, ...]) -> None:
        self.writes.append(b"".join(pieces))

    def is_closing(self) -> bool:
        return False


class _Cycle:
    """What DirectBody reads of uvicorn's request cycle: a started chunked body, not paused."""

    def __init__(self) -> None:
        self.transport = _Transport()
        self.response_started = self.chunked_encoding = True
        self.response_complete = self.disconnected = False
        self.flow = type("Flow", (), {"write_paused": False})()


def test_a_tls_connection_is_handed_a_long_chunk_in_pieces_of_at_most_its_piece_size() -> None:
    """On TLS (`piece` set) a chunk longer than a piece goes to the transport a piece at a time,
    under one chunk header, so the TLS layer never encrypts more than a piece at once; on plain
    TCP (or a short chunk) it is one `writelines`. Either way the bytes on the wire are one
    well-formed chunk."""
    chunk = bytes(range(256)) * 40  # 10,240 bytes
    for piece, expected in ((0, 1), (4096, 5), (20_000, 1)):
        cycle = _Cycle()
        body = serving.DirectBody(cycle, piece)
        assert body.writable()
        body.write(chunk)
        writes = cycle.transport.writes
        assert len(writes) == expected, (piece, [len(w) for w in writes])
        assert b"".join(writes) == b"2800\r\n" + chunk + b"\r\n"
        if piece and expected > 1:
            assert max(len(w) for w in writes) == piece


def test_a_tls_stream_that_goes_through_send_splits_its_chunks_the_same_way() -> None:
    """When the connection cannot take frames directly, the coroutine's `send`s carry them, on TLS
    in pieces of at most the connection's piece size (each `send` waits while it is paused)."""
    watcher, _, response = _stream(timeout_seconds=1)
    sent: list[dict[str, Any]] = []
    connection = _Connection(piece=16)
    connection.open = False

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    frames = b"".join(b'{"type":"ADDED","object":{"i":%d}}\n' % i for i in range(3))

    async def run() -> None:
        scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "extensions": {serving.DIRECT_BODY: connection}}
        task = asyncio.ensure_future(response(scope, receive, send))
        await asyncio.sleep(0.05)
        for i in range(3):
            watcher.push(b'{"type":"ADDED","object":{"i":%d}}\n' % i)
        await asyncio.wait_for(task, 5)

    asyncio.run(run())
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert bodies[-1] == b"" and b"".join(bodies) == frames, bodies
    assert all(0 < len(b) <= 16 for b in bodies[:-1]) and len(bodies) - 1 == -(-len(frames) // 16), [len(b) for b in bodies]
    assert not connection.chunks


def test_a_watch_client_that_stops_reading_leaves_its_frames_in_the_watcher_not_in_the_server(shard: EmbeddedShard, api: httpx.Client) -> None:
    """A client that stops reading fills the socket; the connection then pauses, and the frames
    stay with the watcher (bounded by its limit) instead of piling up in the connection's buffer."""
    big = "x" * 200_000
    rv = api.get("/api/v1/namespaces/default/configmaps").json()["metadata"]["resourceVersion"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's sends stall soon
    path = f"/clusters/root/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
    try:
        sock.connect((shard.server.host, shard.server.port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        sock.settimeout(5)
        assert sock.recv(64).startswith(b"HTTP/1.1 200 "), "the watch started"

        for i in range(40):  # 8 MB of events
            created = api.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": f"big-{i}"}, "data": {"v": big}})
            assert created.status_code == 201, created.text

        def buffered() -> list[tuple[int, bool, int]]:
            found = []
            for o in gc.get_objects():
                cycle = o._cycle() if isinstance(o, serving.DirectBody) else None
                if cycle is not None and cycle.scope.get("query_string", b"").startswith(b"watch=true"):
                    found.append((cycle.transport.get_write_buffer_size(), cycle.flow.write_paused, o.piece))
            return found

        held = shard.server.call(buffered)
        assert len(held) == 1, held
        size, paused, piece = held[0]
        assert piece == 0, "plain TCP takes a chunk whole"
        assert paused, "the connection's writes are paused"
        assert size < 1_000_000, f"{size:,} bytes piled up in the server for a client that does not read"
    finally:
        sock.close()


def test_over_tls_a_client_that_stops_reading_is_owed_no_more_than_over_plain_tcp(proxy: RunningProxy) -> None:
    """The same client as above on `serve`'s HTTPS: the TLS connection pauses at the plain TCP
    transport's high-water mark (64 KiB), not asyncio's TLS default of 512 KiB, which let a
    thousand watch streams hold ~0.5 GB in the server."""
    big = "x" * 200_000
    with proxy.client() as front:
        api = "/clusters/root/api/v1/namespaces/default/configmaps"
        rv = front.get(api).json()["metadata"]["resourceVersion"]
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        trust = ssl.create_default_context(cafile=proxy.ca_file)
        sock = trust.wrap_socket(raw, server_hostname="127.0.0.1")
        token = proxy.token
        try:
            sock.settimeout(5)
            sock.connect((proxy.server.host, proxy.server.port))
            sock.sendall(f"GET {api}?watch=true&resourceVersion={rv} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
            assert sock.recv(64).startswith(b"HTTP/1.1 200 "), "the watch started"
            for i in range(40):  # 8 MB of events
                created = front.post(api, json={"metadata": {"name": f"big-{i}"}, "data": {"v": big}})
                assert created.status_code == 201, created.text

            def buffered() -> list[tuple[int, int, bool, int]]:
                found = []
                for o in gc.get_objects():
                    cycle = o._cycle() if isinstance(o, serving.DirectBody) else None
                    if cycle is not None and cycle.scope.get("query_string", b"").startswith(b"watch=true"):
                        found.append((cycle.transport.get_write_buffer_size(), cycle.transport.get_write_buffer_limits()[1], cycle.flow.write_paused, o.piece))
                return found

            held = proxy.server.call(buffered)
            assert len(held) == 1, held
            size, high, paused, piece = held[0]
            assert piece == serving.TLS_PIECE, "the TLS connection's writes go in pieces"
            assert paused, "the connection's writes are paused"
            assert high == 64 * 1024, f"the TLS connection pauses at {high:,} bytes"
            assert size < 64 * 1024 + 2 * 210_000, f"{size:,} bytes piled up in the server for a client that does not read"
        finally:
            sock.close()


def test_a_request_leaves_no_reference_cycle_for_the_collector(shard: EmbeddedShard, api: httpx.Client) -> None:
    """Every request's state (uvicorn's cycle, its scope and what the scope holds) goes when the
    request does, by reference counting: a cycle per request would leave thousands a second to
    the cyclic collector, whose full passes then stall the event loop for tens of milliseconds."""
    assert api.get("/api/v1/namespaces/default/configmaps").status_code == 200
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            assert api.get("/api/v1/namespaces/default/configmaps").status_code == 200
            assert api.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"generateName": "c-"}}).status_code == 201
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = sorted({type(o).__name__ for o in gc.garbage if type(o).__module__.startswith(("uvicorn", "vwproxy", "starlette"))})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == [], f"request state left to the cyclic collector: {left}"


def test_an_ended_watch_leaves_nothing_for_the_collector(shard: EmbeddedShard, api: httpx.Client) -> None:
    """A watch that ended (its timeout) is freed by reference counting: its watcher, its stream's
    closures and coroutines are not left in reference cycles for the cyclic collector."""
    rv = api.get("/api/v1/namespaces/default/configmaps").json()["metadata"]["resourceVersion"]
    gc.collect()
    gc.disable()
    try:
        for i in range(3):
            with api.stream("GET", "/api/v1/namespaces/default/configmaps", params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"}) as r:
                assert r.status_code == 200
                api.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": f"w-{i}"}})
                assert b'"ADDED"' in b"".join(r.iter_bytes())  # to the end of the stream
            rv = api.get("/api/v1/namespaces/default/configmaps").json()["metadata"]["resourceVersion"]
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = sorted({getattr(o, "__qualname__", type(o).__name__) for o in gc.garbage
                       if type(o).__name__ == "Watcher" or "stream_watch" in getattr(o, "__qualname__", "")})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == [], f"an ended watch left to the cyclic collector: {left}"


def test_a_stream_whose_connection_write_fails_ends_and_the_others_go_on(caplog: pytest.LogCaptureFixture) -> None:
    """A write to one connection that raises closes that watcher (its client re-watches from the
    last RV it got) and ends its stream; the streams flushed after it in the same turn are written."""
    broken_watcher, broken_stopped, broken = _stream(timeout_seconds=5)
    good_watcher, _, good = _stream(timeout_seconds=1)
    broken_connection, good_connection = _Connection(), _Connection()

    def refuse(chunk: bytes) -> None:
        raise ConnectionResetError("gone mid-write")

    broken_connection.write = refuse  # type: ignore[method-assign]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        def scope(connection: _Connection) -> dict[str, Any]:
            return {"type": "http", "asgi": {"spec_version": "2.3"}, "extensions": {serving.DIRECT_BODY: connection}}

        broken_task = asyncio.ensure_future(broken(scope(broken_connection), receive, send))
        good_task = asyncio.ensure_future(good(scope(good_connection), receive, send))
        await asyncio.sleep(0.05)
        broken_watcher.push(b'{"type":"ADDED","object":{"i":1}}\n')
        good_watcher.push(b'{"type":"ADDED","object":{"i":1}}\n')
        await asyncio.wait_for(broken_task, 2)  # ended long before its 5 s timeout
        await asyncio.wait_for(good_task, 5)

    with caplog.at_level("ERROR", logger="vwproxy.server.watchstream"):
        asyncio.run(run())
    assert broken_stopped == ["stop"]
    assert broken_watcher.closed == "the watch stream's write failed"
    assert good_connection.chunks == [b'{"type":"ADDED","object":{"i":1}}\n']
    assert "flushing a watch stream failed" in caplog.text
