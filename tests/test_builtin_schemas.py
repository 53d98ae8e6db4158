"""The shipped OpenAPI v3 schemas of built-in kinds: complete, self-contained, and explainable."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pytest

from vwproxy.kube import builtin_schemas
from vwproxy.kube.builtin_schemas import component_schemas, kind_schema_name, refs, schema_closure
from vwproxy.kube.resources import BUILTIN_RESOURCES

SCHEMAS = component_schemas()
SERVED = sorted({(r.group, r.version, r.kind) for r in BUILTIN_RESOURCES if not r.crd})
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
CRD = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1."


def _gvks(schema: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(g["group"], g["version"], g["kind"]) for g in schema.get("x-kubernetes-group-version-kind", [])]


def _ref_target(prop: dict[str, Any]) -> str:
    """The component a field points at, whether written `$ref` or `allOf: [$ref]`."""
    ref = prop.get("$ref") or prop["allOf"][0]["$ref"]
    assert isinstance(ref, str) and ref.startswith(builtin_schemas.REF_PREFIX)
    return ref.removeprefix(builtin_schemas.REF_PREFIX)


def _kind(group: str, version: str, kind: str) -> dict[str, Any]:
    name = kind_schema_name(group, version, kind)
    assert name is not None, (group, version, kind)
    schema: dict[str, Any] = SCHEMAS[name]
    return schema


def test_data_file_is_package_data_and_small() -> None:
    data = resources.files("vwproxy") / "data" / "openapi" / "builtin.json"
    assert data.is_file()
    assert len(data.read_bytes()) < 1_500_000
    assert len(SCHEMAS) > 50


def test_component_schemas_returns_a_fresh_mapping() -> None:
    mine = component_schemas()
    mine["x"] = {}
    assert "x" not in component_schemas()


@pytest.mark.parametrize(("group", "version", "kind"), SERVED, ids=lambda v: v or "core")
def test_every_served_kind_and_its_list_has_a_schema(group: str, version: str, kind: str) -> None:
    for k in (kind, f"{kind}List"):
        schema = _kind(group, version, k)
        assert (group, version, k) in _gvks(schema)
        assert schema["type"] == "object"
        assert schema["description"]
    schema = _kind(group, version, kind)
    assert _ref_target(schema["properties"]["metadata"]) == META + "ObjectMeta"
    for field in ("apiVersion", "kind", "metadata"):
        assert schema["properties"][field]["description"], field
    listed = _kind(group, version, f"{kind}List")
    assert _ref_target(listed["properties"]["items"]["items"]) == kind_schema_name(group, version, kind)
    assert _ref_target(listed["properties"]["metadata"]) == META + "ListMeta"


def test_kinds_map_names_only_kinds_whose_gvk_matches() -> None:
    for key, name in builtin_schemas._load()[1].items():
        group, version, kind = key.split("/")
        assert (group, version, kind) in _gvks(SCHEMAS[name]), key


def test_unknown_kind_has_no_schema() -> None:
    assert kind_schema_name("", "v1", "Pod") is None
    assert kind_schema_name("apps", "v1", "Deployment") is None
    # Kubernetes names rbac kinds io.k8s.api.rbac.v1.*, not by reversing the group.
    assert kind_schema_name("rbac.authorization.k8s.io", "v1", "Role") == "io.k8s.api.rbac.v1.Role"


def test_every_ref_resolves() -> None:
    missing = {(name, target) for name, schema in SCHEMAS.items() for target in refs(schema) if target not in SCHEMAS}
    assert not missing
    for schema in SCHEMAS.values():
        _assert_refs_are_local(schema)


def _assert_refs_are_local(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                assert value.startswith(builtin_schemas.REF_PREFIX), value
            else:
                _assert_refs_are_local(value)
    elif isinstance(node, list):
        for item in node:
            _assert_refs_are_local(item)


def test_configmap_and_secret_data_are_described() -> None:
    configmap = _kind("", "v1", "ConfigMap")["properties"]
    assert configmap["data"]["type"] == "object"
    assert configmap["data"]["additionalProperties"] == {"type": "string"}
    assert "configuration data" in configmap["data"]["description"]
    secret = _kind("", "v1", "Secret")["properties"]
    assert secret["data"]["additionalProperties"]["format"] == "byte"
    assert secret["data"]["description"]


def test_object_meta_is_the_real_one() -> None:
    meta = SCHEMAS[META + "ObjectMeta"]["properties"]
    assert meta["labels"]["additionalProperties"] == {"type": "string"}
    assert meta["labels"]["description"]
    owners = meta["ownerReferences"]
    assert owners["x-kubernetes-patch-merge-key"] == "uid"
    assert owners["x-kubernetes-patch-strategy"] == "merge"
    assert owners["x-kubernetes-list-type"] == "map"
    assert owners["x-kubernetes-list-map-keys"] == ["uid"]
    assert _ref_target(meta["creationTimestamp"]) == META + "Time"
    assert (SCHEMAS[META + "Time"]["type"], SCHEMAS[META + "Time"]["format"]) == ("string", "date-time")
    assert SCHEMAS[META + "MicroTime"]["format"] == "date-time"


def test_rbac_kinds_reference_rules_subjects_and_role_ref() -> None:
    role = _kind("rbac.authorization.k8s.io", "v1", "Role")["properties"]
    assert _ref_target(role["rules"]["items"]) == "io.k8s.api.rbac.v1.PolicyRule"
    assert role["rules"]["x-kubernetes-list-type"] == "atomic"
    binding = _kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding")["properties"]
    assert _ref_target(binding["subjects"]["items"]) == "io.k8s.api.rbac.v1.Subject"
    assert _ref_target(binding["roleRef"]) == "io.k8s.api.rbac.v1.RoleRef"
    assert SCHEMAS["io.k8s.api.rbac.v1.PolicyRule"]["properties"]["verbs"]["description"]


def test_events_reference_object_reference_and_micro_time() -> None:
    core = _kind("", "v1", "Event")["properties"]
    assert _ref_target(core["involvedObject"]) == "io.k8s.api.core.v1.ObjectReference"
    assert _ref_target(core["eventTime"]) == META + "MicroTime"
    new = _kind("events.k8s.io", "v1", "Event")["properties"]
    assert _ref_target(new["regarding"]) == "io.k8s.api.core.v1.ObjectReference"
    assert _ref_target(new["series"]) == "io.k8s.api.events.v1.EventSeries"


def test_crd_versions_and_recursive_json_schema_props() -> None:
    crd = _kind("apiextensions.k8s.io", "v1", "CustomResourceDefinition")
    spec = SCHEMAS[_ref_target(crd["properties"]["spec"])]["properties"]
    assert _ref_target(spec["versions"]["items"]) == CRD + "CustomResourceDefinitionVersion"
    version = SCHEMAS[CRD + "CustomResourceDefinitionVersion"]["properties"]
    validation = SCHEMAS[_ref_target(version["schema"])]["properties"]
    props = SCHEMAS[_ref_target(validation["openAPIV3Schema"])]["properties"]
    # The recursion is kept as $refs, not expanded.
    assert props["properties"]["additionalProperties"] == {"$ref": builtin_schemas.REF_PREFIX + CRD + "JSONSchemaProps"}
    assert _ref_target(props["items"]) == CRD + "JSONSchemaPropsOrArray"
    # A property literally named "$ref" is a schema, not a reference.
    assert props["$ref"]["type"] == "string"


KCP = [(g, v, k) for g, v, k in SERVED if g.endswith(".kcp.io")]


@pytest.mark.parametrize(("group", "version", "kind"), KCP)
def test_kcp_kinds_accept_unknown_fields(group: str, version: str, kind: str) -> None:
    schema = _kind(group, version, kind)
    assert kind_schema_name(group, version, kind) == ".".join([*reversed(group.split(".")), version, kind])
    for part in ("spec", "status"):
        if part in schema["properties"]:
            assert schema["properties"][part]["x-kubernetes-preserve-unknown-fields"] is True
            assert schema["properties"][part]["description"]
    assert "spec" in schema["properties"]


def test_kcp_fields_from_the_reference() -> None:
    export = _kind("apis.kcp.io", "v1alpha2", "APIExport")["properties"]
    claim = export["spec"]["properties"]["permissionClaims"]["items"]["properties"]
    assert {"group", "resource", "verbs", "identityHash"} <= claim.keys()
    assert "SHA-256" in export["status"]["properties"]["identityHash"]["description"]
    binding = _kind("apis.kcp.io", "v1alpha2", "APIBinding")["properties"]
    accepted = binding["spec"]["properties"]["permissionClaims"]
    assert accepted["x-kubernetes-list-map-keys"] == ["group", "resource", "identityHash"]
    assert {"state", "selector"} <= accepted["items"]["properties"].keys()
    slice_ = _kind("apis.kcp.io", "v1alpha1", "APIExportEndpointSlice")["properties"]
    assert slice_["status"]["properties"]["endpoints"]["x-kubernetes-list-map-keys"] == ["url"]
    cluster = _kind("core.kcp.io", "v1alpha1", "LogicalCluster")["properties"]
    assert {"phase", "initializers", "terminators", "URL", "conditions"} <= cluster["status"]["properties"].keys()
    wst = _kind("tenancy.kcp.io", "v1alpha1", "WorkspaceType")["properties"]
    assert {"url", "type"} <= wst["status"]["properties"]["virtualWorkspaces"]["items"]["properties"].keys()


def test_schema_closure_is_self_contained() -> None:
    name = kind_schema_name("apiextensions.k8s.io", "v1", "CustomResourceDefinition")
    assert name is not None
    closure = schema_closure([name])
    assert name in closure and CRD + "JSONSchemaProps" in closure and META + "ObjectMeta" in closure
    assert all(target in closure for schema in closure.values() for target in refs(schema))
    assert "io.k8s.api.core.v1.ConfigMap" not in closure
    configmap = schema_closure(["io.k8s.api.core.v1.ConfigMap"])
    assert CRD + "JSONSchemaProps" not in configmap
    with pytest.raises(KeyError):
        schema_closure(["io.k8s.api.core.v1.Pod"])
