"""Applying a folder of kcp manifests at start: workspaces first, then what lives in them.

An object goes to the workspace named by its `kcp.io/path` annotation, else by the name of the
sub-folder it is in (`root:provider/…`), else to `root`. The content of a workspace whose backend
is a real cluster (what the embedded shard does not serve there) is applied on that cluster. Objects that exist are updated to the
manifest (a server-side apply as manager `vwproxy-seed`), so a restart with the same folder
changes nothing and a changed folder is applied over what is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import orjson

from vwproxy.auth.identity import MASTERS, OWNER_ANNOTATION
from vwproxy.control.manifests import Manifest, ManifestError
from vwproxy.control.objects import WORKSPACE_TYPES
from vwproxy.control.plane import ControlPlane
from vwproxy.kube import conversion, errors, managedfields
from vwproxy.kube.kcp import PATH_ANNOTATION, ROOT_CLUSTER, is_workspace_path
from vwproxy.kube.resources import ResourceInfo
from vwproxy.upstream.client import BackendClient

SEED_MANAGER = "vwproxy-seed"
# How long the seed waits for a backend to serve a kind it is to hold (a CRD a binding installed
# is served within a second or two on a real cluster); how often it looks meanwhile.
BACKEND_SERVES_SECONDS = 30.0
BACKEND_POLL_SECONDS = 0.2

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


def _served_here(control: ControlPlane, cluster: str, manifest: Manifest) -> bool:
    group, _, version = manifest.api_version.rpartition("/")
    return any(i.group == group and i.version == version and i.kind == manifest.kind for i in control.shard.resources(cluster))


async def _apply_on_backend(control: ControlPlane, client: BackendClient, manifest: Manifest, path: str) -> None:
    """A workspace's content on its backend (a real cluster): a server-side apply there, as
    manager `vwproxy-seed`, once the backend serves the kind (a bound CRD is established a moment
    after the binding installs it)."""
    group, _, version = manifest.api_version.rpartition("/")
    prefix = f"/apis/{group}/{version}" if group else "/api/v1"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BACKEND_SERVES_SECONDS
    while True:
        found = await client.request("GET", prefix, [], {"accept": "application/json"})
        resources = orjson.loads(found.body).get("resources", []) if found.status == 200 else []
        served = next((r for r in resources if isinstance(r, dict) and r.get("kind") == manifest.kind and "/" not in str(r.get("name", ""))), None)
        if served is not None:
            break
        if loop.time() > deadline:
            raise ManifestError(f"{manifest.source}: apiVersion {manifest.api_version} kind {manifest.kind} is not served in workspace {path} "
                                f"(on backend {client.name}, after {BACKEND_SERVES_SECONDS:g} s; bind the API there first)")
        await asyncio.sleep(BACKEND_POLL_SECONDS)
    body = dict(manifest.obj)
    md = dict(body.get("metadata") or {})
    annotations = {k: v for k, v in (md.get("annotations") or {}).items() if k != PATH_ANNOTATION}
    md["annotations"] = annotations
    if not annotations:
        del md["annotations"]
    namespace = str(md.get("namespace") or "default") if served.get("namespaced") else ""
    if namespace:
        md["namespace"] = namespace
    body["metadata"] = md
    where = f"{prefix}/namespaces/{namespace}/{served['name']}/{md['name']}" if namespace else f"{prefix}/{served['name']}/{md['name']}"
    answer = await client.request("PATCH", where, [("fieldManager", SEED_MANAGER), ("force", "true")],
                                  {"content-type": "application/apply-patch+yaml", "accept": "application/json"}, orjson.dumps(body))
    if answer.status not in (200, 201):
        try:
            message = str(orjson.loads(answer.body).get("message") or "")
        except (orjson.JSONDecodeError, AttributeError):
            message = answer.body[:200].decode(errors="replace")
        raise ManifestError(f"{manifest.source}: backend {client.name} refused it: HTTP {answer.status}: {message}")


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
        cluster = control.store.resolve_path(target_path(manifest))
        if cluster is not None and not _served_here(control, cluster, manifest):
            try:
                client = control.client_for(cluster)
            except errors.StatusError as exc:
                raise ManifestError(f"{manifest.source}: {exc.message}") from None
            if client is not None:
                await _apply_on_backend(control, client, manifest, target_path(manifest))
                continue
        apply_manifest(control, manifest)
    await control.drain()
