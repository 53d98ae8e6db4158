"""Claim labels on a workspace that lives on a Kubernetes backend: one bounded pass of list and
merge-patch through the backend client (the control plane sees no commits there, so the binding
is looked at again every `BACKEND_RELABEL_SECONDS` to catch new and changed objects)."""

from __future__ import annotations

from urllib.parse import quote

import orjson

from vwproxy.control.labeller import APIBINDINGS_KEY, ClaimLabeller
from vwproxy.control.objects import Obj
from vwproxy.kube import errors, kcp
from vwproxy.kube.resources import BUILTIN_RESOURCES
from vwproxy.upstream.client import BackendClient

# How often a binding with claims on a kube backend relabels: new objects there carry no label
# until then (kcp labels in admission; a backend has no such hook).
BACKEND_RELABEL_SECONDS = 10.0
# One pass reads at most this many pages of this many objects: a huge workspace is labelled over
# several passes rather than holding the control loop.
PAGE_SIZE = 500
MAX_PAGES = 20

_BUILTIN_PATHS = {r.storage_key: (r.group, r.version, r.resource) for r in BUILTIN_RESOURCES if r.storage_group is None}


def _collection(storage_key: str, crd: Obj | None) -> str | None:
    """The cluster-wide collection path of a storage key on a backend (None: not served there)."""
    if storage_key in _BUILTIN_PATHS:
        group, version, resource = _BUILTIN_PATHS[storage_key]
    elif crd is not None:
        spec = crd.get("spec") or {}
        versions = [v for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("served", True)]
        version = next((str(v["name"]) for v in versions if v.get("storage")), str(versions[0]["name"]) if versions else "")
        group, resource = str(spec.get("group") or ""), str((spec.get("names") or {}).get("plural") or "")
        if not version:
            return None
    else:
        return None
    return f"/api/{version}/{resource}" if not group else f"/apis/{group}/{version}/{resource}"


async def relabel_backend(labeller: ClaimLabeller, client: BackendClient, cluster: str, storage_key: str, crd: Obj | None) -> list[str]:
    """Bring the claim labels of a storage key's objects on the backend up to date; the failures."""
    if storage_key == APIBINDINGS_KEY:
        return []  # APIBindings live in the control plane, never on a backend
    collection = _collection(storage_key, crd)
    if collection is None:
        return []
    headers = {"Accept": "application/json"}
    failures: list[str] = []
    token = ""
    for _ in range(MAX_PAGES):
        query = [("limit", str(PAGE_SIZE))] + ([("continue", token)] if token else [])
        try:
            resp = await client.request("GET", collection, query, headers)
        except errors.StatusError as exc:
            return [f"listing {collection} on the backend failed: {exc.message}"]
        if resp.status == 404:
            return []
        if resp.status != 200:
            return [f"listing {collection} on the backend failed: HTTP {resp.status}"]
        page = orjson.loads(resp.body)
        for item in page.get("items") or []:
            failure = await _relabel_one(labeller, client, cluster, storage_key, collection, item)
            if failure:
                failures.append(failure)
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return failures
    return failures + [f"{collection}: more than {PAGE_SIZE * MAX_PAGES} objects, the rest in the next pass"]


async def _relabel_one(labeller: ClaimLabeller, client: BackendClient, cluster: str, storage_key: str, collection: str, item: Obj) -> str:
    md = item.get("metadata") or {}
    if md.get("deletionTimestamp"):
        return ""
    changed = labeller.relabelled(cluster, storage_key, item)
    if changed is None:
        return ""
    have = md.get("labels") or {}
    want = changed["metadata"].get("labels") or {}
    patch: dict[str, str | None] = {k: v for k, v in want.items() if have.get(k) != v}
    patch.update({k: None for k in have if k.startswith(kcp.CLAIMED_LABEL_PREFIX) and k not in want})
    body = orjson.dumps({"metadata": {"labels": patch, "resourceVersion": md.get("resourceVersion")}})
    group_version, _, resource = collection.rpartition("/")
    where = f"{group_version}/namespaces/{quote(str(md['namespace']))}/{resource}/{quote(str(md.get('name')))}" if md.get("namespace") else f"{collection}/{quote(str(md.get('name')))}"
    try:
        resp = await client.request("PATCH", where, [], {**{"Content-Type": "application/merge-patch+json"}, "Accept": "application/json"}, body)
    except errors.StatusError as exc:
        return f"error patching {where}: {exc.message}"
    if resp.status in (200, 404, 409):  # a conflict: the object changed, the next pass sees it
        return ""
    return f"error patching {where}: HTTP {resp.status}"
