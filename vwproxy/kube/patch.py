"""JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386) for `PATCH` requests.

Both appliers work on a private deep copy, so the stored object a handler passes
in is never touched and the result never shares containers with the patch body.

Error split, as the Kubernetes API server makes it:

* the patch body itself is malformed (not JSON, wrong shape, unknown `op`,
  a required member missing, a `path` that is not a JSON Pointer)
  -> 400 BadRequest, via `errors.bad_request`;
* the patch is well formed but does not fit this document (a path that does
  not exist, an index out of range, a failed `test`, a move into its own child,
  more than 10,000 operations) -> 422 Invalid.

Containers are walked with explicit stacks rather than recursion: orjson
decodes arbitrarily deep arrays, and a request must not be able to turn a
deep body into a `RecursionError` (a 500) instead of an ordinary answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

from vwproxy.kube import errors
from vwproxy.kube.errors import bad_request, unsupported_media_type
from vwproxy.kube.jsonvalue import deep_copy

JSON_PATCH: Final = "application/json-patch+json"
MERGE_PATCH: Final = "application/merge-patch+json"

# The same cap the Kubernetes API server applies, so a huge patch cannot make
# one request do unbounded work.
MAX_JSON_PATCH_OPERATIONS: Final = 10_000

_OPS: Final = frozenset({"add", "remove", "replace", "move", "copy", "test"})
_NEEDS_VALUE: Final = frozenset({"add", "replace", "test"})
_NEEDS_FROM: Final = frozenset({"move", "copy"})

# RFC 6901 array indices: ASCII digits, no leading zeros. `[0-9]` rather than
# `\d` because `\d` also matches non-ASCII digits such as "٣".
_INDEX_RE: Final = re.compile(r"0|[1-9][0-9]*")
# A `~` must be followed by 0 or 1; anything else is not a valid pointer.
_BAD_ESCAPE_RE: Final = re.compile(r"~(?![01])")


# ---------------------------------------------------------------------------
# JSON value helpers




def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python, but JSON true is not the number 1.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_equal(a: Any, b: Any) -> bool:
    """Structural JSON equality (RFC 6902 section 4.6): 1 == 1.0, true != 1."""
    stack: list[tuple[Any, Any]] = [(a, b)]
    while stack:
        x, y = stack.pop()
        if _is_number(x) or _is_number(y):
            if not (_is_number(x) and _is_number(y)) or x != y:
                return False
        elif isinstance(x, dict):
            if not isinstance(y, dict) or x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            if not isinstance(y, list) or len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif type(x) is not type(y) or x != y:
            # str, bool and None: the type check keeps True apart from "true"-likes.
            return False
    return True


def _quote(text: str) -> str:
    return orjson.dumps(text).decode()


# ---------------------------------------------------------------------------
# JSON Pointer (RFC 6901)


def _parse_pointer(pointer: str) -> list[str] | None:
    """Reference tokens of `pointer`, or None when it is not a valid pointer."""
    if pointer == "":
        return []
    if not pointer.startswith("/") or _BAD_ESCAPE_RE.search(pointer):
        return None
    # "~1" first, then "~0": the other order would turn "~01" into "/".
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


@dataclass(frozen=True)
class _Op:
    index: int
    op: str
    path: str
    tokens: list[str]
    value: Any = None
    from_path: str = ""
    from_tokens: list[str] | None = None


class _Unapplicable(Exception):
    """An operation does not fit the document; turned into a 422 by the caller."""


def _array_index(token: str, length: int, *, allow_end: bool) -> int:
    if not _INDEX_RE.fullmatch(token):
        raise _Unapplicable(f"{_quote(token)} is not a valid array index")
    index = int(token)
    limit = length if allow_end else length - 1
    if index > limit:
        raise _Unapplicable(f"index {index} is out of range for an array of length {length}")
    return index


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _walk(doc: Any, tokens: list[str], pointer: str) -> Any:
    """The value `tokens` point at; raises _Unapplicable when it does not exist."""
    node = doc
    for token in tokens:
        if isinstance(node, dict):
            if token not in node:
                raise _Unapplicable(f"doc is missing path: {_quote(pointer)}")
            node = node[token]
        elif isinstance(node, list):
            if token == "-":
                # "-" names the slot after the last element, which holds no value.
                raise _Unapplicable(f"doc is missing path: {_quote(pointer)}: \"-\" is past the end of the array")
            node = node[_array_index(token, len(node), allow_end=False)]
        else:
            raise _Unapplicable(f"doc is missing path: {_quote(pointer)}: cannot index into {_describe(node)}")
    return node


# ---------------------------------------------------------------------------
# The six operations. Each takes and returns the document, because an
# operation on the root pointer "" replaces the document itself.


def _add(doc: Any, tokens: list[str], pointer: str, value: Any) -> Any:
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            parent.insert(_array_index(last, len(parent), allow_end=True), value)
    else:
        raise _Unapplicable(f"doc is missing path: {_quote(pointer)}: cannot add a member to {_describe(parent)}")
    return doc


def _remove(doc: Any, tokens: list[str], pointer: str) -> tuple[Any, Any]:
    """Remove the value at `tokens`; returns (document, removed value)."""
    if not tokens:
        raise _Unapplicable("cannot remove the whole document")
    parent = _walk(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _Unapplicable(f"doc is missing path: {_quote(pointer)}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        if last == "-":
            raise _Unapplicable(f"doc is missing path: {_quote(pointer)}: \"-\" is past the end of the array")
        return doc, parent.pop(_array_index(last, len(parent), allow_end=False))
    raise _Unapplicable(f"doc is missing path: {_quote(pointer)}: cannot index into {_describe(parent)}")


def _replace(doc: Any, tokens: list[str], pointer: str, value: Any) -> Any:
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _Unapplicable(f"doc is missing path: {_quote(pointer)}")
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            raise _Unapplicable(f"doc is missing path: {_quote(pointer)}: \"-\" is past the end of the array")
        parent[_array_index(last, len(parent), allow_end=False)] = value
    else:
        raise _Unapplicable(f"doc is missing path: {_quote(pointer)}: cannot index into {_describe(parent)}")
    return doc


def _apply_one(doc: Any, op: _Op) -> Any:
    if op.op == "add":
        return _add(doc, op.tokens, op.path, deep_copy(op.value))
    if op.op == "remove":
        return _remove(doc, op.tokens, op.path)[0]
    if op.op == "replace":
        return _replace(doc, op.tokens, op.path, deep_copy(op.value))
    if op.op == "test":
        if not _json_equal(_walk(doc, op.tokens, op.path), op.value):
            raise _Unapplicable(f"value at path {_quote(op.path)} is not equal to the expected value")
        return doc
    assert op.from_tokens is not None  # guaranteed by _validate for move and copy
    try:
        source = _walk(doc, op.from_tokens, op.from_path)
    except _Unapplicable:
        raise _Unapplicable(f"doc is missing from path: {_quote(op.from_path)}") from None
    if op.op == "copy":
        return _add(doc, op.tokens, op.path, deep_copy(source))
    # move
    if op.tokens == op.from_tokens:
        return doc
    if op.tokens[: len(op.from_tokens)] == op.from_tokens:
        raise _Unapplicable(
            f"cannot move {_quote(op.from_path)} into its own child {_quote(op.path)}"
        )
    doc, moved = _remove(doc, op.from_tokens, op.from_path)
    return _add(doc, op.tokens, op.path, moved)


def _validate(patch: Any) -> list[_Op]:
    """Check the patch's shape before touching the document: a malformed
    operation anywhere is a 400 even if an earlier one would fail to apply."""
    if not isinstance(patch, list):
        raise bad_request(f"invalid JSON patch: expected an array of operations, got {_json_type(patch)}")
    if len(patch) > MAX_JSON_PATCH_OPERATIONS:
        raise errors.invalid_request(
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {len(patch)}",
        )
    ops: list[_Op] = []
    for i, raw in enumerate(patch):
        where = f"invalid JSON patch: operation {i}"
        if not isinstance(raw, dict):
            raise bad_request(f"{where}: expected an object, got {_json_type(raw)}")
        name = raw.get("op")
        if name is None:
            raise bad_request(f'{where}: missing "op"')
        if not isinstance(name, str) or name not in _OPS:
            raise bad_request(f"{where}: unknown op {_quote(str(name))}")
        path = raw.get("path")
        if not isinstance(path, str):
            raise bad_request(f'{where} ({name}): missing or non-string "path"')
        tokens = _parse_pointer(path)
        if tokens is None:
            raise bad_request(f"{where} ({name}): path {_quote(path)} is not a valid JSON pointer")
        # Membership, not truthiness: "value": null is a legal value.
        if name in _NEEDS_VALUE and "value" not in raw:
            raise bad_request(f'{where} ({name}): missing "value"')
        from_path = ""
        from_tokens: list[str] | None = None
        if name in _NEEDS_FROM:
            from_raw = raw.get("from")
            if not isinstance(from_raw, str):
                raise bad_request(f'{where} ({name}): missing or non-string "from"')
            from_tokens = _parse_pointer(from_raw)
            if from_tokens is None:
                raise bad_request(f"{where} ({name}): from {_quote(from_raw)} is not a valid JSON pointer")
            from_path = from_raw
        ops.append(_Op(i, name, path, tokens, raw.get("value"), from_path, from_tokens))
    return ops


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return _describe(value)


# ---------------------------------------------------------------------------
# Public API


def apply_json_patch(doc: Any, patch: Any) -> Any:
    """Apply an RFC 6902 patch to a copy of `doc` and return the result.

    All-or-nothing: the first operation that does not apply raises, and
    since the work happens on a copy the caller's document is untouched.
    """
    ops = _validate(patch)
    result = deep_copy(doc)
    for op in ops:
        try:
            result = _apply_one(result, op)
        except _Unapplicable as exc:
            raise errors.invalid_request(
                f"jsonpatch {op.op} operation does not apply: {exc} (operation {op.index})",
            ) from None
    return result


def apply_merge_patch(doc: Any, patch: Any, owned: bool = False) -> Any:
    """Apply an RFC 7386 merge patch to a copy of `doc` (to `doc` itself when the caller hands it
    over, `owned`) and return the result.

    null deletes a member, objects merge member by member, and anything else
    (arrays included) replaces the target wholesale.
    """
    if not isinstance(patch, dict):
        return deep_copy(patch)
    result: dict[str, Any] = (doc if owned else deep_copy(doc)) if isinstance(doc, dict) else {}
    # Each pair is (target object already owned by `result`, patch object).
    stack: list[tuple[dict[str, Any], dict[str, Any]]] = [(result, patch)]
    while stack:
        target, part = stack.pop()
        for key, value in part.items():
            if value is None:
                target.pop(key, None)
            elif isinstance(value, dict):
                child = target.get(key)
                if not isinstance(child, dict):
                    # Merging into a non-object starts from {}, which also
                    # strips nulls nested in a patch that adds a new subtree.
                    child = {}
                    target[key] = child
                stack.append((child, value))
            else:
                target[key] = deep_copy(value)
    return result


def parse_patch_body(body: bytes, content_type: str) -> Any:
    """Decode a PATCH body for `content_type` and check its top-level shape.

    Raises only StatusError: 415 for a patch type this module does not
    handle, 400 for a body that is not JSON or has the wrong shape.
    """
    # Parameters such as "; charset=utf-8" do not change the patch format.
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in (JSON_PATCH, MERGE_PATCH):
        raise unsupported_media_type(content_type)
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"error decoding patch body: {exc}") from None
    if media_type == JSON_PATCH:
        if not isinstance(decoded, list):
            raise bad_request(
                f"invalid JSON patch: expected an array of operations, got {_json_type(decoded)}"
            )
        for i, op in enumerate(decoded):
            if not isinstance(op, dict):
                raise bad_request(f"invalid JSON patch: operation {i}: expected an object, got {_json_type(op)}")
    elif not isinstance(decoded, dict):
        raise bad_request(f"invalid merge patch: expected a JSON object, got {_json_type(decoded)}")
    return decoded


def apply_patch(doc: Any, body: bytes, content_type: str, api_version: str, kind: str, owned: bool = False) -> dict[str, Any]:
    """A patch body of `content_type` (JSON, merge, or strategic merge for built-in kinds) applied
    to `doc`, the way kube-apiserver's PATCH runs it; a result that is not an object is 422.
    `doc` is left as it was unless the caller hands it over (`owned`: a merge patch then
    changes it in place instead of copying it first)."""
    from vwproxy.kube import strategic  # strategic merge builds on this module's merge rules

    patch = parse_patch_body(body, MERGE_PATCH if content_type == strategic.STRATEGIC_MERGE_PATCH else content_type)
    if content_type == JSON_PATCH:
        patched = apply_json_patch(doc, patch)
    elif content_type == strategic.STRATEGIC_MERGE_PATCH:
        patched = strategic.apply_strategic_merge_patch(doc, patch, api_version, kind)
    else:
        patched = apply_merge_patch(doc, patch, owned)
    if not isinstance(patched, dict):
        raise errors.invalid_request("the patched object is not a JSON object")
    return patched
