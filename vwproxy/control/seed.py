"""Seeding workspaces into the embedded shard: a logical cluster per Workspace, kcp-named.

A Workspace in `root` gets a 16-character logical cluster name once, recorded in its
`spec.cluster`; restarting finds it again by the Workspace object, so names are stable.
"""

from __future__ import annotations

import secrets
from typing import Any

from vwproxy.control.manifests import Manifest, ManifestError
from vwproxy.kube.kcp import ROOT_CLUSTER, new_logical_cluster_name
from vwproxy.store.shard import Shard

WORKSPACES = ("tenancy.kcp.io/v1alpha1", "Workspace")


def seed_workspaces(shard: Shard, manifests: list[Manifest], external_url: str) -> dict[str, str]:
    """Create the Workspaces (children of root) and their logical clusters; returns path → name."""
    info = shard.resolve(ROOT_CLUSTER, "tenancy.kcp.io", "v1alpha1", "workspaces")
    out: dict[str, str] = {}
    for manifest in manifests:
        if (manifest.api_version, manifest.kind) != WORKSPACES:
            continue
        name = manifest.name
        path = f"{ROOT_CLUSTER}:{name}"
        existing = shard.table(info.storage_key).get(ROOT_CLUSTER, "", name)
        if existing is not None:
            cluster = str((existing.decode().get("spec") or {}).get("cluster", ""))
            if not cluster:
                raise ManifestError(f"{manifest.source}: Workspace {name} exists without spec.cluster")
        else:
            cluster = new_logical_cluster_name(secrets.token_bytes(32))
            body: dict[str, Any] = dict(manifest.obj)
            body["spec"] = {**(body.get("spec") or {}), "cluster": cluster, "URL": f"{external_url}/clusters/{path}"}
            shard.create(info, ROOT_CLUSTER, "", body)
        if not shard.cluster_exists(cluster):
            shard.create_logical_cluster(cluster, path=path)
        stored = shard.table(info.storage_key).get(ROOT_CLUSTER, "", name)
        assert stored is not None
        ws = stored.decode()
        if (ws.get("status") or {}).get("phase") != "Ready":
            ws["status"] = {"phase": "Ready"}
            shard.update(info, ROOT_CLUSTER, "", name, ws, subresource="status")
        out[path] = cluster
    return out
