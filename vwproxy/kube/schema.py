"""A CustomResourceDefinition version's `schema.openAPIV3Schema`, applied to custom resources on write.

kube-apiserver runs three steps over every custom resource it decodes for a create, update or
patch; `CRSchema` offers each one:

* `prune(obj)`    drops every field the structural schema does not declare and returns their
                  paths, sorted, in kube-apiserver's spelling (`spec.unknown`, `spec.items[0].extra`:
                  no leading dot), which the caller turns into `unknown field "spec.unknown"`
                  warnings or errors for `fieldValidation=Warn|Strict`.
* `default(obj)`  fills in `default` values.
* `validate(obj)` checks the object and answers one `Cause` per problem, for a 422 `Invalid`.

`CRSchema(None)` (no schema; an empty `{}` counts as none too) accepts every object as it is;
`CRSchema.enabled` tells the two apart.

Pruning, as kube-apiserver does it
  * A field that is neither in `properties` nor covered by `additionalProperties` is removed,
    with everything under it.
  * `x-kubernetes-preserve-unknown-fields: true` keeps the unknown fields of that object (and all
    that is below them, unlooked at); fields it does declare are still pruned by their own schema.
  * `apiVersion`, `kind` and `metadata` are never pruned at the top level nor in an object marked
    `x-kubernetes-embedded-resource: true`.
  * `additionalProperties: true` keeps the keys but, like Kubernetes, empties object values below
    them; an array without `items` keeps its scalars and empties its objects.
  * As part of the same step, a `null` whose schema is not `nullable` and has no `default` is
    removed (kube-apiserver's PruneNonNullableNullsWithoutDefaults); such removals are not listed.

Defaulting, as kube-apiserver does it
  * A `default` fills a missing property of an object that is present, and replaces a `null`
    whose schema is not `nullable`; a present value is never overridden.
  * After that the walk goes on inside every value, the defaulted ones included, so defaults
    nested in a default's schema apply too.
  * The `items` and `additionalProperties` schemas apply to every element: a non-nullable `null`
    element takes the element default, and defaults inside each element are applied.
  * Defaults are deep copies; the schema is never shared with an object.

Validation (the work is done by the `jsonschema` library, Draft 2020-12)
  The OpenAPI v3 structural schema is translated once per schema (and cached):
  * `type` (object, array, string, integer, number, boolean); `nullable: true` also admits `null`
    (for `enum` too); `x-kubernetes-int-or-string: true` admits an integer or a string (the usual
    `anyOf: [{type: integer}, {type: string}]` beside it is then redundant and dropped).
  * `properties`, `required`, `additionalProperties` (a schema), `items` (a schema), `enum`,
    `maximum`/`minimum` with OpenAPI 3.0's boolean `exclusiveMaximum`/`exclusiveMinimum`,
    `multipleOf`, `maxLength`, `minLength`, `pattern`, `maxItems`, `minItems`, `uniqueItems`,
    `maxProperties`, `minProperties`, `allOf`, `anyOf`, `oneOf`, `not`.
  * Number ranges, as kube-openapi checks them: `type: integer` must fit int64, or int32 / uint32 /
    uint64 with that `format`; `type: number` with `format: float` (or float32) must fit a float32.
  * String formats checked: `date-time` (RFC 3339 and the other layouts kube-openapi accepts:
    seconds and zone optional, `T` or a space), `date`, `byte` (standard padded base64), `uuid`,
    `uuid3`, `uuid4`, `uuid5`, `ipv4`, `ipv6`, `cidr`, `mac`, `hostname`, `duration` (Go durations
    and kube-openapi's `5 days`, `3h` forms).  Other formats (`email`, `uri`, `password`, `isbn`,
    `creditcard`, `ssn`, `hexcolor`, `rgbcolor`, `bsonobjectid`, ...) accept any string.
  * `x-kubernetes-embedded-resource: true`: `apiVersion` and `kind` must be present non-empty strings.
  * `x-kubernetes-list-type: set` (elements unique) and `map` (one element per value of its
    `x-kubernetes-list-map-keys`): a repeat is `FieldValueDuplicate` at the repeat's index.
  * The top-level `metadata` is not looked at: the server validates ObjectMeta elsewhere.

  Each problem becomes one `Cause`, with kube-apiserver's field path (`spec.items[0].name`),
  reason and message, e.g. `FieldValueTypeInvalid` / `Invalid value: "string": spec.size in body
  must be of type integer: "string"`, `FieldValueRequired` / `Required value`,
  `FieldValueNotSupported` / `Unsupported value: "pink": supported values: "red", "blue"`,
  `FieldValueInvalid` / `Invalid value: 0: spec.size in body should be greater than or equal to 1`,
  `FieldValueTooLong`, `FieldValueTooMany` (maxItems, maxProperties), `FieldValueDuplicate`.

Not supported or simplified
  * `x-kubernetes-validations` (CEL rules) are ignored: no rule is evaluated.
  * `metadata` inside an embedded resource is kept as it is: not pruned to ObjectMeta's fields
    and not validated.
  * Validation ratcheting (a problem with a value an update did not change is tolerated) follows
    kube-apiserver's correlation: map members by name, items of lists of type map by their keys,
    other lists only as a whole; CEL rules are not evaluated at all, so none is ratcheted.
  * `pattern` runs on Python's `re`, not Go's RE2: the usual syntax agrees, a pattern Python cannot
    compile is ignored, and Python's backtracking engine is not linear-time.
  * `anyOf`/`oneOf`/`not` failures are reported as one cause at the value, without the branches'
    own errors; message texts follow kube-apiserver's but are not promised byte for byte.
  * Causes come in the order the schema is walked; identical causes are reported once.
  * The schema itself is trusted to be structural (kube-apiserver checks that when the CRD is
    written); keywords with values of the wrong shape are skipped rather than rejected.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jsonschema  # type: ignore[import-untyped, unused-ignore]
import orjson

from vwproxy.kube.errors import Cause
from vwproxy.kube.jsonvalue import deep_copy

# jsonschema ships no type information (typeshed's stubs leave much of it untyped): the library is
# used through this one Any-typed name, and only JSON values and our own types cross that line.
_js: Any = jsonschema
_ValidationError: Any = _js.exceptions.ValidationError

__all__ = ["CRSchema"]

# Field error reasons (apimachinery's field.ErrorType values as they appear in Status causes).
REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
TYPE_INVALID = "FieldValueTypeInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
DUPLICATE = "FieldValueDuplicate"
INTERNAL = "InternalError"

_META_FIELDS = frozenset({"apiVersion", "kind", "metadata"})
_TYPES = ("object", "array", "string", "integer", "number", "boolean")

# Keywords of our own that the translated schema carries for checks JSON Schema cannot express.
_KW_RANGE = "x-vwproxy-range"
_KW_EMBEDDED = "x-vwproxy-embedded"
_KW_LIST = "x-vwproxy-list"


# ---------------------------------------------------------------------------
# The structural tree that defaulting and pruning walk


@dataclass(frozen=True, slots=True)
class _Node:
    properties: dict[str, _Node] = field(default_factory=dict)
    items: _Node | None = None
    additional: bool = False  # additionalProperties present (a schema or `true`)
    additional_node: _Node | None = None  # its schema; None for `additionalProperties: true`
    default: Any = None  # None: no default (a `default: null` is no default in Kubernetes either)
    nullable: bool = False
    preserve: bool = False
    embedded: bool = False
    list_type: str = ""  # x-kubernetes-list-type of an array
    map_keys: tuple[str, ...] = ()  # x-kubernetes-list-map-keys of a list of type map


def _build_node(schema: Mapping[str, Any]) -> _Node:
    props_raw = schema.get("properties")
    properties = (
        {k: _build_node(v) for k, v in props_raw.items() if isinstance(k, str) and isinstance(v, Mapping)}
        if isinstance(props_raw, Mapping)
        else {}
    )
    items_raw = schema.get("items")
    items = _build_node(items_raw) if isinstance(items_raw, Mapping) else None
    additional_raw = schema.get("additionalProperties")
    additional = isinstance(additional_raw, Mapping) or additional_raw is True
    additional_node = _build_node(additional_raw) if isinstance(additional_raw, Mapping) else None
    return _Node(
        properties=properties,
        items=items,
        additional=additional,
        additional_node=additional_node,
        default=schema.get("default"),
        nullable=schema.get("nullable") is True,
        preserve=schema.get("x-kubernetes-preserve-unknown-fields") is True,
        embedded=schema.get("x-kubernetes-embedded-resource") is True,
        list_type=list_type if isinstance(list_type := schema.get("x-kubernetes-list-type"), str) else "",
        map_keys=tuple(k for k in keys if isinstance(k, str)) if isinstance(keys := schema.get("x-kubernetes-list-map-keys"), list) else (),
    )




def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _apply_defaults(value: Any, node: _Node | None) -> None:
    if node is None:
        return
    if isinstance(value, dict):
        for key, prop in node.properties.items():
            if prop.default is None:
                continue
            if key not in value or (value[key] is None and not prop.nullable):
                value[key] = deep_copy(prop.default)
        for key in list(value):
            prop_node = node.properties.get(key)
            if prop_node is not None:
                _apply_defaults(value[key], prop_node)
            elif node.additional and node.additional_node is not None:
                element = node.additional_node
                if value[key] is None and not element.nullable and element.default is not None:
                    value[key] = deep_copy(element.default)
                _apply_defaults(value[key], element)
    elif isinstance(value, list):
        element_node = node.items
        for i, element_value in enumerate(value):
            if (
                element_value is None
                and element_node is not None
                and not element_node.nullable
                and element_node.default is not None
            ):
                value[i] = deep_copy(element_node.default)
            _apply_defaults(value[i], element_node)


def _prune(value: Any, node: _Node | None, path: str, removed: list[str]) -> None:
    if node is not None and node.preserve:
        _prune_preserving(value, node, path, removed)
        return
    if isinstance(value, dict):
        if node is None:
            for key in list(value):
                removed.append(_child(path, key))
                del value[key]
            return
        for key in list(value):
            if node.embedded and key in _META_FIELDS:
                continue
            prop = node.properties.get(key)
            if prop is not None:
                _prune(value[key], prop, _child(path, key), removed)
            elif node.additional:
                _prune(value[key], node.additional_node, _child(path, key), removed)
            else:
                removed.append(_child(path, key))
                del value[key]
    elif isinstance(value, list):
        element_node = node.items if node is not None else None
        for i, element_value in enumerate(value):
            _prune(element_value, element_node, f"{path}[{i}]", removed)


def _prune_preserving(value: Any, node: _Node, path: str, removed: list[str]) -> None:
    """Under `x-kubernetes-preserve-unknown-fields`: unknown keys stay, known ones are pruned."""
    if isinstance(value, dict):
        for key, field_value in value.items():
            if node.embedded and key in _META_FIELDS:
                continue
            prop = node.properties.get(key)
            if prop is not None:
                _prune(field_value, prop, _child(path, key), removed)
            elif node.additional:
                _prune(field_value, node.additional_node, _child(path, key), removed)
    elif isinstance(value, list) and node.items is not None:
        # Kubernetes keeps preserving through the elements of a preserved array.
        for i, element_value in enumerate(value):
            _prune_preserving(element_value, node.items, f"{path}[{i}]", removed)


def _may_hold_null(value: Any) -> bool:
    """False only when `value` holds no `null` anywhere (the encoder finds out at C speed; the
    text `null` inside a string only costs the walk)."""
    try:
        return b"null" in orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return True


def _drop_non_nullable_nulls(value: Any, node: _Node | None) -> None:
    if isinstance(value, dict):
        for key in list(value):
            sub: _Node | None = None
            if node is not None:
                sub = node.properties.get(key)
                if sub is None and node.additional:
                    sub = node.additional_node
            if value[key] is None and sub is not None and not sub.nullable and sub.default is None:
                del value[key]
            else:
                _drop_non_nullable_nulls(value[key], sub)
    elif isinstance(value, list):
        element_node = node.items if node is not None else None
        for element_value in value:
            _drop_non_nullable_nulls(element_value, element_node)


# ---------------------------------------------------------------------------
# String formats (the kube-openapi registry's, a subset; see the module docstring)

_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?", re.ASCII
)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_UUIDS = {
    "uuid": re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I | re.ASCII),
    "uuid3": re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I | re.ASCII),
    "uuid4": re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}", re.I | re.ASCII),
    "uuid5": re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}", re.I | re.ASCII),
}
_HEX2 = re.compile(r"[0-9a-fA-F]{2}")
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_GO_DURATION = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+", re.ASCII)
_LOOSE_DURATION = re.compile(r"(\d+)\s*([A-Za-zµ]+)")
_DURATION_UNITS = frozenset(
    "ns us µs ms s sec secs second seconds m min mins minute minutes h hr hrs hour hours "
    "d day days w wk wks week weeks".split()
)


def _is_date_time(value: str) -> bool:
    m = _DATE_TIME.fullmatch(value)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups(default="0"))
    try:
        datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return False
    return True


def _is_date(value: str) -> bool:
    m = _DATE.fullmatch(value)
    if m is None:
        return False
    year, month, day = (int(g) for g in m.groups())
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return True


def _is_byte(value: str) -> bool:
    try:
        base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return False
    return True


def _is_ip(value: str, marker: str) -> bool:
    if marker not in value or "%" in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_cidr(value: str) -> bool:
    address, slash, prefix = value.partition("/")
    if not slash or not prefix.isascii() or not prefix.isdigit() or "%" in address:
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _is_mac(value: str) -> bool:
    for sep, group, counts in ((":", _HEX2, (6, 8, 20)), ("-", _HEX2, (6, 8, 20)), (".", _HEX4, (3, 4, 10))):
        parts = value.split(sep)
        if len(parts) > 1:
            return len(parts) in counts and all(group.fullmatch(p) for p in parts)
    return False


def _is_hostname(value: str) -> bool:
    if not value or len(value) > 255:
        return False
    labels = value.split(".")
    for label in labels:
        if not 1 <= len(label) <= 63 or label[0] == "-" or label[-1] == "-":
            return False
        if not all(c.isalnum() or c == "-" for c in label):
            return False
    return len(labels) == 1 or (labels[-1].isalpha() and len(labels[-1]) >= 2)


def _is_duration(value: str) -> bool:
    if value == "0" or _GO_DURATION.fullmatch(value):
        return True
    return any(unit.lower() in _DURATION_UNITS for _, unit in _LOOSE_DURATION.findall(value))


def _matcher(rx: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda value: rx.fullmatch(value) is not None


_STRING_FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": _is_date_time,
    "datetime": _is_date_time,
    "date": _is_date,
    "byte": _is_byte,
    **{name: _matcher(rx) for name, rx in _UUIDS.items()},
    "ipv4": lambda v: _is_ip(v, "."),
    "ipv6": lambda v: _is_ip(v, ":"),
    "cidr": _is_cidr,
    "mac": _is_mac,
    "hostname": _is_hostname,
    "duration": _is_duration,
}


def _make_format_checker() -> Any:
    checker = _js.FormatChecker(formats=())
    for name, check in _STRING_FORMATS.items():

        def run(instance: object, check: Callable[[str], bool] = check) -> bool:
            return not isinstance(instance, str) or check(instance)

        checker.checks(name)(run)
    return checker


# Integer formats and their ranges; `type: integer` without one of these must fit an int64.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
    "int64": (-(2**63), 2**63 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38


# ---------------------------------------------------------------------------
# OpenAPI v3 structural schema -> JSON Schema


def _number(value: Any) -> bool:
    """A JSON number: an int (never a bool) or a finite float."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _translate(node: Mapping[str, Any], root: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    nullable = node.get("nullable") is True
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    declared = node.get("type")

    types: list[str] = []
    if int_or_string:
        types = ["integer", "string"]
    elif declared in _TYPES:
        types = [declared]
    if types:
        out["type"] = types + ["null"] if nullable else types

    enum = node.get("enum")
    if isinstance(enum, list) and enum:
        out["enum"] = enum + [None] if nullable and None not in enum else list(enum)

    # Numbers: bounds (OpenAPI 3.0 spells exclusivity as a boolean beside the bound) and ranges.
    for bound, exclusive in (("maximum", "exclusiveMaximum"), ("minimum", "exclusiveMinimum")):
        if _number(node.get(bound)):
            out[exclusive if node.get(exclusive) is True else bound] = node[bound]
    if _number(node.get("multipleOf")) and node["multipleOf"] > 0:
        out["multipleOf"] = node["multipleOf"]
    fmt = node.get("format")
    fmt = fmt if isinstance(fmt, str) else ""
    if declared == "integer" and not int_or_string:
        out[_KW_RANGE] = {"type": "integer", "format": fmt}
    elif declared == "number" and fmt in ("float", "float32"):
        out[_KW_RANGE] = {"type": "number", "format": fmt}

    # Strings.
    for keyword in ("maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties"):
        if _count(node.get(keyword)):
            out[keyword] = node[keyword]
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error:
            pass
        else:
            out["pattern"] = pattern
    if fmt in _STRING_FORMATS:
        out["format"] = fmt

    # Arrays.
    if node.get("uniqueItems") is True:
        out["uniqueItems"] = True
    items = node.get("items")
    if isinstance(items, Mapping):
        out["items"] = _translate(items)
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        out[_KW_LIST] = {"type": "set"}
    elif list_type == "map":
        keys = node.get("x-kubernetes-list-map-keys")
        if isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys):
            out[_KW_LIST] = {"type": "map", "keys": list(keys)}

    # Objects.
    required = node.get("required")
    if isinstance(required, list):
        names = [r for r in required if isinstance(r, str) and not (root and r == "metadata")]
        if names:
            out["required"] = list(dict.fromkeys(names))
    properties = node.get("properties")
    if isinstance(properties, Mapping):
        out["properties"] = {
            k: _translate(v)
            for k, v in properties.items()
            if isinstance(k, str) and isinstance(v, Mapping) and not (root and k == "metadata")
        }
    additional = node.get("additionalProperties")
    if isinstance(additional, Mapping):
        out["additionalProperties"] = _translate(additional)
    if node.get("x-kubernetes-embedded-resource") is True:
        out[_KW_EMBEDDED] = True
        # apiVersion/kind/metadata are the resource's own, never subject to additionalProperties.
        own = out.setdefault("properties", {})
        for meta in _META_FIELDS:
            own.setdefault(meta, {})
    if root and "additionalProperties" in out:
        own = out.setdefault("properties", {})
        own.setdefault("metadata", {})

    # Combinators.
    for keyword in ("allOf", "anyOf", "oneOf"):
        branches = node.get(keyword)
        if isinstance(branches, list):
            translated = [_translate(b) for b in branches if isinstance(b, Mapping)]
            if keyword == "anyOf" and int_or_string and _only_int_or_string(translated):
                continue
            if translated:
                out[keyword] = translated
    negated = node.get("not")
    if isinstance(negated, Mapping):
        out["not"] = _translate(negated)
    return out


def _only_int_or_string(branches: list[dict[str, Any]]) -> bool:
    return all(set(b) <= {"type", _KW_RANGE} and set(b.get("type", [])) <= {"integer", "string"} for b in branches)


# ---------------------------------------------------------------------------
# Keywords of our own (validator callbacks for jsonschema)


class _Kube(Exception):
    """A finished Kubernetes field error, carried as the `cause` of a jsonschema error."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _kube_error(reason: str, message: str, path: Iterable[str | int] = ()) -> Any:
    return _ValidationError(message, path=path, cause=_Kube(reason, message))


def _kw_required(validator: Any, required: list[str], instance: Any, schema: Any) -> Iterator[Any]:
    """`required` with the missing property in the error's path, as Kubernetes reports it."""
    if isinstance(instance, dict):
        for name in required:
            if name not in instance:
                yield _ValidationError(f"{name!r} is a required property", path=[name])


def _kw_range(validator: Any, spec: dict[str, str], instance: Any, schema: Any) -> Iterator[Any]:
    if not _number(instance):
        return
    kind, fmt = spec["type"], spec["format"]
    if kind == "integer":
        if isinstance(instance, float) and not instance.is_integer():
            return  # `type` reports it
        low, high = _INT_RANGES.get(fmt, _INT_RANGES["int64"])
        ok = low <= int(instance) <= high
    else:
        ok = abs(instance) <= _FLOAT32_MAX
    if not ok:
        detail = f"must be of type {kind} with format {fmt}" if fmt else f"must be of type {kind} (default format)"
        yield _ValidationError(detail)


def _kw_embedded(validator: Any, enabled: bool, instance: Any, schema: Any) -> Iterator[Any]:
    if not enabled or not isinstance(instance, dict):
        return
    for key in ("apiVersion", "kind"):
        if key not in instance:
            yield _kube_error(REQUIRED, "Required value: must not be empty", [key])
        elif not isinstance(instance[key], str):
            yield _kube_error(INVALID, f"Invalid value: {_render(instance[key])}: must be a string", [key])
        elif not instance[key]:
            yield _kube_error(INVALID, 'Invalid value: "": must not be empty', [key])


def _identity(value: Any) -> str:
    """A key under which JSON-equal values (1 and 1.0, reordered objects) coincide."""

    def norm(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return json.dumps(norm(value), sort_keys=True, default=repr)


def _kw_list(validator: Any, spec: dict[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not isinstance(instance, list):
        return
    seen: set[str] = set()
    for i, element in enumerate(instance):
        if spec["type"] == "set":
            key, shown = _identity(element), element
        elif isinstance(element, dict):
            shown = {k: element[k] for k in spec["keys"] if k in element}
            key = _identity([element.get(k) for k in spec["keys"]])
        else:
            continue  # `items` reports a non-object element
        if key in seen:
            yield _kube_error(DUPLICATE, f"Duplicate value: {_render(shown)}", [i])
        seen.add(key)


_Validator: Any = _js.validators.extend(
    _js.Draft202012Validator,
    validators={"required": _kw_required, _KW_RANGE: _kw_range, _KW_EMBEDDED: _kw_embedded, _KW_LIST: _kw_list},
)
_FORMAT_CHECKER: Any = _make_format_checker()


_CACHE_SIZE = 256
_compiled: dict[str, tuple[_Node, Any]] = {}


def _compile(schema: Mapping[str, Any]) -> tuple[_Node, Any]:
    """The defaulting/pruning tree and the compiled validator of one schema, cached by its JSON text."""
    try:
        key = json.dumps(schema, separators=(",", ":"))
    except (TypeError, ValueError):  # not JSON (cannot happen for a decoded CRD): no caching
        key = ""
    hit = _compiled.get(key) if key else None
    if hit is not None:
        return hit
    built = _build_node(schema), _Validator(_translate(schema, root=True), format_checker=_FORMAT_CHECKER)
    if key:
        if len(_compiled) >= _CACHE_SIZE:
            _compiled.pop(next(iter(_compiled)), None)  # oldest first
        _compiled[key] = built
    return built


# ---------------------------------------------------------------------------
# jsonschema errors -> Kubernetes causes


def _format_number(value: int | float) -> str:
    """A number as Go's %v prints it: 3 rather than 3.0, 1e+21 for big floats."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return "+Inf" if value > 0 else ("-Inf" if value < 0 else "NaN")
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        text = repr(value)
        return re.sub(r"e([+-]?)(\d)$", lambda m: f"e{m.group(1) or '+'}0{m.group(2)}", text)
    return str(value)


def _render(value: Any) -> str:
    """A bad value the way apimachinery's field errors print it."""
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _format_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    except (TypeError, ValueError):
        return repr(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"  # kube-apiserver decodes 1.0 as a float64 and names it so
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _field_path(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def _quote_all(values: Iterable[Any]) -> str:
    quoted = []
    for v in values:
        text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=repr)
        quoted.append(json.dumps(text, ensure_ascii=False))
    return ", ".join(quoted)


def _same_json(a: Any, b: Any) -> bool:
    """The same JSON: `true` is not `1`, `1.0` is not `1`, members in the same order (an update
    keeps the order of what it did not touch); integers beyond 64 bits count as different."""
    if a is b:
        return True
    try:
        return orjson.dumps(a) == orjson.dumps(b)
    except (TypeError, orjson.JSONEncodeError):
        return False


def _ratchets(path: Iterable[Any], new: Any, old: Any, node: _Node | None) -> bool:
    """Whether a problem at `path` of `new` is tolerated on an update from `old`, as kube-apiserver
    ratchets validation: the value there has a counterpart in `old` and is the same JSON. Members
    of a map correlate by name, items of a list of type map by their keys; the items of any other
    list only through the list as a whole (unchanged list, tolerated problem)."""
    for step in path:
        if isinstance(step, str):
            if not isinstance(new, dict) or not isinstance(old, dict) or step not in new or step not in old:
                return False
            new, old = new[step], old[step]
            node = None if node is None else node.properties.get(step) or node.additional_node
        elif isinstance(step, int):
            if node is None or node.list_type != "map" or not node.map_keys:
                return _same_json(new, old)
            if not isinstance(new, list) or not isinstance(old, list) or not 0 <= step < len(new) or not isinstance(new[step], dict):
                return False
            keys = node.map_keys
            try:
                wanted = orjson.dumps([new[step].get(k) for k in keys])
                matches = [item for item in old if isinstance(item, dict) and orjson.dumps([item.get(k) for k in keys]) == wanted]
            except (TypeError, orjson.JSONEncodeError):
                return False
            if len(matches) != 1:
                return False
            new, old, node = new[step], matches[0], node.items
        else:
            return False
    return _same_json(new, old)


def _to_cause(error: Any) -> Cause:
    path = _field_path(error.absolute_path)
    if isinstance(error.cause, _Kube):
        return Cause(error.cause.reason, error.cause.message, path)
    keyword = error.validator
    expected = error.validator_value
    value = error.instance
    where = f"{path} in body" if path else "body"

    def invalid(detail: str, shown: Any = None, reason: str = INVALID) -> Cause:
        bad = value if shown is None else shown
        return Cause(reason, f"Invalid value: {_render(bad)}: {where} {detail}", path)

    if keyword == "required":
        return Cause(REQUIRED, "Required value", path)
    if keyword == "type":
        names = ",".join(t for t in expected if t != "null") if isinstance(expected, list) else str(expected)
        actual = _json_type(value)
        return invalid(f'must be of type {names}: "{actual}"', actual, TYPE_INVALID)
    if keyword == "enum":
        allowed = [v for v in expected if v is not None] if isinstance(expected, list) else []
        return Cause(NOT_SUPPORTED, f"Unsupported value: {_render(value)}: supported values: {_quote_all(allowed)}", path)
    if keyword == "format":
        return invalid(f"must be of type {expected}: {_render(value)}", value, TYPE_INVALID)
    if keyword == _KW_RANGE:
        return invalid(error.message)
    bounds = {
        "minimum": "should be greater than or equal to",
        "exclusiveMinimum": "should be greater than",
        "maximum": "should be less than or equal to",
        "exclusiveMaximum": "should be less than",
        "multipleOf": "should be a multiple of",
    }
    if keyword in bounds:
        return invalid(f"{bounds[keyword]} {_format_number(expected)}")
    if keyword == "minLength":
        return invalid(f"should be at least {expected} chars long")
    if keyword == "maxLength":
        return Cause(TOO_LONG, f"Too long: may not be longer than {expected}", path)
    if keyword == "pattern":
        return invalid(f"should match '{expected}'")
    if keyword == "minItems":
        return invalid(f"should have at least {expected} items", len(value))
    if keyword in ("maxItems", "maxProperties"):
        return Cause(TOO_MANY, f"Too many: {len(value)}: must have at most {expected} items", path)
    if keyword == "minProperties":
        return invalid(f"should have at least {expected} properties", len(value))
    if keyword == "uniqueItems":
        return invalid("shouldn't contain duplicates")
    combinators = {
        "anyOf": "must validate at least one schema (anyOf)",
        "oneOf": "must validate one and only one schema (oneOf)",
        "allOf": "must validate all the schemas (allOf)",
        "not": "must not validate the schema (not)",
    }
    if keyword in combinators:
        return invalid(combinators[keyword])
    return invalid(str(error.message))


# ---------------------------------------------------------------------------
# The public face


class CRSchema:
    """One CRD version's `openAPIV3Schema`, ready to default, prune and validate objects.

    Build it once per schema and reuse it; compiling is cached as well (the last 256 schemas, by
    their JSON text), so CRSchemas of the same schema share one compiled validator.
    """

    __slots__ = ("_node", "_root", "_validator")

    def __init__(self, open_api_v3_schema: Mapping[str, Any] | None) -> None:
        self._node: _Node | None = None
        self._root: _Node | None = None
        self._validator: Any = None
        if not open_api_v3_schema:
            return
        self._node, self._validator = _compile(open_api_v3_schema)
        # The resource root keeps its apiVersion/kind/metadata like an embedded resource does.
        self._root = replace(self._node, embedded=True)

    @property
    def enabled(self) -> bool:
        """False for a CRSchema without a schema, which accepts everything as it is."""
        return self._node is not None

    def default(self, obj: dict[str, Any]) -> None:
        """Apply the schema's `default`s to `obj` in place."""
        _apply_defaults(obj, self._node)

    def prune(self, obj: dict[str, Any]) -> list[str]:
        """Drop undeclared fields in place; answer their paths (`spec.foo`, `spec.list[0].bar`), sorted.

        Non-nullable `null`s without a default are dropped too (not listed), as kube-apiserver does.
        """
        if self._root is None:
            return []
        removed: list[str] = []
        _prune(obj, self._root, "", removed)
        if _may_hold_null(obj):
            _drop_non_nullable_nulls(obj, self._node)
        removed.sort()
        return removed

    def validate(self, obj: Any, old: Any = None) -> list[Cause]:
        """One `Cause` per problem, in schema order; an empty list when `obj` is valid. With `old`
        (an update), a problem with a value the update did not change is tolerated (`_ratchets`)."""
        if self._validator is None:
            return []
        causes: list[Cause] = []
        seen: set[Cause] = set()
        try:
            for error in self._validator.iter_errors(obj):
                if old is not None and _ratchets(error.absolute_path, obj, old, self._node):
                    continue
                cause = _to_cause(error)
                if cause not in seen:
                    seen.add(cause)
                    causes.append(cause)
        except RecursionError:
            causes.append(Cause(INTERNAL, "Internal error: the object is nested too deeply to validate"))
        return causes
