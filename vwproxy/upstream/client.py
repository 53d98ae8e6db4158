"""The HTTP client to one kube backend: keep-alive, TLS, the backend's own credentials.

`BackendClient.request` sends a request and reads the whole answer; `BackendClient.stream`
answers as soon as the headers arrive and hands out the body as lines (watches) or chunks (big
lists). Whatever the backend answers (2xx, 404, 409 …) comes back as a response for the caller to
judge; only a failure to talk to the backend raises, as a `StatusError`:

- 503 ServiceUnavailable `backend <name> is unreachable: …` (refused, reset, TLS failure, no
  connection within the connect timeout, a broken or undecodable body);
- 504 Timeout `backend <name> did not answer within … s` (the read or write timeout).

No httpx exception leaves this module.

Only the request headers that shape the answer are forwarded (`FORWARDED_HEADERS`): the caller's
`Authorization` and `Impersonate-*` never reach the backend, which sees vwproxy's credentials for
it and nothing else, so a caller can never borrow the proxy's privileges on a backend.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import ssl
import string
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import NoReturn
from urllib.parse import quote, unquote, urlencode

import httpx

from vwproxy import __version__
from vwproxy.kube import errors
from vwproxy.kube.errors import StatusError, bad_request, service_unavailable
from vwproxy.upstream.backends import Backend, BackendConfigError, tls_context
from vwproxy.upstream.faults import EXPIRED_WATCH_EVENT, Faults

# A backend on the same LAN or loopback accepts a TCP+TLS connection in milliseconds; one that has
# not after 5 s is down or blackholed, and failing fast lets that backend's workspaces be marked
# stale while the other backends go on (DESIGN.md "One bad backend never blocks the rest").
CONNECT_TIMEOUT_SECONDS = 5.0
# Longest silence within a non-watch answer: a working apiserver answers and streams its
# answer with gaps far shorter; a hung one (a stopped process, socket open) would otherwise hold
# the caller for kube's 60 s request timeout. Past it the caller gets a 504.
READ_TIMEOUT_SECONDS = 10.0
# A watch's response head (status and headers) comes at once from a working apiserver; only
# the body may then stay quiet. A backend that does not send the head within this is hung.
RESPONSE_HEAD_SECONDS = 10.0
# A liveness probe (`limit=1`, served from the apiserver's cache) answers in milliseconds.
PROBE_TIMEOUT_SECONDS = 2.0
# Sending a request body (at most 3 MiB, kube-apiserver's limit) takes well under a second on
# any working link; 30 s only trips on a backend that stopped reading.
WRITE_TIMEOUT_SECONDS = 30.0
# Watches have no read timeout: a quiet watch is healthy (bookmarks may be minutes apart). A
# backend host that vanishes without a reset is caught by TCP keepalive instead (below), and the
# reflector above re-watches on its own schedule.
WATCH_READ_TIMEOUT_SECONDS: float | None = None
# TCP keepalive on every connection: probe after 30 s idle, every 10 s, give up after 3 misses,
# so a dead peer ends an otherwise timeout-free watch within about a minute.
KEEPALIVE_IDLE_SECONDS = 30
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_PROBES = 3
# Idle keep-alive connections kept per backend: enough for the reflectors' and writers'
# concurrency without holding hundreds of sockets. The total is unbounded because every watch
# holds a connection for its lifetime and must never queue behind another.
MAX_KEEPALIVE_CONNECTIONS = 32
KEEPALIVE_EXPIRY_SECONDS = 60.0
# One watch event or list line is one object (etcd caps a value at 1.5 MiB; kube-apiserver a
# request at 3 MiB); a "line" past 16 MiB is a backend answering garbage, not a big object.
MAX_LINE_BYTES = 16 * 1024 * 1024

# Request headers that shape the backend's answer. Everything else — the caller's Authorization,
# Impersonate-*, cookies, X-Forwarded-*, hop-by-hop headers — stays behind.
FORWARDED_HEADERS = frozenset({"accept", "content-type", "user-agent"})
# Response headers that describe the connection or the encoded body, not the answer: httpx has
# already removed the transfer and content encodings, so relaying these would be wrong.
_DROPPED_RESPONSE_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length", "content-encoding"}
)
DEFAULT_USER_AGENT = f"vwproxy/{__version__}"

Query = Sequence[tuple[str, str]] | str
# A query string passed as text is already encoded; these stay as they are, anything else
# (spaces, non-ASCII) is percent-encoded. '#' would end the URL's query.
_QUERY_SAFE = "".join(c for c in string.punctuation if c != "#")
_PATH_SAFE = "/:@!$&'()*+,;=%~-._"


@dataclass(frozen=True)
class UpstreamResponse:
    """A backend's complete answer. Header names are lowercase; repeated headers are joined with ', '."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class UpstreamStream:
    """A backend's answer whose body is still arriving (a watch, a big list); close it with `aclose`."""

    def __init__(self, client: BackendClient, response: httpx.Response) -> None:
        self._client = client
        self._response = response
        self._closed = False
        self.status = response.status_code
        self.headers = _response_headers(response.headers)

    async def lines(self) -> AsyncIterator[bytes]:
        """Each non-empty line of the body, without its newline (a watch event, per kube's framing)."""
        pieces: list[bytes] = []
        pending = 0
        try:
            async for chunk in self._response.aiter_bytes():
                start = 0
                while (end := chunk.find(b"\n", start)) >= 0:
                    piece = chunk[start:end]
                    start = end + 1
                    if pieces:
                        pieces.append(piece)
                        piece = b"".join(pieces)
                        pieces, pending = [], 0
                    piece = piece.rstrip(b"\r")
                    if piece.strip():
                        yield piece
                if start < len(chunk):
                    pieces.append(chunk[start:])
                    pending += len(chunk) - start
                    if pending > MAX_LINE_BYTES:
                        raise service_unavailable(f"backend {self._client.name} sent a line longer than {MAX_LINE_BYTES} bytes")
        except (httpx.HTTPError, httpx.StreamError) as exc:
            if self._closed:
                return
            self._client._raise(exc)
        tail = b"".join(pieces).rstrip(b"\r")
        if tail.strip():
            yield tail

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, decoded (gzip removed), in the sizes the network delivers."""
        try:
            async for chunk in self._response.aiter_bytes():
                if chunk:
                    yield chunk
        except (httpx.HTTPError, httpx.StreamError) as exc:
            if self._closed:
                return
            self._client._raise(exc)

    async def read(self) -> bytes:
        """The whole remaining body (for an error `Status` answer; watches never end)."""
        try:
            return await self._response.aread()
        except (httpx.HTTPError, httpx.StreamError) as exc:
            self._client._raise(exc)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._response.aclose()
        except (httpx.HTTPError, httpx.StreamError):
            pass  # closing a broken connection; nothing left to report

    async def __aenter__(self) -> UpstreamStream:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


class BackendClient:
    """One kept-alive HTTP client per `Backend`, presenting the backend's own credentials."""

    def __init__(self, backend: Backend, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.backend = backend
        self.name = backend.name
        base = httpx.URL(backend.url)
        self._base = base
        self._base_path = base.raw_path.split(b"?", 1)[0].rstrip(b"/")
        self.base_path = self._base_path.decode()  # the backend URL's path, e.g. /clusters/root:org:ws
        if transport is None:
            try:
                ctx: ssl.SSLContext | bool = tls_context(backend) if base.scheme == "https" else False
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise BackendConfigError(f"backend {backend.name}: TLS files unusable: {exc.__class__.__name__}") from None
            transport = httpx.AsyncHTTPTransport(
                verify=ctx,
                trust_env=False,
                limits=httpx.Limits(
                    max_connections=None, max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS, keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS
                ),
                socket_options=_keepalive_options(),
            )
        headers = {"User-Agent": DEFAULT_USER_AGENT}
        if backend.token:
            headers["Authorization"] = f"Bearer {backend.token}"
        self._client = httpx.AsyncClient(
            transport=transport,
            headers=headers,
            timeout=_timeout(READ_TIMEOUT_SECONDS),
            follow_redirects=False,
            trust_env=False,
        )
        self._closed = False
        # Faults a test switches on through the admin API (`vwproxy/upstream/faults.py`).
        self.faults = Faults(backend.name)

    # A client scoped to one logical cluster of a shard-like backend (`scoped`) knows the
    # backend's own client, whose `/clusters/*` wildcard covers every cluster at once.
    shard: BackendClient | None = None
    cluster: str = ""

    def __repr__(self) -> str:
        return f"BackendClient({self.name!r}, {self.backend.url!r}{', ' + repr(self.cluster) if self.cluster else ''})"

    def scoped(self, cluster: str) -> BackendClient:
        """A client for `<this backend>/clusters/<cluster>`: one logical cluster of a shard-like
        backend (the embedded shard of a control plane, a kcp shard), sharing this client's
        connections and faults."""
        scoped = copy.copy(self)
        scoped._base_path = self._base_path + b"/clusters" + _checked_path("/" + cluster)
        scoped.base_path = scoped._base_path.decode()
        scoped.shard = self
        scoped.cluster = cluster
        return scoped

    async def request(
        self, method: str, path: str, query: Query = (), headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> UpstreamResponse:
        """Send one request to `<backend URL path><path>?<query>` and read the whole answer."""
        request = self._build(method, path, query, headers, body, _timeout(READ_TIMEOUT_SECONDS))
        if self.faults.active:
            await self.faults.before_request(READ_TIMEOUT_SECONDS)
        try:
            response = await self._client.send(request)
        except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL) as exc:
            self._raise(exc)
        return UpstreamResponse(response.status_code, _response_headers(response.headers), response.content)

    async def stream(
        self,
        method: str,
        path: str,
        query: Query = (),
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        *,
        read_timeout: float | None = WATCH_READ_TIMEOUT_SECONDS,
    ) -> UpstreamStream:
        """Send one request and return as soon as the answer's headers arrive (no read timeout by default)."""
        request = self._build(method, path, query, headers, body, _timeout(read_timeout))
        try:
            async with asyncio.timeout(RESPONSE_HEAD_SECONDS):
                if self.faults.active:
                    await self.faults.before_request(RESPONSE_HEAD_SECONDS)
                    if self.faults.take_expired_watch(request.url.params.get("watch") in ("true", "1")):
                        expired = httpx.Response(200, headers={"content-type": "application/json"}, content=EXPIRED_WATCH_EVENT)
                        return UpstreamStream(self, expired)
                response = await self._client.send(request, stream=True)
        except TimeoutError:
            raise errors.timeout(f"backend {self.name} did not answer in time (no response head within {RESPONSE_HEAD_SECONDS:g} s)") from None
        except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL) as exc:
            self._raise(exc)
        stream = UpstreamStream(self, response)
        self.faults.track(stream)
        return stream

    async def drop_watches(self) -> int:
        """The drop-watches fault: cut every open stream to this backend now."""
        return await self.faults.drop_watches(lambda stream: stream.aclose())

    async def probe(self, path: str) -> int:
        """A cheap read of `path` (one item) that must answer within PROBE_TIMEOUT_SECONDS; a
        StatusError says the backend is hung or down (any HTTP answer means it is alive, and its
        status is returned for the caller to judge)."""
        request = self._build("GET", path, [("limit", "1")], {"accept": "application/json"}, b"", _timeout(PROBE_TIMEOUT_SECONDS))
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                if self.faults.active:
                    await self.faults.before_request(PROBE_TIMEOUT_SECONDS)
                response = await self._client.send(request)
        except TimeoutError:
            raise errors.timeout(f"backend {self.name} did not answer a probe within {PROBE_TIMEOUT_SECONDS:g} s") from None
        except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL) as exc:
            self._raise(exc)
        await response.aclose()
        return response.status_code

    async def aclose(self) -> None:
        self._closed = True
        await self._client.aclose()

    async def __aenter__(self) -> BackendClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    # --- internals ---------------------------------------------------------------------------

    def _build(self, method: str, path: str, query: Query, headers: Mapping[str, str] | None, body: bytes, timeout: httpx.Timeout) -> httpx.Request:
        if self._closed:
            raise service_unavailable(f"backend {self.name} is unreachable: its client was closed")
        raw = self._base_path + _checked_path(path)
        encoded = _encode_query(query)
        if encoded:
            raw += b"?" + encoded
        forwarded = {k: v for k, v in (headers or {}).items() if k.lower() in FORWARDED_HEADERS}
        try:
            return self._client.build_request(
                method.upper(), self._base.copy_with(raw_path=raw), headers=forwarded, content=body or None, timeout=timeout
            )
        except (httpx.InvalidURL, ValueError, TypeError):
            raise bad_request(f"cannot build a request to backend {self.name} for path {path!r}") from None

    def _raise(self, exc: Exception) -> NoReturn:
        """Turn an httpx failure into the Status a caller of the proxy should see."""
        raise self._error(exc) from None

    def _error(self, exc: Exception) -> StatusError:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout):
            return service_unavailable(f"backend {self.name} is unreachable: no connection within {CONNECT_TIMEOUT_SECONDS:g} s")
        if isinstance(exc, httpx.PoolTimeout):
            return service_unavailable(f"backend {self.name} is unreachable: no free connection within {CONNECT_TIMEOUT_SECONDS:g} s")
        if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
            phase = "read" if isinstance(exc, httpx.ReadTimeout) else "write"
            return errors.timeout(f"backend {self.name} did not answer in time ({phase} timeout)")
        if isinstance(exc, httpx.DecodingError):
            return service_unavailable(f"backend {self.name} sent a body that cannot be decoded: {reason}")
        if isinstance(exc, httpx.InvalidURL):
            return bad_request(f"cannot build a request to backend {self.name}: {reason}")
        if isinstance(exc, httpx.StreamError):
            return service_unavailable(f"backend {self.name}: the answer's stream is no longer readable ({type(exc).__name__})")
        return service_unavailable(f"backend {self.name} is unreachable: {reason}")


def _timeout(read: float | None) -> httpx.Timeout:
    return httpx.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=read, write=WRITE_TIMEOUT_SECONDS, pool=CONNECT_TIMEOUT_SECONDS)


def _keepalive_options() -> list[tuple[int, int, int]]:
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_SECONDS), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_SECONDS), ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
        if hasattr(socket, name):  # Linux; macOS lacks TCP_KEEPIDLE
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def _checked_path(path: str) -> bytes:
    """`path` as raw URL bytes, refusing anything that could climb out of the backend's URL path.

    A backend URL ending in `/clusters/root:org:ws` confines requests to one workspace; a `..`
    segment (even percent-encoded) would address another, so it is a 400, never sent.
    """
    if not path.startswith("/") or "?" in path or "#" in path:
        raise bad_request(f"invalid backend request path {path!r}")
    if any(segment in (".", "..") for segment in unquote(path).split("/")):
        raise bad_request(f"invalid backend request path {path!r}: '.' and '..' segments are not allowed")
    return quote(path, safe=_PATH_SAFE).encode("ascii")


def _encode_query(query: Query) -> bytes:
    if isinstance(query, str):
        return quote(query.lstrip("?"), safe=_QUERY_SAFE).encode("ascii")
    return urlencode(list(query), quote_via=quote).encode("ascii")


def _response_headers(headers: httpx.Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.multi_items():
        key = name.lower()
        if key in _DROPPED_RESPONSE_HEADERS:
            continue
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out
