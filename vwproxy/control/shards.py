"""Shards: the processes that serve virtual workspaces, each for a partition of the logical clusters.

Every process that serves virtual workspaces registers a `Shard` object (`core.kcp.io/v1alpha1`)
in the root workspace, as a kcp shard does: where it is reached (`spec.baseURL`,
`spec.virtualWorkspaceURL`) and, in the `vwproxy.dev/partition` annotation, which logical clusters
it serves. The control plane lists, in each APIExportEndpointSlice, the virtual workspace URL of
every shard whose partition holds at least one logical cluster bound to the export (kcp's rule:
a shard publishes its URL while it hosts at least one binding), sorted by shard name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vwproxy.control.objects import API_BINDINGS, SHARDS, ControlStore, Obj
from vwproxy.core.partition import CLUSTERS, EVERYTHING, Partition, PartitionError
from vwproxy.kube import kcp
from vwproxy.kube.kcp import ROOT_CLUSTER

log = logging.getLogger(__name__)

PARTITION_ANNOTATION = "vwproxy.dev/partition"
# The name a lone `vwproxy serve` registers under, as kcp's first shard is named.
DEFAULT_SHARD_NAME = "root"


@dataclass(frozen=True)
class ShardEntry:
    name: str
    virtual_workspace_url: str
    partition: Partition


def shard_object(name: str, url: str, partition: Partition) -> Obj:
    """The `Shard` a process registers for itself."""
    return {
        "apiVersion": "core.kcp.io/v1alpha1",
        "kind": "Shard",
        "metadata": {"name": name, "annotations": {PARTITION_ANNOTATION: str(partition)}},
        "spec": {"baseURL": url, "externalURL": url, "virtualWorkspaceURL": url},
    }


def matches(held: Obj, wanted: Obj) -> bool:
    """Whether a stored `Shard` says what `wanted` says (spec and partition)."""
    partition = (held["metadata"].get("annotations") or {}).get(PARTITION_ANNOTATION)
    return bool(held.get("spec") == wanted["spec"] and partition == wanted["metadata"]["annotations"][PARTITION_ANNOTATION])


def register(store: ControlStore, name: str, url: str, partition: Partition) -> None:
    """Create or update this process's own `Shard` in the embedded control plane."""
    wanted = shard_object(name, url, partition)
    existing = store.get(SHARDS, ROOT_CLUSTER, name)
    if existing is None:
        store.create(SHARDS, ROOT_CLUSTER, wanted)
        return
    if matches(existing, wanted):
        return
    annotations = dict(existing["metadata"].get("annotations") or {})
    annotations[PARTITION_ANNOTATION] = str(partition)
    store.update(SHARDS, ROOT_CLUSTER, {**existing, "metadata": {**existing["metadata"], "annotations": annotations}, "spec": wanted["spec"]})


def registered(store: ControlStore, fallback_url: str) -> list[ShardEntry]:
    """The registered shards by name; with none registered (a control store used on its own), this
    process serving everything at `fallback_url`."""
    entries = []
    for _, obj in store.all(SHARDS, ROOT_CLUSTER):
        name = str(obj["metadata"]["name"])
        url = str((obj.get("spec") or {}).get("virtualWorkspaceURL") or (obj.get("spec") or {}).get("baseURL") or "").rstrip("/")
        try:
            partition = Partition.parse(str((obj["metadata"].get("annotations") or {}).get(PARTITION_ANNOTATION, "all")))
        except PartitionError as exc:
            log.warning("shard %s: annotation %s: %s; its URL is not published", name, PARTITION_ANNOTATION, exc)
            continue
        if url:
            entries.append(ShardEntry(name, url, partition))
    if not entries and not store.all(SHARDS, ROOT_CLUSTER):
        entries.append(ShardEntry(DEFAULT_SHARD_NAME, fallback_url.rstrip("/"), EVERYTHING))
    return sorted(entries, key=lambda e: e.name)


def hosting(store: ControlStore, shards: list[ShardEntry], export_cluster: str, export_name: str) -> list[ShardEntry]:
    """The shards whose partition holds at least one logical cluster with an APIBinding bound to
    the export. Bindings are decoded one at a time, those of other exports (their export label
    says so) not at all, and the walk stops once every shard is known to host one: with thousands
    of bindings a reconcile of every slice stays linear."""
    label = kcp.export_label_value(export_cluster, export_name)
    found: set[str] = set()
    for stored in store.each_stored(API_BINDINGS):
        if len(found) == len(shards):
            break
        if stored.labels.get(kcp.EXPORT_LABEL, label) != label:
            continue
        binding = stored.decode()
        ref = ((binding.get("spec") or {}).get("reference") or {}).get("export") or {}
        if ref.get("name") != export_name or (binding.get("status") or {}).get("apiExportClusterName") != export_cluster:
            continue
        path = ""
        for shard in shards:
            if shard.name not in found:
                if shard.partition.kind == CLUSTERS and not path:  # only an explicit list may name paths
                    path = store.path_of(stored.cluster)
                if shard.partition.owns(stored.cluster, path):
                    found.add(shard.name)
    return [s for s in shards if s.name in found]
