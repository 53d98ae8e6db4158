"""Kubernetes `Status` errors: every failure vwproxy reports on the wire is one of these.

StatusError
 ├─ reason BadRequest (400)        malformed path, query, selector or body
 ├─ reason Unauthorized (401) / Forbidden (403)
 ├─ reason NotFound (404)          object, resource or logical cluster missing
 ├─ reason MethodNotAllowed (405)  verb not served on that path
 ├─ reason NotAcceptable (406) / UnsupportedMediaType (415)
 ├─ reason AlreadyExists / Conflict (409)
 ├─ reason Expired / Gone (410)    resourceVersion or continue token too old
 ├─ reason Invalid (422)           object fails validation; details.causes lists each field
 ├─ reason Timeout (504)           e.g. resourceVersion newer than the store
 └─ reason InternalError (500)     a bug; the wire never carries a stack trace
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cause:
    """One entry of `details.causes`: which field is wrong and why."""

    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueForbidden, ...
    message: str
    field: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"reason": self.reason, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


@dataclass
class StatusError(Exception):
    """A failure that maps to one Kubernetes `Status` object."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    list_continue: str = ""  # Status.metadata.continue, for an expired continue token

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def to_status(self) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        if self.list_continue:
            meta["continue"] = self.list_continue
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": meta,
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


def _details(name: str = "", group: str = "", kind: str = "", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if name:
        out["name"] = name
    if group:
        out["group"] = group
    if kind:
        out["kind"] = kind
    out.update({k: v for k, v in extra.items() if v})
    return out


def qualified(resource: str, group: str) -> str:
    """`configmaps`, `widgets.example.dev`: how Kubernetes names a resource in messages."""
    return f"{resource}.{group}" if group else resource


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def unauthorized(message: str = "Unauthorized") -> StatusError:
    return StatusError(401, "Unauthorized", message)


def forbidden(message: str, resource: str = "", group: str = "", name: str = "") -> StatusError:
    return StatusError(403, "Forbidden", message, _details(name=name, group=group, kind=resource))


def not_found(resource: str, name: str, group: str = "") -> StatusError:
    return StatusError(
        404,
        "NotFound",
        f'{qualified(resource, group)} "{name}" not found',
        _details(name=name, group=group, kind=resource),
    )


def path_not_found(message: str = "the server could not find the requested resource") -> StatusError:
    return StatusError(404, "NotFound", message, {})


def workspace_not_found(path: str) -> StatusError:
    return StatusError(404, "NotFound", f'workspace "{path}" not found', _details(name=path, group="tenancy.kcp.io", kind="workspaces"))


def logical_cluster_not_found(cluster: str) -> StatusError:
    return StatusError(404, "NotFound", f'logical cluster "{cluster}" not found', _details(name=cluster, group="core.kcp.io", kind="logicalclusters"))


def method_not_supported(message: str) -> StatusError:
    """405 for an HTTP method the path does not take (`method_not_allowed` names a verb on a resource)."""
    return StatusError(405, "MethodNotAllowed", message)


def method_not_allowed(verb: str, resource: str, group: str, where: str = "") -> StatusError:
    suffix = f" {where}" if where else ""
    return StatusError(
        405,
        "MethodNotAllowed",
        f'{verb} is not supported on resources of kind "{qualified(resource, group)}"{suffix}',
        _details(group=group, kind=resource),
    )


def not_acceptable(message: str) -> StatusError:
    return StatusError(406, "NotAcceptable", message)


def unsupported_media_type(content_type: str) -> StatusError:
    return StatusError(
        415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json (got "{content_type}")'
    )


def unsupported_patch(message: str) -> StatusError:
    """415 for a patch type the resource does not take (strategic merge on a custom resource)."""
    return StatusError(415, "UnsupportedMediaType", message)


def request_entity_too_large(message: str) -> StatusError:
    return StatusError(413, "RequestEntityTooLarge", message)


def already_exists(resource: str, name: str, group: str = "") -> StatusError:
    return StatusError(
        409,
        "AlreadyExists",
        f'{qualified(resource, group)} "{name}" already exists',
        _details(name=name, group=group, kind=resource),
    )


def conflict(resource: str, name: str, group: str = "", why: str = "") -> StatusError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return StatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}',
        _details(name=name, group=group, kind=resource),
    )


def apply_conflict(message: str, causes: list[dict[str, Any]]) -> StatusError:
    """409 of server-side apply: the fields and managers in conflict."""
    return StatusError(409, "Conflict", message, {"causes": causes})


def expired(message: str, list_continue: str = "") -> StatusError:
    return StatusError(410, "Expired", message, list_continue=list_continue)


def invalid(kind: str, name: str, causes: list[Cause], group: str = "") -> StatusError:
    summary = ", ".join(
        f"{c.field}: {c.message}" if c.field else c.message for c in causes
    ) or "invalid object"
    return StatusError(
        422,
        "Invalid",
        f'{kind}.{group} "{name}" is invalid: {summary}' if group else f'{kind} "{name}" is invalid: {summary}',
        _details(name=name, group=group, kind=kind, causes=[c.to_dict() for c in causes]),
    )


def invalid_request(message: str) -> StatusError:
    """422 for a request that cannot be carried out as asked (a patch that does not apply)."""
    return StatusError(422, "Invalid", message)


def too_large_resource_version(requested: int, current: int) -> StatusError:
    return StatusError(
        504,
        "Timeout",
        f"Too large resource version: {requested}, current: {current}",
        {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1},
    )


def timeout(message: str) -> StatusError:
    return StatusError(504, "Timeout", message, {"retryAfterSeconds": 1})


def from_status(status: dict[str, Any], fallback_code: int = 502) -> StatusError:
    """A `Status` another server sent (a backend's watch ERROR event, a failed list) as our error."""
    code = status.get("code")
    return StatusError(
        code if isinstance(code, int) and 400 <= code < 600 else fallback_code,
        str(status.get("reason") or "BackendError"),
        str(status.get("message") or "the backend answered an error"),
    )


def internal_error(message: str = "an internal error occurred; see the server log") -> StatusError:
    return StatusError(500, "InternalError", message)


def service_unavailable(message: str) -> StatusError:
    return StatusError(503, "ServiceUnavailable", message)


def success_status(name: str, kind: str, uid: str = "", group: str = "") -> dict[str, Any]:
    """The `Status` a delete answers with when the object is gone at once."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": _details(name=name, group=group, kind=kind, uid=uid),
    }
