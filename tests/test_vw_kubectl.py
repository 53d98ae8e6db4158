"""What kubectl and metadata-only informers see through the APIExport virtual workspace (Tables with the schema's printer columns, discovery that `kubectl api-resources`
accepts, PartialObjectMetadata lists and watches, streamed lists)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import orjson

from test_apiexport_vw import WIDGETS, vw_url
from vwproxy.testing.kubectl import Kubectl
from vwproxy.testing.proxy import RunningProxy

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
PARTIAL = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"


def _kubectl(proxy: RunningProxy, tmp_path: Path, server: str, *args: str) -> subprocess.CompletedProcess[str]:
    return Kubectl(tmp_path / f"kubectl-{len(list(tmp_path.iterdir()))}", kubeconfig=proxy.kubeconfig(server)).run(*args)


def test_tables_through_the_vw_carry_the_schemas_printer_columns(proxy: RunningProxy, front: httpx.Client) -> None:
    base = vw_url(front)
    consumer = proxy.cluster_of("root:consumer-1")
    table = front.get(f"{base}/clusters/*/{WIDGETS}/widgets", headers={"accept": TABLE}).json()
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]][:3] == ["Name", "Size", "Age"]
    sizes = {row["cells"][0]: row["cells"][1] for row in table["rows"]}
    assert sizes["red"] == 1 and sizes["blue"] == 2
    one = front.get(f"{base}/clusters/{consumer}/{WIDGETS}/namespaces/default/widgets/red", headers={"accept": TABLE}).json()
    assert one["kind"] == "Table" and [r["cells"][:2] for r in one["rows"]] == [["red", 1]]
    v1beta1 = front.get(f"{base}/clusters/*/{WIDGETS}/widgets", headers={"accept": TABLE.replace("v=v1", "v=v1beta1")}).json()
    assert v1beta1["apiVersion"] == "meta.k8s.io/v1beta1" and v1beta1["kind"] == "Table"


def test_kubectl_get_through_the_vw_shows_printer_columns(proxy: RunningProxy, front: httpx.Client, tmp_path: Path) -> None:
    server = f"{vw_url(front)}/clusters/*"
    for extra in ((), ("-o", "wide")):
        got = _kubectl(proxy, tmp_path, server, "get", "widgets", "-A", *extra)
        assert got.returncode == 0, got.stderr
        header = got.stdout.splitlines()[0].split()
        assert header[:4] == ["NAMESPACE", "NAME", "SIZE", "AGE"], got.stdout
        red = next(line.split() for line in got.stdout.splitlines() if " red " in f" {line} ")
        assert red[2] == "1", got.stdout


def test_kubectl_api_resources_through_the_vw_lists_exactly_the_export(proxy: RunningProxy, front: httpx.Client, tmp_path: Path) -> None:
    got = _kubectl(proxy, tmp_path, f"{vw_url(front)}/clusters/*", "api-resources", "--no-headers", "-o", "name")
    assert got.returncode == 0, got.stderr
    assert sorted(got.stdout.split()) == ["apibindings.apis.kcp.io", "widgets.example.dev"]


def test_discovery_of_an_empty_group_version_is_404_and_api_lists_no_versions(proxy: RunningProxy, front: httpx.Client) -> None:
    base = vw_url(front)
    for cluster in ("*", proxy.cluster_of("root:consumer-1")):
        assert front.get(f"{base}/clusters/{cluster}/api/v1").status_code == 404
        assert front.get(f"{base}/clusters/{cluster}/api").json()["versions"] == []
        assert front.get(f"{base}/clusters/{cluster}/apis/example.dev/v2").status_code == 404
        assert front.get(f"{base}/clusters/{cluster}/apis/example.dev/v1alpha1").status_code == 200


def test_metadata_only_list_get_and_watch_through_the_vw(proxy: RunningProxy, front: httpx.Client) -> None:
    base = vw_url(front)
    consumer = proxy.cluster_of("root:consumer-1")
    listed = front.get(f"{base}/clusters/*/{WIDGETS}/widgets", headers={"accept": PARTIAL_LIST}).json()
    assert listed["kind"] == "PartialObjectMetadataList" and listed["apiVersion"] == "meta.k8s.io/v1"
    assert listed["items"] and all(i["kind"] == "PartialObjectMetadata" and "spec" not in i for i in listed["items"])
    assert all(i["metadata"]["annotations"]["kcp.io/cluster"] for i in listed["items"])
    one = front.get(f"{base}/clusters/{consumer}/{WIDGETS}/namespaces/default/widgets/red", headers={"accept": PARTIAL}).json()
    assert one["kind"] == "PartialObjectMetadata" and one["metadata"]["name"] == "red" and "spec" not in one
    params = {"watch": "true", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan", "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
    with front.stream("GET", f"{base}/clusters/*/{WIDGETS}/widgets", params=params, headers={"accept": PARTIAL_LIST}) as stream:
        events = [orjson.loads(line) for line in stream.iter_lines() if line]
    added = [e for e in events if e["type"] == "ADDED"]
    assert len(added) == len(listed["items"]) and all(e["object"]["kind"] == "PartialObjectMetadata" for e in added)
    end = next(e for e in events if e["type"] == "BOOKMARK")
    assert end["object"]["kind"] == "PartialObjectMetadata" and end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"


def test_a_bare_vw_url_says_how_to_address_a_workspace(proxy: RunningProxy, front: httpx.Client) -> None:
    resp = front.get(f"{vw_url(front)}/api")
    assert resp.status_code == 404 and "append /clusters/*" in resp.json()["message"]
