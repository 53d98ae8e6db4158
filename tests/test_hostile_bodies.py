"""Hostile request bodies (issue 12): YAML alias bombs, JSON nested past orjson's limits,
unknown top-level fields of built-in kinds. Each answers a 4xx Status or succeeds the way
kube-apiserver does; nothing is a 500 and no bomb is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support import eventually
from vwproxy.kube import bodies
from vwproxy.testing.proxy import RunningProxy

pytestmark = pytest.mark.timeout(60)

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
JSON = {"content-type": "application/json"}
YAML = {"content-type": "application/yaml"}

# ~330 bytes that expand to 9^6 × "lol" (half a million strings, several MB once stored).
BILLION_LAUGHS = b"""apiVersion: v1
kind: ConfigMap
metadata: {name: laughs}
data:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
"""


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def configmap(name: str, extra: str) -> str:
    return '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"%s"},%s}' % (name, extra)


def test_yaml_alias_bomb_is_refused_not_stored(api: httpx.Client) -> None:
    r = api.post(CONFIGMAPS, content=BILLION_LAUGHS, headers=YAML)
    assert r.status_code == 413, r.text
    assert r.json()["reason"] == "RequestEntityTooLarge"
    assert api.get(f"{CONFIGMAPS}/laughs").status_code == 404
    # An unknown field carrying the bomb is refused too: the size counts before pruning.
    r = api.post(CONFIGMAPS, content=BILLION_LAUGHS.replace(b"data:", b"bogus:"), headers=YAML)
    assert r.status_code == 413, r.text


def test_yaml_nested_too_deep_for_libyaml_is_a_400(api: httpx.Client) -> None:
    body = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\nbogus: " + nested(200_000).encode()
    r = api.post(CONFIGMAPS, content=body, headers=YAML)
    assert r.status_code == 400, r.text
    assert api.get(CONFIGMAPS).status_code == 200  # still serving


def test_yaml_values_without_a_json_form_are_4xx_or_converted(api: httpx.Client) -> None:
    r = api.post(CONFIGMAPS, content=b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: odd}\ndata: {1: '2020-01-01'}\nbogus: !!binary aGk=\n", headers=YAML)
    assert r.status_code == 400, r.text
    r = api.post(CONFIGMAPS, content=b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keys}\ndata: {1: x, 2.5: y}\n", headers=YAML)
    assert r.status_code == 201, r.text
    assert r.json()["data"] == {"1": "x", "2.5": "y"}


@pytest.mark.parametrize("depth", [300, 1_000, 5_000, 100_000])
def test_deep_unknown_field_is_dropped_and_the_write_succeeds(api: httpx.Client, depth: int) -> None:
    r = api.post(CONFIGMAPS, content=configmap(f"deep-{depth}", f'"data":{{"a":"b"}},"bogus":{nested(depth)}'), headers=JSON)
    assert r.status_code == 201, r.text
    assert "bogus" not in r.json() and r.json()["data"] == {"a": "b"}
    assert 'unknown field \\"bogus' in r.headers.get("warning", "")
    r = api.put(f"{CONFIGMAPS}/deep-{depth}", content=configmap(f"deep-{depth}", f'"bogus":{nested(depth)}'), headers=JSON)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("depth", [300, 1_000, 5_000])
def test_deep_value_of_the_wrong_type_is_a_4xx(api: httpx.Client, depth: int) -> None:
    r = api.post(CONFIGMAPS, content=configmap("wrong", f'"data":{{"a":{nested(depth)}}}'), headers=JSON)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["kind"] == "Status"
    r = api.patch(f"{CONFIGMAPS}/missing", content='{"data":{"a":%s}}' % nested(depth), headers={"content-type": "application/merge-patch+json"})
    assert 400 <= r.status_code < 500, r.text


def test_deep_merge_patch_on_a_stored_object_is_not_a_5xx(api: httpx.Client) -> None:
    assert api.post(CONFIGMAPS, content=configmap("patched", '"data":{"a":"b"}'), headers=JSON).status_code == 201
    for depth in (300, 900, 1_000, 2_000):
        r = api.patch(f"{CONFIGMAPS}/patched", content='{"data":{"a":%s}}' % nested(depth), headers={"content-type": "application/merge-patch+json"})
        assert 400 <= r.status_code < 500, (depth, r.text)
        r = api.patch(f"{CONFIGMAPS}/patched", content='{"bogus":%s}' % nested(depth), headers={"content-type": "application/merge-patch+json"})
        assert r.status_code < 500, (depth, r.text)


def test_unknown_top_level_fields_of_builtins_are_dropped_or_refused_when_strict(api: httpx.Client) -> None:
    r = api.post(CONFIGMAPS, content=configmap("extra", '"data":{"a":"b"},"bogus":1'), headers=JSON)
    assert r.status_code == 201, r.text
    assert "bogus" not in r.json()
    assert "f:bogus" not in str(r.json()["metadata"].get("managedFields"))
    assert "bogus" not in api.get(f"{CONFIGMAPS}/extra").json()
    r = api.post(CONFIGMAPS, params={"fieldValidation": "Strict"}, content=configmap("strict", '"bogus":1'), headers=JSON)
    assert r.status_code == 400 and 'unknown field "bogus"' in r.json()["message"]


def test_deep_json_decoder_matches_orjson() -> None:
    for text in ['{"a":[1,2.5,{"b":null}],"c":"x\\u00e9","d":-1e3,"e":true}', " [ 1 , [ ] , { } ] ", "12345678901234567890123"]:
        import orjson

        assert bodies._loads_deep(text) == orjson.loads(text)
    for bad in ["{", "[1,]", '{"a"}', '{"a":1,}', "[1 2]", "{} x", "tru", "{1:2}", "[NaN]"]:
        with pytest.raises(Exception):
            bodies._loads_deep(bad)


@pytest.fixture(scope="module")
def running_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with RunningProxy(tmp_path_factory.mktemp("hostile") / "data") as running:
        assert running.settle()
        yield running


def test_through_the_front_and_the_vw_deep_bodies_are_not_5xx(running_proxy: RunningProxy) -> None:
    with running_proxy.client(timeout=30) as front:
        r = front.post(f"/clusters/root:consumer-1{CONFIGMAPS}", content=configmap("deep", f'"bogus":{nested(2_000)}'), headers=JSON)
        assert r.status_code == 201, r.text
        r = front.post(f"/clusters/root:consumer-1{CONFIGMAPS}", content=BILLION_LAUGHS, headers=YAML)
        assert r.status_code == 413, r.text
        endpoints = eventually(lambda: (front.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json().get("status") or {}).get("endpoints"), "the widgets endpoint")
        cluster = running_proxy.cluster_of("root:consumer-1")
        url = f"{endpoints[0]['url']}/clusters/{cluster}/apis/example.dev/v1alpha1/namespaces/default/widgets"
        eventually(lambda: front.get(url).status_code == 200, "consumer-1 engaged")
        for depth in (300, 2_000):
            r = front.post(url, content='{"apiVersion":"example.dev/v1alpha1","kind":"Widget","metadata":{"name":"w"},"spec":%s}' % nested(depth), headers=JSON)
            assert 400 <= r.status_code < 500, r.text
        r = front.post(url, content=BILLION_LAUGHS.replace(b"v1\nkind: ConfigMap", b"example.dev/v1alpha1\nkind: Widget"), headers=YAML)
        assert 400 <= r.status_code < 500, r.text


@pytest.mark.parametrize(
    ("path", "obj", "field"),
    [
        ("/apis/tenancy.kcp.io/v1alpha1/workspaces", {"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "w"}, "spec": {"type": 5}}, "spec.type"),
        ("/apis/apis.kcp.io/v1alpha2/apibindings", {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding", "metadata": {"name": "b"}, "spec": {}}, "spec.reference"),
        # v1alpha1 is converted to the stored v1alpha2 before validation, so the missing part is named there.
        ("/apis/apis.kcp.io/v1alpha1/apibindings", {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIBinding", "metadata": {"name": "b"}}, "spec.reference"),
        ("/apis/apis.kcp.io/v1alpha2/apiexports", {"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport", "metadata": {"name": "e"}, "spec": {"resources": "all"}}, "spec.resources"),
    ],
)
def test_kcp_kinds_are_validated_against_their_schemas(api: httpx.Client, path: str, obj: dict[str, object], field: str) -> None:
    r = api.post(path, json=obj)
    assert r.status_code == 422, r.text
    assert field in [c.get("field") for c in r.json()["details"]["causes"]], r.text
    assert api.get(f"{path}/{obj['metadata']['name']}").status_code == 404  # type: ignore[index]


def test_a_manifest_with_an_alias_bomb_is_one_clear_line(tmp_path: Path) -> None:
    """The seed's YAML is bounded like a request body's: aliases expand within 3 MiB."""
    from vwproxy.control.manifests import ManifestError, load_folder

    lines = ['a0: &a0 "' + "x" * 64 + '"'] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n" + "\n".join("  " + line for line in lines) + "\n"
    (tmp_path / "bomb.yaml").write_text(bomb)
    with pytest.raises(ManifestError) as refused:
        load_folder(tmp_path)
    assert "bomb.yaml" in str(refused.value) and "larger than" in str(refused.value)
