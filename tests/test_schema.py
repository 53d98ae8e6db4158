"""CRD openAPIV3Schema handling: defaulting, pruning and validation of custom resources."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vwproxy.kube import errors
from vwproxy.kube.errors import Cause
from vwproxy.kube.schema import CRSchema


def obj_schema(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, **extra}


def cr_schema(spec_properties: dict[str, Any], **spec_extra: Any) -> dict[str, Any]:
    """A resource schema whose spec has these properties."""
    return obj_schema(
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": obj_schema(spec_properties, **spec_extra),
        }
    )


def cr(spec: Any, **top: Any) -> dict[str, Any]:
    return {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec, **top}


def check(spec_properties: dict[str, Any], spec: Any, **spec_extra: Any) -> list[Cause]:
    return CRSchema(cr_schema(spec_properties, **spec_extra)).validate(cr(spec))


# ---------------------------------------------------------------------------
# No schema


def test_no_schema_accepts_everything_as_is() -> None:
    raw: dict[str, Any] | None
    for raw in (None, {}):
        schema = CRSchema(raw)
        obj = cr({"anything": [1, {"x": None}]}, extra=True)
        before = copy.deepcopy(obj)
        schema.default(obj)
        assert schema.prune(obj) == []
        assert schema.validate(obj) == []
        assert obj == before
        assert not schema.enabled
    assert CRSchema(cr_schema({})).enabled


# ---------------------------------------------------------------------------
# Defaulting


def test_default_fills_missing_fields_and_keeps_present_ones() -> None:
    schema = CRSchema(
        cr_schema(
            {
                "size": {"type": "integer", "default": 1},
                "name": {"type": "string", "default": "x"},
                "on": {"type": "boolean", "default": True},
            }
        )
    )
    obj = cr({"name": ""})
    schema.default(obj)
    assert obj["spec"] == {"size": 1, "name": "", "on": True}

    present = cr({"size": 0, "name": "y", "on": False})
    schema.default(present)
    assert present["spec"] == {"size": 0, "name": "y", "on": False}


def test_default_needs_the_parent_object() -> None:
    schema = CRSchema(cr_schema({"size": {"type": "integer", "default": 1}}))
    obj: dict[str, Any] = {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {}}
    schema.default(obj)
    assert "spec" not in obj


def test_nested_defaults_apply_inside_a_defaulted_object() -> None:
    schema = CRSchema(
        cr_schema(
            {
                "config": {
                    "type": "object",
                    "default": {"mode": "fast"},
                    "properties": {
                        "mode": {"type": "string", "default": "slow"},
                        "replicas": {"type": "integer", "default": 3},
                        "limits": obj_schema({"cpu": {"type": "string", "default": "100m"}}, default={}),
                    },
                }
            }
        )
    )
    obj = cr({})
    schema.default(obj)
    # The default's own value wins over the nested default of the same field.
    assert obj["spec"] == {"config": {"mode": "fast", "replicas": 3, "limits": {"cpu": "100m"}}}


def test_item_defaults_apply_to_every_element() -> None:
    schema = CRSchema(
        cr_schema(
            {
                "ports": {
                    "type": "array",
                    "items": obj_schema(
                        {"port": {"type": "integer"}, "protocol": {"type": "string", "default": "TCP"}},
                        default={"port": 80},
                    ),
                }
            }
        )
    )
    obj = cr({"ports": [{"port": 53, "protocol": "UDP"}, {"port": 443}, None]})
    schema.default(obj)
    assert obj["spec"]["ports"] == [
        {"port": 53, "protocol": "UDP"},
        {"port": 443, "protocol": "TCP"},
        {"port": 80, "protocol": "TCP"},  # a null element takes the item default, then its nested one
    ]


def test_additional_properties_defaults_apply_to_every_value() -> None:
    schema = CRSchema(
        cr_schema(
            {
                "pools": {
                    "type": "object",
                    "additionalProperties": obj_schema({"size": {"type": "integer", "default": 2}}),
                }
            }
        )
    )
    obj = cr({"pools": {"a": {}, "b": {"size": 5}}})
    schema.default(obj)
    assert obj["spec"]["pools"] == {"a": {"size": 2}, "b": {"size": 5}}


def test_null_takes_the_default_only_when_not_nullable() -> None:
    schema = CRSchema(
        cr_schema(
            {
                "strict": {"type": "string", "default": "d"},
                "loose": {"type": "string", "nullable": True, "default": "d"},
            }
        )
    )
    obj = cr({"strict": None, "loose": None})
    schema.default(obj)
    assert obj["spec"] == {"strict": "d", "loose": None}


def test_defaults_are_copies() -> None:
    raw = cr_schema({"tags": {"type": "array", "items": {"type": "string"}, "default": ["a"]}})
    schema = CRSchema(raw)
    first, second = cr({}), cr({})
    schema.default(first)
    first["spec"]["tags"].append("changed")
    schema.default(second)
    assert second["spec"]["tags"] == ["a"]
    assert raw["properties"]["spec"]["properties"]["tags"]["default"] == ["a"]


# ---------------------------------------------------------------------------
# Pruning


def test_prune_removes_unknown_fields_and_reports_their_paths() -> None:
    schema = CRSchema(
        cr_schema(
            {
                "size": {"type": "integer"},
                "items": {"type": "array", "items": obj_schema({"name": {"type": "string"}})},
            }
        )
    )
    obj = cr({"size": 1, "unknown": {"deep": 1}, "items": [{"name": "a"}, {"name": "b", "extra": 2}]}, extra="x")
    removed = schema.prune(obj)
    assert removed == ["extra", "spec.items[1].extra", "spec.unknown"]
    assert obj == cr({"size": 1, "items": [{"name": "a"}, {"name": "b"}]})
    assert schema.prune(obj) == []


def test_prune_never_touches_top_level_type_and_object_meta() -> None:
    schema = CRSchema(obj_schema({"spec": obj_schema({})}))  # declares none of them
    obj = {
        "apiVersion": "example.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "labels": {"a": "b"}, "notAMetaField": 1},
        "spec": {"gone": 1},
    }
    removed = schema.prune(obj)
    assert removed == ["spec.gone"]
    assert obj == {
        "apiVersion": "example.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "labels": {"a": "b"}, "notAMetaField": 1},
        "spec": {},
    }


def test_preserve_unknown_fields_keeps_its_level_and_below() -> None:
    schema = CRSchema(
        cr_schema(
            {
                "config": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {"known": obj_schema({"a": {"type": "string"}})},
                },
                "strict": obj_schema({"a": {"type": "string"}}),
            }
        )
    )
    obj = cr(
        {
            "config": {"free": {"any": [1, {"thing": True}]}, "known": {"a": "x", "b": "pruned"}},
            "strict": {"a": "x", "b": "pruned"},
        }
    )
    removed = schema.prune(obj)
    assert removed == ["spec.config.known.b", "spec.strict.b"]
    assert obj["spec"] == {
        "config": {"free": {"any": [1, {"thing": True}]}, "known": {"a": "x"}},
        "strict": {"a": "x"},
    }


def test_preserve_unknown_fields_on_the_whole_resource() -> None:
    schema = CRSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    obj = cr({"whatever": [1, 2]}, status={"ok": True})
    before = copy.deepcopy(obj)
    assert schema.prune(obj) == []
    assert obj == before


def test_embedded_resource_keeps_its_type_and_object_meta() -> None:
    schema = CRSchema(
        cr_schema(
            {
                "template": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "properties": {"spec": obj_schema({"replicas": {"type": "integer"}})},
                }
            }
        )
    )
    template = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"replicas": 1, "x": 1}, "y": 2}
    obj = cr({"template": template})
    assert schema.prune(obj) == ["spec.template.spec.x", "spec.template.y"]
    assert obj["spec"]["template"] == {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"replicas": 1}}


def test_prune_follows_additional_properties_and_empties_undeclared_objects() -> None:
    schema = CRSchema(
        cr_schema(
            {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "pools": {"type": "object", "additionalProperties": obj_schema({"size": {"type": "integer"}})},
                "opaque": {"type": "object"},
            }
        )
    )
    obj = cr({"labels": {"a": "b"}, "pools": {"p": {"size": 1, "x": 2}}, "opaque": {"k": "v"}})
    assert schema.prune(obj) == ["spec.opaque.k", "spec.pools.p.x"]
    assert obj["spec"] == {"labels": {"a": "b"}, "pools": {"p": {"size": 1}}, "opaque": {}}


def test_prune_drops_non_nullable_nulls_without_a_default() -> None:
    schema = CRSchema(
        cr_schema(
            {
                "plain": {"type": "string"},
                "nullable": {"type": "string", "nullable": True},
                "defaulted": {"type": "string", "default": "d"},
            }
        )
    )
    obj = cr({"plain": None, "nullable": None, "defaulted": None})
    assert schema.prune(obj) == []  # not unknown fields: nothing to warn about
    assert obj["spec"] == {"nullable": None, "defaulted": None}
    schema.default(obj)
    assert obj["spec"] == {"nullable": None, "defaulted": "d"}


# ---------------------------------------------------------------------------
# Validation


def test_type_error_reads_like_kube_apiserver() -> None:
    assert check({"size": {"type": "integer"}}, {"size": "string"}) == [
        Cause(
            "FieldValueTypeInvalid",
            'Invalid value: "string": spec.size in body must be of type integer: "string"',
            "spec.size",
        )
    ]


@pytest.mark.parametrize(
    ("declared", "value", "actual"),
    [
        ("string", 5, "integer"),
        ("string", 1.5, "number"),
        ("integer", 1.5, "number"),
        ("integer", True, "boolean"),
        ("boolean", "true", "string"),
        ("object", [], "array"),
        ("array", {}, "object"),
        ("number", None, "null"),
    ],
)
def test_type_errors_name_the_type_found(declared: str, value: Any, actual: str) -> None:
    causes = check({"f": {"type": declared}}, {"f": value})
    assert causes == [
        Cause("FieldValueTypeInvalid", f'Invalid value: "{actual}": spec.f in body must be of type {declared}: "{actual}"', "spec.f")
    ]


def test_integral_floats_are_integers_and_integers_are_numbers() -> None:
    assert check({"i": {"type": "integer"}, "n": {"type": "number"}}, {"i": 2.0, "n": 3}) == []


def test_required() -> None:
    causes = check({"a": {"type": "string"}, "b": {"type": "string"}}, {"b": "x"}, required=["a", "b"])
    assert causes == [Cause("FieldValueRequired", "Required value", "spec.a")]
    top = CRSchema(obj_schema({"spec": obj_schema({})}, required=["spec"]))
    assert top.validate({"apiVersion": "v1", "kind": "K", "metadata": {}}) == [
        Cause("FieldValueRequired", "Required value", "spec")
    ]


def test_enum() -> None:
    props = {"color": {"type": "string", "enum": ["red", "green"]}, "n": {"type": "integer", "enum": [1, 2]}}
    assert check(props, {"color": "green", "n": 2}) == []
    assert check(props, {"color": "pink", "n": 3}) == [
        Cause("FieldValueNotSupported", 'Unsupported value: "pink": supported values: "red", "green"', "spec.color"),
        Cause("FieldValueNotSupported", 'Unsupported value: 3: supported values: "1", "2"', "spec.n"),
    ]


@pytest.mark.parametrize(
    ("schema", "value", "message"),
    [
        ({"type": "integer", "minimum": 1}, 0, "Invalid value: 0: spec.f in body should be greater than or equal to 1"),
        ({"type": "integer", "minimum": 1, "exclusiveMinimum": True}, 1, "Invalid value: 1: spec.f in body should be greater than 1"),
        ({"type": "number", "maximum": 2.5}, 3, "Invalid value: 3: spec.f in body should be less than or equal to 2.5"),
        ({"type": "number", "maximum": 10, "exclusiveMaximum": True}, 10.0, "Invalid value: 10: spec.f in body should be less than 10"),
        ({"type": "integer", "multipleOf": 5}, 12, "Invalid value: 12: spec.f in body should be a multiple of 5"),
        ({"type": "string", "minLength": 2}, "a", 'Invalid value: "a": spec.f in body should be at least 2 chars long'),
        ({"type": "string", "pattern": "^[a-z]+$"}, "A1", "Invalid value: \"A1\": spec.f in body should match '^[a-z]+$'"),
        ({"type": "array", "minItems": 2, "items": {"type": "string"}}, ["a"], "Invalid value: 1: spec.f in body should have at least 2 items"),
        ({"type": "array", "uniqueItems": True, "items": {"type": "integer"}}, [1, 1], "Invalid value: [1,1]: spec.f in body shouldn't contain duplicates"),
        ({"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}}, {}, "Invalid value: 0: spec.f in body should have at least 1 properties"),
    ],
)
def test_value_constraints(schema: dict[str, Any], value: Any, message: str) -> None:
    assert check({"f": schema}, {"f": value}) == [Cause("FieldValueInvalid", message, "spec.f")]


def test_bounds_accept_values_inside() -> None:
    props = {
        "a": {"type": "integer", "minimum": 1, "maximum": 3},
        "b": {"type": "string", "minLength": 1, "maxLength": 3, "pattern": "^x"},
        "c": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "integer"}},
    }
    assert check(props, {"a": 3, "b": "xyz", "c": [1, 2]}) == []


def test_too_long_and_too_many() -> None:
    props = {
        "name": {"type": "string", "maxLength": 3},
        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
        "labels": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}},
    }
    assert check(props, {"name": "abcd", "tags": ["a", "b", "c"], "labels": {"a": "1", "b": "2"}}) == [
        Cause("FieldValueTooLong", "Too long: may not be longer than 3", "spec.name"),
        Cause("FieldValueTooMany", "Too many: 3: must have at most 2 items", "spec.tags"),
        Cause("FieldValueTooMany", "Too many: 2: must have at most 1 items", "spec.labels"),
    ]


def test_int_or_string() -> None:
    props = {"port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}}
    assert check(props, {"port": 8080}) == []
    assert check(props, {"port": "http"}) == []
    assert check(props, {"port": True}) == [
        Cause(
            "FieldValueTypeInvalid",
            'Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean"',
            "spec.port",
        )
    ]
    # int-or-string numbers carry no int64 range check: the type has no integer format of its own
    assert check(props, {"port": 2**70}) == []


def test_nullable() -> None:
    props = {
        "maybe": {"type": "string", "nullable": True, "enum": ["a"]},
        "never": {"type": "string"},
        "obj": obj_schema({"x": {"type": "integer"}}, nullable=True),
    }
    assert check(props, {"maybe": None, "obj": None}) == []
    assert check(props, {"never": None}) == [
        Cause("FieldValueTypeInvalid", 'Invalid value: "null": spec.never in body must be of type string: "null"', "spec.never")
    ]
    # `nullable` adds null, nothing else
    assert [c.reason for c in check(props, {"maybe": "b"})] == ["FieldValueNotSupported"]


def test_nested_list_paths() -> None:
    props = {
        "groups": {
            "type": "array",
            "items": obj_schema(
                {
                    "members": {
                        "type": "array",
                        "items": obj_schema({"name": {"type": "string", "minLength": 1}}, required=["name"]),
                    }
                }
            ),
        }
    }
    causes = check(props, {"groups": [{"members": [{"name": "a"}]}, {"members": [{"name": "b"}, {}, {"name": ""}]}]})
    assert causes == [
        Cause("FieldValueRequired", "Required value", "spec.groups[1].members[1].name"),
        Cause(
            "FieldValueInvalid",
            'Invalid value: "": spec.groups[1].members[2].name in body should be at least 1 chars long',
            "spec.groups[1].members[2].name",
        ),
    ]


def test_additional_properties_paths() -> None:
    props = {"limits": {"type": "object", "additionalProperties": {"type": "integer"}}}
    assert check(props, {"limits": {"cpu": 1, "mem": "lots"}}) == [
        Cause(
            "FieldValueTypeInvalid",
            'Invalid value: "string": spec.limits.mem in body must be of type integer: "string"',
            "spec.limits.mem",
        )
    ]


def test_every_problem_is_reported() -> None:
    props = {"a": {"type": "integer"}, "b": {"type": "string", "enum": ["x"]}, "c": {"type": "boolean"}}
    causes = check(props, {"a": "1", "b": "y"}, required=["c"])
    assert sorted(c.field for c in causes) == ["spec.a", "spec.b", "spec.c"]
    assert {c.reason for c in causes} == {"FieldValueTypeInvalid", "FieldValueNotSupported", "FieldValueRequired"}


@pytest.mark.parametrize(
    ("schema", "good", "bad", "message"),
    [
        ({"type": "integer", "format": "int32"}, 2**31 - 1, 2**31, "must be of type integer with format int32"),
        ({"type": "integer", "format": "int32"}, -(2**31), -(2**31) - 1, "must be of type integer with format int32"),
        ({"type": "integer"}, 2**63 - 1, 2**63, "must be of type integer (default format)"),
        ({"type": "integer", "format": "int64"}, -(2**63), -(2**63) - 1, "must be of type integer with format int64"),
        ({"type": "number", "format": "float"}, 3.0e38, 1e39, "must be of type number with format float"),
    ],
)
def test_numeric_format_ranges(schema: dict[str, Any], good: Any, bad: Any, message: str) -> None:
    assert check({"f": schema}, {"f": good}) == []
    (cause,) = check({"f": schema}, {"f": bad})
    assert cause.reason == "FieldValueInvalid"
    assert cause.field == "spec.f"
    assert cause.message.endswith(f"spec.f in body {message}")


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("date-time", ["2024-02-29T12:30:00Z", "2024-01-01T00:00:00.123+02:00", "2024-01-01 10:00:00"], ["2023-02-29T00:00:00Z", "yesterday", "2024-01-01"]),
        ("date", ["2024-12-31"], ["2024-13-01", "2024-1-1"]),
        ("byte", ["aGVsbG8=", ""], ["aGVsbG8", "not base64!"]),
        ("uuid", ["123e4567-e89b-12d3-a456-426614174000"], ["123e4567"]),
        ("uuid4", ["9b2c4f4e-8f0b-4c3e-9a2d-1f2e3d4c5b6a"], ["9b2c4f4e-8f0b-3c3e-9a2d-1f2e3d4c5b6a"]),
        ("ipv4", ["10.0.0.1"], ["10.0.0.256", "::1"]),
        ("ipv6", ["::1", "fe80::1"], ["10.0.0.1", "::g"]),
        ("cidr", ["10.0.0.0/8", "fd00::/64"], ["10.0.0.0", "10.0.0.0/33"]),
        ("mac", ["00:1a:2b:3c:4d:5e", "00-1A-2B-3C-4D-5E"], ["00:1a:2b", "00:1a-2b:3c:4d:5e"]),
        ("hostname", ["example.com", "localhost"], ["-bad.example.com", "a..b", "x" * 64]),
        ("duration", ["1h30m", "250ms", "5 days"], ["soon", "1x"]),
    ],
)
def test_string_formats(fmt: str, good: list[str], bad: list[str]) -> None:
    props = {"f": {"type": "string", "format": fmt}}
    for value in good:
        assert check(props, {"f": value}) == [], value
    for value in bad:
        causes = check(props, {"f": value})
        assert causes == [
            Cause(
                "FieldValueTypeInvalid",
                f"Invalid value: {_quoted(value)}: spec.f in body must be of type {fmt}: {_quoted(value)}",
                "spec.f",
            )
        ], value


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_unchecked_formats_accept_any_string() -> None:
    assert check({"e": {"type": "string", "format": "email"}, "p": {"type": "string", "format": "password"}}, {"e": "nope", "p": "x"}) == []


def test_list_type_set_and_map() -> None:
    props = {
        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "ports": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["port", "protocol"],
            "items": obj_schema({"port": {"type": "integer"}, "protocol": {"type": "string"}, "name": {"type": "string"}}),
        },
    }
    ports = [
        {"port": 80, "protocol": "TCP", "name": "a"},
        {"port": 80, "protocol": "UDP"},
        {"port": 80, "protocol": "TCP", "name": "b"},
    ]
    assert check(props, {"tags": ["a", "b"], "ports": ports[:2]}) == []
    assert check(props, {"tags": ["a", "b", "a"], "ports": ports}) == [
        Cause("FieldValueDuplicate", 'Duplicate value: "a"', "spec.tags[2]"),
        Cause("FieldValueDuplicate", 'Duplicate value: {"port":80,"protocol":"TCP"}', "spec.ports[2]"),
    ]


def test_embedded_resource_needs_api_version_and_kind() -> None:
    props = {"template": {"type": "object", "x-kubernetes-embedded-resource": True, "x-kubernetes-preserve-unknown-fields": True}}
    assert check(props, {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {}}}) == []
    assert check(props, {"template": {"apiVersion": "", "metadata": {}}}) == [
        Cause("FieldValueInvalid", 'Invalid value: "": must not be empty', "spec.template.apiVersion"),
        Cause("FieldValueRequired", "Required value: must not be empty", "spec.template.kind"),
    ]


def test_top_level_metadata_is_not_validated_here() -> None:
    raw = obj_schema(
        {"metadata": obj_schema({"name": {"type": "string", "maxLength": 3}}), "spec": obj_schema({})},
        required=["metadata", "spec"],
    )
    schema = CRSchema(raw)
    assert schema.validate({"apiVersion": "v1", "kind": "K", "metadata": {"name": "much-too-long"}, "spec": {}}) == []
    assert schema.validate({"apiVersion": "v1", "kind": "K", "spec": {}}) == []


def test_cel_rules_are_ignored() -> None:
    props = {"a": {"type": "integer", "x-kubernetes-validations": [{"rule": "self > 100", "message": "too small"}]}}
    assert check(props, {"a": 1}, **{"x-kubernetes-validations": [{"rule": "false"}]}) == []


def test_combinators() -> None:
    props = {
        "one": {"type": "string", "anyOf": [{"pattern": "^a"}, {"pattern": "^b"}]},
        "not": {"type": "string", "not": {"enum": ["forbidden"]}},
    }
    assert check(props, {"one": "apple", "not": "ok"}) == []
    assert check(props, {"one": "cherry", "not": "forbidden"}) == [
        Cause("FieldValueInvalid", 'Invalid value: "cherry": spec.one in body must validate at least one schema (anyOf)', "spec.one"),
        Cause("FieldValueInvalid", 'Invalid value: "forbidden": spec.not in body must not validate the schema (not)', "spec.not"),
    ]


def test_a_pattern_python_cannot_compile_is_ignored() -> None:
    assert check({"f": {"type": "string", "pattern": "(unclosed"}}, {"f": "anything"}) == []


def test_compiled_validators_are_shared_per_schema() -> None:
    raw = cr_schema({"size": {"type": "integer"}})
    first, second = CRSchema(raw), CRSchema(copy.deepcopy(raw))
    assert first._validator is second._validator
    assert CRSchema(cr_schema({"size": {"type": "string"}}))._validator is not first._validator
    # and the cached one is still right for both
    assert second.validate(cr({"size": "x"}))[0].field == "spec.size"


# ---------------------------------------------------------------------------
# A realistic CRD, end to end

WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["color"],
            "properties": {
                "size": {"type": "integer", "format": "int32", "minimum": 1, "default": 1},
                "color": {"type": "string", "enum": ["red", "green", "blue"]},
                "tags": {
                    "type": "array",
                    "maxItems": 4,
                    "x-kubernetes-list-type": "set",
                    "items": {"type": "string", "pattern": "^[a-z0-9-]+$", "maxLength": 16},
                },
                "parts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "count": {"type": "integer", "minimum": 0, "default": 1},
                        },
                    },
                },
                "schedule": {"type": "string", "format": "date-time", "nullable": True},
            },
        },
        "status": {
            "type": "object",
            "properties": {
                "phase": {"type": "string", "enum": ["Pending", "Ready"]},
                "observedGeneration": {"type": "integer", "format": "int64"},
                "conditions": {
                    "type": "array",
                    "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            },
        },
    },
}


def write(schema: CRSchema, obj: dict[str, Any]) -> tuple[list[str], list[Cause]]:
    """What the server does with a custom resource on create: default, prune, validate."""
    schema.default(obj)
    removed = schema.prune(obj)
    return removed, schema.validate(obj)


def test_widget_valid_write() -> None:
    schema = CRSchema(WIDGET_SCHEMA)
    obj = {
        "apiVersion": "example.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "default"},
        "spec": {"color": "blue", "tags": ["a", "b-2"], "parts": [{"name": "gear"}, {"name": "axle", "count": 2}], "colour": "typo"},
        "status": {"phase": "Ready", "conditions": [{"type": "Ok", "anything": {"goes": 1}}]},
    }
    removed, causes = write(schema, obj)
    assert removed == ["spec.colour"]
    assert causes == []
    assert obj == {
        "apiVersion": "example.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "default"},
        "spec": {
            "color": "blue",
            "tags": ["a", "b-2"],
            "parts": [{"name": "gear", "count": 1}, {"name": "axle", "count": 2}],
            "size": 1,
        },
        "status": {"phase": "Ready", "conditions": [{"type": "Ok", "anything": {"goes": 1}}]},
    }


def test_widget_invalid_write_becomes_a_422() -> None:
    schema = CRSchema(WIDGET_SCHEMA)
    obj = {
        "apiVersion": "example.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w2"},
        "spec": {
            "size": 0,
            "tags": ["ok", "Not OK", "ok"],
            "parts": [{"count": -1}],
            "schedule": "tomorrow",
        },
        "status": {"phase": "Done", "observedGeneration": "1"},
    }
    removed, causes = write(schema, obj)
    assert removed == []
    assert causes == [
        Cause("FieldValueRequired", "Required value", "spec.color"),
        Cause("FieldValueInvalid", "Invalid value: 0: spec.size in body should be greater than or equal to 1", "spec.size"),
        Cause("FieldValueInvalid", "Invalid value: \"Not OK\": spec.tags[1] in body should match '^[a-z0-9-]+$'", "spec.tags[1]"),
        Cause("FieldValueDuplicate", 'Duplicate value: "ok"', "spec.tags[2]"),
        Cause("FieldValueRequired", "Required value", "spec.parts[0].name"),
        Cause("FieldValueInvalid", "Invalid value: -1: spec.parts[0].count in body should be greater than or equal to 0", "spec.parts[0].count"),
        Cause("FieldValueTypeInvalid", 'Invalid value: "tomorrow": spec.schedule in body must be of type date-time: "tomorrow"', "spec.schedule"),
        Cause("FieldValueNotSupported", 'Unsupported value: "Done": supported values: "Pending", "Ready"', "status.phase"),
        Cause("FieldValueTypeInvalid", 'Invalid value: "string": status.observedGeneration in body must be of type integer: "string"', "status.observedGeneration"),
    ]
    error = errors.invalid("Widget", "w2", causes, group="example.dev")
    assert error.code == 422
    status = error.to_status()
    assert status["reason"] == "Invalid"
    assert status["message"].startswith(
        'Widget.example.dev "w2" is invalid: spec.color: Required value, '
        "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1, "
    )
    assert status["details"]["causes"][0] == {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.color"}


def test_widget_null_schedule_is_allowed_and_missing_spec_is_required() -> None:
    schema = CRSchema(WIDGET_SCHEMA)
    obj = {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "w3"}, "spec": {"color": "red", "schedule": None}}
    assert write(schema, obj) == ([], [])
    assert obj["spec"] == {"color": "red", "schedule": None, "size": 1}
    bare = {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "w4"}}
    assert write(schema, bare) == ([], [Cause("FieldValueRequired", "Required value", "spec")])


# ---------------------------------------------------------------------------
# Properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["size", "color", "tags", "parts", "name", "count", "schedule", "x", "phase"]) | st.text(max_size=4), children, max_size=5),
    max_leaves=25,
)
KNOWN_REASONS = {
    "FieldValueRequired",
    "FieldValueInvalid",
    "FieldValueTypeInvalid",
    "FieldValueNotSupported",
    "FieldValueTooLong",
    "FieldValueTooMany",
    "FieldValueDuplicate",
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=json_values, status=json_values, top=json_values)
def test_validate_never_raises_and_answers_causes(spec: Any, status: Any, top: Any) -> None:
    schema = CRSchema(WIDGET_SCHEMA)
    for obj in (cr(spec, status=status), top):
        causes = schema.validate(obj)
        assert isinstance(causes, list)
        for cause in causes:
            assert isinstance(cause, Cause)
            assert cause.reason in KNOWN_REASONS
            assert isinstance(cause.message, str) and cause.message
            assert isinstance(cause.field, str)
        assert len(set(causes)) == len(causes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=json_values, status=json_values)
def test_default_and_prune_are_idempotent(spec: Any, status: Any) -> None:
    schema = CRSchema(WIDGET_SCHEMA)
    obj = cr(spec, status=status)
    schema.default(obj)
    schema.prune(obj)
    once = copy.deepcopy(obj)
    schema.default(obj)
    assert schema.prune(obj) == []
    assert obj == once
    # what survives pruning under spec is declared by the schema
    if isinstance(obj.get("spec"), dict):
        assert set(obj["spec"]) <= set(WIDGET_SCHEMA["properties"]["spec"]["properties"])
