"""A static bearer token in front of an ASGI app, so an embedded shard can stand in for a kube backend.

A second `vwproxy shard --token …` process behaves like an external cluster that wants
credentials: requests without `Authorization: Bearer <token>` get kube-apiserver's 401 `Status`.
The health endpoints stay open, as kube-apiserver's are to anonymous probes.
"""

from __future__ import annotations

import hmac

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from vwproxy.kube.errors import unauthorized

OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz"})

_UNAUTHORIZED_BODY = orjson.dumps(unauthorized("Unauthorized").to_status())


def _presented_token(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            scheme, _, token = bytes(value).partition(b" ")
            if scheme.lower() == b"bearer":
                return token.strip()
            return None
    return None


def require_bearer_token(app: ASGIApp, token: str) -> ASGIApp:
    """`app` behind `Authorization: Bearer <token>` (compared in constant time); health paths open."""
    if not token or token != token.strip():
        raise ValueError("the bearer token must be non-empty and have no surrounding whitespace")
    expected = token.encode("utf-8")

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            await app(scope, receive, send)
            return
        presented = _presented_token(scope)
        # compare_digest on every request, even without a token, so timing says nothing.
        ok = hmac.compare_digest(presented if presented is not None else b"", expected) and presented is not None
        if ok:
            await app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_UNAUTHORIZED_BODY)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": _UNAUTHORIZED_BODY})

    return guarded
