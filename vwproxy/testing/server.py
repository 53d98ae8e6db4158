"""Run an ASGI app on loopback in a background thread: real HTTP, for fixtures and tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

import uvicorn

from vwproxy.server import serving

# How long a fixture waits for the server to accept connections before failing loudly.
STARTUP_TIMEOUT_SECONDS = 10.0

T = TypeVar("T")


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1 (a free port unless given) until `stop()`."""

    def __init__(
        self, app: Any = None, host: str = "127.0.0.1", port: int = 0, app_factory: Callable[[str], Any] | None = None,
        request_head_seconds: float = serving.REQUEST_HEAD_SECONDS, tls: tuple[str, str] | None = None,
    ) -> None:
        """Serve `app`, or the app `app_factory(url)` builds once the URL (the bound port) is known,
        with `vwproxy serve`'s connection handling (`request_head_seconds` shortens its deadline);
        over HTTPS with `tls` = (certificate file, key file)."""
        self.scheme = "https" if tls else "http"
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it Nagle and delayed ACKs cost ~40 ms per request on a kept-alive connection.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        if app_factory is not None:
            app = app_factory(self.url)
        self.app = app
        config = serving.config(
            app, host, self.port, loop="asyncio", http=serving.guarded_protocol(request_head_seconds), log_level="warning", timeout_graceful_shutdown=1,
            ssl_certfile=tls[0] if tls else None, ssl_keyfile=tls[1] if tls else None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name=f"vwproxy-server-{self.port}", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._server.serve(sockets=[self._sock]))
        loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)  # uvicorn offers no start signal to wait on; this loop is bounded
        if not self._server.started:
            raise RuntimeError(f"server on {self.url} did not start")
        return self

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's event loop thread (the only thread that may touch its state)."""
        assert self._loop is not None

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(STARTUP_TIMEOUT_SECONDS)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(STARTUP_TIMEOUT_SECONDS)

    def stop(self) -> bool:
        """Stop serving; True once the server thread has ended (its app may then be torn down)."""
        self._server.should_exit = True
        self._thread.join(STARTUP_TIMEOUT_SECONDS)
        if self._thread.is_alive():
            # Open streams outlived the graceful period: stop waiting for them.
            self._server.force_exit = True
            self._thread.join(STARTUP_TIMEOUT_SECONDS)
        self._sock.close()
        return not self._thread.is_alive()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
