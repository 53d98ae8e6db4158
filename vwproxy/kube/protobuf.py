"""Decode Kubernetes protobuf request bodies into the JSON-shaped dicts vwproxy stores.

kubectl and client-go send writes of built-in kinds as
`application/vnd.kubernetes.protobuf`. vwproxy keeps objects as JSON, so this
module turns such a body into exactly the dict that `json.loads` of the Go JSON
encoding of the same object gives: the Kubernetes JSON field names, fields
left out where Go's `omitempty`/`omitzero` leaves them out and present (with
their zero value, `null` for a zero time or a nil slice) where Go always writes
them, times as RFC 3339 strings, `[]byte` as base64.

Wire format
-----------
A body is the 4-byte magic `k8s\\x00` followed by a `runtime.Unknown` message::

    Unknown  { TypeMeta typeMeta = 1; bytes raw = 2; string contentEncoding = 3; string contentType = 4 }
    TypeMeta { string apiVersion = 1; string kind = 2 }

`raw` is the object's own message (which carries no TypeMeta; `apiVersion` and
`kind` come from the envelope and are put into the result). Like the Go
serializer, `contentEncoding` and `contentType` are read and ignored.

How it works
------------
Every supported message is a declarative `_Message`: its fields in Go struct
order (so the dict comes out in the order Go writes JSON), each with its field
number, JSON name, type, cardinality and JSON emission rule. One generic
decoder reads the wire bytes into a per-message state (last scalar wins,
embedded messages merge, repeated fields append, map keys overwrite - the
semantics of the gogo-generated Go `Unmarshal`), and one renderer turns that
state into JSON following the Go struct tags. Field numbers come from
Kubernetes' `generated.proto` files (k8s.io/api and k8s.io/apimachinery
v0.37); emission rules from the matching `types.go` struct tags.

Errors: a body this module cannot read as protobuf (no magic, a truncated or
over-long varint, a length past the end, a wire type that does not fit the
field, an illegal tag, a missing kind) raises 400 BadRequest; a well-formed
envelope naming a kind not listed here raises 415 UnsupportedMediaType naming
that kind, so the client can retry as JSON. Nothing else is raised: the schema
is not recursive (nesting depth is bounded by the table), unknown fields and
groups are skipped iteratively, and every length is checked against the bytes
that remain.

Deviations from the Go API server
---------------------------------
* Times (`Time`, `MicroTime`) outside years 1-9999 are rejected with 400; Go
  would print a five-digit or negative year.
* A `managedFields[].fieldsV1` whose bytes are CBOR (first byte a CBOR map,
  tag or null) is rejected with 400, Go would transcode it to JSON. JSON
  `fieldsV1` deeper than 100 levels, or holding an integer outside the 64-bit
  range or a non-finite number, is rejected too, so the stored object stays
  encodable.
* A map entry whose key or value has the wrong wire type is rejected; the Go
  code reads it as length-delimited whatever its wire type.
* An envelope without `kind` or `apiVersion` is a 400 here; the Go server would
  fill them in from the request URL.
* `DeleteOptions` is accepted under any well-formed apiVersion (`v1`,
  `meta.k8s.io/v1`, `apps/v1`, ...), as client-go labels it with the group
  version of the resource it deletes; its schema does not change with it.
* String bytes that are not UTF-8 become U+FFFD, one per bad byte, as Go's JSON
  encoder writes them; the dict then holds that replacement text.
"""

from __future__ import annotations

import base64
import datetime
import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from vwproxy.kube import errors

PROTOBUF: Final = "application/vnd.kubernetes.protobuf"

_MAGIC: Final = b"k8s\x00"
_U64: Final = (1 << 64) - 1
# Wire types (protobuf encoding spec).
_VARINT: Final = 0
_FIXED64: Final = 1
_LEN: Final = 2
_START_GROUP: Final = 3
_END_GROUP: Final = 4
_FIXED32: Final = 5
# Seconds between 0001-01-01T00:00:00Z (Go's zero time.Time) and the Unix epoch.
_GO_ZERO_UNIX: Final = -62135596800
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
# Bounds for managedFields JSON so the stored object can always be re-encoded.
_MAX_FIELDS_JSON_DEPTH: Final = 100
_INT_MIN: Final = -(1 << 63)
_INT_MAX: Final = _U64


class _T(enum.Enum):
    """What one field holds on the wire and how it is rendered."""

    STRING = "string"
    BYTES = "bytes"  # Go []byte: base64 in JSON
    BOOL = "bool"
    INT32 = "int32"
    INT64 = "int64"
    TIME = "time"  # metav1.Time: whole seconds, RFC 3339
    MICROTIME = "microtime"  # metav1.MicroTime: RFC 3339 with six fractional digits
    FIELDS_V1 = "fieldsV1"  # metav1.FieldsV1: raw JSON bytes embedded as JSON
    MESSAGE = "message"


class _Card(enum.Enum):
    ONE = "one"
    LIST = "list"
    MAP = "map"  # map<string, STRING|BYTES>


class _Emit(enum.Enum):
    """When Go's encoding/json writes a field, from the struct tag and Go type."""

    OMITEMPTY = "omitempty"  # `json:",omitempty"` on a scalar, slice or map: only when non-empty
    ALWAYS = "always"  # no omitempty, or a non-pointer struct (omitempty does not apply): always
    POINTER = "pointer"  # pointer with omitempty: whenever it was set, even to a zero value
    OMITZERO = "omitzero"  # `omitzero`: only when not the zero value


@dataclass(frozen=True)
class _Field:
    number: int
    json: str
    type: _T
    card: _Card = _Card.ONE
    emit: _Emit = _Emit.OMITEMPTY
    message: _Message | None = None  # for _T.MESSAGE


@dataclass(frozen=True)
class _Message:
    name: str
    fields: tuple[_Field, ...]
    by_number: dict[int, _Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_number", {f.number: f for f in self.fields})


def _msg(name: str, *fields: _Field) -> _Message:
    return _Message(name, fields)


def _f(number: int, json_name: str, typ: _T | _Message, card: _Card = _Card.ONE, emit: _Emit = _Emit.OMITEMPTY) -> _Field:
    if isinstance(typ, _Message):
        return _Field(number, json_name, _T.MESSAGE, card, emit, typ)
    return _Field(number, json_name, typ, card, emit)


S, B, BOOL, I32, I64 = _T.STRING, _T.BYTES, _T.BOOL, _T.INT32, _T.INT64
TIME, MICRO, FV1 = _T.TIME, _T.MICROTIME, _T.FIELDS_V1
LIST, MAP = _Card.LIST, _Card.MAP
OMIT, ALWAYS, PTR, OMITZERO = _Emit.OMITEMPTY, _Emit.ALWAYS, _Emit.POINTER, _Emit.OMITZERO

# --- messages that are read but never rendered as objects -------------------

# metav1.Timestamp: the payload of Time and MicroTime.
_TIMESTAMP: Final = _msg("Timestamp", _f(1, "seconds", I64), _f(2, "nanos", I32))
# metav1.FieldsV1 on the wire: one bytes field holding JSON.
_FIELDS_V1: Final = _msg("FieldsV1", _f(1, "Raw", B))
# A map<string, V> entry is a message { key = 1; value = 2 }.
_ENTRY_STRING: Final = _msg("MapEntry", _f(1, "key", S), _f(2, "value", S))
_ENTRY_BYTES: Final = _msg("MapEntry", _f(1, "key", S), _f(2, "value", B))
_TYPE_META: Final = _msg("TypeMeta", _f(1, "apiVersion", S), _f(2, "kind", S))
_UNKNOWN: Final = _msg(
    "Unknown", _f(1, "typeMeta", _TYPE_META), _f(2, "raw", B), _f(3, "contentEncoding", S), _f(4, "contentType", S)
)

# --- meta/v1 (k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto) ---------

_OWNER_REFERENCE: Final = _msg(
    "OwnerReference",
    _f(5, "apiVersion", S, emit=ALWAYS),
    _f(1, "kind", S, emit=ALWAYS),
    _f(3, "name", S, emit=ALWAYS),
    _f(4, "uid", S, emit=ALWAYS),
    _f(6, "controller", BOOL, emit=PTR),
    _f(7, "blockOwnerDeletion", BOOL, emit=PTR),
)
_MANAGED_FIELDS_ENTRY: Final = _msg(
    "ManagedFieldsEntry",
    _f(1, "manager", S),
    _f(2, "operation", S),
    _f(3, "apiVersion", S),
    _f(4, "time", TIME, emit=PTR),
    _f(6, "fieldsType", S),
    _f(7, "fieldsV1", FV1, emit=PTR),
    _f(8, "subresource", S),
)
_OBJECT_META: Final = _msg(
    "ObjectMeta",
    _f(1, "name", S),
    _f(2, "generateName", S),
    _f(3, "namespace", S),
    _f(4, "selfLink", S),
    _f(5, "uid", S),
    _f(6, "resourceVersion", S),
    _f(7, "generation", I64),
    _f(8, "creationTimestamp", TIME, emit=OMITZERO),
    _f(9, "deletionTimestamp", TIME, emit=PTR),
    _f(10, "deletionGracePeriodSeconds", I64, emit=PTR),
    _f(11, "labels", S, MAP),
    _f(12, "annotations", S, MAP),
    _f(13, "ownerReferences", _OWNER_REFERENCE, LIST),
    _f(14, "finalizers", S, LIST),
    _f(17, "managedFields", _MANAGED_FIELDS_ENTRY, LIST),
)
_LABEL_SELECTOR_REQUIREMENT: Final = _msg(
    "LabelSelectorRequirement",
    _f(1, "key", S, emit=ALWAYS),
    _f(2, "operator", S, emit=ALWAYS),
    _f(3, "values", S, LIST),
)
_LABEL_SELECTOR: Final = _msg(
    "LabelSelector",
    _f(1, "matchLabels", S, MAP),
    _f(2, "matchExpressions", _LABEL_SELECTOR_REQUIREMENT, LIST),
)
_PRECONDITIONS: Final = _msg("Preconditions", _f(1, "uid", S, emit=PTR), _f(2, "resourceVersion", S, emit=PTR))
_DELETE_OPTIONS: Final = _msg(
    "DeleteOptions",
    _f(1, "gracePeriodSeconds", I64, emit=PTR),
    _f(2, "preconditions", _PRECONDITIONS, emit=PTR),
    _f(3, "orphanDependents", BOOL, emit=PTR),
    _f(4, "propagationPolicy", S, emit=PTR),
    _f(5, "dryRun", S, LIST),
    _f(6, "ignoreStoreReadErrorWithClusterBreakingPotential", BOOL, emit=PTR),
)

# --- core/v1 (k8s.io/api/core/v1/generated.proto) ----------------------------

# `metadata` is a non-pointer struct: Go writes it even when empty.
_METADATA: Final = _f(1, "metadata", _OBJECT_META, emit=ALWAYS)

_CONFIG_MAP: Final = _msg(
    "ConfigMap",
    _METADATA,
    _f(4, "immutable", BOOL, emit=PTR),
    _f(2, "data", S, MAP),
    _f(3, "binaryData", B, MAP),
)
_SECRET: Final = _msg(
    "Secret",
    _METADATA,
    _f(5, "immutable", BOOL, emit=PTR),
    _f(2, "data", B, MAP),
    _f(4, "stringData", S, MAP),
    _f(3, "type", S),
)
_NAMESPACE_CONDITION: Final = _msg(
    "NamespaceCondition",
    _f(1, "type", S, emit=ALWAYS),
    _f(2, "status", S, emit=ALWAYS),
    _f(4, "lastTransitionTime", TIME, emit=ALWAYS),  # non-pointer Time: `null` when unset
    _f(5, "reason", S),
    _f(6, "message", S),
)
_NAMESPACE: Final = _msg(
    "Namespace",
    _METADATA,
    _f(2, "spec", _msg("NamespaceSpec", _f(1, "finalizers", S, LIST)), emit=ALWAYS),
    _f(
        3,
        "status",
        _msg("NamespaceStatus", _f(1, "phase", S), _f(2, "conditions", _NAMESPACE_CONDITION, LIST)),
        emit=ALWAYS,
    ),
)
_OBJECT_REFERENCE: Final = _msg(
    "ObjectReference",
    _f(1, "kind", S),
    _f(2, "namespace", S),
    _f(3, "name", S),
    _f(4, "uid", S),
    _f(5, "apiVersion", S),
    _f(6, "resourceVersion", S),
    _f(7, "fieldPath", S),
)
_SERVICE_ACCOUNT: Final = _msg(
    "ServiceAccount",
    _METADATA,
    _f(2, "secrets", _OBJECT_REFERENCE, LIST),
    _f(3, "imagePullSecrets", _msg("LocalObjectReference", _f(1, "name", S)), LIST),
    _f(4, "automountServiceAccountToken", BOOL, emit=PTR),
)
_EVENT_SOURCE: Final = _msg("EventSource", _f(1, "component", S), _f(2, "host", S))
_CORE_EVENT: Final = _msg(
    "Event",
    _METADATA,
    _f(2, "involvedObject", _OBJECT_REFERENCE, emit=ALWAYS),
    _f(3, "reason", S),
    _f(4, "message", S),
    _f(5, "source", _EVENT_SOURCE, emit=ALWAYS),
    _f(6, "firstTimestamp", TIME, emit=ALWAYS),
    _f(7, "lastTimestamp", TIME, emit=ALWAYS),
    _f(8, "count", I32),
    _f(9, "type", S),
    _f(10, "eventTime", MICRO, emit=ALWAYS),
    # core/v1 EventSeries tags both fields omitempty; events/v1's does not.
    _f(11, "series", _msg("EventSeries", _f(1, "count", I32), _f(2, "lastObservedTime", MICRO, emit=ALWAYS)), emit=PTR),
    _f(12, "action", S),
    _f(13, "related", _OBJECT_REFERENCE, emit=PTR),
    _f(14, "reportingComponent", S, emit=ALWAYS),
    _f(15, "reportingInstance", S, emit=ALWAYS),
)

# --- events.k8s.io/v1 (k8s.io/api/events/v1/generated.proto) -----------------

_EVENTS_EVENT: Final = _msg(
    "Event",
    _METADATA,
    _f(2, "eventTime", MICRO, emit=ALWAYS),
    _f(
        3,
        "series",
        _msg("EventSeries", _f(1, "count", I32, emit=ALWAYS), _f(2, "lastObservedTime", MICRO, emit=ALWAYS)),
        emit=PTR,
    ),
    _f(4, "reportingController", S),
    _f(5, "reportingInstance", S),
    _f(6, "action", S),
    _f(7, "reason", S),
    _f(8, "regarding", _OBJECT_REFERENCE, emit=ALWAYS),
    _f(9, "related", _OBJECT_REFERENCE, emit=PTR),
    _f(10, "note", S),
    _f(11, "type", S),
    _f(12, "deprecatedSource", _EVENT_SOURCE, emit=ALWAYS),
    _f(13, "deprecatedFirstTimestamp", TIME, emit=ALWAYS),
    _f(14, "deprecatedLastTimestamp", TIME, emit=ALWAYS),
    _f(15, "deprecatedCount", I32),
)

# --- rbac.authorization.k8s.io/v1 (k8s.io/api/rbac/v1/generated.proto) -------

_POLICY_RULE: Final = _msg(
    "PolicyRule",
    _f(1, "verbs", S, LIST, emit=ALWAYS),  # `json:"verbs"`: a nil slice is written as null
    _f(2, "apiGroups", S, LIST),
    _f(3, "resources", S, LIST),
    _f(4, "resourceNames", S, LIST),
    _f(5, "nonResourceURLs", S, LIST),
)
_RULES: Final = _f(2, "rules", _POLICY_RULE, LIST, emit=ALWAYS)
_SUBJECT: Final = _msg(
    "Subject",
    _f(1, "kind", S, emit=ALWAYS),
    _f(2, "apiGroup", S),
    _f(3, "name", S, emit=ALWAYS),
    _f(4, "namespace", S),
)
_ROLE_REF: Final = _msg(
    "RoleRef", _f(1, "apiGroup", S, emit=ALWAYS), _f(2, "kind", S, emit=ALWAYS), _f(3, "name", S, emit=ALWAYS)
)
_ROLE: Final = _msg("Role", _METADATA, _RULES)
_CLUSTER_ROLE: Final = _msg(
    "ClusterRole",
    _METADATA,
    _RULES,
    _f(3, "aggregationRule", _msg("AggregationRule", _f(1, "clusterRoleSelectors", _LABEL_SELECTOR, LIST)), emit=PTR),
)
_BINDING_FIELDS: Final = (_METADATA, _f(2, "subjects", _SUBJECT, LIST), _f(3, "roleRef", _ROLE_REF, emit=ALWAYS))
_ROLE_BINDING: Final = _msg("RoleBinding", *_BINDING_FIELDS)
_CLUSTER_ROLE_BINDING: Final = _msg("ClusterRoleBinding", *_BINDING_FIELDS)

# --- authorization.k8s.io/v1 and authentication.k8s.io/v1: the self reviews ---
# (k8s.io/api/authorization/v1 and authentication/v1 generated.proto). The status a client sends is
# skipped: the server writes it.

_FIELD_SELECTOR_REQUIREMENT: Final = _msg(
    "FieldSelectorRequirement",
    _f(1, "key", S, emit=ALWAYS),
    _f(2, "operator", S, emit=ALWAYS),
    _f(3, "values", S, LIST),
)
_RESOURCE_ATTRIBUTES: Final = _msg(
    "ResourceAttributes",
    _f(1, "namespace", S),
    _f(2, "verb", S),
    _f(3, "group", S),
    _f(4, "version", S),
    _f(5, "resource", S),
    _f(6, "subresource", S),
    _f(7, "name", S),
    _f(8, "fieldSelector", _msg("FieldSelectorAttributes", _f(1, "rawSelector", S), _f(2, "requirements", _FIELD_SELECTOR_REQUIREMENT, LIST)), emit=PTR),
    _f(9, "labelSelector", _msg("LabelSelectorAttributes", _f(1, "rawSelector", S), _f(2, "requirements", _LABEL_SELECTOR_REQUIREMENT, LIST)), emit=PTR),
)
_SELF_SUBJECT_ACCESS_REVIEW: Final = _msg(
    "SelfSubjectAccessReview",
    _METADATA,
    _f(2, "spec", _msg(
        "SelfSubjectAccessReviewSpec",
        _f(1, "resourceAttributes", _RESOURCE_ATTRIBUTES, emit=PTR),
        _f(2, "nonResourceAttributes", _msg("NonResourceAttributes", _f(1, "path", S), _f(2, "verb", S)), emit=PTR),
    ), emit=ALWAYS),
)
_SELF_SUBJECT_RULES_REVIEW: Final = _msg(
    "SelfSubjectRulesReview", _METADATA, _f(2, "spec", _msg("SelfSubjectRulesReviewSpec", _f(1, "namespace", S)), emit=ALWAYS)
)
_SELF_SUBJECT_REVIEW: Final = _msg("SelfSubjectReview", _METADATA)
_TOKEN_REVIEW: Final = _msg(
    "TokenReview", _METADATA, _f(2, "spec", _msg("TokenReviewSpec", _f(1, "token", S), _f(2, "audiences", S, LIST)), emit=ALWAYS)
)

_KINDS: Final[dict[tuple[str, str], _Message]] = {
    ("v1", "ConfigMap"): _CONFIG_MAP,
    ("v1", "Secret"): _SECRET,
    ("v1", "Namespace"): _NAMESPACE,
    ("v1", "ServiceAccount"): _SERVICE_ACCOUNT,
    ("v1", "Event"): _CORE_EVENT,
    ("events.k8s.io/v1", "Event"): _EVENTS_EVENT,
    ("rbac.authorization.k8s.io/v1", "Role"): _ROLE,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): _CLUSTER_ROLE,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): _ROLE_BINDING,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): _CLUSTER_ROLE_BINDING,
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): _SELF_SUBJECT_ACCESS_REVIEW,
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): _SELF_SUBJECT_RULES_REVIEW,
    ("authentication.k8s.io/v1", "SelfSubjectReview"): _SELF_SUBJECT_REVIEW,
    ("authentication.k8s.io/v1", "TokenReview"): _TOKEN_REVIEW,
}

# `v1`, `meta.k8s.io/v1`, `apps/v1`, `batch/v1beta1`, ...: every group version
# registers DeleteOptions, and client-go labels it with the one it talks to.
_API_VERSION_RE: Final = re.compile(r"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?v[1-9][0-9]*(?:(?:alpha|beta)[1-9][0-9]*)?")

del S, B, BOOL, I32, I64, TIME, MICRO, FV1, LIST, MAP, OMIT, ALWAYS, PTR, OMITZERO


def supported(api_version: str, kind: str) -> bool:
    """Whether `decode` can read a protobuf body of this apiVersion and kind."""
    return _schema_for(api_version, kind) is not None


def decode(body: bytes) -> dict[str, Any]:
    """Decode a Kubernetes protobuf body into its JSON-shaped dict, `apiVersion` and `kind` included.

    Raises `StatusError` 400 for bytes that are not a well-formed protobuf
    envelope or object, 415 for a kind this module has no schema for.
    """
    if not body:
        raise _malformed("empty body")
    if not body.startswith(_MAGIC):
        raise _malformed("the body does not start with the Kubernetes protobuf prefix k8s\\x00")
    if len(body) == len(_MAGIC):
        raise _malformed("empty object after the k8s\\x00 prefix")
    envelope = _read(_UNKNOWN, body, len(_MAGIC), len(body), {})
    type_meta: dict[int, Any] = envelope.get(1, {})
    api_version = _text(type_meta.get(1, b""))
    kind = _text(type_meta.get(2, b""))
    if not kind:
        raise _malformed("Object 'Kind' is missing in the protobuf envelope")
    if not api_version:
        raise _malformed(f"Object 'apiVersion' is missing in the protobuf envelope of {kind}")
    schema = _schema_for(api_version, kind)
    if schema is None:
        raise errors.unsupported_patch(
            f'the server cannot decode {kind} ("{api_version}") from {PROTOBUF}; send it as application/json',
        )
    raw: bytes = envelope.get(2, b"")
    state = _read(schema, raw, 0, len(raw), {})
    out: dict[str, Any] = {"kind": kind, "apiVersion": api_version}
    out.update(_render(schema, state))
    return out


def _schema_for(api_version: str, kind: str) -> _Message | None:
    if kind == "DeleteOptions":
        return _DELETE_OPTIONS if _API_VERSION_RE.fullmatch(api_version) else None
    return _KINDS.get((api_version, kind))


def _malformed(message: str) -> errors.StatusError:
    return errors.bad_request(f"invalid protobuf body: {message}")


# --- reading the wire ----------------------------------------------------------


def _varint(buf: bytes, pos: int, end: int, where: str) -> tuple[int, int]:
    """Read one base-128 varint; like Go, at most 10 bytes and only the low 64 bits kept."""
    value = 0
    shift = 0
    while True:
        if shift >= 64:
            raise _malformed(f"{where}: varint longer than 10 bytes")
        if pos >= end:
            raise _malformed(f"{where}: truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value & _U64, pos
        shift += 7


def _length(buf: bytes, pos: int, end: int, where: str) -> tuple[int, int]:
    """Read a length prefix and check the bytes it announces are there."""
    n, pos = _varint(buf, pos, end, where)
    if n > end - pos:
        raise _malformed(f"{where}: length {n} runs past the end of the message")
    return pos + n, pos


def _skip(buf: bytes, pos: int, end: int, wire: int, where: str) -> int:
    """Skip one unknown field whose tag has just been read; groups are walked with a counter, not recursion."""
    depth = 0
    while True:
        if wire == _VARINT:
            _, pos = _varint(buf, pos, end, where)
        elif wire == _FIXED64:
            pos += 8
        elif wire == _LEN:
            pos, _ = _length(buf, pos, end, where)
        elif wire == _START_GROUP:
            depth += 1
        elif wire == _END_GROUP:
            if depth == 0:
                raise _malformed(f"{where}: unexpected end of group")
            depth -= 1
        elif wire == _FIXED32:
            pos += 4
        else:
            raise _malformed(f"{where}: illegal wire type {wire}")
        if pos > end:
            raise _malformed(f"{where}: field runs past the end of the message")
        if depth == 0:
            return pos
        tag, pos = _varint(buf, pos, end, where)
        wire = tag & 7


_WIRE_FOR: Final = {
    _T.STRING: _LEN,
    _T.BYTES: _LEN,
    _T.MESSAGE: _LEN,
    _T.TIME: _LEN,
    _T.MICROTIME: _LEN,
    _T.FIELDS_V1: _LEN,
    _T.BOOL: _VARINT,
    _T.INT32: _VARINT,
    _T.INT64: _VARINT,
}


def _read(msg: _Message, buf: bytes, pos: int, end: int, state: dict[int, Any]) -> dict[int, Any]:
    """Decode `buf[pos:end]` as `msg` into `state` (merging into what is there) and return it.

    State keeps wire-level values keyed by field number: bytes for strings (so
    the text is decoded once, at render time), ints for varints, a nested state
    for messages, `None` or `(seconds, nanos)` for a time, lists and dicts for
    repeated and map fields. Presence of a key is what pointer fields render by.
    """
    while pos < end:
        tag, pos = _varint(buf, pos, end, msg.name)
        wire = tag & 7
        # Go truncates the field number to int32 and refuses zero and negatives.
        number = (tag >> 3) & 0xFFFFFFFF
        if wire == _END_GROUP:
            raise _malformed(f"{msg.name}: end of group outside a group")
        if number == 0 or number >= 1 << 31:
            raise _malformed(f"{msg.name}: illegal field number {number}")
        f = msg.by_number.get(number)
        if f is None:
            pos = _skip(buf, pos, end, wire, msg.name)
            continue
        where = f"{msg.name}.{f.json}"
        if wire != _WIRE_FOR[f.type]:
            raise _malformed(f"{where}: wrong wire type {wire}")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end, where)
            if f.card is not _Card.ONE:  # no repeated or map scalars in these schemas
                raise _malformed(f"{where}: unexpected varint")
            state[number] = value
            continue
        stop, pos = _length(buf, pos, end, where)
        if f.card is _Card.MAP:
            entry_schema = _ENTRY_BYTES if f.type is _T.BYTES else _ENTRY_STRING
            entry = _read(entry_schema, buf, pos, stop, {})
            # Go starts each entry from "" / []byte{} and a later duplicate key wins.
            state.setdefault(number, {})[entry.get(1, b"")] = entry.get(2, b"")
        elif f.type is _T.MESSAGE:
            assert f.message is not None
            if f.card is _Card.LIST:
                state.setdefault(number, []).append(_read(f.message, buf, pos, stop, {}))
            else:
                # A repeated occurrence of a singular message merges into the first.
                state[number] = _read(f.message, buf, pos, stop, state.get(number, {}))
        elif f.type in (_T.TIME, _T.MICROTIME):
            # Time.Unmarshal starts afresh each time; an empty payload is the zero time.
            if stop == pos:
                state[number] = None
            else:
                ts = _read(_TIMESTAMP, buf, pos, stop, {})
                state[number] = (_signed(ts.get(1, 0), 64), _signed(ts.get(2, 0), 32))
        elif f.type is _T.FIELDS_V1:
            state[number] = _read(_FIELDS_V1, buf, pos, stop, state.get(number, {}))
        elif f.card is _Card.LIST:
            state.setdefault(number, []).append(buf[pos:stop])
        else:
            state[number] = buf[pos:stop]
        pos = stop
    return state


def _signed(value: int, bits: int) -> int:
    """Two's-complement reading of the low `bits` bits, as Go's int32/int64 casts do."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _text(raw: bytes) -> str:
    """Bytes to str the way Go's JSON encoder writes a Go string: each invalid byte becomes U+FFFD."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    parts: list[str] = []
    pos = 0
    while pos < len(raw):
        try:
            parts.append(raw[pos:].decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            # Python reports the longest invalid prefix; Go replaces byte by byte.
            parts.append(raw[pos : pos + exc.start].decode("utf-8"))
            parts.append("\ufffd" * (exc.end - exc.start))
            pos += exc.end
    return "".join(parts)


# --- rendering JSON --------------------------------------------------------------


def _render(msg: _Message, state: dict[int, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in msg.fields:
        present = f.number in state
        value: Any = state.get(f.number)
        if f.card is not _Card.ONE:
            if value:  # present repeated/map fields always have at least one element
                out[f.json] = _render_many(f, value)
            elif f.emit is _Emit.ALWAYS:
                out[f.json] = None  # a nil slice or map without omitempty is `null` in Go
        elif f.type is _T.MESSAGE:
            assert f.message is not None
            # Non-pointer structs are always written (omitempty never drops a struct).
            if present or f.emit is not _Emit.POINTER:
                out[f.json] = _render(f.message, value if present else {})
        elif f.type in (_T.TIME, _T.MICROTIME):
            text = _render_time(f, value if present else None)
            if f.emit is _Emit.POINTER:
                if present:
                    out[f.json] = text
            elif f.emit is _Emit.OMITZERO:
                if text is not None:
                    out[f.json] = text
            else:
                out[f.json] = text  # a non-pointer Time: `null` when zero
        elif f.type is _T.FIELDS_V1:
            if present:
                out[f.json] = _render_fields_v1(value)
        else:
            scalar = _render_scalar(f.type, value if present else _ZERO[f.type], f.json)
            if f.emit is _Emit.POINTER:
                if present:
                    out[f.json] = scalar
            elif f.emit is _Emit.ALWAYS or scalar not in ("", 0, False):
                out[f.json] = scalar
    return out


_ZERO: Final[dict[_T, Any]] = {_T.STRING: b"", _T.BYTES: b"", _T.BOOL: 0, _T.INT32: 0, _T.INT64: 0}


def _render_scalar(typ: _T, value: Any, where: str) -> Any:
    if typ is _T.STRING:
        return _text(value)
    if typ is _T.BYTES:
        return base64.b64encode(value).decode("ascii")
    if typ is _T.BOOL:
        return value != 0
    if typ is _T.INT32:
        return _signed(value, 32)
    if typ is _T.INT64:
        return _signed(value, 64)
    raise errors.internal_error(f"protobuf schema bug: {where} has no scalar type")


def _render_many(f: _Field, value: Any) -> Any:
    if f.card is _Card.MAP:
        # Go's encoder writes map keys sorted; a dict keeps that order for re-encoding.
        entries = {_text(k): _render_scalar(f.type, v, f.json) for k, v in value.items()}
        return {k: entries[k] for k in sorted(entries)}
    if f.type is _T.MESSAGE:
        assert f.message is not None
        return [_render(f.message, item) for item in value]
    return [_render_scalar(f.type, item, f.json) for item in value]


def _render_time(f: _Field, value: tuple[int, int] | None) -> str | None:
    """metav1.Time / MicroTime as Go writes them: `None` (JSON null) for the zero time."""
    if value is None:
        return None
    seconds, nanos = value
    if f.type is _T.TIME:
        nanos = 0  # Time.Unmarshal drops nanos: JSON only ever carried whole seconds
    else:
        # MicroTime truncates towards zero to whole microseconds, then time.Unix normalises.
        nanos = abs(nanos) // 1000 * 1000 * (-1 if nanos < 0 else 1)
    seconds, nanos = divmod(seconds * 1_000_000_000 + nanos, 1_000_000_000)
    if seconds == _GO_ZERO_UNIX and nanos == 0:
        return None
    try:
        t = _EPOCH + datetime.timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError:
        raise _malformed(f"{f.json}: time outside years 1-9999") from None
    # Formatted by hand: strftime does not zero-pad years below 1000 everywhere.
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if f.type is _T.MICROTIME:
        text += f".{t.microsecond:06d}"
    return text + "Z"


def _render_fields_v1(state: dict[int, Any]) -> Any:
    """managedFields[].fieldsV1: its bytes are JSON and go into the object as JSON."""
    raw: bytes = state.get(1, b"")
    if not raw:
        return None  # FieldsV1.MarshalJSON writes null for empty bytes
    first = raw[0]
    if first == 0xF6 or 0xA0 <= first <= 0xBF or 0xC6 <= first <= 0xDB:
        raise _malformed("managedFields.fieldsV1: CBOR-encoded fieldsV1 is not supported")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _malformed("managedFields.fieldsV1 is not valid JSON") from None
    _check_json(value)
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_json(value: Any) -> None:
    """Keep managedFields JSON within what a JSON encoder can always write back."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_FIELDS_JSON_DEPTH:
            raise _malformed(f"managedFields.fieldsV1 nests deeper than {_MAX_FIELDS_JSON_DEPTH}")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, int) and not isinstance(item, bool) and not _INT_MIN <= item <= _INT_MAX:
            raise _malformed("managedFields.fieldsV1 holds an integer outside the 64-bit range")
