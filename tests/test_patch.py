"""Tests for vwproxy.kube.patch: RFC 6902 JSON Patch and RFC 7386 JSON Merge Patch."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vwproxy.kube.errors import StatusError
from vwproxy.kube.patch import (
    JSON_PATCH,
    MERGE_PATCH,
    apply_json_patch,
    apply_merge_patch,
    parse_patch_body,
)


def canon(value: Any) -> bytes:
    """Strict comparison key: unlike ==, keeps true apart from 1 and 1 apart from 1.0."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


# ---------------------------------------------------------------------------
# RFC 6902 appendix A

RFC6902_OK = [
    pytest.param({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}],
                 {"baz": "qux", "foo": "bar"}, id="A.1 add object member"),
    pytest.param({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}],
                 {"foo": ["bar", "qux", "baz"]}, id="A.2 add array element"),
    pytest.param({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}],
                 {"foo": "bar"}, id="A.3 remove object member"),
    pytest.param({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}],
                 {"foo": ["bar", "baz"]}, id="A.4 remove array element"),
    pytest.param({"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}],
                 {"baz": "boo", "foo": "bar"}, id="A.5 replace value"),
    pytest.param({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
                 [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
                 {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}, id="A.6 move value"),
    pytest.param({"foo": ["all", "grass", "cows", "eat"]}, [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
                 {"foo": ["all", "cows", "eat", "grass"]}, id="A.7 move array element"),
    pytest.param({"baz": "qux", "foo": ["a", 2, "c"]},
                 [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
                 {"baz": "qux", "foo": ["a", 2, "c"]}, id="A.8 test success"),
    pytest.param({"foo": "bar"}, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
                 {"foo": "bar", "child": {"grandchild": {}}}, id="A.10 add nested member object"),
    pytest.param({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
                 {"foo": "bar", "baz": "qux"}, id="A.11 ignore unrecognized members"),
    pytest.param({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}],
                 {"/": 9, "~1": 10}, id="A.14 ~ escape ordering"),
    pytest.param({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
                 {"foo": ["bar", ["abc", "def"]]}, id="A.16 add array value"),
]


@pytest.mark.parametrize(("doc", "patch", "expected"), RFC6902_OK)
def test_rfc6902_appendix_a_success(doc: Any, patch: Any, expected: Any) -> None:
    before = copy.deepcopy(doc)
    assert canon(apply_json_patch(doc, patch)) == canon(expected)
    assert canon(doc) == canon(before)


RFC6902_FAIL = [
    pytest.param({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], id="A.9 test error"),
    pytest.param({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}], id="A.12 add to nonexistent target"),
    pytest.param({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}], id="A.15 string vs number"),
]


@pytest.mark.parametrize(("doc", "patch"), RFC6902_FAIL)
def test_rfc6902_appendix_a_errors_are_422(doc: Any, patch: Any) -> None:
    before = copy.deepcopy(doc)
    with pytest.raises(StatusError) as info:
        apply_json_patch(doc, patch)
    assert (info.value.code, info.value.reason) == (422, "Invalid")
    assert f"jsonpatch {patch[0]['op']} operation does not apply" in info.value.message
    assert canon(doc) == canon(before)


def test_rfc6902_a13_duplicate_op_is_not_treated_as_add() -> None:
    # A.13: duplicate "op" members. orjson keeps the last one, as Go's
    # decoder does in the real API server, so this is a "remove" of a
    # missing member and must fail rather than add "baz".
    body = b'[{"op": "add", "path": "/baz", "value": "qux", "op": "remove"}]'
    patch = parse_patch_body(body, JSON_PATCH)
    assert patch[0]["op"] == "remove"
    with pytest.raises(StatusError) as info:
        apply_json_patch({"foo": "bar"}, patch)
    assert info.value.code == 422
    assert "jsonpatch remove operation does not apply" in info.value.message


RFC6901_DOC = {
    "foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3, "g|h": 4,
    "i\\j": 5, 'k"l': 6, " ": 7, "m~n": 8,
}


@pytest.mark.parametrize(("pointer", "expected"), [
    ("", RFC6901_DOC), ("/foo", ["bar", "baz"]), ("/foo/0", "bar"), ("/", 0), ("/a~1b", 1),
    ("/c%d", 2), ("/e^f", 3), ("/g|h", 4), ("/i\\j", 5), ('/k"l', 6), ("/ ", 7), ("/m~0n", 8),
])
def test_rfc6901_pointer_examples_resolve(pointer: str, expected: Any) -> None:
    apply_json_patch(RFC6901_DOC, [{"op": "test", "path": pointer, "value": expected}])
    # And the same pointer does not match some other value.
    with pytest.raises(StatusError) as info:
        apply_json_patch(RFC6901_DOC, [{"op": "test", "path": pointer, "value": "something else"}])
    assert info.value.code == 422


# ---------------------------------------------------------------------------
# JSON Patch semantics beyond the appendix


@pytest.mark.parametrize(("doc", "patch", "expected"), [
    pytest.param({"a": 1}, [{"op": "add", "path": "", "value": [1, 2]}], [1, 2], id="add root replaces"),
    pytest.param({"a": 1}, [{"op": "replace", "path": "", "value": "x"}], "x", id="replace root"),
    pytest.param([1, 2], [{"op": "add", "path": "/2", "value": 3}], [1, 2, 3], id="add at index len"),
    pytest.param([1, 2], [{"op": "add", "path": "/-", "value": 3}], [1, 2, 3], id="append to root array"),
    pytest.param([1, 2], [{"op": "add", "path": "/0", "value": 0}], [0, 1, 2], id="insert at front"),
    pytest.param({"a": 1}, [{"op": "add", "path": "/a", "value": 2}], {"a": 2}, id="add existing member replaces"),
    pytest.param({"a": 1}, [{"op": "add", "path": "/", "value": 2}], {"a": 1, "": 2}, id="empty key"),
    pytest.param({"a": 1}, [{"op": "add", "path": "/b", "value": None}], {"a": 1, "b": None}, id="null value"),
    pytest.param({"a": {"b": 1}}, [{"op": "copy", "from": "/a", "path": "/c"}],
                 {"a": {"b": 1}, "c": {"b": 1}}, id="copy"),
    pytest.param({"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}], {"a": 1}, id="move onto itself"),
    pytest.param({"a": {"b": 1}}, [{"op": "move", "from": "/a/b", "path": "/a"}], {"a": 1}, id="move to parent"),
    pytest.param([1, 2, 3], [{"op": "move", "from": "/2", "path": "/0"}], [3, 1, 2], id="move array backwards"),
    pytest.param({"a": 1}, [{"op": "test", "path": "/a", "value": 1.0}], {"a": 1}, id="test 1 == 1.0"),
    pytest.param({"a": {"x": [1, {"y": None}]}}, [{"op": "test", "path": "/a", "value": {"x": [1.0, {"y": None}]}}],
                 {"a": {"x": [1, {"y": None}]}}, id="test structural"),
    pytest.param({"a": 1}, [{"op": "test", "path": "", "value": {"a": 1}}], {"a": 1}, id="test root"),
    pytest.param({"a": []}, [{"op": "remove", "path": "/a"}, {"op": "add", "path": "/b", "value": 1}],
                 {"b": 1}, id="sequence"),
])
def test_json_patch_semantics(doc: Any, patch: Any, expected: Any) -> None:
    assert canon(apply_json_patch(doc, patch)) == canon(expected)


JSON_PATCH_422 = [
    pytest.param({}, [{"op": "remove", "path": "/a"}], "remove", "doc is missing path", id="remove missing"),
    pytest.param({}, [{"op": "replace", "path": "/a", "value": 1}], "replace", "doc is missing path", id="replace missing"),
    pytest.param({"a": 1}, [{"op": "remove", "path": ""}], "remove", "whole document", id="remove root"),
    pytest.param([1], [{"op": "add", "path": "/2", "value": 1}], "add", "out of range", id="add past len"),
    pytest.param([1], [{"op": "remove", "path": "/1"}], "remove", "out of range", id="remove past end"),
    pytest.param([1], [{"op": "replace", "path": "/1", "value": 0}], "replace", "out of range", id="replace past end"),
    pytest.param([1, 2], [{"op": "add", "path": "/01", "value": 0}], "add", "not a valid array index", id="leading zero"),
    pytest.param([1], [{"op": "add", "path": "/x", "value": 0}], "add", "not a valid array index", id="non-numeric index"),
    pytest.param([1], [{"op": "add", "path": "/-1", "value": 0}], "add", "not a valid array index", id="negative index"),
    pytest.param([1], [{"op": "remove", "path": "/-"}], "remove", "past the end", id="remove dash"),
    pytest.param([1], [{"op": "replace", "path": "/-", "value": 2}], "replace", "past the end", id="replace dash"),
    pytest.param([1], [{"op": "test", "path": "/-", "value": 1}], "test", "past the end", id="test dash"),
    pytest.param({"a": "s"}, [{"op": "add", "path": "/a/b", "value": 1}], "add", "cannot add a member to a string",
                 id="add into scalar"),
    pytest.param({"a": 1}, [{"op": "test", "path": "/a/b", "value": 1}], "test", "cannot index into a number",
                 id="walk through scalar"),
    pytest.param({"a": True}, [{"op": "test", "path": "/a", "value": 1}], "test", "not equal", id="true != 1"),
    pytest.param({"a": 0}, [{"op": "test", "path": "/a", "value": False}], "test", "not equal", id="0 != false"),
    pytest.param({"a": None}, [{"op": "test", "path": "/a", "value": "null"}], "test", "not equal", id="null != 'null'"),
    pytest.param({"a": [1, 2]}, [{"op": "test", "path": "/a", "value": [2, 1]}], "test", "not equal", id="order matters"),
    pytest.param({"a": {"b": 1}}, [{"op": "test", "path": "/a", "value": {"b": 1, "c": 2}}], "test", "not equal",
                 id="extra key"),
    pytest.param({}, [{"op": "test", "path": "/metadata/labels/x", "value": "y"}], "test",
                 'doc is missing path: "/metadata/labels/x"', id="test missing"),
    pytest.param({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/c"}], "move", "its own child",
                 id="move into child"),
    pytest.param({"a": 1}, [{"op": "move", "from": "", "path": "/b"}], "move", "its own child", id="move root into child"),
    pytest.param({}, [{"op": "move", "from": "/x", "path": "/y"}], "move", 'missing from path: "/x"', id="move missing"),
    pytest.param({}, [{"op": "copy", "from": "/x", "path": "/y"}], "copy", 'missing from path: "/x"', id="copy missing"),
    pytest.param({"a": 1}, [{"op": "add", "path": "/b", "value": 2}, {"op": "remove", "path": "/c"}], "remove",
                 "operation 1", id="second op fails"),
]


@pytest.mark.parametrize(("doc", "patch", "op", "why"), JSON_PATCH_422)
def test_json_patch_unapplicable_is_422(doc: Any, patch: Any, op: str, why: str) -> None:
    before = copy.deepcopy(doc)
    with pytest.raises(StatusError) as info:
        apply_json_patch(doc, patch)
    err = info.value
    assert (err.code, err.reason) == (422, "Invalid")
    assert err.message.startswith(f"jsonpatch {op} operation does not apply: ")
    assert why in err.message
    assert err.to_status()["code"] == 422
    assert canon(doc) == canon(before)


JSON_PATCH_400 = [
    pytest.param({"op": "add", "path": "/a", "value": 1}, "expected an array", id="object not array"),
    pytest.param("add", "expected an array", id="string"),
    pytest.param(None, "expected an array", id="null"),
    pytest.param([1], "expected an object", id="number op"),
    pytest.param([[]], "expected an object", id="array op"),
    pytest.param([{"path": "/a", "value": 1}], 'missing "op"', id="op missing"),
    pytest.param([{"op": "frobnicate", "path": "/a"}], "unknown op", id="unknown op"),
    pytest.param([{"op": "ADD", "path": "/a", "value": 1}], "unknown op", id="ops are case sensitive"),
    pytest.param([{"op": 1, "path": "/a"}], "unknown op", id="op not a string"),
    pytest.param([{"op": "remove"}], '"path"', id="path missing"),
    pytest.param([{"op": "remove", "path": 5}], '"path"', id="path not a string"),
    pytest.param([{"op": "remove", "path": "a"}], "not a valid JSON pointer", id="pointer without slash"),
    pytest.param([{"op": "remove", "path": "/a~2"}], "not a valid JSON pointer", id="bad escape"),
    pytest.param([{"op": "remove", "path": "/a~"}], "not a valid JSON pointer", id="trailing tilde"),
    pytest.param([{"op": "add", "path": "/a"}], 'missing "value"', id="add without value"),
    pytest.param([{"op": "replace", "path": "/a"}], 'missing "value"', id="replace without value"),
    pytest.param([{"op": "test", "path": "/a"}], 'missing "value"', id="test without value"),
    pytest.param([{"op": "move", "path": "/a"}], '"from"', id="move without from"),
    pytest.param([{"op": "copy", "path": "/a"}], '"from"', id="copy without from"),
    pytest.param([{"op": "copy", "path": "/a", "from": ["x"]}], '"from"', id="from not a string"),
    pytest.param([{"op": "copy", "path": "/a", "from": "x"}], "not a valid JSON pointer", id="from bad pointer"),
    # A malformed op is reported even when an earlier op would fail to apply.
    pytest.param([{"op": "remove", "path": "/missing"}, {"op": "nope", "path": "/a"}], "operation 1", id="validated first"),
]


@pytest.mark.parametrize(("patch", "why"), JSON_PATCH_400)
def test_json_patch_malformed_is_400(patch: Any, why: str) -> None:
    with pytest.raises(StatusError) as info:
        apply_json_patch({"a": 1}, patch)
    assert (info.value.code, info.value.reason) == (400, "BadRequest")
    assert why in info.value.message


def test_json_patch_null_value_counts_as_present() -> None:
    assert apply_json_patch({"a": 1}, [{"op": "replace", "path": "/a", "value": None}]) == {"a": None}


def test_json_patch_operation_cap() -> None:
    ok = [{"op": "test", "path": "", "value": {}}] * 10_000
    assert apply_json_patch({}, ok) == {}
    with pytest.raises(StatusError) as info:
        apply_json_patch({}, ok + [{"op": "test", "path": "", "value": {}}])
    assert (info.value.code, info.value.reason) == (422, "Invalid")
    assert info.value.message == "The allowed maximum operations in a JSON patch is 10000, got 10001"


def test_json_patch_does_not_mutate_inputs_or_alias_patch() -> None:
    doc = {"metadata": {"labels": {"a": "1"}}, "items": [{"x": 1}]}
    patch = [
        {"op": "add", "path": "/metadata/labels/b", "value": {"nested": [1]}},
        {"op": "remove", "path": "/items/0"},
        {"op": "copy", "from": "/metadata", "path": "/copied"},
    ]
    doc_before, patch_before = copy.deepcopy(doc), copy.deepcopy(patch)
    out = apply_json_patch(doc, patch)
    assert canon(doc) == canon(doc_before)
    assert canon(patch) == canon(patch_before)
    # The result owns its containers: editing it leaves doc and patch alone.
    out["metadata"]["labels"]["b"]["nested"].append(2)
    out["copied"]["labels"]["a"] = "changed"
    assert canon(patch) == canon(patch_before)
    assert canon(doc) == canon(doc_before)
    assert out["metadata"]["labels"]["a"] == "1"


def test_json_patch_failure_leaves_doc_untouched() -> None:
    doc = {"a": 1}
    with pytest.raises(StatusError):
        apply_json_patch(doc, [{"op": "add", "path": "/b", "value": 2}, {"op": "test", "path": "/a", "value": 2}])
    assert doc == {"a": 1}


def test_deeply_nested_documents_do_not_overflow_the_stack() -> None:
    depth = 5000
    deep: Any = []
    for _ in range(depth - 1):  # built directly: newer orjson refuses JSON nested over 1024 deep
        deep = [deep]
    out = apply_json_patch(deep, [{"op": "test", "path": "", "value": deep}, {"op": "add", "path": "/-", "value": 1}])
    assert len(out) == 2 and out[1] == 1
    merged = apply_merge_patch({"a": deep}, {"b": 1})
    assert merged["b"] == 1 and len(merged["a"]) == 1


# ---------------------------------------------------------------------------
# RFC 7386 appendix A (and the section 3 example)

RFC7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    (
        {"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
         "tags": ["example", "sample"], "content": "This will be unchanged"},
        {"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": None}, "tags": ["example"]},
        {"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
         "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"},
    ),
]


@pytest.mark.parametrize(("doc", "patch", "expected"), RFC7386, ids=[f"case{i}" for i in range(len(RFC7386))])
def test_rfc7386_examples(doc: Any, patch: Any, expected: Any) -> None:
    doc_before, patch_before = copy.deepcopy(doc), copy.deepcopy(patch)
    assert canon(apply_merge_patch(doc, patch)) == canon(expected)
    assert canon(doc) == canon(doc_before)
    assert canon(patch) == canon(patch_before)


def test_merge_patch_result_does_not_alias_inputs() -> None:
    doc = {"spec": {"list": [1], "keep": {"k": 1}}}
    patch = {"spec": {"new": {"inner": [1]}, "list": [2]}}
    out = apply_merge_patch(doc, patch)
    out["spec"]["new"]["inner"].append(9)
    out["spec"]["list"].append(9)
    out["spec"]["keep"]["k"] = 2
    assert patch == {"spec": {"new": {"inner": [1]}, "list": [2]}}
    assert doc == {"spec": {"list": [1], "keep": {"k": 1}}}
    replaced = apply_merge_patch(doc, [[1]])
    replaced[0].append(2)
    assert doc == {"spec": {"list": [1], "keep": {"k": 1}}}


# ---------------------------------------------------------------------------
# parse_patch_body


def test_parse_json_patch_body() -> None:
    body = b'[{"op":"add","path":"/a","value":1}]'
    assert parse_patch_body(body, JSON_PATCH) == [{"op": "add", "path": "/a", "value": 1}]
    assert parse_patch_body(body, "Application/JSON-Patch+JSON; charset=utf-8") == [
        {"op": "add", "path": "/a", "value": 1}
    ]
    assert parse_patch_body(b"[]", JSON_PATCH) == []


def test_parse_merge_patch_body() -> None:
    assert parse_patch_body(b'{"metadata":{"labels":{"a":null}}}', MERGE_PATCH) == {
        "metadata": {"labels": {"a": None}}
    }
    assert parse_patch_body(b"{}", MERGE_PATCH + "; charset=utf-8") == {}


@pytest.mark.parametrize(("body", "content_type", "why"), [
    (b"", JSON_PATCH, "error decoding patch body"),
    (b"[{", JSON_PATCH, "error decoding patch body"),
    (b"\xff\xfe", MERGE_PATCH, "error decoding patch body"),
    (b"{'a': 1}", MERGE_PATCH, "error decoding patch body"),
    (b'{"op":"add","path":"/a","value":1}', JSON_PATCH, "expected an array"),
    (b"[1, 2]", JSON_PATCH, "expected an object"),
    (b"[{}, null]", JSON_PATCH, "operation 1"),
    (b"[]", MERGE_PATCH, "expected a JSON object"),
    (b"null", MERGE_PATCH, "expected a JSON object"),
    (b'"x"', MERGE_PATCH, "expected a JSON object"),
])
def test_parse_bad_body_is_400(body: bytes, content_type: str, why: str) -> None:
    with pytest.raises(StatusError) as info:
        parse_patch_body(body, content_type)
    assert (info.value.code, info.value.reason) == (400, "BadRequest")
    assert why in info.value.message


@pytest.mark.parametrize("content_type", [
    "application/json", "application/strategic-merge-patch+json", "application/apply-patch+yaml", "",
])
def test_parse_other_patch_types_are_415(content_type: str) -> None:
    with pytest.raises(StatusError) as info:
        parse_patch_body(b"{}", content_type)
    assert info.value.code == 415


# ---------------------------------------------------------------------------
# Properties

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
keys = st.text(alphabet="ab/~0 ", max_size=4)


def json_values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(keys, children, max_size=4),
        ),
        max_leaves=15,
    )


values_with_nulls = json_values(st.one_of(st.none(), scalars))
values_without_nulls = json_values(scalars)


def merge_diff(a: Any, b: Any) -> Any:
    """Reference: the merge patch that takes object `a` to object `b`."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return b
    out: dict[str, Any] = {k: None for k in a if k not in b}
    for key, value in b.items():
        if key not in a:
            out[key] = value
        elif isinstance(a[key], dict) and isinstance(value, dict):
            sub = merge_diff(a[key], value)
            if sub:
                out[key] = sub
        elif canon(a[key]) != canon(value):
            out[key] = value
    return out


@given(
    a=st.dictionaries(keys, values_with_nulls, max_size=5),
    b=st.dictionaries(keys, values_without_nulls, max_size=5),
)
def test_property_merge_diff_round_trips(a: dict[str, Any], b: dict[str, Any]) -> None:
    a_before = canon(a)
    diff = merge_diff(a, b)
    assert canon(apply_merge_patch(a, diff)) == canon(b)
    assert canon(a) == a_before


@st.composite
def doc_and_fresh_keys(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[str, Any]], list[int]]:
    doc = draw(st.dictionaries(keys, values_with_nulls, max_size=5))
    fresh = draw(st.lists(keys.filter(lambda k: k not in doc), unique=True, max_size=6))
    values = [draw(values_with_nulls) for _ in fresh]
    order = draw(st.permutations(range(len(fresh))))
    return doc, list(zip(fresh, values)), list(order)


@given(doc_and_fresh_keys())
def test_property_add_then_remove_fresh_keys_is_identity(
    case: tuple[dict[str, Any], list[tuple[str, Any]], list[int]]
) -> None:
    doc, additions, order = case
    before = canon(doc)
    patch: list[dict[str, Any]] = [{"op": "add", "path": "/" + escape(k), "value": v} for k, v in additions]
    patch += [{"op": "remove", "path": "/" + escape(additions[i][0])} for i in order]
    assert canon(apply_json_patch(doc, patch)) == before
    # The intermediate state really did contain the additions.
    added = apply_json_patch(doc, patch[: len(additions)])
    assert all(canon(added[k]) == canon(v) for k, v in additions)
    assert canon(doc) == before


@given(st.lists(values_with_nulls, max_size=6), st.data())
def test_property_insert_then_remove_at_index_is_identity(items: list[Any], data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(items)))
    value = data.draw(values_with_nulls)
    out = apply_json_patch({"l": items}, [
        {"op": "add", "path": f"/l/{index}", "value": value},
        {"op": "test", "path": f"/l/{index}", "value": value},
        {"op": "remove", "path": f"/l/{index}"},
    ])
    assert canon(out) == canon({"l": items})


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=64),
        values_with_nulls.map(orjson.dumps),
        st.lists(st.dictionaries(st.sampled_from(["op", "path", "value", "from"]), values_with_nulls)).map(orjson.dumps),
    ),
    st.sampled_from([JSON_PATCH, MERGE_PATCH, "application/json", "text/plain; x=y"]),
)
def test_property_parse_patch_body_only_raises_status_error(body: bytes, content_type: str) -> None:
    try:
        decoded = parse_patch_body(body, content_type)
    except StatusError as err:
        assert err.code in (400, 415)
        return
    if content_type == JSON_PATCH:
        assert isinstance(decoded, list) and all(isinstance(op, dict) for op in decoded)
    else:
        assert content_type == MERGE_PATCH and isinstance(decoded, dict)


@given(
    values_with_nulls,
    st.lists(
        st.fixed_dictionaries(
            {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"])},
            optional={
                "path": st.sampled_from(["", "/", "/a", "/0", "/-", "/a/0", "/a~1b", "x", "/~2"]),
                "from": st.sampled_from(["", "/a", "/0", "/a/b"]),
                "value": values_with_nulls,
            },
        ),
        max_size=5,
    ),
)
def test_property_json_patch_only_raises_status_error(doc: Any, patch: list[dict[str, Any]]) -> None:
    before = canon(doc)
    try:
        apply_json_patch(doc, patch)
    except StatusError as err:
        assert err.code in (400, 422)
    assert canon(doc) == before
