"""Garbage collection over `metadata.ownerReferences`, within one logical cluster.

Kubernetes' three propagation policies:
- Background: the owner goes at once; afterwards every dependent whose owners are all gone is
  deleted (and so on down the chain).
- Foreground: the owner stays, with `deletionTimestamp` and the `foregroundDeletion`
  finalizer, until its dependents are gone; then the finalizer is removed and it goes.
- Orphan: the owner stays with the `orphan` finalizer while its dependents lose their owner
  reference to it; then the finalizer is removed and it goes.

Simplified relative to kube-controller-manager: collection runs right after the commit that
triggers it (not in a controller with queues), `blockOwnerDeletion` is not distinguished (in
Foreground every dependent blocks), and dangling references are matched by uid alone.

Objects are not indexed by uid (it cost each ~46 bytes): a delete already passes over its logical
cluster's objects for the dependents, and the owners that may be waiting for them to go are
marked for deletion, which the shard does index.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from vwproxy.kube import errors
from vwproxy.kube.resources import ResourceInfo
from vwproxy.core.objects import StoredObject, owned_by

if TYPE_CHECKING:
    from vwproxy.store.shard import Shard

log = logging.getLogger(__name__)

FOREGROUND_FINALIZER = "foregroundDeletion"
ORPHAN_FINALIZER = "orphan"
BACKGROUND, FOREGROUND, ORPHAN = "Background", "Foreground", "Orphan"


def policy_of(options: dict[str, Any]) -> str:
    policy = options.get("propagationPolicy")
    if policy in (BACKGROUND, FOREGROUND, ORPHAN):
        return str(policy)
    if options.get("orphanDependents") is True:
        return ORPHAN
    return BACKGROUND


def finalizer_for(policy: str) -> str | None:
    return {FOREGROUND: FOREGROUND_FINALIZER, ORPHAN: ORPHAN_FINALIZER}.get(policy)


def dependents(shard: Shard, cluster: str, owner_uid: str) -> list[tuple[str, StoredObject]]:
    """(storage key, object) of everything in `cluster` that names `owner_uid` as an owner."""
    found: list[tuple[str, StoredObject]] = []
    for key, table in shard.tables():
        bucket = table.clusters.get(cluster)
        if bucket is None:
            continue
        found += ((key, obj) for obj in owned_by(bucket.objects.values(), owner_uid))
    return found


def _info(shard: Shard, cluster: str, storage_key: str) -> ResourceInfo | None:
    return shard.info_for_storage_key(storage_key, cluster)


def _remove_finalizer(shard: Shard, info: ResourceInfo, obj: StoredObject, finalizer: str) -> None:
    body = obj.decode()
    md = body["metadata"]
    md["finalizers"] = [f for f in md.get("finalizers") or [] if f != finalizer]
    if not md["finalizers"]:
        del md["finalizers"]
    shard.update(info, obj.cluster, obj.namespace, obj.name, body)


def _delete(shard: Shard, storage_key: str, obj: StoredObject) -> None:
    info = _info(shard, obj.cluster, storage_key)
    if info is None:
        return
    try:
        shard.delete(info, obj.cluster, obj.namespace, obj.name, {"propagationPolicy": BACKGROUND})
    except errors.StatusError as exc:
        if exc.code != 404:
            log.warning("garbage collector could not delete %s %s/%s in %s: %s", storage_key, obj.namespace, obj.name, obj.cluster, exc)


def orphan(shard: Shard, storage_key: str, owner: StoredObject) -> None:
    """Drop every reference to `owner`, then let it go."""
    for key, dependent in dependents(shard, owner.cluster, owner.uid):
        info = _info(shard, owner.cluster, key)
        if info is None:
            continue
        body = dependent.decode()
        md = body["metadata"]
        md["ownerReferences"] = [r for r in md.get("ownerReferences") or [] if r.get("uid") != owner.uid]
        if not md["ownerReferences"]:
            del md["ownerReferences"]
        shard.update(info, dependent.cluster, dependent.namespace, dependent.name, body)
    _finish(shard, storage_key, owner, ORPHAN_FINALIZER)


def foreground(shard: Shard, storage_key: str, owner: StoredObject) -> None:
    """Delete the dependents; the owner goes when none are left."""
    for key, dependent in dependents(shard, owner.cluster, owner.uid):
        if not dependent.deleting:
            _delete(shard, key, dependent)
    if not dependents(shard, owner.cluster, owner.uid):
        _finish(shard, storage_key, owner, FOREGROUND_FINALIZER)


def _finish(shard: Shard, storage_key: str, owner: StoredObject, finalizer: str) -> None:
    info = _info(shard, owner.cluster, storage_key)
    current = shard.table(storage_key).get(owner.cluster, owner.namespace, owner.name)
    if info is not None and current is not None and current.uid == owner.uid:
        _remove_finalizer(shard, info, current, finalizer)


def after_delete(shard: Shard, gone: StoredObject) -> None:
    """`gone` was deleted for good: collect its orphans, and let waiting foreground owners go."""
    gone_uid = gone.uid
    if gone_uid:
        found = [(key, dependent) for key, dependent in dependents(shard, gone.cluster, gone_uid) if not dependent.deleting]
        # Which of their other owners live is taken once: an object that goes while the loop
        # below runs (a dependent deleted, a foreground owner let go) has its own `after_delete`,
        # which sees its dependents. `gone` is no longer stored (and uids are unique), so a
        # dependent it alone owned goes without a look at the other objects.
        others = {uid for _, dependent in found for uid in dependent.owners if uid != gone_uid}
        living = _living(shard, gone.cluster, others) if others else set()
        for key, dependent in found:
            if not any(uid in living for uid in dependent.owners):
                _delete(shard, key, dependent)
    for owner_uid in gone.owners:
        located = shard.marked_for_deletion(gone.cluster, owner_uid)  # a waiting owner is marked
        if located is None:
            continue
        key, owner = located
        if owner.deleting and FOREGROUND_FINALIZER in (owner.decode()["metadata"].get("finalizers") or []):
            if not dependents(shard, gone.cluster, owner_uid):
                _finish(shard, key, owner, FOREGROUND_FINALIZER)


def _living(shard: Shard, cluster: str, uids: set[str]) -> set[str]:
    """Those of `uids` that an object in `cluster` has (objects read their uid from their bytes,
    ~0.2 µs each: this pass is taken only for dependents with other owners)."""
    found: set[str] = set()
    for _, table in shard.tables():
        bucket = table.clusters.get(cluster)
        if bucket is not None:
            found.update(uid for obj in bucket.objects.values() if (uid := obj.uid) in uids)
    return found
