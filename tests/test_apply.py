"""Tests for vwproxy.kube.apply: server-side apply and managedFields tracking."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vwproxy.kube.apply import APPLY_PATCH, BEFORE_FIRST_APPLY, apply, record_update
from vwproxy.kube.errors import StatusError

T1 = "2024-05-01T10:00:00Z"
T2 = "2024-05-01T11:00:00Z"
T3 = "2024-05-01T12:00:00Z"
T4 = "2024-05-01T13:00:00Z"

LIST_KINDS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("metadata", "finalizers"): (),
    ("metadata", "ownerReferences"): ("uid",),
    ("spec", "ports"): ("name",),
    ("spec", "containers"): ("name",),
    ("spec", "containers", "ports"): ("containerPort", "protocol"),
}


def list_keys(path: tuple[str, ...]) -> tuple[str, ...] | None:
    return LIST_KINDS.get(path)


def cm(data: dict[str, Any] | None = None, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"name": "cfg", "namespace": "default"}
    if labels is not None:
        md["labels"] = labels
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md}
    if data is not None:
        obj["data"] = data
    obj.update(extra)
    return obj


def do_apply(live: dict[str, Any] | None, cfg: dict[str, Any], manager: str, now: str = T1, force: bool = False) -> dict[str, Any]:
    return apply(live, cfg, manager, force=force, api_version="v1", now=now, list_keys=list_keys)


def do_update(old: dict[str, Any] | None, new: dict[str, Any], manager: str, now: str = T1, subresource: str = "") -> dict[str, Any]:
    return record_update(old, new, manager, api_version="v1", now=now, subresource=subresource, list_keys=list_keys)


def entries(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """managedFields by (manager, operation)."""
    return {(e["manager"], e["operation"]): e for e in obj["metadata"].get("managedFields", [])}


def fields(obj: dict[str, Any], manager: str, operation: str = "Apply") -> dict[str, Any]:
    fields_v1: dict[str, Any] = entries(obj)[(manager, operation)]["fieldsV1"]
    return fields_v1


def body(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = copy.deepcopy(obj)
    out["metadata"].pop("managedFields", None)
    return out


def conflict_of(exc: pytest.ExceptionInfo[StatusError]) -> tuple[str, list[dict[str, str]]]:
    err = exc.value
    assert (err.code, err.reason) == (409, "Conflict")
    assert set(err.details) == {"causes"}
    return err.message, err.details["causes"]


def test_media_type_constant() -> None:
    assert APPLY_PATCH == "application/apply-patch+yaml"


# ---------------------------------------------------------------------------
# create, re-apply, prune


def test_create_via_apply_has_kubernetes_managed_fields() -> None:
    cfg = cm({"key": "value"}, labels={"app": "web"})
    obj = do_apply(None, cfg, "kubectl")
    assert body(obj) == cfg
    managed = obj["metadata"]["managedFields"]
    assert managed == [
        {
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:key": {}}, "f:metadata": {"f:labels": {"f:app": {}}}},
        }
    ]
    # Key order and fieldsV1 bytes as the API server writes them.
    assert list(managed[0]) == ["manager", "operation", "apiVersion", "time", "fieldsType", "fieldsV1"]
    assert orjson.dumps(managed[0]["fieldsV1"]) == b'{"f:data":{"f:key":{}},"f:metadata":{"f:labels":{"f:app":{}}}}'


def test_create_does_not_track_identity_or_take_server_owned_metadata() -> None:
    cfg = cm({"a": "1"})
    cfg["metadata"].update(uid="u-1", resourceVersion="7", generation=3, creationTimestamp=T1, managedFields=[{"manager": "x"}])
    obj = do_apply(None, cfg, "m")
    assert obj["metadata"] == {"name": "cfg", "namespace": "default", "managedFields": obj["metadata"]["managedFields"]}
    assert fields(obj, "m") == {"f:data": {"f:a": {}}}


def test_reapply_with_changed_value_updates_value_and_time() -> None:
    obj = do_apply(None, cm({"key": "v1"}), "kubectl")
    obj2 = do_apply(obj, cm({"key": "v2"}), "kubectl", now=T2)
    assert obj2["data"] == {"key": "v2"}
    (entry,) = obj2["metadata"]["managedFields"]
    assert entry["time"] == T2
    assert entry["fieldsV1"] == {"f:data": {"f:key": {}}}


def test_reapply_dropping_a_field_removes_it() -> None:
    obj = do_apply(None, cm({"a": "1", "b": "2"}, labels={"x": "1", "y": "2"}), "kubectl")
    obj2 = do_apply(obj, cm({"a": "1"}, labels={"x": "1"}), "kubectl", now=T2)
    assert obj2["data"] == {"a": "1"}
    assert obj2["metadata"]["labels"] == {"x": "1"}
    assert fields(obj2, "kubectl") == {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:x": {}}}}


def test_dropping_the_last_field_of_a_map_removes_the_map() -> None:
    obj = do_apply(None, cm({"a": "1"}, labels={"x": "1"}), "kubectl")
    obj2 = do_apply(obj, cm(), "kubectl", now=T2)
    assert body(obj2) == cm()
    assert "managedFields" not in obj2["metadata"]  # the only entry became empty


def test_field_dropped_by_one_manager_but_applied_by_another_stays() -> None:
    obj = do_apply(None, cm({"a": "1", "b": "2"}), "alice")
    obj = do_apply(obj, cm({"b": "2"}), "bob", now=T2)  # same value: shared, no conflict
    obj = do_apply(obj, cm({"a": "1"}), "alice", now=T3)
    assert obj["data"] == {"a": "1", "b": "2"}
    assert fields(obj, "alice") == {"f:data": {"f:a": {}}}
    assert fields(obj, "bob") == {"f:data": {"f:b": {}}}
    # When bob lets go too, the field goes.
    obj = do_apply(obj, cm(), "bob", now=T4)
    assert obj["data"] == {"a": "1"}
    assert set(entries(obj)) == {("alice", "Apply")}


def test_field_dropped_by_applier_but_changed_by_an_updater_stays() -> None:
    obj = do_apply(None, cm({"a": "1", "b": "2"}), "alice")
    edited = copy.deepcopy(obj)
    edited["data"]["b"] = "20"
    obj = do_update(obj, edited, "editor", now=T2)
    obj = do_apply(obj, cm({"a": "1"}), "alice", now=T3)
    assert obj["data"] == {"a": "1", "b": "20"}


# ---------------------------------------------------------------------------
# conflicts and shared ownership


def test_two_appliers_conflicting_value_is_409_with_kubernetes_message() -> None:
    obj = do_apply(None, cm({"a": "1"}), "alice")
    with pytest.raises(StatusError) as exc:
        do_apply(obj, cm({"a": "2"}), "bob", now=T2)
    message, causes = conflict_of(exc)
    # Apply managers are named without a version.
    assert message == 'Apply failed with 1 conflict: conflict with "alice": .data.a'
    assert causes == [{"reason": "FieldManagerConflict", "message": 'conflict with "alice"', "field": ".data.a"}]
    assert exc.value.to_status()["details"] == {"causes": causes}


def test_several_conflicts_are_listed_one_per_line() -> None:
    obj = do_apply(None, cm({"a": "1", "b": "1", "c": "1"}), "kubectl")
    edited = copy.deepcopy(obj)
    edited["data"] = {"a": "2", "b": "2", "c": "1"}
    obj = do_update(obj, edited, "m", now=T2)
    with pytest.raises(StatusError) as exc:
        do_apply(obj, cm({"a": "1", "b": "1", "c": "1"}), "kubectl", now=T3)
    message, causes = conflict_of(exc)
    assert message == 'Apply failed with 2 conflicts: conflicts with "m" using v1:\n- .data.a\n- .data.b'
    assert causes == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "m" using v1', "field": ".data.a"},
        {"reason": "FieldManagerConflict", "message": 'conflict with "m" using v1', "field": ".data.b"},
    ]


def test_conflicts_with_several_managers_are_grouped_by_manager() -> None:
    obj = do_apply(None, cm({"a": "1"}), "alice")
    obj = do_apply(obj, cm({"b": "1"}), "bob", now=T2)
    obj = do_apply(obj, cm({"a": "1"}), "carol", now=T3)  # shares .data.a with alice
    with pytest.raises(StatusError) as exc:
        do_apply(obj, cm({"a": "9", "b": "9"}), "dave", now=T4)
    message, causes = conflict_of(exc)
    assert message == (
        'Apply failed with 3 conflicts: conflicts with "alice":\n- .data.a\n'
        'conflicts with "bob":\n- .data.b\n'
        'conflicts with "carol":\n- .data.a'
    )
    assert [(c["message"], c["field"]) for c in causes] == [
        ('conflict with "alice"', ".data.a"),
        ('conflict with "bob"', ".data.b"),
        ('conflict with "carol"', ".data.a"),
    ]


def test_same_value_from_two_managers_is_shared_without_conflict() -> None:
    obj = do_apply(None, cm({"a": "1"}, labels={"app": "web"}), "alice")
    obj2 = do_apply(obj, cm({"a": "1"}), "bob", now=T2)
    assert body(obj2) == body(obj)
    assert fields(obj2, "alice") == {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}
    assert fields(obj2, "bob") == {"f:data": {"f:a": {}}}
    assert entries(obj2)[("bob", "Apply")]["time"] == T2
    assert entries(obj2)[("alice", "Apply")]["time"] == T1
    # A shared field can no longer be changed by either owner alone.
    with pytest.raises(StatusError) as exc:
        do_apply(obj2, cm({"a": "2"}), "alice", now=T3)
    assert conflict_of(exc)[0] == 'Apply failed with 1 conflict: conflict with "bob": .data.a'


def test_force_moves_ownership_to_the_applier() -> None:
    obj = do_apply(None, cm({"a": "1", "b": "1"}), "alice")
    obj2 = do_apply(obj, cm({"a": "2"}), "bob", now=T2, force=True)
    assert obj2["data"] == {"a": "2", "b": "1"}
    assert fields(obj2, "alice") == {"f:data": {"f:b": {}}}
    assert fields(obj2, "bob") == {"f:data": {"f:a": {}}}
    # Once alice has lost .data.a, her dropping it from her config does not remove it.
    obj3 = do_apply(obj2, cm({"b": "1"}), "alice", now=T3)
    assert obj3["data"] == {"a": "2", "b": "1"}


def test_force_drops_a_manager_left_with_nothing() -> None:
    obj = do_apply(None, cm({"a": "1"}), "alice")
    obj2 = do_apply(obj, cm({"a": "2"}), "bob", now=T2, force=True)
    assert set(entries(obj2)) == {("bob", "Apply")}


def test_kubectl_apply_edit_reapply_force_flow() -> None:
    # kubectl apply --server-side
    cfg = cm({"color": "blue", "size": "m"})
    obj = do_apply(None, cfg, "kubectl")
    # kubectl edit (an Update by another manager) changes one field
    edited = copy.deepcopy(obj)
    edited["data"]["color"] = "red"
    obj = do_update(obj, edited, "kubectl-edit", now=T2)
    assert fields(obj, "kubectl") == {"f:data": {"f:size": {}}}
    assert fields(obj, "kubectl-edit", "Update") == {"f:data": {"f:color": {}}}
    assert entries(obj)[("kubectl-edit", "Update")]["time"] == T2
    # re-apply of the unchanged manifest now conflicts
    with pytest.raises(StatusError) as exc:
        do_apply(obj, cfg, "kubectl", now=T3)
    message, causes = conflict_of(exc)
    assert message == 'Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: .data.color'
    assert causes == [{"reason": "FieldManagerConflict", "message": 'conflict with "kubectl-edit" using v1', "field": ".data.color"}]
    # --force-conflicts takes the field back and restores the value
    obj = do_apply(obj, cfg, "kubectl", now=T3, force=True)
    assert obj["data"] == {"color": "blue", "size": "m"}
    assert set(entries(obj)) == {("kubectl", "Apply")}
    assert fields(obj, "kubectl") == {"f:data": {"f:color": {}, "f:size": {}}}


def test_apply_and_update_entries_of_one_manager_are_separate() -> None:
    obj = do_update(None, cm({"a": "1"}), "kubectl")
    obj = do_apply(obj, cm({"a": "1", "b": "1"}), "kubectl", now=T2)
    managed = obj["metadata"]["managedFields"]
    assert [(e["manager"], e["operation"]) for e in managed] == [("kubectl", "Apply"), ("kubectl", "Update")]
    assert managed[0]["fieldsV1"] == {"f:data": {"f:a": {}, "f:b": {}}}
    assert managed[1]["fieldsV1"] == {"f:data": {"f:a": {}}}
    with pytest.raises(StatusError) as exc:
        do_apply(obj, cm({"a": "2"}), "kubectl", now=T3)
    assert conflict_of(exc)[0] == 'Apply failed with 1 conflict: conflict with "kubectl" using v1: .data.a'


def test_untracked_object_is_credited_to_before_first_apply() -> None:
    live = cm({"a": "1", "b": "1"})
    with pytest.raises(StatusError) as exc:
        do_apply(live, cm({"a": "2"}), "kubectl")
    assert conflict_of(exc)[0] == 'Apply failed with 1 conflict: conflict with "before-first-apply" using v1: .data.a'
    obj = do_apply(live, cm({"a": "1"}), "kubectl")
    assert fields(obj, BEFORE_FIRST_APPLY, "Update") == {"f:data": {"f:a": {}, "f:b": {}}}
    assert fields(obj, "kubectl") == {"f:data": {"f:a": {}}}


def test_status_subresource_conflict_names_the_subresource() -> None:
    obj = do_apply(None, cm({"a": "1"}), "kubectl")
    with_status = copy.deepcopy(obj)
    with_status["status"] = {"phase": "Ready"}
    obj = do_update(obj, with_status, "controller", now=T2, subresource="status")
    (entry,) = [e for e in obj["metadata"]["managedFields"] if e["manager"] == "controller"]
    assert entry == {
        "manager": "controller",
        "operation": "Update",
        "apiVersion": "v1",
        "time": T2,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {"f:phase": {}}},
        "subresource": "status",
    }
    assert list(entry)[-1] == "subresource"
    with pytest.raises(StatusError) as exc:
        apply(obj, {**cm(), "status": {"phase": "Failed"}}, "kubectl", force=False, api_version="v1", now=T3, list_keys=list_keys)
    assert conflict_of(exc)[0] == 'Apply failed with 1 conflict: conflict with "controller" with subresource "status" using v1: .status.phase'


# ---------------------------------------------------------------------------
# lists


def svc(ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": ports}}


def test_map_list_merges_by_key() -> None:
    obj = do_apply(None, svc([{"name": "a", "port": 1}, {"name": "b", "port": 2}]), "alice")
    assert fields(obj, "alice") == {
        "f:spec": {
            "f:ports": {
                'k:{"name":"a"}': {".": {}, "f:name": {}, "f:port": {}},
                'k:{"name":"b"}': {".": {}, "f:name": {}, "f:port": {}},
            }
        }
    }
    obj = do_apply(obj, svc([{"name": "c", "port": 3}]), "bob", now=T2)
    assert obj["spec"]["ports"] == [{"name": "a", "port": 1}, {"name": "b", "port": 2}, {"name": "c", "port": 3}]
    assert fields(obj, "bob") == {"f:spec": {"f:ports": {'k:{"name":"c"}': {".": {}, "f:name": {}, "f:port": {}}}}}
    # alice changes a's port, adds a field to b's element, and drops nothing of bob's
    obj = do_apply(obj, svc([{"name": "a", "port": 10}, {"name": "b", "port": 2, "protocol": "UDP"}]), "alice", now=T3)
    assert obj["spec"]["ports"] == [
        {"name": "a", "port": 10},
        {"name": "b", "port": 2, "protocol": "UDP"},
        {"name": "c", "port": 3},
    ]
    # alice drops element b: it goes, bob's c stays
    obj = do_apply(obj, svc([{"name": "a", "port": 10}]), "alice", now=T4)
    assert obj["spec"]["ports"] == [{"name": "a", "port": 10}, {"name": "c", "port": 3}]
    # a conflict inside an element is reported with the element's key
    with pytest.raises(StatusError) as exc:
        do_apply(obj, svc([{"name": "a", "port": 11}]), "bob", now=T4)
    assert conflict_of(exc)[0] == 'Apply failed with 1 conflict: conflict with "alice": .spec.ports[name="a"].port'


def test_map_list_element_kept_while_another_manager_owns_a_field_in_it() -> None:
    obj = do_apply(None, svc([{"name": "a", "port": 1, "protocol": "TCP"}]), "alice")
    edited = copy.deepcopy(obj)
    edited["spec"]["ports"][0]["port"] = 2
    obj = do_update(obj, edited, "editor", now=T2)
    assert fields(obj, "editor", "Update") == {"f:spec": {"f:ports": {'k:{"name":"a"}': {"f:port": {}}}}}
    obj = do_apply(obj, svc([]), "alice", now=T3)
    # alice's protocol goes; the key field stays with the element editor still uses
    assert obj["spec"]["ports"] == [{"name": "a", "port": 2}]


def test_compound_keys_and_nested_map_lists() -> None:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]},
    }
    obj = do_apply(None, pod, "kubectl")
    assert fields(obj, "kubectl") == {
        "f:spec": {
            "f:containers": {
                'k:{"name":"web"}': {
                    ".": {},
                    "f:image": {},
                    "f:name": {},
                    "f:ports": {
                        'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}, "f:protocol": {}},
                    },
                }
            }
        }
    }
    other = copy.deepcopy(pod)
    other["spec"]["containers"][0]["ports"][0]["protocol"] = "UDP"
    other["spec"]["containers"][0]["image"] = "httpd"
    with pytest.raises(StatusError) as exc:
        do_apply(obj, other, "ci", now=T2)
    message, causes = conflict_of(exc)
    assert message == 'Apply failed with 1 conflict: conflict with "kubectl": .spec.containers[name="web"].image'
    assert [c["field"] for c in causes] == ['.spec.containers[name="web"].image']
    # the UDP port was a new element (a different key), so both ports are there after forcing
    forced = do_apply(obj, other, "ci", now=T2, force=True)
    assert forced["spec"]["containers"][0]["ports"] == [
        {"containerPort": 80, "protocol": "TCP"},
        {"containerPort": 80, "protocol": "UDP"},
    ]


def test_set_list_union_and_prune() -> None:
    def fin(values: list[str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": values}}

    obj = do_apply(None, fin(["x"]), "alice")
    assert fields(obj, "alice") == {"f:metadata": {"f:finalizers": {'v:"x"': {}}}}
    obj = do_apply(obj, fin(["y"]), "bob", now=T2)
    assert obj["metadata"]["finalizers"] == ["x", "y"]
    assert fields(obj, "bob") == {"f:metadata": {"f:finalizers": {'v:"y"': {}}}}
    obj = do_apply(obj, fin(["x", "y"]), "bob", now=T3)  # y and the shared x: no conflict
    assert obj["metadata"]["finalizers"] == ["x", "y"]
    bare = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    obj = do_apply(obj, bare, "alice", now=T4)
    assert obj["metadata"]["finalizers"] == ["x", "y"]  # bob also holds x
    assert set(entries(obj)) == {("bob", "Apply")}
    obj = do_apply(obj, fin(["y"]), "bob", now=T4)
    assert obj["metadata"]["finalizers"] == ["y"]  # nobody holds x any more
    obj = do_apply(obj, bare, "bob", now=T4)
    assert obj["metadata"] == {"name": "c"}  # the emptied list went too


def test_atomic_list_is_one_leaf_and_conflicts_as_a_whole() -> None:
    def job(args: list[str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"args": args}}

    obj = do_apply(None, job(["a", "b"]), "alice")
    assert fields(obj, "alice") == {"f:spec": {"f:args": {}}}
    with pytest.raises(StatusError) as exc:
        do_apply(obj, job(["c"]), "bob", now=T2)
    assert conflict_of(exc)[0] == 'Apply failed with 1 conflict: conflict with "alice": .spec.args'
    forced = do_apply(obj, job(["c"]), "bob", now=T2, force=True)
    assert forced["spec"]["args"] == ["c"]  # replaced, not merged
    assert set(entries(forced)) == {("bob", "Apply")}


@pytest.mark.parametrize(
    ("ports", "problem"),
    [
        ([{"port": 1}], '.spec.ports: element 0: associative list with keys has an element that omits key field "name"'),
        ([{"name": "a"}, {"name": "a", "port": 2}], '.spec.ports: duplicate entries for key [name="a"]'),
        (["a"], ".spec.ports: element 0: expected an object in an associative list"),
    ],
)
def test_unmergeable_map_list_in_config_is_400(ports: list[Any], problem: str) -> None:
    with pytest.raises(StatusError) as exc:
        do_apply(None, svc(ports), "m")
    assert (exc.value.code, exc.value.reason) == (400, "BadRequest")
    assert exc.value.message == f"failed to create typed patch object: {problem}"


def test_duplicate_set_element_in_config_is_400() -> None:
    cfg = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["x", "x"]}}
    with pytest.raises(StatusError) as exc:
        do_apply(None, cfg, "m")
    assert exc.value.code == 400
    assert exc.value.message.endswith('.metadata.finalizers: duplicate entries for key [="x"]')


def test_foreign_fieldsv1_spelling_is_understood() -> None:
    """Keys spelled with spaces or in another order still name the same element."""
    pod_ports = [{"containerPort": 80, "protocol": "TCP", "name": "http"}]
    live: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "managedFields": [
                {
                    "manager": "other",
                    "operation": "Apply",
                    "apiVersion": "v1",
                    "time": T1,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:containers": {'k:{"name": "web"}': {".": {}, "f:ports": {'k:{"protocol":"TCP", "containerPort":80}': {".": {}, "f:name": {}}}}}}},
                }
            ],
        },
        "spec": {"containers": [{"name": "web", "ports": pod_ports}]},
    }
    cfg = copy.deepcopy(live)
    del cfg["metadata"]["managedFields"]
    cfg["spec"]["containers"][0]["ports"][0]["name"] = "web"
    with pytest.raises(StatusError) as exc:
        do_apply(live, cfg, "me", now=T2)
    assert conflict_of(exc)[0] == (
        'Apply failed with 1 conflict: conflict with "other": .spec.containers[name="web"].ports[containerPort=80,protocol="TCP"].name'
    )


# ---------------------------------------------------------------------------
# record_update


def test_record_update_on_create_owns_every_field() -> None:
    obj = do_update(None, cm({"a": "1"}, labels={"app": "x"}), "kubectl-create")
    assert obj["metadata"]["managedFields"] == [
        {
            "manager": "kubectl-create",
            "operation": "Update",
            "apiVersion": "v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}},
        }
    ]


def test_record_update_without_changes_keeps_managed_fields() -> None:
    obj = do_apply(None, cm({"a": "1"}), "alice")
    same = copy.deepcopy(obj)
    same["metadata"]["resourceVersion"] = "99"  # never tracked
    out = do_update(obj, same, "bob", now=T2)
    assert out["metadata"]["managedFields"] == obj["metadata"]["managedFields"]


def test_record_update_removal_leaves_every_set_and_empty_entries_go() -> None:
    obj = do_apply(None, cm({"a": "1", "b": "2"}), "alice")
    obj = do_apply(obj, cm({"b": "2"}), "bob", now=T2)
    smaller = copy.deepcopy(obj)
    del smaller["data"]["b"]
    out = do_update(obj, smaller, "editor", now=T3)
    assert set(entries(out)) == {("alice", "Apply")}  # bob's entry is empty, editor took nothing
    assert fields(out, "alice") == {"f:data": {"f:a": {}}}


def test_record_update_merges_with_the_managers_previous_entry() -> None:
    obj = do_update(None, cm({"a": "1"}), "editor")
    changed = copy.deepcopy(obj)
    changed["data"]["b"] = "2"
    out = do_update(obj, changed, "editor", now=T2)
    (entry,) = out["metadata"]["managedFields"]
    assert entry["time"] == T2
    assert entry["fieldsV1"] == {"f:data": {"f:a": {}, "f:b": {}}}


def test_record_update_replaces_client_supplied_managed_fields_and_does_not_mutate() -> None:
    old = do_apply(None, cm({"a": "1"}), "alice")
    new = copy.deepcopy(old)
    new["data"]["a"] = "2"
    new["metadata"]["managedFields"] = [{"manager": "forged", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {}}]
    snapshot_old, snapshot_new = copy.deepcopy(old), copy.deepcopy(new)
    out = do_update(old, new, "editor", now=T2)
    assert old == snapshot_old and new == snapshot_new
    assert set(entries(out)) == {("editor", "Update")}


def test_type_change_by_update_moves_the_whole_subtree() -> None:
    obj = do_apply(None, {**cm(), "spec": {"x": {"y": "1", "z": "2"}}}, "alice")
    changed = copy.deepcopy(obj)
    changed["spec"]["x"] = "flat"
    out = do_update(obj, changed, "editor", now=T2)
    assert set(entries(out)) == {("editor", "Update")}
    assert fields(out, "editor", "Update") == {"f:spec": {"f:x": {}}}
    # and the reverse, through apply, is a conflict with the owner of the leaf
    with pytest.raises(StatusError) as exc:
        do_apply(out, {**cm(), "spec": {"x": {"y": "1"}}}, "alice", now=T3)
    assert conflict_of(exc)[0] == 'Apply failed with 1 conflict: conflict with "editor" using v1: .spec.x'


# ---------------------------------------------------------------------------
# idempotence and purity


def test_applying_the_same_config_twice_is_a_no_op() -> None:
    cfg = {
        **cm({"a": "1"}, labels={"app": "web"}),
        "spec": {"ports": [{"name": "a", "port": 1}], "args": ["x"]},
    }
    cfg["metadata"]["finalizers"] = ["f"]
    first = do_apply(None, cfg, "kubectl")
    second = do_apply(first, cfg, "kubectl", now=T2)
    assert second == first  # time included: nothing changed, so the entry keeps its time


def test_managed_fields_order_apply_first_then_oldest() -> None:
    obj = do_update(None, cm({"u": "1"}), "zed", now=T1)
    obj = do_apply(obj, cm({"b": "1"}), "bob", now=T3)
    obj = do_apply(obj, cm({"a": "1"}), "alice", now=T2)
    assert [(e["manager"], e["operation"]) for e in obj["metadata"]["managedFields"]] == [
        ("alice", "Apply"),
        ("bob", "Apply"),
        ("zed", "Update"),
    ]


def test_apply_does_not_mutate_its_arguments_and_strips_nulls() -> None:
    live = do_apply(None, cm({"a": "1"}), "alice")
    cfg = cm({"a": "1", "b": None}, labels={"x": "1"})
    snapshot_live, snapshot_cfg = copy.deepcopy(live), copy.deepcopy(cfg)
    out = do_apply(live, cfg, "bob", now=T2)
    assert live == snapshot_live and cfg == snapshot_cfg
    assert out["data"] == {"a": "1"}
    assert fields(out, "bob") == {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:x": {}}}}


def test_apply_without_manager_or_with_bad_metadata_is_400() -> None:
    with pytest.raises(StatusError) as exc:
        do_apply(None, cm({"a": "1"}), "")
    assert exc.value.code == 400
    with pytest.raises(StatusError) as exc:
        do_apply(None, {"metadata": "nope"}, "m")
    assert exc.value.code == 400


def test_deep_objects_do_not_overflow_the_stack() -> None:
    deep: Any = "leaf"
    for _ in range(600):  # well past _MAX_DEPTH; == below still fits the recursion limit
        deep = {"d": deep}
    cfg = {**cm(), "spec": deep}
    obj = do_apply(None, cfg, "m")
    assert do_apply(obj, cfg, "m", now=T2) == obj
    changed = {**obj, "spec": {"d": "short"}}
    out = do_update(obj, changed, "editor", now=T2)
    assert ("editor", "Update") in entries(out)


# ---------------------------------------------------------------------------
# properties

_keys = st.text(alphabet="abcxyz.:-_\"", min_size=0, max_size=4)
_values = st.recursive(
    st.text(max_size=4),
    lambda children: st.dictionaries(_keys, children, max_size=4),
    max_leaves=12,
)
_configs = st.dictionaries(_keys, _values, max_size=5)


def _leaf_paths(value: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if isinstance(value, dict) and value:
        out: set[tuple[str, ...]] = set()
        for k, v in value.items():
            out |= _leaf_paths(v, prefix + (k,))
        return out
    return {prefix}


def _owned_paths(fields_v1: dict[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for key, child in fields_v1.items():
        if key == ".":
            out.add(prefix)
        elif child:
            out |= _owned_paths(child, prefix + (key[2:],))
        else:
            out.add(prefix + (key[2:],))
    return out


@settings(max_examples=200, deadline=None)
@given(spec=_configs)
def test_property_reapply_is_a_no_op(spec: dict[str, Any]) -> None:
    cfg = {**cm(), "spec": spec}
    first = do_apply(None, cfg, "m")
    assert body(first) == cfg
    second = do_apply(first, cfg, "m", now=T2)
    assert second == first
    # the applier owns exactly the leaves it sent (an empty map is a leaf)
    assert _owned_paths(fields(first, "m")) == {("spec",) + p for p in _leaf_paths(spec)}


@settings(max_examples=200, deadline=None)
@given(mine=_configs, theirs=_configs)
def test_property_disjoint_managers_never_conflict(mine: dict[str, Any], theirs: dict[str, Any]) -> None:
    cfg1 = {**cm(), "spec": {"one": mine}}
    cfg2 = {**cm(), "spec": {"two": theirs}}
    obj = do_apply(None, cfg1, "m1")
    obj = do_apply(obj, cfg2, "m2", now=T2)  # must not raise
    assert obj["spec"] == {"one": mine, "two": theirs}
    again = do_apply(obj, cfg1, "m1", now=T3)  # neither does re-applying the first
    assert again == obj
    # and the first dropping everything leaves the second's fields alone
    dropped = do_apply(obj, cm(), "m1", now=T4)
    assert dropped["spec"] == {"two": theirs}
    assert set(entries(dropped)) == {("m2", "Apply")}


@settings(max_examples=200, deadline=None)
@given(before=_configs, after=_configs)
def test_property_update_owns_what_changed_and_nothing_stale(before: dict[str, Any], after: dict[str, Any]) -> None:
    obj = do_apply(None, {**cm(), "spec": before}, "applier")
    new = {**cm(), "spec": after}
    out = do_update(obj, new, "editor", now=T2)
    assert body(out) == new
    owned_by: dict[str, set[tuple[str, ...]]] = {
        e["manager"]: _owned_paths(e["fieldsV1"]) for e in out["metadata"].get("managedFields", [])
    }
    # every owned path exists in the object, and no path has two owners here
    for owned in owned_by.values():
        assert all(_get(new, p) is not KeyError for p in owned)
    assert not (owned_by.get("applier", set()) & owned_by.get("editor", set()))
    # the editor owns exactly the leaves it added or changed
    assert owned_by.get("editor", set()) == {
        ("spec",) + p for p in _leaf_paths(after) if _get(before, p) != _get(after, p) and not _filled(before, after, p)
    } | {
        # a scalar that became a map: the node whose value changed is the editor's too
        ("spec",) + p for p in _node_paths(after) if _get(before, p) is not KeyError and not isinstance(_get(before, p), dict)
    }
    # the applier keeps exactly the leaves whose value did not change (an owned
    # empty map stays owned when someone fills it; emptying a map takes nothing)
    assert owned_by.get("applier", set()) == {
        ("spec",) + p for p in _leaf_paths(before) if _get(before, p) == _get(after, p) or _filled(before, after, p)
    }


def _node_paths(value: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Paths of the non-empty maps inside `value`."""
    out: set[tuple[str, ...]] = set()
    if isinstance(value, dict) and value:
        out.add(prefix)
        for k, v in value.items():
            out |= _node_paths(v, prefix + (k,))
    return out


def _filled(before: dict[str, Any], after: dict[str, Any], path: tuple[str, ...]) -> bool:
    """Maps on both sides, not both empty: compared key by key, never as one leaf."""
    old, new = _get(before, path), _get(after, path)
    return isinstance(old, dict) and isinstance(new, dict) and bool(old or new)


def _get(value: Any, path: tuple[str, ...]) -> Any:
    """The value at a path of field names, or KeyError (the class) when absent."""
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return KeyError
        value = value[key]
    return value
