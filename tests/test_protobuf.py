"""Tests for vwproxy.kube.protobuf: Kubernetes protobuf request bodies decoded to JSON-shaped dicts.

The vectors in tests/protobuf_vectors/vectors.json come from the real Go
serializers (tests/protobuf_vectors/gen/main.go): protobuf bytes and the JSON
a Go API server would produce for the same object. The hand-built bodies below
use a tiny encoder to reach wire-level cases the Go encoder never writes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vwproxy.kube.errors import StatusError
from vwproxy.kube.protobuf import PROTOBUF, decode, supported

VECTORS: list[dict[str, Any]] = json.loads((Path(__file__).parent / "protobuf_vectors" / "vectors.json").read_text())
BODIES: list[bytes] = [base64.b64decode(v["protobuf_b64"]) for v in VECTORS]


# --- a minimal protobuf encoder for hand-built bodies -------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return tag(number, 2) + varint(len(data)) + data


def vi(number: int, value: int) -> bytes:
    return tag(number, 0) + varint(value)


def entry(number: int, key: str | bytes, value: str | bytes) -> bytes:
    return ld(number, ld(1, key) + ld(2, value))


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return b"k8s\x00" + ld(1, ld(1, api_version) + ld(2, kind)) + ld(2, raw)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        value |= (buf[pos] & 0x7F) << shift
        pos += 1
        if buf[pos - 1] < 0x80:
            return value, pos
        shift += 7


def raw_of(body: bytes) -> bytes:
    """The `raw` field of a well-formed envelope (every field in it is length-delimited)."""
    pos = 4
    while pos < len(body):
        key, pos = read_varint(body, pos)
        size, pos = read_varint(body, pos)
        if key == tag(2, 2)[0]:
            return body[pos : pos + size]
        pos += size
    raise AssertionError("no raw field")


def configmap(raw: bytes) -> dict[str, Any]:
    return decode(envelope("v1", "ConfigMap", raw))


def status_of(body: bytes) -> StatusError:
    with pytest.raises(StatusError) as info:
        decode(body)
    return info.value


def ordered(value: Any) -> str:
    """JSON text that keeps key order and tells true from 1: stricter than ==."""
    return json.dumps(value, ensure_ascii=False)


# --- the real Go serializer's vectors -------------------------------------------


def test_vectors_cover_every_supported_kind() -> None:
    kinds = {(v["json"]["apiVersion"], v["json"]["kind"]) for v in VECTORS}
    assert kinds >= {
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Namespace"),
        ("v1", "ServiceAccount"),
        ("v1", "Event"),
        ("events.k8s.io/v1", "Event"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("v1", "DeleteOptions"),
        ("meta.k8s.io/v1", "DeleteOptions"),
    }


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_decode_matches_go_json(vector: dict[str, Any]) -> None:
    got = decode(base64.b64decode(vector["protobuf_b64"]))
    assert got == vector["json"]
    # Same keys in the same order as Go writes them, and booleans stay booleans.
    assert ordered(got) == ordered(vector["json"])
    assert supported(got["apiVersion"], got["kind"])


def test_full_configmap_vector_has_every_metadata_field() -> None:
    meta = next(v for v in VECTORS if v["name"] == "configmap-full")["json"]["metadata"]
    assert set(meta) == {
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
        "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
        "annotations", "ownerReferences", "finalizers", "managedFields",
    }  # fmt: skip


def test_secret_bytes_are_base64_and_event_times_are_rfc3339() -> None:
    secret = decode(next(b for b, v in zip(BODIES, VECTORS) if v["name"] == "secret-full"))
    assert base64.b64decode(secret["data"]["password"]) == b"s3cr3t"
    assert secret["data"]["empty"] == ""
    event = decode(next(b for b, v in zip(BODIES, VECTORS) if v["name"] == "event-core-full"))
    assert event["eventTime"] == "2026-01-02T03:04:05.123456Z"
    assert event["firstTimestamp"] == "2026-01-02T03:04:05Z"
    assert event["metadata"]["creationTimestamp"] == "2026-01-02T03:04:05Z"


def test_media_type_constant() -> None:
    assert PROTOBUF == "application/vnd.kubernetes.protobuf"


# --- supported() --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_version", "kind", "expected"),
    [
        ("v1", "ConfigMap", True),
        ("v1", "Secret", True),
        ("v1", "Namespace", True),
        ("v1", "ServiceAccount", True),
        ("v1", "Event", True),
        ("events.k8s.io/v1", "Event", True),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", True),
        ("v1", "DeleteOptions", True),
        ("meta.k8s.io/v1", "DeleteOptions", True),
        ("apps/v1", "DeleteOptions", True),
        ("batch/v1beta1", "DeleteOptions", True),
        ("not a version", "DeleteOptions", False),
        ("", "DeleteOptions", False),
        ("v1", "Pod", False),
        ("apps/v1", "Deployment", False),
        ("rbac.authorization.k8s.io/v1", "ConfigMap", False),
        ("events.k8s.io/v1beta1", "Event", False),
        ("v1", "", False),
    ],
)
def test_supported(api_version: str, kind: str, expected: bool) -> None:
    assert supported(api_version, kind) is expected


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"kind":"ConfigMap","apiVersion":"v1"}',
        b"k8s",
        b"k8s\x00",
        b"k8s\x01" + BODIES[0][4:],
        b"k8s\x00" + b"\xff" * 20,  # a varint longer than 10 bytes
        b"k8s\x00\x0a",  # tag with no length
        b"k8s\x00\x0a\x05ab",  # length past the end
        b"k8s\x00\x0c",  # end group outside a group
        b"k8s\x00\x0e\x00",  # wire type 6
        b"k8s\x00\x07\x00",  # field number 0
    ],
)
def test_malformed_bodies_are_400(body: bytes) -> None:
    err = status_of(body)
    assert (err.code, err.reason) == (400, "BadRequest")


@pytest.mark.parametrize("index", range(len(BODIES)), ids=[v["name"] for v in VECTORS])
def test_truncated_vector_is_400(index: int) -> None:
    # The last byte belongs to `raw`, whose length prefix now points past the end.
    err = status_of(BODIES[index][:-1])
    assert err.code == 400


@pytest.mark.parametrize(("api_version", "kind"), [("v1", "Pod"), ("apps/v1", "Deployment"), ("v1", "ConfigMapList")])
def test_unsupported_kind_is_415_naming_it(api_version: str, kind: str) -> None:
    err = status_of(envelope(api_version, kind, ld(1, ld(1, "x"))))
    assert (err.code, err.reason) == (415, "UnsupportedMediaType")
    assert kind in err.message
    assert err.to_status()["code"] == 415


def test_missing_kind_or_api_version_is_400() -> None:
    assert status_of(envelope("v1", "", b"")).code == 400
    assert status_of(envelope("", "ConfigMap", b"")).code == 400
    assert status_of(b"k8s\x00" + ld(2, b"")).code == 400


def test_wrong_wire_type_for_known_field_is_400() -> None:
    err = status_of(envelope("v1", "ConfigMap", vi(1, 5)))
    assert err.code == 400
    assert "metadata" in err.message
    assert status_of(envelope("v1", "ConfigMap", ld(4, b"\x01"))).code == 400  # immutable is a varint
    assert status_of(envelope("v1", "ConfigMap", ld(2, vi(1, 1)))).code == 400  # map key must be a string


def test_time_outside_go_printable_years_is_400() -> None:
    meta = ld(8, vi(1, 253402300800))  # 10000-01-01T00:00:00Z
    assert status_of(envelope("v1", "ConfigMap", ld(1, meta))).code == 400
    meta = ld(8, vi(1, -(1 << 62)))
    assert status_of(envelope("v1", "ConfigMap", ld(1, meta))).code == 400


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"\xa1\x61a\x01", b"\xf6", b"NaN", b"[" * 200 + b"]" * 200, b"1" * 30, b"[" * 100_000],
    ids=["invalid", "cbor-map", "cbor-null", "nan", "too-deep", "huge-int", "recursion"],
)
def test_bad_fields_v1_is_400(raw: bytes) -> None:
    managed = ld(17, ld(1, "m") + ld(7, ld(1, raw)))
    assert status_of(envelope("v1", "ConfigMap", ld(1, managed))).code == 400


# --- wire semantics the Go encoder does not produce but Go's decoder accepts ---------------


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    junk = (
        vi(99, 123)
        + tag(98, 1) + b"\x00" * 8
        + tag(97, 5) + b"\x00" * 4
        + ld(96, b"whatever")
        + tag(95, 3) + vi(1, 1) + tag(2, 3) + tag(2, 4) + ld(3, "x") + tag(95, 4)  # nested group
    )  # fmt: skip
    plain = configmap(ld(1, ld(1, "cm")) + entry(2, "a", "b"))
    assert configmap(junk + ld(1, junk + ld(1, "cm") + junk) + junk + entry(2, "a", "b") + junk) == plain
    assert plain == {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "cm"}, "data": {"a": "b"}}


def test_unclosed_group_is_400() -> None:
    assert status_of(envelope("v1", "ConfigMap", tag(95, 3) + vi(1, 1))).code == 400


def test_repeated_messages_merge_scalars_last_wins_and_map_keys_overwrite() -> None:
    raw = (
        ld(1, ld(1, "first") + entry(11, "a", "1") + ld(14, "f1"))
        + ld(1, ld(3, "ns") + entry(11, "b", "2") + entry(11, "a", "3") + ld(14, "f2"))
        + ld(1, ld(1, "last"))
    )
    assert configmap(raw)["metadata"] == {
        "name": "last",
        "namespace": "ns",
        "labels": {"a": "3", "b": "2"},
        "finalizers": ["f1", "f2"],
    }


def test_map_entry_without_key_or_value_uses_empty_strings() -> None:
    got = configmap(ld(2, b"") + ld(3, ld(1, "k")))
    assert got["data"] == {"": ""}
    assert got["binaryData"] == {"k": ""}


def test_zero_values_present_on_wire() -> None:
    # Pointers set to zero values are written; omitempty scalars at zero are not.
    meta = ld(1, b"") + vi(7, 0) + vi(10, 0) + ld(9, b"") + ld(8, b"")
    got = configmap(ld(1, meta) + vi(4, 0))
    assert got == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"deletionTimestamp": None, "deletionGracePeriodSeconds": 0},
        "immutable": False,
    }


def test_varint_widths_follow_go_integer_casts() -> None:
    event = decode(envelope("v1", "Event", vi(8, (1 << 64) - 1)))  # count: int32(-1)
    assert event["count"] == -1
    event = decode(envelope("v1", "Event", vi(8, 1 << 32)))  # low 32 bits are zero: omitted
    assert "count" not in event
    meta = vi(7, 1 << 63)
    assert configmap(ld(1, meta))["metadata"]["generation"] == -(1 << 63)
    assert configmap(vi(4, 1 << 40))["immutable"] is True


def test_time_payloads() -> None:
    def created(payload: bytes) -> Any:
        return configmap(ld(1, ld(8, payload)))["metadata"].get("creationTimestamp")

    assert created(b"") is None  # zero time: omitzero drops it
    assert created(vi(1, 1767323045) + vi(2, 999)) == "2026-01-02T03:04:05Z"  # nanos dropped
    assert created(vi(2, 5)) == "1970-01-01T00:00:00Z"  # a non-empty payload is not the zero time
    assert created(vi(1, -62135596800)) is None  # Go's zero time, spelt out
    assert created(vi(1, -62135596799)) == "0001-01-01T00:00:01Z"
    assert created(vi(1, 1) + vi(1, 2)) == "1970-01-01T00:00:02Z"


def test_micro_time_payloads() -> None:
    def event_time(payload: bytes) -> Any:
        return decode(envelope("v1", "Event", ld(10, payload)))["eventTime"]

    assert event_time(b"") is None
    assert event_time(vi(1, 1767323045) + vi(2, 123456789)) == "2026-01-02T03:04:05.123456Z"
    assert event_time(vi(1, 10) + vi(2, -1500)) == "1970-01-01T00:00:09.999999Z"  # truncated towards zero
    assert event_time(vi(1, 0) + vi(2, 1_500_000_000)) == "1970-01-01T00:00:01.500000Z"  # normalised
    # nanos is an int32: 2.5e9 wraps to -1794967296 before truncation.
    assert event_time(vi(1, 0) + vi(2, 2_500_000_000)) == "1969-12-31T23:59:58.205033Z"


def test_invalid_utf8_becomes_one_replacement_per_byte() -> None:
    got = configmap(ld(1, ld(1, b"a\xe2\x82b\xff")) + entry(2, b"k\xc3", "v"))
    assert got["metadata"]["name"] == "a\ufffd\ufffdb\ufffd"
    assert got["data"] == {"k\ufffd": "v"}


def test_fields_v1_json_and_empty() -> None:
    managed = ld(17, ld(1, "m") + ld(7, ld(1, b' {"f:a":{}}'))) + ld(17, ld(7, b""))
    got = configmap(ld(1, managed))["metadata"]["managedFields"]
    assert got == [{"manager": "m", "fieldsV1": {"f:a": {}}}, {"fieldsV1": None}]


def test_delete_options_under_a_group_version() -> None:
    raw = ld(4, "Orphan") + vi(1, 5) + ld(5, "All")
    assert decode(envelope("apps/v1", "DeleteOptions", raw)) == {
        "kind": "DeleteOptions",
        "apiVersion": "apps/v1",
        "gracePeriodSeconds": 5,
        "propagationPolicy": "Orphan",
        "dryRun": ["All"],
    }


def test_envelope_content_fields_are_ignored_like_go() -> None:
    body = envelope("v1", "ConfigMap", ld(1, ld(1, "x"))) + ld(3, "gzip") + ld(4, "application/json")
    assert decode(body)["metadata"] == {"name": "x"}


# --- properties: arbitrary input only ever yields a dict, a 400 or a 415 ---------------------


def check_total(body: bytes, allow_415: bool = True) -> None:
    try:
        got = decode(body)
    except StatusError as err:
        assert err.code == 400 or (allow_415 and err.code == 415), err
        return
    assert isinstance(got["kind"], str) and isinstance(got["apiVersion"], str)
    assert supported(got["apiVersion"], got["kind"])
    # Whatever decodes can be stored: both JSON encoders accept it.
    json.dumps(got, allow_nan=False)
    orjson.dumps(got)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes(body: bytes) -> None:
    check_total(body)
    check_total(b"k8s\x00" + body)


@FUZZ
@given(
    st.sampled_from(
        [("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Namespace"), ("v1", "ServiceAccount"), ("v1", "Event"),
         ("events.k8s.io/v1", "Event"), ("rbac.authorization.k8s.io/v1", "ClusterRole"),
         ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("v1", "DeleteOptions")]
    ),
    st.binary(max_size=400),
)  # fmt: skip
def test_arbitrary_raw_under_a_supported_kind(kind: tuple[str, str], raw: bytes) -> None:
    check_total(envelope(kind[0], kind[1], raw), allow_415=False)


@FUZZ
@given(st.data())
def test_mutated_vectors(data: st.DataObject) -> None:
    body = bytearray(data.draw(st.sampled_from(BODIES)))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        at = data.draw(st.integers(0, max(len(body) - 1, 0)))
        if op == "truncate":
            del body[at:]
        elif op == "flip" and body:
            body[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            body[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif body:
            del body[at]
    check_total(bytes(body))


@FUZZ
@given(st.data())
def test_valid_vectors_with_mutated_raw_never_415(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(VECTORS) - 1))
    api_version, kind = VECTORS[index]["json"]["apiVersion"], VECTORS[index]["json"]["kind"]
    raw = bytearray(raw_of(BODIES[index])) or bytearray(b"\x00")  # DeleteOptions{} has an empty raw
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255))
    check_total(envelope(api_version, kind, bytes(raw)), allow_415=False)
