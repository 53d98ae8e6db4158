"""List and watch query parameters, validated as kube-apiserver validates ListOptions.

Errors in combinations (e.g. `resourceVersionMatch` without `resourceVersion`) are 422 Invalid
of kind `ListOptions` in group `meta.k8s.io`, as Kubernetes answers; unparseable values are
400 BadRequest. Unknown parameters are ignored, as the reference asks.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, replace

import orjson

from vwproxy.kube import errors
from vwproxy.kube.errors import Cause
from vwproxy.kube.selectors import FieldSelector, LabelSelector

NOT_OLDER_THAN = "NotOlderThan"
EXACT = "Exact"

CONTINUE_EXPIRED_MESSAGE = (
    "The provided continue parameter is too old to display a consistent list result. You can start "
    "a new list without the continue parameter, or use the continue token in this response to "
    "retrieve the remainder of the results. Continuing with the provided token results in an "
    "inconsistent list - objects that were created, modified, or deleted between the time the "
    "first chunk was returned and now may show up in the list."
)


@dataclass(frozen=True)
class ListOptions:
    """What a list or watch asks for."""

    labels: LabelSelector
    fields: FieldSelector
    resource_version: str = ""  # "" (most recent), "0" (any) or a decimal revision
    match: str = ""  # "", NotOlderThan, Exact
    limit: int = 0
    continue_token: str = ""
    watch: bool = False
    allow_bookmarks: bool = False
    send_initial_events: bool | None = None
    timeout_seconds: int | None = None

    @property
    def rv_number(self) -> int:
        return int(self.resource_version) if self.resource_version else 0


def _bool(params: Mapping[str, str], key: str) -> bool | None:
    raw = params.get(key)
    if raw is None:
        return None
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "t", "yes", "y", "on"):
        return True
    if lowered in ("false", "0", "f", "no", "n", "off", ""):
        return False
    raise errors.bad_request(f'invalid value for {key}: "{raw}" is not a boolean')


def _int(params: Mapping[str, str], key: str) -> int | None:
    raw = params.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise errors.bad_request(f'invalid value for {key}: "{raw}" is not an integer') from None
    return value


def _invalid(causes: list[Cause]) -> errors.StatusError:
    return errors.invalid("ListOptions", "", causes, group="meta.k8s.io")


def _match_supported(match: str, allowed: tuple[str, ...]) -> list[Cause]:
    if match in allowed:
        return []
    values = ", ".join(f'"{a}"' for a in allowed)
    return [Cause("FieldValueNotSupported", f'Unsupported value: "{match}": supported values: {values}', "resourceVersionMatch")]


def _list_causes(match: str, rv: str, continue_token: str, send_initial: bool | None) -> list[Cause]:
    causes: list[Cause] = []
    if match:
        if not rv:
            causes.append(Cause("FieldValueForbidden", "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided", "resourceVersionMatch"))
        if continue_token:
            causes.append(Cause("FieldValueForbidden", "Forbidden: resourceVersionMatch is forbidden when continue is provided", "resourceVersionMatch"))
        if match == EXACT and rv == "0":
            causes.append(Cause("FieldValueForbidden", 'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"', "resourceVersionMatch"))
        causes += _match_supported(match, (EXACT, NOT_OLDER_THAN))
    if send_initial is not None:
        causes.append(Cause("FieldValueForbidden", "Forbidden: sendInitialEvents is forbidden for list", "sendInitialEvents"))
    return causes


def _watch_causes(match: str, send_initial: bool | None, allow_bookmarks: bool, continue_token: str) -> list[Cause]:
    causes: list[Cause] = []
    if send_initial is not None:
        if match != NOT_OLDER_THAN:
            causes.append(Cause("FieldValueForbidden", f"Forbidden: sendInitialEvents requires setting resourceVersionMatch to {NOT_OLDER_THAN}", "resourceVersionMatch"))
        if send_initial and not allow_bookmarks:
            causes.append(Cause("FieldValueForbidden", "Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true", "allowWatchBookmarks"))
    if match:
        if send_initial is None:
            causes.append(Cause("FieldValueForbidden", "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided", "resourceVersionMatch"))
        causes += _match_supported(match, (NOT_OLDER_THAN,))
        if continue_token:
            causes.append(Cause("FieldValueForbidden", "Forbidden: resourceVersionMatch is forbidden when continue is provided", "resourceVersionMatch"))
    return causes


def parse_list_options(params: Mapping[str, str], watch_path: bool = False) -> ListOptions:
    """Read and validate the list/watch parameters of a query string."""
    labels = LabelSelector.parse(params.get("labelSelector", ""))
    fields = FieldSelector.parse(params.get("fieldSelector", ""))
    rv = params.get("resourceVersion", "")
    if rv and rv != "0":
        if not rv.isdigit():
            raise errors.bad_request(f'invalid resource version "{rv}": must be a decimal integer')
        rv = str(int(rv))
    match = params.get("resourceVersionMatch", "")
    limit = _int(params, "limit") or 0
    watch = bool(_bool(params, "watch")) or watch_path
    continue_token = params.get("continue", "")
    send_initial = _bool(params, "sendInitialEvents")
    allow_bookmarks = bool(_bool(params, "allowWatchBookmarks"))
    causes: list[Cause] = []
    if limit < 0:
        causes.append(Cause("FieldValueInvalid", f"Invalid value: {limit}: must be non-negative", "limit"))
    if watch:
        causes += _watch_causes(match, send_initial, allow_bookmarks, continue_token)
    else:
        causes += _list_causes(match, rv, continue_token, send_initial)
    timeout = _int(params, "timeoutSeconds")
    if timeout is not None and timeout < 0:
        causes.append(Cause("FieldValueInvalid", f"Invalid value: {timeout}: must be non-negative", "timeoutSeconds"))
    if causes:
        raise _invalid(causes)
    if continue_token and rv and rv != "0":
        raise errors.bad_request("specifying resource version is not allowed when using continue")
    return ListOptions(
        labels=labels,
        fields=fields,
        resource_version=rv,
        match=match,
        limit=limit,
        continue_token=continue_token,
        watch=watch,
        allow_bookmarks=allow_bookmarks,
        send_initial_events=send_initial,
        timeout_seconds=timeout,
    )


@dataclass(frozen=True)
class ContinueToken:
    """Where the next page starts: the list's RV, the snapshot it came from, the last key returned."""

    rv: int  # 0: an inconsistent continuation from the current state
    start: tuple[str, str, str]  # (cluster, namespace, name) of the last item returned
    snapshot: str = ""
    offset: int = 0


def encode_continue(token: ContinueToken) -> str:
    body = {"v": 1, "rv": token.rv, "start": list(token.start), "snap": token.snapshot, "off": token.offset}
    return base64.urlsafe_b64encode(orjson.dumps(body)).decode().rstrip("=")


def decode_continue(text: str) -> ContinueToken:
    try:
        padded = text + "=" * (-len(text) % 4)
        body = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(body, dict) or body.get("v") != 1:
            raise ValueError("unknown token version")
        start = body["start"]
        if not (isinstance(start, list) and len(start) == 3 and all(isinstance(s, str) for s in start)):
            raise ValueError("bad start key")
        rv, offset, snap = body["rv"], body.get("off", 0), body.get("snap", "")
        if not isinstance(rv, int) or not isinstance(offset, int) or not isinstance(snap, str) or rv < 0 or offset < 0:
            raise ValueError("bad token fields")
        return ContinueToken(rv, (start[0], start[1], start[2]), snap, offset)
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise errors.bad_request(f"continue key is not valid: {exc}") from None


def with_name(opts: ListOptions, name: str) -> ListOptions:
    """A list or watch of one named object: a `metadata.name` field selector added to the request's."""
    text = f"metadata.name={name}" if opts.fields.empty else f"{opts.fields},metadata.name={name}"
    return replace(opts, fields=FieldSelector.parse(text))
