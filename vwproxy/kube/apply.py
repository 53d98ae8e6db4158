"""Server-side apply (`application/apply-patch+yaml`) and `metadata.managedFields` tracking.

Two pure functions, neither touches its arguments:

* `apply(live, applied, manager, ...)` merges an apply configuration into the
  live object the way server-side apply does and returns the new object with
  its `managedFields`, or raises a 409 `Conflict` naming every contested field;
* `record_update(old, new, manager, ...)` is the bookkeeping for every other
  write (create, update, JSON/merge patch): the writer takes ownership of each
  field whose value it changed or added.

Model
-----
Ownership is a set of *paths* per field manager. A manager is identified by
(manager name, operation, subresource), so the `Apply` and `Update` entries of
one name are different managers and can conflict with each other, exactly as in
Kubernetes. A path is a tuple of path elements spelled as in `fieldsV1`:
`f:<field>`, `k:<json of the key fields>` (an element of a map-list),
`v:<json>` (an element of a set-list), `i:<n>` (read from foreign entries only).
A set holds the leaves a manager cares about; a map-list element's own path is
in the set too, which is why `fieldsV1` shows `".":{}` inside it.

What becomes a leaf: scalars, atomic lists (as a whole), set-list elements,
empty maps and empty lists (so "I want this to be empty" is an opinion that can
be owned and pruned), and anything `_MAX_DEPTH` elements down. Comparing two
versions of an object walks both: maps and keyed lists are compared member by
member unless both sides are empty; anything else is one leaf, and a leaf whose
shape changed (a map became a string, say) is modified together with every
path that came or went beneath it.

Apply: merge the configuration into the live object; the applier's set becomes
exactly the configuration's leaves; fields it owned last time but no longer
applies are pruned from the object unless another manager still owns them or
something beneath them; then every other manager owning a leaf whose value the
operation changed (modified, added or removed) is in conflict. `force` moves
those leaves to the applier instead. Update: the writer gets every leaf that
was added or modified; added, modified and removed leaves leave all other sets.
Managers with an empty set disappear. An object without any managedFields that
is applied to first has its current fields credited to `before-first-apply`
(operation Update), as Kubernetes does, so an apply cannot silently overwrite
values nobody tracked.

Simplified relative to Kubernetes' structured-merge-diff (SMD)
---------------------------------------------------------------
* No OpenAPI schema. Structure is read from the values: every JSON object is a
  granular map/struct (never `x-kubernetes-map-type: atomic`), and a list's kind
  comes from the caller's `list_keys(field_path)`: None = atomic, () = set,
  names = map-list. A list whose current value cannot be keyed (a map-list with
  an element that is not an object, carries none of the keys, or repeats a key;
  a set with a non-scalar element) is treated as atomic in that value, where
  SMD would reject the object. No defaulting: a map-list element is keyed by
  the key fields it actually carries (SMD defaults e.g. `protocol: TCP` first,
  and rejects an element missing a key without default).
* Apply configurations are still checked: a map-list element that is not an
  object or carries none of the keys, a set element that is not a scalar, or a
  duplicate element is a 400 BadRequest (`failed to create typed patch object:
  <path>: ...`). Kubernetes answers these with a similar message.
* No version conversion: `apiVersion` is recorded in each entry but paths are
  compared as they are, whatever version a manager used. For the same reason
  an Update entry is not split by apiVersion (Kubernetes keys Update managers
  by version too): one entry per (manager, operation, subresource), the
  latest writer's version recorded.
* Conflicts count removed leaves as well as modified and added ones. SMD only
  looks at modified and added, which is the same thing as long as a schema
  fixes every field's type; here an apply that turns another manager's map
  into a string would otherwise delete that manager's fields unasked.
* `null` for a map member in an apply configuration is taken as "not
  specified" (dropped before anything else), rather than as a null value.
* Map-list merge order: live elements keep their order; elements new in the
  configuration are appended in configuration order. Set-lists: union, live
  order first.
* Pruning removes a container (map or list) left empty by the removal of the
  applier's last leaf in it, unless someone owns that container; key fields of
  a map-list element are only removed with the element. `metadata` is never
  removed.
* Entry time: the acting manager's entry gets `now` when the object or that
  entry's field set changed (or the entry is new); otherwise the old time stays,
  so a no-op re-apply returns the live object unchanged. Kubernetes keeps the
  time on a no-op apply as well.
* Not done: the cap of 10 Update entries (Kubernetes folds the oldest into
  `ancient-changes`), the kubectl last-applied-configuration upgrade path,
  client-supplied managedFields (record_update always derives them from `old`;
  whatever `new` carries is replaced), and managedFields of other types than
  FieldsV1 (such entries are dropped). Conflict order is deterministic (managers
  sorted, paths sorted) where Kubernetes iterates a Go map. Manager names are
  quoted as JSON strings where Go uses `%q` (identical for printable names).
  In `fieldsV1`, `f:` members are sorted by name as in SMD, `k:` and `v:`
  members by their JSON text (SMD compares the decoded values); JSON objects
  compare equal whatever their order, so only byte-exact diffs could tell.

Never tracked (never owned, never compared, never pruned): `apiVersion`,
`kind` and metadata `name`, `namespace`, `uid`, `resourceVersion`,
`generation`, `creationTimestamp`, `deletionTimestamp`, `managedFields`,
`selfLink`. The server-owned ones among those (all but name, namespace,
apiVersion, kind) are also never copied from an apply configuration: the caller
checks preconditions such as a configured `resourceVersion` before calling.

Left to the caller: `status`. For a resource with a status subresource,
Kubernetes ignores status in an apply to the main resource (and the main
fields in an apply to /status); the caller strips the ignored part from
`applied` before calling `apply` (and passes `subresource="status"` for
/status), and for record_update passes objects whose ignored part was reset.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import orjson

from vwproxy.kube import errors
from vwproxy.kube.errors import StatusError, bad_request
from vwproxy.kube.jsonvalue import deep_copy

APPLY_PATCH: Final = "application/apply-patch+yaml"

ListKeys: TypeAlias = Callable[[tuple[str, ...]], tuple[str, ...] | None]
"""Field path (field names only, list elements not included) -> list kind:
None for an atomic list, () for a set of scalars, key names for a map-list."""

Obj: TypeAlias = dict[str, Any]
Path: TypeAlias = tuple[str, ...]

BEFORE_FIRST_APPLY: Final = "before-first-apply"
FIELD_MANAGER_CONFLICT: Final = "FieldManagerConflict"

# Deeper than this, a value is one leaf. Keeps every walk far inside Python's
# recursion limit whatever a client sends; real objects are ~20 levels deep.
_MAX_DEPTH: Final = 100

_META: Final = "f:metadata"
# Server-owned metadata: never tracked, and never taken from an apply body.
_SERVER_OWNED: Final = frozenset(
    (_META, "f:" + name)
    for name in ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp", "managedFields", "selfLink")
)
# Identity fields: never tracked, but an apply body does carry them.
_IGNORED: Final = _SERVER_OWNED | {("f:apiVersion",), ("f:kind",), (_META, "f:name"), (_META, "f:namespace")}

_Ident: TypeAlias = tuple[str, str, str]  # (manager, operation, subresource)


@dataclass
class _Entry:
    manager: str
    operation: str
    subresource: str
    api_version: str
    time: str | None
    fields: set[Path]


@dataclass
class _Diff:
    added: set[Path]
    modified: set[Path]
    removed: set[Path]


# ---------------------------------------------------------------------------
# JSON value helpers


def _json(value: Any) -> str:
    """Compact JSON with sorted keys: the spelling of `k:` and `v:` elements."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        # orjson refuses integers beyond 64 bits; the stdlib does not.
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)




def _kind(value: Any) -> int:
    # bool before int: True == 1 in Python, but not in JSON.
    if value is None:
        return 0
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 2
    if isinstance(value, str):
        return 3
    if isinstance(value, list):
        return 4
    return 5


def _equal(a: Any, b: Any) -> bool:
    """JSON equality, iterative, keeping `true` apart from `1`."""
    stack: list[tuple[Any, Any]] = [(a, b)]
    while stack:
        x, y = stack.pop()
        kx = _kind(x)
        if kx != _kind(y):
            return False
        if kx == 4:
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif kx == 5:
            if len(x) != len(y) or any(k not in y for k in x):
                return False
            stack.extend((v, y[k]) for k, v in x.items())
        elif x != y:
            return False
    return True


def _strip_nulls(value: Any, depth: int = 0) -> Any:
    """Copy of an apply body without null map members (null = not specified)."""
    if depth >= _MAX_DEPTH:
        return deep_copy(value)
    if isinstance(value, dict):
        return {k: _strip_nulls(v, depth + 1) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v, depth + 1) for v in value]
    return value


# ---------------------------------------------------------------------------
# Path elements


def _pe_sort_key(pe: str) -> tuple[int, str, int]:
    """Order of fieldsV1 members: fields, then keys, then values, then indices."""
    tag = pe[:2]
    if tag == "f:":
        return (1, pe[2:], 0)
    if tag == "k:":
        return (2, pe[2:], 0)
    if tag == "v:":
        return (3, pe[2:], 0)
    return (4, "", int(pe[2:]))


def _path_sort_key(path: Path) -> tuple[tuple[int, str, int], ...]:
    return tuple(_pe_sort_key(pe) for pe in path)


def _canonical_pe(raw: str) -> str | None:
    """A `fieldsV1` key as stored by anyone, respelled canonically; None if invalid."""
    tag, body = raw[:2], raw[2:]
    if tag == "f:":
        return raw
    try:
        if tag == "k:":
            keys = json.loads(body)
            if not isinstance(keys, dict) or not keys:
                return None
            return "k:" + _json(keys)
        if tag == "v:":
            return "v:" + _json(json.loads(body))
        if tag == "i:" and body.isascii() and body.isdigit():
            return f"i:{int(body)}"
    except ValueError:
        return None
    return None


def _path_string(path: Path) -> str:
    """`.spec.ports[name="http"].port`: how Kubernetes prints a field path."""
    out: list[str] = []
    for pe in path:
        tag, body = pe[:2], pe[2:]
        if tag == "f:":
            out.append("." + body)
        elif tag == "k:":
            keys = json.loads(body)
            out.append("[" + ",".join(f"{k}={_json(v)}" for k, v in keys.items()) + "]")
        elif tag == "v:":
            out.append(f"[={body}]")
        else:
            out.append(f"[{body}]")
    return "".join(out)


def _list_index(lst: list[Any], fpath: Path, list_keys: ListKeys) -> tuple[tuple[str, ...], list[str]] | None:
    """(keys, path element per item) for a set or map-list; None when atomic.

    Value-dependent: a list that is declared a set or map-list but whose value
    cannot be keyed is atomic here (see the module docstring)."""
    keys = list_keys(fpath)
    if keys is None:
        return None
    pes: list[str] = []
    if not keys:
        for item in lst:
            if isinstance(item, (dict, list)):
                return None
            pes.append("v:" + _json(item))
        return keys, pes
    seen: set[str] = set()
    for item in lst:
        if not isinstance(item, dict):
            return None
        present = {k: item[k] for k in keys if k in item}
        if not present:
            return None
        pe = "k:" + _json(present)
        if pe in seen:
            return None
        seen.add(pe)
        pes.append(pe)
    return keys, pes


def _skip(path: Path) -> bool:
    """Whether a path is one of the never-tracked fields (only two levels deep)."""
    return len(path) <= 2 and path in _IGNORED


# ---------------------------------------------------------------------------
# Field sets, comparison, merge, prune


def _field_set(value: Any, path: Path, fpath: Path, list_keys: ListKeys, out: set[Path], nodes: bool = False) -> None:
    """Add the leaves of `value` (found at `path`) to `out`; with `nodes`, every
    path in it (for a subtree that goes away: a map owned while it was empty
    and filled since must leave its owner's set as well)."""
    if len(path) < _MAX_DEPTH:
        if isinstance(value, dict) and value:
            if nodes and path:
                out.add(path)
            for key, child in value.items():
                cpath = path + ("f:" + key,)
                if not _skip(cpath):
                    _field_set(child, cpath, fpath + (key,), list_keys, out, nodes)
            return
        if isinstance(value, list) and value:
            index = _list_index(value, fpath, list_keys)
            if index is not None:
                if nodes and path:
                    out.add(path)
                keys, pes = index
                for item, pe in zip(value, pes):
                    out.add(path + (pe,))
                    if keys:
                        _field_set(item, path + (pe,), fpath, list_keys, out, nodes)
                return
    # The metadata map as a whole is never a leaf: owning it could prune it.
    if path and path != (_META,):
        out.add(path)


def _fields_of(obj: Obj, list_keys: ListKeys) -> set[Path]:
    out: set[Path] = set()
    _field_set(obj, (), (), list_keys, out)
    return out


def _compare(old: Any, new: Any, path: Path, fpath: Path, list_keys: ListKeys, diff: _Diff) -> None:
    """Record which leaves differ between two values found at the same path."""
    if len(path) < _MAX_DEPTH:
        if isinstance(old, dict) and isinstance(new, dict) and (old or new):
            for key, child in old.items():
                if key not in new:
                    cpath = path + ("f:" + key,)
                    if not _skip(cpath):
                        _field_set(child, cpath, fpath + (key,), list_keys, diff.removed, nodes=True)
            for key, child in new.items():
                cpath = path + ("f:" + key,)
                if _skip(cpath):
                    continue
                if key in old:
                    _compare(old[key], child, cpath, fpath + (key,), list_keys, diff)
                else:
                    _field_set(child, cpath, fpath + (key,), list_keys, diff.added)
            return
        if isinstance(old, list) and isinstance(new, list) and (old or new):
            old_index = _list_index(old, fpath, list_keys)
            new_index = _list_index(new, fpath, list_keys)
            if old_index is not None and new_index is not None:
                keys = old_index[0]
                old_items = dict(zip(reversed(old_index[1]), reversed(old)))  # first wins
                new_items = dict(zip(reversed(new_index[1]), reversed(new)))
                for pe, item in old_items.items():
                    if pe not in new_items:
                        diff.removed.add(path + (pe,))
                        if keys:
                            _field_set(item, path + (pe,), fpath, list_keys, diff.removed, nodes=True)
                for pe, item in new_items.items():
                    if pe not in old_items:
                        diff.added.add(path + (pe,))
                        if keys:
                            _field_set(item, path + (pe,), fpath, list_keys, diff.added)
                    elif keys:
                        _compare(old_items[pe], item, path + (pe,), fpath, list_keys, diff)
                return
    if _equal(old, new):
        return
    # A leaf changed. If its shape changed too (map -> string, keyed list ->
    # unkeyable), the leaves beneath it went or came with it: report them so
    # their owners lose them (and, for apply, are asked first).
    diff.modified.add(path)
    before: set[Path] = set()
    after: set[Path] = set()
    _field_set(old, path, fpath, list_keys, before, nodes=True)
    _field_set(new, path, fpath, list_keys, after)
    diff.removed |= before - {path}
    diff.added |= after - {path}


def _merge(dst: Any, cfg: Any, path: Path, fpath: Path, list_keys: ListKeys) -> Any:
    """Merge apply configuration `cfg` into `dst` (a private copy, mutated); return the result."""
    if len(path) < _MAX_DEPTH:
        if isinstance(dst, dict) and isinstance(cfg, dict):
            for key, value in cfg.items():
                cpath = path + ("f:" + key,)
                if len(cpath) <= 2 and cpath in _SERVER_OWNED:
                    continue
                if key in dst:
                    dst[key] = _merge(dst[key], value, cpath, fpath + (key,), list_keys)
                elif isinstance(value, dict):
                    # Through _merge, not a plain copy, so server-owned metadata is left out.
                    dst[key] = _merge({}, value, cpath, fpath + (key,), list_keys)
                else:
                    dst[key] = deep_copy(value)
            return dst
        if isinstance(dst, list) and isinstance(cfg, list):
            dst_index = _list_index(dst, fpath, list_keys)
            cfg_index = _list_index(cfg, fpath, list_keys)
            if dst_index is not None and cfg_index is not None:
                keys, dst_pes = dst_index
                position = {pe: i for i, pe in reversed(list(enumerate(dst_pes)))}
                for item, pe in zip(cfg, cfg_index[1]):
                    if pe not in position:
                        position[pe] = len(dst)
                        dst.append(deep_copy(item))
                    elif keys:
                        i = position[pe]
                        dst[i] = _merge(dst[i], item, path + (pe,), fpath, list_keys)
                return dst
    return deep_copy(cfg)


def _step(node: Any, pe: str, fpath: Path, list_keys: ListKeys) -> tuple[Any, Path] | None:
    """The child of `node` named by path element `pe`, and its field path."""
    tag, body = pe[:2], pe[2:]
    if tag == "f:":
        if isinstance(node, dict) and body in node:
            return node[body], fpath + (body,)
        return None
    if not isinstance(node, list):
        return None
    if tag == "i:":
        i = int(body)
        return (node[i], fpath) if i < len(node) else None
    index = _list_index(node, fpath, list_keys)
    if index is None:
        return None
    for item, item_pe in zip(node, index[1]):
        if item_pe == pe:
            return item, fpath
    return None


def _delete(node: Any, pe: str, fpath: Path, list_keys: ListKeys) -> None:
    tag, body = pe[:2], pe[2:]
    if tag == "f:":
        if isinstance(node, dict):
            node.pop(body, None)
    elif tag in ("k:", "v:") and isinstance(node, list):
        index = _list_index(node, fpath, list_keys)
        if index is not None:
            node[:] = [item for item, item_pe in zip(node, index[1]) if item_pe != pe]
    # `i:` elements are never deleted: an index names nothing stable.


def _is_key_field(path: Path) -> bool:
    """`...k:{"name":"a"}, f:name`: a key field of a map-list element."""
    if len(path) < 2 or not path[-2].startswith("k:") or not path[-1].startswith("f:"):
        return False
    return path[-1][2:] in json.loads(path[-2][2:])


def _prune(obj: Obj, doomed: set[Path], owned: set[Path], list_keys: ListKeys) -> None:
    """Remove the paths the applier gave up, except where someone still owns something."""
    if not doomed:
        return
    under_owned = {p[:i] for p in owned for i in range(1, len(p))}
    # Deepest first, so an element is still findable by its keys while its
    # fields go, and a container is judged empty only after its children went.
    for path in sorted(doomed, key=len, reverse=True):
        if path in under_owned or _is_key_field(path):
            continue
        chain: list[tuple[Any, Path]] = [(obj, ())]
        for pe in path[:-1]:
            step = _step(chain[-1][0], pe, chain[-1][1], list_keys)
            if step is None:
                break
            chain.append(step)
        else:
            _delete(chain[-1][0], path[-1], chain[-1][1], list_keys)
            # Containers this removal emptied go as well, unless owned as such.
            for depth in range(len(path) - 1, 0, -1):
                container = chain[depth][0]
                prefix = path[:depth]
                if container or prefix in owned or prefix == (_META,) or _is_key_field(prefix):
                    break
                _delete(chain[depth - 1][0], path[depth - 1], chain[depth - 1][1], list_keys)


def _check_config(value: Any, path: Path, fpath: Path, list_keys: ListKeys) -> None:
    """Reject apply configurations whose lists cannot be merged by key."""
    if len(path) >= _MAX_DEPTH:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            _check_config(child, path + ("f:" + key,), fpath + (key,), list_keys)
        return
    if not isinstance(value, list):
        return
    keys = list_keys(fpath)
    if keys is None:
        return  # atomic: taken whole, nothing inside is merged

    def fail(problem: str) -> StatusError:
        return bad_request(f"failed to create typed patch object: {_path_string(path)}: {problem}")

    seen: set[str] = set()
    for i, item in enumerate(value):
        if not keys:
            if isinstance(item, (dict, list)):
                raise fail(f"element {i}: expected a scalar in a set")
            pe = "v:" + _json(item)
        else:
            if not isinstance(item, dict):
                raise fail(f"element {i}: expected an object in an associative list")
            present = {k: item[k] for k in keys if k in item}
            if not present:
                raise fail(f'element {i}: associative list with keys has an element that omits key field "{keys[0]}"')
            pe = "k:" + _json(present)
        if pe in seen:
            raise fail(f"duplicate entries for key {_path_string((pe,))}")
        seen.add(pe)
        if keys:
            _check_config(item, path + (pe,), fpath, list_keys)


# ---------------------------------------------------------------------------
# managedFields encoding


def _decode_fields(node: dict[str, Any], prefix: Path, out: set[Path]) -> None:
    for raw, child in node.items():
        if raw == ".":
            if prefix:
                out.add(prefix)
            continue
        pe = _canonical_pe(raw) if isinstance(raw, str) else None
        if pe is None or not isinstance(child, dict) or len(prefix) >= _MAX_DEPTH:
            continue  # not something we could have written: ignore it
        if child:
            _decode_fields(child, prefix + (pe,), out)
        else:
            out.add(prefix + (pe,))


def _encode_fields(paths: set[Path]) -> dict[str, Any]:
    trie: dict[str, Any] = {}
    for path in paths:
        node = trie
        for pe in path:
            node = node.setdefault(pe, {})
        node["."] = {}
    return _finish_trie(trie)


def _finish_trie(node: dict[str, Any]) -> dict[str, Any]:
    # "." only when the node is both owned and a parent; an owned leaf is {}.
    children = sorted((k for k in node if k != "."), key=_pe_sort_key)
    out: dict[str, Any] = {".": {}} if "." in node and children else {}
    for key in children:
        out[key] = _finish_trie(node[key])
    return out


def _decode_entries(raw: Any) -> dict[_Ident, _Entry]:
    entries: dict[_Ident, _Entry] = {}
    if not isinstance(raw, list):
        return entries
    for item in raw:
        if not isinstance(item, dict):
            continue
        manager, operation = item.get("manager", ""), item.get("operation")
        subresource, api_version = item.get("subresource") or "", item.get("apiVersion") or ""
        fields_v1 = item.get("fieldsV1", {})
        time = item.get("time")
        if (
            not isinstance(manager, str)
            or operation not in ("Apply", "Update")
            or not isinstance(subresource, str)
            or not isinstance(api_version, str)
            or item.get("fieldsType", "FieldsV1") != "FieldsV1"
            or not isinstance(fields_v1, dict)
        ):
            continue
        fields: set[Path] = set()
        _decode_fields(fields_v1, (), fields)
        ident = (manager, operation, subresource)
        if ident in entries:  # one entry per manager: fold duplicates together
            entries[ident].fields |= fields
        else:
            entries[ident] = _Entry(manager, operation, subresource, api_version, time if isinstance(time, str) else None, fields)
    return entries


def _encode_entries(entries: dict[_Ident, _Entry]) -> list[Obj]:
    # Kubernetes' order: Apply before Update, then oldest first, then name.
    ordered = sorted(entries.values(), key=lambda e: (e.operation, e.time or "", e.manager, e.api_version, e.subresource))
    out: list[Obj] = []
    for e in ordered:
        entry: Obj = {"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version}
        if e.time is not None:
            entry["time"] = e.time
        entry["fieldsType"] = "FieldsV1"
        entry["fieldsV1"] = _encode_fields(e.fields)
        if e.subresource:
            entry["subresource"] = e.subresource
        out.append(entry)
    return out


def _with_managed_fields(obj: Obj, entries: dict[_Ident, _Entry]) -> Obj:
    live_entries = {k: e for k, e in entries.items() if e.fields}
    md = obj.get("metadata")
    if not isinstance(md, dict):
        if not live_entries:
            return obj
        md = obj["metadata"] = {}
    if live_entries:
        md["managedFields"] = _encode_entries(live_entries)
    else:
        md.pop("managedFields", None)
    return obj


def _managed_fields_of(obj: Obj) -> Any:
    md = obj.get("metadata")
    return md.get("managedFields") if isinstance(md, dict) else None


def _without_managed_fields(obj: Obj) -> Obj:
    """A private deep copy of `obj` minus metadata.managedFields."""
    out: Obj = deep_copy(obj)
    md = out.get("metadata")
    if isinstance(md, dict):
        md.pop("managedFields", None)
    return out


# ---------------------------------------------------------------------------
# Conflicts


def _describe(entry: _Entry) -> str:
    """How Kubernetes names a manager in a conflict: appliers by name, updaters with their version."""
    text = orjson.dumps(entry.manager).decode()
    if entry.subresource:
        text += f" with subresource {orjson.dumps(entry.subresource).decode()}"
    if entry.operation == "Update":
        text += f" using {entry.api_version}"
    return text


def _conflict_error(conflicts: dict[_Ident, set[Path]], entries: dict[_Ident, _Entry]) -> StatusError:
    grouped = [
        (_describe(entries[ident]), [_path_string(p) for p in sorted(conflicts[ident], key=_path_sort_key)])
        for ident in sorted(conflicts)
    ]
    causes = [
        {"reason": FIELD_MANAGER_CONFLICT, "message": f"conflict with {who}", "field": field}
        for who, fields in grouped
        for field in fields
    ]
    if len(causes) == 1:
        who, fields = grouped[0]
        message = f"Apply failed with 1 conflict: conflict with {who}: {fields[0]}"
    else:
        lines: list[str] = []
        for who, fields in grouped:
            lines.append(f"conflicts with {who}:")
            lines.extend(f"- {field}" for field in fields)
        message = f"Apply failed with {len(causes)} conflicts: " + "\n".join(lines)
    return errors.apply_conflict(message, causes)


# ---------------------------------------------------------------------------
# Public API


def apply(
    live: Obj | None,
    applied: Obj,
    manager: str,
    *,
    force: bool,
    api_version: str,
    now: str,
    list_keys: ListKeys,
    subresource: str = "",
) -> Obj:
    """Server-side apply `applied` for `manager` onto `live` (None: create).

    Returns a new object with metadata.managedFields; raises a 409 Conflict
    (details.causes: one FieldManagerConflict per field and manager) when the
    apply would change fields another manager owns and `force` is false, and a
    400 when the configuration cannot be merged."""
    if not isinstance(applied, dict):
        raise bad_request("the apply configuration must be a JSON object")
    if not manager:
        raise bad_request("PATCH with apply requires a fieldManager")
    config = _strip_nulls(applied)
    if not isinstance(config.get("metadata", {}), dict):
        raise bad_request("the apply configuration's metadata must be a JSON object")
    _check_config(config, (), (), list_keys)
    config_fields = _fields_of(config, list_keys)
    ident: _Ident = (manager, "Apply", subresource)

    if live is None:
        created: Obj = _merge({}, config, (), (), list_keys)
        return _with_managed_fields(created, {ident: _Entry(manager, "Apply", subresource, api_version, now, config_fields)})

    before = _without_managed_fields(live)
    entries = _decode_entries(_managed_fields_of(live))
    if not entries:
        # Untracked object: credit what is there to a stand-in manager so the
        # apply must force before overwriting it, as Kubernetes does.
        existing = _fields_of(before, list_keys)
        if existing:
            entries[(BEFORE_FIRST_APPLY, "Update", "")] = _Entry(BEFORE_FIRST_APPLY, "Update", "", api_version, now, existing)

    previous = entries.pop(ident, None)
    last_fields = previous.fields if previous else set()
    others_owned: set[Path] = set().union(*(e.fields for e in entries.values()))

    result: Obj = _merge(deep_copy(before), config, (), (), list_keys)
    _prune(result, last_fields - config_fields - others_owned, config_fields | others_owned, list_keys)

    diff = _Diff(set(), set(), set())
    _compare(before, result, (), (), list_keys, diff)
    touched = diff.added | diff.modified | diff.removed
    conflicts = {k: e.fields & touched for k, e in entries.items() if e.fields & touched}
    if conflicts and not force:
        raise _conflict_error(conflicts, entries)
    for e in entries.values():
        # Forced fields move to the applier; removed ones are nobody's now.
        e.fields -= touched

    unchanged = (
        previous is not None
        and previous.fields == config_fields
        and previous.api_version == api_version
        and _equal(before, result)
    )
    time = previous.time if unchanged and previous is not None else now
    entries[ident] = _Entry(manager, "Apply", subresource, api_version, time, config_fields)
    return _with_managed_fields(result, entries)


def record_update(
    old: Obj | None,
    new: Obj,
    manager: str,
    *,
    operation: str = "Update",
    api_version: str,
    now: str,
    subresource: str = "",
    list_keys: ListKeys,
) -> Obj:
    """managedFields for a non-apply write of `new` over `old` (None: create).

    The writer takes every field it added or changed, away from all other
    managers; removed fields leave every set. Returns a copy of `new` (only
    the top level and metadata are copied) whose managedFields replace any
    it carried."""
    entries = _decode_entries(_managed_fields_of(old)) if old is not None else {}
    diff = _Diff(set(), set(), set())
    # _compare skips metadata.managedFields, so neither side needs stripping.
    _compare(old if old is not None else {}, new, (), (), list_keys, diff)
    taken = diff.added | diff.modified
    for e in entries.values():
        e.fields -= taken | diff.removed
    if taken:
        ident: _Ident = (manager, operation, subresource)
        previous = entries.get(ident)
        entries[ident] = _Entry(manager, operation, subresource, api_version, now, (previous.fields if previous else set()) | taken)
    out = dict(new)
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = dict(out["metadata"])
    return _with_managed_fields(out, entries)
