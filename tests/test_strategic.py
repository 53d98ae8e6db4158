"""Tests for vwproxy.kube.strategic: strategic merge patch for built-in kinds."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vwproxy.kube.errors import StatusError
from vwproxy.kube.strategic import (
    MAX_PATCH_DEPTH,
    STRATEGIC_MERGE_PATCH,
    apply_strategic_merge_patch,
    supports,
)


def canon(value: Any) -> bytes:
    """Strict comparison key: unlike ==, keeps true apart from 1 and 1 apart from 1.0."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def smp(original: dict[str, Any], patch: Any, api_version: str = "v1", kind: str = "ConfigMap") -> dict[str, Any]:
    """Apply, and check on the way that neither input was touched."""
    original_before = copy.deepcopy(original)
    patch_before = copy.deepcopy(patch)
    try:
        return apply_strategic_merge_patch(original, patch, api_version, kind)
    finally:
        assert canon(original) == canon(original_before)
        assert canon(patch) == canon(patch_before)


def owner(uid: str, name: str = "", **extra: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "name": name or f"owner-{uid}", "uid": uid}
    ref.update(extra)
    return ref


def meta(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "default", **fields}}


# ---------------------------------------------------------------------------
# supports()


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Namespace"),
        ("v1", "ServiceAccount"),
        ("v1", "Event"),
        ("events.k8s.io/v1", "Event"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("meta.k8s.io/v1", "Table"),
        ("v1", "SomeFutureCoreKind"),
    ],
)
def test_supports_builtin_groups(api_version: str, kind: str) -> None:
    assert supports(api_version, kind)


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("example.dev/v1", "Widget"),
        ("tenancy.kcp.io/v1alpha1", "Workspace"),
        ("apis.kcp.io/v1alpha1", "APIExport"),
        ("a/b/c", "Weird"),
        ("/v1", "Weird"),
    ],
)
def test_supports_false_for_custom_resources(api_version: str, kind: str) -> None:
    assert not supports(api_version, kind)


def test_custom_resource_is_415() -> None:
    with pytest.raises(StatusError) as info:
        smp({"metadata": {"name": "w"}}, {"spec": {"x": 1}}, "example.dev/v1", "Widget")
    assert info.value.code == 415
    assert info.value.reason == "UnsupportedMediaType"


def test_media_type_constant() -> None:
    assert STRATEGIC_MERGE_PATCH == "application/strategic-merge-patch+json"


# ---------------------------------------------------------------------------
# Maps and nulls


MAP_CASES = [
    pytest.param(
        meta(labels={"a": "1", "b": "2"}),
        {"metadata": {"labels": {"b": "3", "c": "4"}}},
        meta(labels={"a": "1", "b": "3", "c": "4"}),
        id="maps merge recursively",
    ),
    pytest.param(
        meta(labels={"a": "1", "b": "2"}),
        {"metadata": {"labels": {"a": None}}},
        meta(labels={"b": "2"}),
        id="null deletes a key",
    ),
    pytest.param(
        meta(labels={"a": "1"}),
        {"metadata": {"labels": None}},
        meta(),
        id="null deletes a whole map",
    ),
    pytest.param(
        meta(),
        {"metadata": {"labels": {"a": "1", "gone": None}}, "data": {"k": None}},
        {**meta(labels={"a": "1"}), "data": {}},
        id="nulls in a new subtree are dropped",
    ),
    pytest.param(
        {**meta(), "data": {"k": "v"}},
        {"data": {"k": {"nested": True}}},
        {**meta(), "data": {"k": {"nested": True}}},
        id="a map replaces a scalar",
    ),
    pytest.param(
        {**meta(), "data": {"k": {"nested": True}}},
        {"data": {"k": ["x"]}},
        {**meta(), "data": {"k": ["x"]}},
        id="a list replaces a map",
    ),
    pytest.param(
        {**meta(), "data": {"a": "1", "b": "2"}},
        {"data": {"$patch": "replace", "c": "3"}},
        {**meta(), "data": {"c": "3"}},
        id="$patch replace on a map",
    ),
    pytest.param(
        {**meta(), "data": {"a": "1", "b": "2"}},
        {"data": {"$patch": "replace"}},
        {**meta(), "data": {}},
        id="$patch replace with nothing else empties the map",
    ),
    pytest.param(
        {**meta(), "data": {"a": "1"}},
        {"data": {"$patch": "replace", "c": {"x": None, "y": 1}}},
        {**meta(), "data": {"c": {"y": 1}}},
        id="$patch replace still drops nulls",
    ),
    pytest.param(
        {**meta(labels={"a": "1"}), "data": {"a": "1"}},
        {"data": {"$patch": "delete"}},
        meta(labels={"a": "1"}),
        id="$patch delete on a map removes it",
    ),
    pytest.param(
        meta(),
        {"data": {"$patch": "delete"}},
        meta(),
        id="$patch delete of a missing map is a no-op",
    ),
    pytest.param(
        {**meta(), "data": {"a": "1"}},
        {"data": {"$patch": "merge", "b": "2"}},
        {**meta(), "data": {"a": "1", "b": "2"}},
        id="$patch merge is the default spelled out",
    ),
    pytest.param(
        {**meta(), "spec": {"a": 1, "b": 2, "c": 3}},
        {"spec": {"$retainKeys": ["a", "d"], "d": 4}},
        {**meta(), "spec": {"a": 1, "d": 4}},
        id="$retainKeys keeps only the listed keys",
    ),
    pytest.param(
        {**meta(), "spec": {"a": {"x": 1, "y": 2}, "b": 2}},
        {"spec": {"$retainKeys": ["a"], "a": {"y": None}, "b": None}},
        {**meta(), "spec": {"a": {"x": 1}}},
        id="$retainKeys then merges retained keys; nulls need not be listed",
    ),
    pytest.param(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}},
        {"$patch": "replace", "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}},
        id="$patch replace at the root",
    ),
    pytest.param(
        {**meta(), "spec": {"schema": {"$ref": "#/a"}}},
        {"spec": {"schema": {"$ref": "#/b", "$schema": "x"}}},
        {**meta(), "spec": {"schema": {"$ref": "#/b", "$schema": "x"}}},
        id="$ref and $schema are JSONSchemaProps fields, not directives",
    ),
]


@pytest.mark.parametrize(("original", "patch", "expected"), MAP_CASES)
def test_maps(original: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]) -> None:
    assert canon(smp(original, patch)) == canon(expected)


def test_kubectl_apply_reapply_configmap() -> None:
    """What `kubectl apply` sends after one data key changed and another was dropped."""
    first: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "app", "namespace": "default"},
        "data": {"kept": "v1", "changed": "v1", "removed": "v1"},
    }
    second = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "app", "namespace": "default"},
        "data": {"kept": "v1", "changed": "v2"},
    }
    annotation = "kubectl.kubernetes.io/last-applied-configuration"
    live = copy.deepcopy(first)
    live["metadata"].update(
        {
            "uid": "6f1e",
            "resourceVersion": "7",
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "labels": {"added-by": "someone-else"},
            "annotations": {annotation: orjson.dumps(first).decode() + "\n", "other": "kept"},
        }
    )
    last_applied = orjson.dumps(second).decode() + "\n"
    patch = {
        "data": {"changed": "v2", "removed": None},
        "metadata": {"annotations": {annotation: last_applied}},
    }
    result = smp(live, patch)
    assert result["data"] == {"kept": "v1", "changed": "v2"}
    assert result["metadata"]["annotations"] == {annotation: last_applied, "other": "kept"}
    # Everything the patch does not mention is the server's and stays.
    assert result["metadata"]["labels"] == {"added-by": "someone-else"}
    assert result["metadata"]["uid"] == "6f1e"
    assert result["metadata"]["resourceVersion"] == "7"


# ---------------------------------------------------------------------------
# Lists: atomic, merge-by-key, set


def case(
    original: dict[str, Any],
    patch: dict[str, Any],
    expected: dict[str, Any],
    api_version: str = "v1",
    kind: str = "ConfigMap",
    *,
    id: str,
) -> Any:
    return pytest.param(original, patch, expected, api_version, kind, id=id)


LIST_CASES = [
    case(
        meta(ownerReferences=[owner("1"), owner("2")]),
        {"metadata": {"ownerReferences": [{"uid": "2", "controller": True}, owner("3")]}},
        meta(ownerReferences=[owner("1"), owner("2", controller=True), owner("3")]),
        "v1", "ConfigMap",
        id="ownerReferences merge by uid, new ones appended",
    ),
    case(
        meta(ownerReferences=[owner("1"), owner("2", controller=True)]),
        {"metadata": {"ownerReferences": [{"uid": "2", "controller": None}]}},
        meta(ownerReferences=[owner("1"), owner("2")]),
        id="null inside a merged element deletes that field",
    ),
    case(
        meta(ownerReferences=[owner("1"), owner("2"), owner("3")]),
        {"metadata": {"ownerReferences": [{"uid": "2", "$patch": "delete"}]}},
        meta(ownerReferences=[owner("1"), owner("3")]),
        id="$patch delete of an ownerReference",
    ),
    case(
        meta(ownerReferences=[owner("1")]),
        {"metadata": {"ownerReferences": [{"uid": "9", "$patch": "delete"}]}},
        meta(ownerReferences=[owner("1")]),
        id="$patch delete of a missing element is a no-op",
    ),
    case(
        meta(ownerReferences=[owner("1"), owner("2")]),
        {"metadata": {"ownerReferences": [{"$patch": "replace"}, owner("3")]}},
        meta(ownerReferences=[owner("3")]),
        id="list element $patch replace",
    ),
    case(
        meta(ownerReferences=[owner("1"), owner("2")]),
        {"metadata": {"ownerReferences": [{"$patch": "replace"}]}},
        meta(ownerReferences=[]),
        id="list element $patch replace alone empties the list",
    ),
    case(
        meta(ownerReferences=[owner("1")]),
        {"metadata": {"ownerReferences": []}},
        meta(ownerReferences=[owner("1")]),
        id="an empty patch list leaves a merge list alone",
    ),
    case(
        meta(ownerReferences=[owner("1")]),
        {"metadata": {"ownerReferences": None}},
        meta(),
        id="null removes a merge list",
    ),
    case(
        meta(),
        {"metadata": {"ownerReferences": [owner("1"), {"uid": "2", "$patch": "delete"}]}},
        meta(ownerReferences=[owner("1")]),
        id="merge list added from nothing drops directives",
    ),
    case(
        meta(finalizers=["a", "b"]),
        {"metadata": {"finalizers": ["b", "c"]}},
        meta(finalizers=["a", "b", "c"]),
        id="finalizers merge as a set",
    ),
    case(
        meta(finalizers=["a", "b"]),
        {"metadata": {"finalizers": ["c", "c"]}},
        meta(finalizers=["c", "a", "b"]),
        id="set merge deduplicates; a new element goes first",
    ),
    case(
        meta(finalizers=["a", "b", "c"]),
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}},
        meta(finalizers=["a", "c"]),
        id="$deleteFromPrimitiveList on finalizers",
    ),
    case(
        meta(finalizers=["a", "b", "b"]),
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"], "finalizers": ["d"]}},
        meta(finalizers=["d", "a"]),
        id="$deleteFromPrimitiveList with additions",
    ),
    case(
        meta(),
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}},
        meta(),
        id="$deleteFromPrimitiveList of a missing list adds nothing",
    ),
    case(
        meta(finalizers=["a", "b"]),
        {"metadata": {"finalizers": [{"$patch": "replace"}, "z"]}},
        meta(finalizers=["z"]),
        id="$patch replace element in a primitive set list",
    ),
    case(
        meta(managedFields=[{"manager": "a"}, {"manager": "b"}]),
        {"metadata": {"managedFields": [{"manager": "c"}]}},
        meta(managedFields=[{"manager": "c"}]),
        id="untagged lists are replaced",
    ),
    case(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"},
         "secrets": [{"name": "a"}, {"name": "b", "namespace": "x"}]},
        {"secrets": [{"name": "b", "namespace": "y"}, {"name": "c"}]},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"},
         "secrets": [{"name": "a"}, {"name": "b", "namespace": "y"}, {"name": "c"}]},
        "v1", "ServiceAccount",
        id="ServiceAccount secrets merge by name",
    ),
    case(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"},
         "imagePullSecrets": [{"name": "a"}]},
        {"imagePullSecrets": [{"name": "b"}]},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"},
         "imagePullSecrets": [{"name": "b"}]},
        "v1", "ServiceAccount",
        id="ServiceAccount imagePullSecrets is atomic",
    ),
    case(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"},
         "spec": {"finalizers": ["kubernetes"]},
         "status": {"phase": "Active", "conditions": [
             {"type": "A", "status": "True"}, {"type": "B", "status": "False", "reason": "r"}]}},
        {"spec": {"finalizers": ["other"]},
         "status": {"conditions": [{"type": "B", "status": "True", "reason": None}, {"type": "C", "status": "True"}]}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"},
         "spec": {"finalizers": ["other"]},
         "status": {"phase": "Active", "conditions": [
             {"type": "A", "status": "True"}, {"type": "B", "status": "True"}, {"type": "C", "status": "True"}]}},
        "v1", "Namespace",
        id="Namespace status.conditions merge by type, spec.finalizers atomic",
    ),
    case(
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
        {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]},
        "rbac.authorization.k8s.io/v1", "Role",
        id="Role rules are atomic",
    ),
    case(
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb"},
         "subjects": [{"kind": "User", "name": "a"}], "roleRef": {"kind": "Role", "name": "r", "apiGroup": "rbac.authorization.k8s.io"}},
        {"subjects": [{"kind": "User", "name": "b"}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb"},
         "subjects": [{"kind": "User", "name": "b"}], "roleRef": {"kind": "Role", "name": "r", "apiGroup": "rbac.authorization.k8s.io"}},
        "rbac.authorization.k8s.io/v1", "RoleBinding",
        id="RoleBinding subjects are atomic",
    ),
    case(
        {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "ws.example.dev"},
         "spec": {"versions": [{"name": "v1", "served": True}], "names": {"plural": "ws"}},
         "status": {"conditions": [{"type": "Established", "status": "True"}]}},
        {"spec": {"versions": [{"name": "v2", "served": True}]}, "status": {"conditions": [{"type": "NamesAccepted", "status": "True"}]}},
        {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "ws.example.dev"},
         "spec": {"versions": [{"name": "v2", "served": True}], "names": {"plural": "ws"}},
         "status": {"conditions": [{"type": "NamesAccepted", "status": "True"}]}},
        "apiextensions.k8s.io/v1", "CustomResourceDefinition",
        id="CRD lists have no patch tags",
    ),
    case(
        {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "finalizers": ["a"]}, "note": "x"},
        {"metadata": {"finalizers": ["b"]}, "note": "y"},
        {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "finalizers": ["b", "a"]}, "note": "y"},
        "events.k8s.io/v1", "Event",
        id="ObjectMeta rules apply to every kind",
    ),
    case(
        {**meta(), "data": {"finalizers": ["a"]}},
        {"data": {"finalizers": ["b"]}},
        {**meta(), "data": {"finalizers": ["b"]}},
        id="merge rules are keyed by full path, not field name",
    ),
    case(
        meta(ownerReferences=[owner("1")]),
        {"metadata": {"ownerReferences": [{"uid": "2", "name": "x"}, {"uid": "2", "kind": "Secret"}]}},
        meta(ownerReferences=[{"uid": "2", "name": "x", "kind": "Secret"}, owner("1")]),
        id="two patch elements with one key merge together",
    ),
]


@pytest.mark.parametrize(("original", "patch", "expected", "api_version", "kind"), LIST_CASES)
def test_lists(original: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any], api_version: str, kind: str) -> None:
    assert canon(smp(original, patch, api_version, kind)) == canon(expected)


# ---------------------------------------------------------------------------
# Element order


def refs(*uids: str) -> list[dict[str, Any]]:
    return [{"uid": u} for u in uids]


ORDER_CASES = [
    pytest.param(["a", "b", "c"], {"finalizers": ["d"]}, ["d", "a", "b", "c"], id="a new scalar alone goes first"),
    pytest.param(["a", "b", "c"], {"finalizers": ["c", "a", "b"]}, ["c", "a", "b"], id="patch order wins for named scalars"),
    pytest.param(["a", "b", "c"], {"finalizers": ["c", "a"]}, ["b", "c", "a"], id="unnamed scalars keep their place"),
    pytest.param(["a", "b", "c"], {"finalizers": ["b", "d"]}, ["a", "b", "d", "c"], id="new scalar lands after the last named one"),
    pytest.param(
        ["a", "b", "c"],
        {"$setElementOrder/finalizers": ["c", "b", "a"]},
        ["c", "b", "a"],
        id="$setElementOrder alone reorders",
    ),
    pytest.param(
        ["a", "b", "c"],
        {"$setElementOrder/finalizers": ["a", "b", "d"], "$deleteFromPrimitiveList/finalizers": ["c"], "finalizers": ["d"]},
        ["a", "b", "d"],
        id="kubectl apply: add d, drop c",
    ),
    pytest.param(
        ["a", "c"],
        {"$setElementOrder/finalizers": ["c", "x", "a"]},
        ["c", "a"],
        id="$setElementOrder may name elements the list lacks",
    ),
]


@pytest.mark.parametrize(("before", "patch", "after"), ORDER_CASES)
def test_scalar_order(before: list[str], patch: dict[str, Any], after: list[str]) -> None:
    assert smp(meta(finalizers=before), {"metadata": patch})["metadata"]["finalizers"] == after


KEYED_ORDER_CASES = [
    pytest.param(refs("1", "2", "3"), [{"uid": "4"}], ["4", "1", "2", "3"], None, id="a new element alone goes first"),
    pytest.param(refs("1", "2", "3"), [{"uid": "4"}], ["1", "2", "3", "4"], refs("1", "2", "3", "4"),
                 id="$setElementOrder appends, as kubectl apply sends"),
    pytest.param(refs("1", "2", "3"), [{"uid": "3", "x": 1}, {"uid": "1", "x": 1}], ["2", "3", "1"], None,
                 id="named elements follow the patch, others keep their place"),
    pytest.param(refs("1", "2"), [{"uid": "4"}, {"uid": "3"}],
                 ["4", "1", "2", "3"], refs("4", "1", "2", "3"), id="$setElementOrder places new elements"),
    pytest.param(refs("1", "2", "3"), [{"uid": "4"}, {"uid": "2", "$patch": "delete"}],
                 ["3", "1", "4"], refs("3", "1", "4"), id="$setElementOrder with a delete, as kubectl apply sends"),
    pytest.param(refs("hello2"), [{"uid": "hello"}, {"uid": "gone", "$patch": "delete"}],
                 ["hello", "hello2"], refs("hello", "gone"), id="server-only elements go after the ordered ones they follow"),
]


@pytest.mark.parametrize(("before", "patch_list", "after", "order"), KEYED_ORDER_CASES)
def test_keyed_order(before: list[dict[str, Any]], patch_list: list[dict[str, Any]], after: list[str], order: list[Any] | None) -> None:
    patch: dict[str, Any] = {"ownerReferences": patch_list}
    if order is not None:
        patch["$setElementOrder/ownerReferences"] = order
    result = smp(meta(ownerReferences=before), {"metadata": patch})
    assert [ref["uid"] for ref in result["metadata"]["ownerReferences"]] == after


def test_service_account_kubectl_apply_secrets() -> None:
    live = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"},
            "secrets": [{"name": "a"}, {"name": "b"}, {"name": "token-xyz"}]}
    patch = {
        "$setElementOrder/secrets": [{"name": "a"}, {"name": "c"}],
        "secrets": [{"name": "c"}, {"$patch": "delete", "name": "b"}],
    }
    result = smp(live, patch, "v1", "ServiceAccount")
    # token-xyz was never applied by the client, so it survives; as a
    # server-only element it goes after the ordered ones that preceded it
    # and the new one, which the server never had a position for.
    assert result["secrets"] == [{"name": "a"}, {"name": "c"}, {"name": "token-xyz"}]


# ---------------------------------------------------------------------------
# Errors


BAD_PATCHES = [
    pytest.param([{"op": "add"}], id="not an object: array"),
    pytest.param("x", id="not an object: string"),
    pytest.param(None, id="not an object: null"),
    pytest.param({"$unknown": 1}, id="unknown directive at root"),
    pytest.param({"metadata": {"labels": {"$frobnicate": "x"}}}, id="unknown directive nested"),
    pytest.param({"data": {"$patch": "explode"}}, id="bad $patch value"),
    pytest.param({"data": {"$patch": 1}}, id="non-string $patch value"),
    pytest.param({"spec": {"$retainKeys": "a"}}, id="$retainKeys not a list"),
    pytest.param({"spec": {"$retainKeys": [1]}}, id="$retainKeys not strings"),
    pytest.param({"spec": {"$retainKeys": ["a"], "b": 1}}, id="patch sets a key $retainKeys drops"),
    pytest.param({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}, id="$deleteFromPrimitiveList not a list"),
    pytest.param({"metadata": {"$deleteFromPrimitiveList/finalizers": [{"a": 1}]}}, id="$deleteFromPrimitiveList not scalars"),
    pytest.param({"metadata": {"$deleteFromPrimitiveList/": ["a"]}}, id="$deleteFromPrimitiveList without a field"),
    pytest.param({"metadata": {"$setElementOrder/finalizers": "a"}}, id="$setElementOrder not a list"),
    pytest.param({"metadata": {"$setElementOrder/": []}}, id="$setElementOrder without a field"),
    pytest.param({"metadata": {"$setElementOrder/ownerReferences": ["1"]}}, id="$setElementOrder entry lacks merge key"),
    pytest.param({"metadata": {"$setElementOrder/finalizers": ["a", "b"], "finalizers": ["b", "a"]}},
                 id="$setElementOrder disagrees with the patch list"),
    pytest.param({"metadata": {"$setElementOrder/finalizers": ["a"], "finalizers": ["z"]}},
                 id="patch list element missing from $setElementOrder"),
    pytest.param({"metadata": {"ownerReferences": [{"name": "no-uid"}]}}, id="element without merge key"),
    pytest.param({"metadata": {"ownerReferences": [{"uid": {"x": 1}}]}}, id="non-scalar merge key"),
    pytest.param({"metadata": {"ownerReferences": [{"$patch": "delete"}]}}, id="delete element without merge key"),
    pytest.param({"metadata": {"ownerReferences": [{"$patch": "merge", "uid": "1"}]}}, id="$patch merge in a list"),
    pytest.param({"metadata": {"ownerReferences": [{"$patch": "replace", "uid": "1"}]}}, id="replace element with members"),
    pytest.param({"metadata": {"managedFields": [{"$patch": "delete", "manager": "a"}]}}, id="delete element in an atomic list"),
]


@pytest.mark.parametrize("patch", BAD_PATCHES)
def test_malformed_patch_is_400(patch: Any) -> None:
    original = meta(finalizers=["a", "b"], ownerReferences=[owner("1")], managedFields=[{"manager": "a"}])
    original["spec"] = {"a": 1}
    with pytest.raises(StatusError) as info:
        smp(original, patch)
    assert info.value.code == 400, info.value
    assert info.value.reason == "BadRequest"


UNAPPLICABLE = [
    pytest.param(meta(), {"$patch": "delete"}, id="deleting the whole object"),
    pytest.param(meta(ownerReferences=["not-an-object"]), {"metadata": {"ownerReferences": [owner("1")]}},
                 id="keyed list holding a scalar"),
    pytest.param(meta(), {"metadata": {"ownerReferences": ["uid-1"]}}, id="scalar patch element in a keyed list"),
    pytest.param(meta(finalizers=["a"]), {"metadata": {"finalizers": [["nested"]]}}, id="list inside a set list"),
]


@pytest.mark.parametrize(("original", "patch"), UNAPPLICABLE)
def test_unapplicable_patch_is_422(original: dict[str, Any], patch: dict[str, Any]) -> None:
    with pytest.raises(StatusError) as info:
        smp(original, patch)
    assert info.value.code == 422, info.value
    assert info.value.reason == "Invalid"


def nest(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def test_too_deep_patch_is_422_not_recursion_error() -> None:
    with pytest.raises(StatusError) as info:
        smp(meta(), {"spec": nest(MAX_PATCH_DEPTH + 10)})
    assert info.value.code == 422


def test_deep_patch_within_limit_applies() -> None:
    deep = {"spec": nest(MAX_PATCH_DEPTH - 2)}
    assert canon(smp(meta(), deep)["spec"]) == canon(deep["spec"])


def test_deep_original_is_copied_not_shared() -> None:
    """Only the patch's depth is capped; a deep stored object is copied without recursion."""
    original = {**meta(), "spec": nest(5000)}
    result = apply_strategic_merge_patch(original, {"data": {"a": "1"}}, "v1", "ConfigMap")
    assert "data" not in original
    assert result["data"] == {"a": "1"}
    mine, theirs = result["spec"], original["spec"]
    while isinstance(theirs, (dict, list)):
        assert mine is not theirs
        mine, theirs = (mine["k"], theirs["k"]) if isinstance(theirs, dict) else (mine[0], theirs[0])
    assert mine == theirs == "leaf"


def test_result_shares_nothing_with_inputs() -> None:
    original = meta(labels={"a": "1"}, ownerReferences=[owner("1")])
    patch = {"metadata": {"annotations": {"x": "y"}, "ownerReferences": [owner("2")]}, "data": {"list": [{"a": 1}]}}
    result = smp(original, patch)
    result["metadata"]["labels"]["a"] = "changed"
    result["metadata"]["annotations"]["x"] = "changed"
    result["metadata"]["ownerReferences"][0]["name"] = "changed"
    result["metadata"]["ownerReferences"][1]["name"] = "changed"
    result["data"]["list"][0]["a"] = 2
    assert original == meta(labels={"a": "1"}, ownerReferences=[owner("1")])
    assert patch == {"metadata": {"annotations": {"x": "y"}, "ownerReferences": [owner("2")]}, "data": {"list": [{"a": 1}]}}


def test_number_identity_follows_json() -> None:
    """1 and 1.0 are one JSON number; true is not 1, "1" is not 1."""
    result = smp(meta(finalizers=[1, True, "1"]), {"metadata": {"finalizers": [1.0, 1, "x"]}})
    assert canon(result["metadata"]["finalizers"]) == canon([1, "x", True, "1"])


# ---------------------------------------------------------------------------
# Properties


def rfc7386(target: Any, patch: Any) -> Any:
    """Reference JSON merge patch, straight from RFC 7386 section 2."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = rfc7386(result.get(key), value)
    return result


# Plain field names only: no `$`, so nothing is a directive.
keys = st.sampled_from(["metadata", "labels", "spec", "data", "a", "b", "c", "finalizers", "ownerReferences"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
listless = st.recursive(scalars, lambda children: st.dictionaries(keys, children, max_size=4), max_leaves=20)
listless_objects = st.dictionaries(keys, listless, max_size=4)


@given(listless_objects, listless_objects)
def test_without_lists_equals_json_merge_patch(original: dict[str, Any], patch: dict[str, Any]) -> None:
    assert canon(smp(original, patch)) == canon(rfc7386(original, patch))


directive_keys = st.sampled_from([
    "$patch", "$retainKeys", "$setElementOrder/finalizers", "$setElementOrder/ownerReferences",
    "$deleteFromPrimitiveList/finalizers", "$deleteFromPrimitiveList/", "$setElementOrder/", "$bogus",
    "uid", "name",
])
directive_values = st.sampled_from(["replace", "delete", "merge", "x"])
any_keys = st.one_of(keys, directive_keys)
json_values = st.recursive(
    st.one_of(scalars, directive_values),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(any_keys, children, max_size=4),
    ),
    max_leaves=30,
)
objects = st.dictionaries(any_keys, json_values, max_size=5)
kinds = st.sampled_from([
    ("v1", "ConfigMap"), ("v1", "ServiceAccount"), ("v1", "Namespace"),
    ("rbac.authorization.k8s.io/v1", "Role"), ("example.dev/v1", "Widget"),
])


def shaped(draw_obj: dict[str, Any]) -> dict[str, Any]:
    """Put generated values where the merge-key tables look, so merges are exercised."""
    out = dict(draw_obj)
    for field in ("finalizers", "ownerReferences"):
        if field in out:
            out["metadata"] = {**(out["metadata"] if isinstance(out.get("metadata"), dict) else {}), field: out.pop(field)}
    return out


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(objects, st.one_of(objects, json_values), kinds)
def test_arbitrary_patches_raise_only_status_errors(original: dict[str, Any], patch: Any, kind: tuple[str, str]) -> None:
    original = shaped(original)
    if isinstance(patch, dict):
        patch = shaped(patch)
    try:
        result = smp(original, patch, *kind)
    except StatusError as exc:
        assert exc.code in (400, 415, 422)
    else:
        assert isinstance(result, dict)


ref_lists = st.lists(st.builds(lambda u, v: {"uid": u, "v": v}, st.sampled_from("abcdef"), st.integers(0, 3)), max_size=6)
# Stored lists have no duplicate keys (Kubernetes keeps, not repairs, any it finds).
unique_ref_lists = st.lists(
    st.builds(lambda u, v: {"uid": u, "v": v}, st.sampled_from("abcdef"), st.integers(0, 3)),
    max_size=6,
    unique_by=lambda ref: ref["uid"],
)
names = st.lists(st.sampled_from("abcdef"), max_size=6)
unique_names = st.lists(st.sampled_from("abcdef"), max_size=6, unique=True)


@given(unique_ref_lists, ref_lists)
def test_keyed_merge_keeps_every_key_once(before: list[dict[str, Any]], patch_list: list[dict[str, Any]]) -> None:
    """Merging by uid yields each uid of either side exactly once, patch values winning."""
    result = smp(meta(ownerReferences=before), {"metadata": {"ownerReferences": patch_list}})
    merged = result["metadata"]["ownerReferences"]
    uids = [ref["uid"] for ref in merged]
    assert len(uids) == len(set(uids))
    assert set(uids) == {r["uid"] for r in before} | {r["uid"] for r in patch_list}
    last_from_patch = {r["uid"]: r["v"] for r in patch_list}
    for ref in merged:
        if ref["uid"] in last_from_patch:
            assert ref["v"] == last_from_patch[ref["uid"]]


@given(names, names, names)
def test_set_merge_is_union_and_deletion(before: list[str], added: list[str], removed: list[str]) -> None:
    patch = {"metadata": {"finalizers": added, "$deleteFromPrimitiveList/finalizers": removed}}
    result = smp(meta(finalizers=before), patch)["metadata"]["finalizers"]
    assert len(result) == len(set(result))
    assert set(result) == (set(before) - set(removed)) | set(added)
    # Elements the patch does not name keep their relative order.
    untouched = [f for f in result if f not in added]
    assert untouched == [f for f in dict.fromkeys(before) if f not in added and f not in removed]


@given(unique_names, st.permutations("abcdef"))
def test_set_element_order_is_honoured(before: list[str], order: list[str]) -> None:
    patch = {"metadata": {"$setElementOrder/finalizers": list(order)}}
    result = smp(meta(finalizers=before), patch)["metadata"].get("finalizers")
    if not before:
        assert result in (None, [])
    else:
        assert result == [f for f in order if f in before]
