"""HTTP helpers shared by the apps: Status responses, body decoding, query reading."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
import yaml

# libyaml's safe loader where built in (about 10x the pure-Python one), else the pure one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vwproxy.kube import bodies, errors, protobuf

log = logging.getLogger(__name__)

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
# kube-apiserver refuses bodies over 3 MiB (its maxRequestBodyBytes).
MAX_BODY_BYTES = 3 * 1024 * 1024


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None, media_type: str = JSON) -> Response:
    return Response(body, status_code=status, media_type=media_type, headers=headers)


def object_response(obj: Any, status: int = 200) -> Response:
    return json_response(orjson.dumps(obj), status)


def list_body(head: bytes, items: Iterable[bytes]) -> bytes:
    """`head`, the items separated by commas, and `]}`, copied into one bytes object once.

    (`head + b",".join(items) + b"]}"` copies a multi-megabyte body twice more.)
    """
    parts = [head]
    for item in items:
        parts.append(item)
        parts.append(b",")
    if len(parts) > 1:
        parts.pop()
    parts.append(b"]}")
    return b"".join(parts)


def status_response(exc: errors.StatusError) -> Response:
    return json_response(orjson.dumps(exc.to_status()), exc.code, exc.headers or None)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", JSON).split(";", 1)[0].strip().lower() or JSON


async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise errors.request_entity_too_large("the request body is larger than 3 MiB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise errors.request_entity_too_large("the request body is larger than 3 MiB")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_object(body: bytes, content_type: str, allow_deep: bool = False) -> dict[str, Any]:
    """A JSON (or YAML) object body; anything else is a 400 or 415 Status.

    YAML is copied into plain JSON values under the decoded-size budget (aliases expanded as
    stored). An object nested past `bodies.MAX_OBJECT_DEPTH` is a 400 unless `allow_deep`: the
    shard then prunes what its schema does not know and checks the depth itself.
    """
    if content_type == PROTOBUF:
        return protobuf.decode(body)
    if content_type not in (JSON, YAML, "application/x-yaml", "text/yaml", "*/*"):
        raise errors.unsupported_media_type(content_type)
    if not body.strip():
        raise errors.bad_request("the request body is empty; an object is required")
    if content_type == JSON or content_type == "*/*":
        obj = bodies.loads_json(body)
    else:
        if bodies.yaml_nesting(body) > bodies.MAX_YAML_NESTING:
            raise bodies.too_deep(bodies.MAX_YAML_NESTING)
        try:
            loaded = yaml.load(body, Loader=_LOADER)
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
            raise errors.bad_request(f"the object provided is unrecognized or malformed: {exc}") from None
        obj = bodies.plain_json(loaded)
    if not isinstance(obj, dict):
        raise errors.bad_request("the object provided is unrecognized or malformed: the body must be a JSON object")
    if not allow_deep:
        bodies.require_depth(obj)
    return obj


def query(request: Request) -> dict[str, str]:
    return dict(request.query_params)


class StatusErrors:
    """ASGI middleware: a `StatusError` raised while handling a request becomes its `Status`
    response, anything else a logged 500 `Status`, as long as no response has started."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except errors.StatusError as exc:
            if started:
                raise
            await status_response(exc)(scope, receive, send)
        except RecursionError:
            # Only input nested past what a recursive rule walks gets here; it is the client's.
            if started:
                raise
            log.warning("%s %s: the request nests too deeply to process", scope.get("method"), scope.get("path"))
            await status_response(bodies.too_deep())(scope, receive, send)
        except Exception:
            if started:
                raise
            log.exception("unhandled error serving %s %s", scope.get("method"), scope.get("path"))
            await status_response(errors.internal_error())(scope, receive, send)
