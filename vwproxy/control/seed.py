"""Applying a folder of kcp manifests at start: workspaces first, then what lives in them.

An object goes to the workspace named by its `kcp.io/path` annotation, else by the name of the
sub-folder it is in (`root:provider/…`), else to `root`. Objects that exist are updated to the
manifest (a server-side apply as manager `vwproxy-seed`), so a restart with the same folder
changes nothing and a changed folder is applied over what is there.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from vwproxy.auth.identity import MASTERS, OWNER_ANNOTATION
from vwproxy.control.manifests import Manifest, ManifestError
from vwproxy.control.objects import WORKSPACE_TYPES
from vwproxy.control.plane import ControlPlane
from vwproxy.kube import conversion, errors, managedfields
from vwproxy.kube.kcp import PATH_ANNOTATION, ROOT_CLUSTER, is_workspace_path
from vwproxy.kube.resources import ResourceInfo

SEED_MANAGER = "vwproxy-seed"

# Apply order: what later kinds need must exist first.
_PHASES: tuple[tuple[str, ...], ...] = (
    ("Workspace",),
    ("WorkspaceType", "Namespace", "APIResourceSchema", "Secret", "CustomResourceDefinition"),
    ("APIExport",),
    ("APIBinding",),
)


def target_path(manifest: Manifest) -> str:
    annotations = (manifest.obj.get("metadata") or {}).get("annotations") or {}
    if isinstance(annotations, dict) and isinstance(annotations.get(PATH_ANNOTATION), str):
        return str(annotations[PATH_ANNOTATION])
    folder = manifest.folder
    return folder if folder == ROOT_CLUSTER or is_workspace_path(folder) else ROOT_CLUSTER


def _phase(manifest: Manifest) -> int:
    for index, kinds in enumerate(_PHASES):
        if manifest.kind in kinds:
            return index
    return len(_PHASES)


def _info_for(control: ControlPlane, cluster: str, manifest: Manifest) -> ResourceInfo:
    group, _, version = manifest.api_version.rpartition("/")
    for info in control.shard.resources(cluster):
        if info.group == group and info.version == version and info.kind == manifest.kind:
            return info
    raise ManifestError(f"{manifest.source}: apiVersion {manifest.api_version} kind {manifest.kind} is not served in workspace {target_path(manifest)}")


def apply_manifest(control: ControlPlane, manifest: Manifest) -> None:
    path = target_path(manifest)
    cluster = control.store.resolve_path(path)
    if cluster is None:
        raise ManifestError(f"{manifest.source}: workspace {path} does not exist (declare its Workspace in the config folder)")
    info = _info_for(control, cluster, manifest)
    body = dict(manifest.obj)
    md = dict(body.get("metadata") or {})
    annotations = {k: v for k, v in (md.get("annotations") or {}).items() if k != PATH_ANNOTATION}
    if (info.group, info.resource) == ("tenancy.kcp.io", "workspaces"):
        # The seed creates workspaces as the server's admin: recorded as their creator (in
        # system:masters, so no owner binding), which the lifecycle VWs act as without *Permissions.
        annotations.setdefault(OWNER_ANNOTATION, orjson.dumps({"username": SEED_MANAGER, "groups": [MASTERS]}).decode())
    md["annotations"] = annotations
    if not annotations:
        del md["annotations"]
    namespace = str(md.get("namespace") or ("default" if info.namespaced else ""))
    if info.namespaced:
        md["namespace"] = namespace
    body["metadata"] = md
    shard = control.shard
    current = shard.table(info.storage_key).get(cluster, namespace, str(md["name"]))
    try:
        live = current.decode() if current is not None else None
        if live is not None and conversion.needs_conversion(info):
            live = conversion.to_served(live, info)
        merged = managedfields.server_side_apply(info, live, body, SEED_MANAGER, force=True)
        if conversion.needs_conversion(info):
            merged = conversion.to_stored(merged, info)  # a v1alpha1 export is stored as v1alpha2, as kcp does
        if current is None:
            shard.create(info, cluster, namespace, merged)
        else:
            merged["metadata"]["resourceVersion"] = str(current.rv)
            shard.update(info, cluster, namespace, str(md["name"]), merged)
        if info.status and isinstance(manifest.obj.get("status"), dict):
            stored = shard.get(info, cluster, namespace, str(md["name"])).decode()
            shard.update(info, cluster, namespace, str(md["name"]), {**stored, "status": manifest.obj["status"]}, "status")
    except errors.StatusError as exc:
        raise ManifestError(f"{manifest.source}: {exc.message}") from None


# WorkspaceTypes kcp creates in root when it starts: kcp's own examples extend `universal`.
BUILTIN_WORKSPACE_TYPES = ("universal",)


def ensure_builtin_workspace_types(control: ControlPlane) -> None:
    """kcp's bootstrap WorkspaceTypes in root (no initializer, no terminator), where missing."""
    for name in BUILTIN_WORKSPACE_TYPES:
        if control.store.get(WORKSPACE_TYPES, ROOT_CLUSTER, name) is None:
            control.store.create(WORKSPACE_TYPES, ROOT_CLUSTER, {"metadata": {"name": name}, "spec": {}})


async def seed(control: ControlPlane, manifests: Iterable[Manifest]) -> None:
    """Apply `manifests` in dependency order, letting the reconcilers settle after each phase."""
    ordered = sorted(manifests, key=lambda m: (_phase(m), target_path(m).count(":"), m.source))
    ensure_builtin_workspace_types(control)
    control.enqueue_all()
    await control.drain()
    phase = -1
    for manifest in ordered:
        if _phase(manifest) != phase or manifest.kind == "Workspace":
            await control.drain()
            phase = _phase(manifest)
        apply_manifest(control, manifest)
    await control.drain()
