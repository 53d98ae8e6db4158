"""Strategic merge patch (`application/strategic-merge-patch+json`) for built-in kinds.

This is the patch type `kubectl patch` sends by default and the one client-side
`kubectl apply` computes from the last-applied annotation. It is a JSON merge
patch (RFC 7386) that knows, per field, how a list should be combined:

* maps merge key by key, recursively; `null` deletes a key;
* a list is replaced wholesale unless its field is tagged `patchStrategy:
  "merge"` in the Kubernetes Go types. Then a list of objects merges element by
  element on its `patchMergeKey` (e.g. `ownerReferences` by `uid`), and a list
  of scalars (e.g. `metadata.finalizers`) merges as a set;
* directives, all keys starting with `$`:
  - `"$patch": "replace"` in a map: the map becomes the rest of the patch map;
  - `"$patch": "delete"` in a map: the map is removed;
  - `{"$patch": "replace"}` as a list element: the list becomes the other elements;
  - `{"<mergeKey>": v, "$patch": "delete"}` as a list element: drop that element;
  - `"$deleteFromPrimitiveList/<field>": [...]`: remove those scalars from a list;
  - `"$setElementOrder/<field>": [...]`: the order the merged list should have;
  - `"$retainKeys": [...]`: drop every key of the target map not in the list.

Element order of a merged list follows apimachinery's `strategicpatch`: the
elements the patch names come in patch order (or `$setElementOrder` order), the
elements only the server had keep their original order, and the two runs are
interleaved by original position, a named element the server lacked going
before the server-only elements still to place. So a plain patch that only adds
elements puts them in front (`[a, b] + [c]` gives `[c, a, b]`, as in the
Kubernetes `kubectl patch` tutorial, where the added container comes first),
while `kubectl apply`, which always sends `$setElementOrder`, gets its
manifest's order.

Deliberate differences from the Go implementation, all in corners `kubectl`
never produces, where Go stores directive keys or `null`s verbatim, drops
data silently or fails with a 500:

* a value the original lacks is still interpreted, not stored verbatim: nulls
  in it are dropped and directives inside it are applied against nothing, so
  no `$patch` key ever reaches storage; a set-merged list is always deduplicated;
* `"$patch": "delete"` on a map removes the key instead of leaving `{}` (the
  same thing once Go re-encodes an `omitempty` field);
* `{"$patch": "replace"}` is honoured in any list; carrying other members it
  is rejected (Go drops those members silently);
* `$setElementOrder` is ignored for non-merge lists (the patch list is the
  new value there, already in the order the client wants);
* `"$patch": "merge"` on a map is accepted as the default it names;
* a field the kind does not declare is merged like any untagged field (Go's
  struct lookup fails on it).

Errors: a patch that is malformed on its own (not an object, an unknown
directive, a directive of the wrong shape, a list element without its merge
key) is a 400 BadRequest; a well-formed patch that does not fit this object
or kind (a merge list whose elements are not objects, nesting too deep to
process, deleting the whole object) is a 422 Invalid. Nothing else escapes.

Fields whose `patchStrategy` is not `merge` need no entry: they are replaced.
Adding a kind is one entry in `_KIND_FIELDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from vwproxy.kube import bodies, errors
from vwproxy.kube.jsonvalue import deep_copy

STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"

# The merge recurses along the patch (never along the original, which is
# copied iteratively), about two Python frames per level. Capping the patch's
# depth keeps a hostile body from turning into a RecursionError (a 500) while
# staying far above any real object: a CRD schema nested 50 properties deep is
# about 100 levels.
MAX_PATCH_DEPTH: Final = 200

_PATCH: Final = "$patch"
_RETAIN_KEYS: Final = "$retainKeys"
_SET_ORDER: Final = "$setElementOrder/"
_DELETE_PRIMITIVE: Final = "$deleteFromPrimitiveList/"
# `$ref` and `$schema` are real field names in a CRD's JSONSchemaProps, not
# directives; Kubernetes merges them like any other key.
_PLAIN_DOLLAR_FIELDS: Final = frozenset({"$ref", "$schema"})

Path = tuple[str, ...]
# Comparable identity of a scalar or merge-key value (see `_ident`).
_Ident = tuple[str, Hashable]


@dataclass(frozen=True)
class FieldStrategy:
    """The `patchStrategy` / `patchMergeKey` tags of one field.

    `merge` on a list: merge by `merge_key`, or as a set of scalars when
    `merge_key` is empty. `replace` on a map: the patch map replaces it.
    """

    strategy: Literal["merge", "replace"]
    merge_key: str = ""


# Paths are JSON field names from the object root; list elements add no step,
# so a field inside `status.conditions[*]` is ("status", "conditions", field).
_FieldTable = Mapping[Path, FieldStrategy]

# metav1.ObjectMeta: `finalizers` is `patchStrategy:"merge"` (a set of
# strings), `ownerReferences` is `patchStrategy:"merge" patchMergeKey:"uid"`.
# `managedFields` carries no tag, so it is atomic.
_OBJECT_META: Final[_FieldTable] = {
    ("metadata", "finalizers"): FieldStrategy("merge"),
    ("metadata", "ownerReferences"): FieldStrategy("merge", "uid"),
}

# (group, kind) -> fields beyond ObjectMeta, from the k8s.io/api types.go tags.
# Kinds checked and found to have no tagged field, so absent here: ConfigMap,
# Secret, Event (core and events.k8s.io), Role/ClusterRole (`rules` and
# `aggregationRule.clusterRoleSelectors` are atomic), RoleBinding and
# ClusterRoleBinding (`subjects` is atomic), CustomResourceDefinition
# (`status.conditions` is a listType=map but has no patch tags; `spec.versions`
# is atomic). ServiceAccount `imagePullSecrets` and Namespace `spec.finalizers`
# have no patch tags either (unlike PodSpec's `imagePullSecrets`).
_KIND_FIELDS: Final[Mapping[tuple[str, str], _FieldTable]] = {
    ("", "ServiceAccount"): {
        ("secrets",): FieldStrategy("merge", "name"),
    },
    ("", "Namespace"): {
        ("status", "conditions"): FieldStrategy("merge", "type"),
    },
}

# Groups whose kinds are compiled Go types in Kubernetes, so the API server
# knows their patch tags. Custom resources have none, and Kubernetes answers
# 415 for a strategic merge patch on them; kcp's own groups are CRDs too.
_BUILTIN_GROUPS: Final = frozenset({
    "",
    "rbac.authorization.k8s.io",
    "events.k8s.io",
    "apiextensions.k8s.io",
    "meta.k8s.io",
})


def _group_of(api_version: str) -> str | None:
    """`v1` -> "", `rbac.authorization.k8s.io/v1` -> its group; None if malformed."""
    parts = api_version.split("/")
    if len(parts) == 1:
        return ""
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0]
    return None


def supports(api_version: str, kind: str) -> bool:
    """Whether a strategic merge patch is accepted for objects of this type."""
    return _group_of(api_version) in _BUILTIN_GROUPS


def _fields_for(api_version: str, kind: str) -> dict[Path, FieldStrategy]:
    fields = dict(_OBJECT_META)
    fields.update(_KIND_FIELDS.get((_group_of(api_version) or "", kind), {}))
    return fields


# ---------------------------------------------------------------------------
# JSON value helpers


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _ident(value: Any) -> _Ident | None:
    """A hashable identity for a scalar, None for a container.

    Tagged so that, as after Go's JSON decoding, "1" != 1 and true != 1 while
    1 == 1.0 (Python would otherwise equate True with 1).
    """
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    return "an object"




def _where(path: Path) -> str:
    return ".".join(path) if path else "the object root"


def _bad(path: Path, message: str) -> errors.StatusError:
    return errors.bad_request(f"invalid strategic merge patch at {_where(path)}: {message}")


def _invalid(path: Path, message: str) -> errors.StatusError:
    return errors.invalid_request(f"strategic merge patch does not apply at {_where(path)}: {message}")


# ---------------------------------------------------------------------------
# List ordering


def _normalize_order(
    merged: list[Any],
    wanted: list[_Ident | None],
    server: list[_Ident | None],
    ident_of: Callable[[Any], _Ident | None],
) -> list[Any]:
    """Order `merged` the way apimachinery does.

    Elements named in `wanted` (the patch list or `$setElementOrder`) go in
    that order; the others keep their order in `server` (the original list).
    The two runs are then interleaved: a server-only element goes before a
    named one exactly when the original list had it in front. Elements of
    either run the original did not have stay where their run puts them.
    """
    wanted_pos: dict[_Ident, int] = {}
    for i, key in enumerate(wanted):
        if key is not None:
            wanted_pos.setdefault(key, i)
    server_pos: dict[_Ident, int] = {}
    for i, key in enumerate(server):
        if key is not None:
            server_pos.setdefault(key, i)

    named: list[tuple[int, Any]] = []
    rest: list[tuple[int, Any]] = []
    for element in merged:
        key = ident_of(element)
        if key is not None and key in wanted_pos:
            named.append((wanted_pos[key], element))
        else:
            # Not in the original either (possible only with $setElementOrder
            # leaving out a patch element): after everything the server had.
            rest.append((server_pos.get(key, len(server)) if key is not None else len(server), element))
    # list.sort is stable: ties keep their merged order.
    named.sort(key=lambda pair: pair[0])
    rest.sort(key=lambda pair: pair[0])

    def original_position(element: Any) -> int | None:
        key = ident_of(element)
        return server_pos.get(key) if key is not None else None

    out: list[Any] = []
    i = j = 0
    while i < len(rest) or j < len(named):
        if j >= len(named):
            out.append(rest[i][1])
            i += 1
        elif i >= len(rest):
            out.append(named[j][1])
            j += 1
        else:
            left = original_position(rest[i][1])
            right = original_position(named[j][1])
            if left is not None and right is not None and left < right:
                out.append(rest[i][1])
                i += 1
            else:
                out.append(named[j][1])
                j += 1
    return out


# ---------------------------------------------------------------------------
# The merge


class _Merger:
    """Applies one patch; holds the field table of the object's kind.

    Every method mutates containers of the private copy of the original and
    builds fresh containers for patch content, so neither input is touched.
    """

    def __init__(self, fields: Mapping[Path, FieldStrategy]) -> None:
        self.fields = fields

    # -- maps ---------------------------------------------------------------

    def merge_map(self, original: dict[str, Any], patch: dict[str, Any], path: Path) -> dict[str, Any] | None:
        """Merge `patch` into `original` in place; None means "delete this map"."""
        if _PATCH in patch:
            directive = patch[_PATCH]
            if directive == "delete":
                return None
            if directive == "replace":
                # Start from nothing but still interpret the rest, so nulls
                # and nested directives never end up stored.
                original = {}
            elif directive != "merge":  # "merge" is the default, spelled out
                raise _bad(path, f'unknown $patch value {directive!r}: want "replace", "delete" or "merge"')

        retain: list[str] | None = None
        deletions: dict[str, list[Any]] = {}
        orders: dict[str, list[Any]] = {}
        for key, value in patch.items():
            if not key.startswith("$") or key in _PLAIN_DOLLAR_FIELDS or key == _PATCH:
                continue
            if key == _RETAIN_KEYS:
                if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
                    raise _bad(path, "$retainKeys must be a list of field names")
                retain = value
            elif key.startswith(_DELETE_PRIMITIVE):
                field = key[len(_DELETE_PRIMITIVE):]
                if not field:
                    raise _bad(path, f"{key!r} names no field")
                if not isinstance(value, list) or not all(_is_scalar(v) for v in value):
                    raise _bad(path, f"{key} must be a list of scalar values")
                deletions[field] = value
            elif key.startswith(_SET_ORDER):
                field = key[len(_SET_ORDER):]
                if not field:
                    raise _bad(path, f"{key!r} names no field")
                if not isinstance(value, list):
                    raise _bad(path, f"{key} must be a list")
                orders[field] = value
            else:
                raise _bad(path, f"unknown directive {key!r}")

        if retain is not None:
            keep = set(retain)
            for key, value in patch.items():
                # Deleting a key, or a directive, does not need to be retained.
                if value is None or (key.startswith("$") and key not in _PLAIN_DOLLAR_FIELDS):
                    continue
                if key not in keep:
                    raise _bad(path, f"field {key!r} is set by the patch but missing from $retainKeys")
            for key in [k for k in original if k not in keep]:
                del original[key]

        # $setElementOrder orders against the list as the server had it.
        before: dict[str, list[_Ident | None]] = {}
        for field in orders:
            current = original.get(field)
            strategy = self.fields.get(path + (field,))
            if isinstance(current, list) and strategy is not None and strategy.strategy == "merge":
                ident_of = self._ident_of(strategy)
                before[field] = [ident_of(element) for element in current]

        # Deletions run before the field's own patch, so a value the patch
        # both deletes and adds ends up present (Go leaves this to map order).
        for field, doomed in deletions.items():
            current = original.get(field)
            if isinstance(current, list):
                gone = {_ident(v) for v in doomed}
                original[field] = [v for v in current if _ident(v) is None or _ident(v) not in gone]

        for key, value in patch.items():
            if key.startswith("$") and key not in _PLAIN_DOLLAR_FIELDS:
                continue
            self._merge_field(original, key, value, path + (key,))

        for field, order in orders.items():
            self._apply_order(original, field, order, patch.get(field), before.get(field, []), path + (field,))
        return original

    def _merge_field(self, target: dict[str, Any], key: str, value: Any, path: Path) -> None:
        if value is None:
            target.pop(key, None)
            return
        current = target.get(key)
        if isinstance(value, dict):
            strategy = self.fields.get(path)
            base = current if isinstance(current, dict) and not (strategy and strategy.strategy == "replace") else {}
            merged = self.merge_map(base, value, path)
            if merged is None:
                target.pop(key, None)
            else:
                target[key] = merged
        elif isinstance(value, list):
            target[key] = self.merge_list(current if isinstance(current, list) else None, value, path)
        else:
            target[key] = value

    # -- lists --------------------------------------------------------------

    def _ident_of(self, strategy: FieldStrategy) -> Callable[[Any], _Ident | None]:
        """How elements of a merge list are identified: merge key, or own value."""
        key = strategy.merge_key
        if not key:
            return _ident
        return lambda element: _ident(element[key]) if isinstance(element, dict) and key in element else None

    def merge_list(self, original: list[Any] | None, patch: list[Any], path: Path) -> list[Any]:
        """The merge of `patch` into `original` (None when the original has no such list)."""
        strategy = self.fields.get(path)
        merge_key = strategy.merge_key if strategy is not None and strategy.strategy == "merge" else ""
        replace = False
        doomed: set[_Ident] = set()
        items: list[Any] = []
        for element in patch:
            if not (isinstance(element, dict) and _PATCH in element):
                items.append(element)
                continue
            directive = element[_PATCH]
            if directive == "replace":
                if len(element) != 1:
                    raise _bad(path, 'a {"$patch": "replace"} list element must have no other members')
                replace = True
            elif directive == "delete":
                if not merge_key:
                    raise _bad(path, '{"$patch": "delete"} needs a list merged by key; this list has no merge key')
                if merge_key not in element:
                    raise _bad(path, f'{{"$patch": "delete"}} element lacks the merge key {merge_key!r}')
                key = _ident(element[merge_key])
                if key is None:
                    raise _bad(path, f"merge key {merge_key!r} must be a scalar")
                doomed.add(key)
            else:
                raise _bad(path, f'unsupported $patch value {directive!r} in a list element: want "replace" or "delete"')

        if strategy is None or strategy.strategy != "merge":
            # Atomic list: the patch's elements are the new value.
            return [self._fresh(element, path) for element in items]
        base = [] if replace or original is None else original
        if merge_key:
            return self._merge_keyed(base, items, doomed, merge_key, path)
        return self._merge_set(base, items, path)

    def _merge_keyed(self, base: list[Any], items: list[Any], doomed: set[_Ident], merge_key: str, path: Path) -> list[Any]:
        for element in base:
            if not isinstance(element, dict):
                raise _invalid(path, f"the list is merged by {merge_key!r} but holds a non-object element")
        ident_of = self._ident_of(FieldStrategy("merge", merge_key))
        result = [e for e in base if ident_of(e) is None or ident_of(e) not in doomed]
        server = [ident_of(e) for e in result]
        positions: dict[_Ident, int] = {}
        for index, key_of_element in enumerate(server):
            if key_of_element is not None:
                positions.setdefault(key_of_element, index)
        wanted: list[_Ident | None] = []
        for element in items:
            if not isinstance(element, dict):
                raise _invalid(path, f"the list is merged by {merge_key!r}; every element must be an object")
            if merge_key not in element:
                raise _bad(path, f"list element lacks the merge key {merge_key!r}")
            key = _ident(element[merge_key])
            if key is None:
                raise _bad(path, f"merge key {merge_key!r} must be a scalar")
            wanted.append(key)
            # The index covers elements appended by this patch too, so two
            # patch elements with one key end up as one element, as in
            # apimachinery; the first of duplicate original elements wins.
            if key in positions:
                existing = result[positions[key]]
                merged = self.merge_map(existing, element, path)
                # merge_map returns None only for "$patch": "delete", which
                # merge_list has already taken out of `items`.
                result[positions[key]] = merged if merged is not None else existing
            else:
                fresh = self.merge_map({}, element, path)
                if fresh is not None:
                    positions[key] = len(result)
                    result.append(fresh)
        return _normalize_order(result, wanted, server, ident_of)

    def _merge_set(self, base: list[Any], items: list[Any], path: Path) -> list[Any]:
        if not all(_is_scalar(v) for v in base) or not all(_is_scalar(v) for v in items):
            raise _invalid(path, "the list is merged as a set of scalars; it cannot hold objects or lists")
        seen: set[_Ident | None] = set()
        result: list[Any] = []
        for value in [*base, *items]:
            key = _ident(value)
            if key not in seen:
                seen.add(key)
                result.append(value)
        return _normalize_order(result, [_ident(v) for v in items], [_ident(v) for v in base], _ident)

    def _apply_order(
        self,
        target: dict[str, Any],
        field: str,
        order: list[Any],
        patch_list: Any,
        before: list[_Ident | None],
        path: Path,
    ) -> None:
        """Reorder the merged list `target[field]` as `$setElementOrder/<field>` says."""
        strategy = self.fields.get(path)
        if strategy is None or strategy.strategy != "merge":
            return  # an atomic list is exactly what the patch sent
        ident_of = self._ident_of(strategy)
        wanted: list[_Ident] = []
        for entry in order:
            key = ident_of(entry)
            if key is None:
                raise _bad(path, f"$setElementOrder entries must be {'objects holding the merge key ' + repr(strategy.merge_key) if strategy.merge_key else 'scalars'}")
            wanted.append(key)
        if isinstance(patch_list, list):
            # The order list is the whole list as the client wants it, so the
            # elements the patch sends (deletions aside) must appear in it, in
            # the same relative order; anything else is a client bug.
            sent = [ident_of(e) for e in patch_list if not (isinstance(e, dict) and _PATCH in e)]
            remaining = iter(wanted)
            if not all(key is not None and any(key == w for w in remaining) for key in sent):
                raise _bad(path, "the order of the patch list does not match $setElementOrder")
        current = target.get(field)
        if isinstance(current, list):
            target[field] = _normalize_order(current, list(wanted), before, ident_of)

    def _fresh(self, value: Any, path: Path) -> Any:
        """A patch value with nothing under it: copied, nulls and directives resolved."""
        if isinstance(value, dict):
            merged = self.merge_map({}, value, path)
            return {} if merged is None else merged
        if isinstance(value, list):
            return self.merge_list(None, value, path)
        return value


# ---------------------------------------------------------------------------
# Public API


def apply_strategic_merge_patch(original: dict[str, Any], patch: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    """Apply a strategic merge patch to a copy of `original` and return it.

    `api_version` and `kind` choose the field table. Raises only StatusError:
    415 for a type without strategic merge support, 400 for a malformed
    patch, 422 for one that cannot apply. Neither argument is modified.
    """
    if not supports(api_version, kind):
        raise errors.unsupported_patch(
            f"the body of the request was in an unknown format - accepted media types include: "
            f"application/json-patch+json, application/merge-patch+json (strategic merge patch is not supported for {kind}.{api_version})",
        )
    if not isinstance(patch, dict):
        raise errors.bad_request(f"invalid strategic merge patch: expected a JSON object, got {_json_type(patch)}")
    if bodies.depth(patch, MAX_PATCH_DEPTH) > MAX_PATCH_DEPTH:
        raise _invalid((), f"the patch is nested more than {MAX_PATCH_DEPTH} levels deep")
    result = deep_copy(original) if isinstance(original, dict) else {}
    merged = _Merger(_fields_for(api_version, kind)).merge_map(result, patch, ())
    if merged is None:
        raise _invalid((), '"$patch": "delete" cannot delete the whole object; use DELETE')
    return merged
