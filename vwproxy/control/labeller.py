"""The claim labeller: puts each accepted claim's label on the objects its selector picks in the
consumer workspace, and takes it off when they stop matching or the claim goes.

kcp labels in admission and with a background controller (`pkg/permissionclaim`,
`pkg/reconciler/apis/permissionclaimlabel`); here the control plane follows shard commits. An
index of which (logical cluster, storage key) have accepted claims keeps every other commit at
a dict lookup. kcp-reference.md section 8.3.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from vwproxy.control.claims import AcceptedClaim, export_reference
from vwproxy.control.objects import API_BINDINGS, API_EXPORTS, SYSTEM_MANAGER, ControlStore, Obj
from vwproxy.kube import errors, kcp, managedfields
from vwproxy.kube.kcp import ClaimKey
from vwproxy.kube.resources import BUILTIN_RESOURCES
from vwproxy.core.objects import ChangeEvent, StoredObject
from vwproxy.store.shard import Shard

APIBINDINGS_KEY = "apis.kcp.io/apibindings"
# A labelling pass lets requests in between after this many objects.
OBJECTS_PER_YIELD = 200

_BUILTIN_STORAGE = {(r.group, r.resource): r.storage_key for r in BUILTIN_RESOURCES if r.storage_group is None}

Target = tuple[str, str]  # (logical cluster, storage key)


def claim_crd_name(claim: AcceptedClaim) -> str:
    """The CRD another export's claimed resource is bound as in the consumer."""
    return f"{claim.resource}.{claim.group}"


class Unclaimable(Exception):
    """The claimed resource is not served here: nothing can be labelled for it."""


class ClaimLabeller:
    """Accepted claims by where their objects live, and the passes that label those objects."""

    def __init__(self, shard: Shard, store: ControlStore) -> None:
        self.shard = shard
        self.store = store
        # (cluster, binding) → every accepted claim (usable ones), for the VW and the status
        self._accepted: dict[tuple[str, str], tuple[AcceptedClaim, ...]] = {}
        # (cluster, binding) → storage key → the claims labelling objects there
        self._by_binding: dict[tuple[str, str], dict[str, tuple[AcceptedClaim, ...]]] = {}
        # (cluster, storage key) → binding → claims: what a commit there is checked against
        self._targets: dict[Target, dict[str, tuple[AcceptedClaim, ...]]] = {}
        self.writing = False  # set while the labeller writes: its own commits need no second look

    # -- where a claim's objects live ------------------------------------------------------------

    def storage_of(self, claim: AcceptedClaim, crd_identities: dict[str, str | None]) -> str | None:
        """The storage key of the claimed objects, None if there is nothing to label (a resource
        nobody stores, another export's resource not bound in the workspace). `crd_identities`:
        CRD name → the identity the consumer's CRD of that name has (None: no such CRD)."""
        if (claim.group, claim.resource) in kcp.NON_PERSISTED_CLAIMABLE:
            return None
        if claim.group == "events.k8s.io" and claim.resource == "events":
            return None  # kcp labels events by their core group only: such a claim labels nothing
        if not claim.identity_hash:
            key = _BUILTIN_STORAGE.get((claim.group, claim.resource))
            if key is None:
                raise Unclaimable(f"unable to find informer for {claim.resource}.{claim.group}")
            return key
        if crd_identities.get(claim_crd_name(claim)) != claim.identity_hash:
            return None  # not bound here, or under another identity: those are not the claimed objects
        return f"{claim.group}/{claim.resource}"

    # -- the index --------------------------------------------------------------------------------

    def index(
        self, cluster: str, binding: str, accepted: Iterable[AcceptedClaim], crd_identities: dict[str, str | None],
    ) -> tuple[set[str], dict[ClaimKey, str]]:
        """Record a binding's accepted claims; returns (storage keys whose labels may change,
        claims that cannot be applied → why)."""
        accepted = tuple(accepted)
        wanted: dict[str, list[AcceptedClaim]] = {}
        failed: dict[ClaimKey, str] = {}
        for claim in accepted:
            try:
                key = self.storage_of(claim, crd_identities)
            except Unclaimable as exc:
                failed[claim.key] = str(exc)
                continue
            if key is not None:
                wanted.setdefault(key, []).append(claim)
        new = {key: tuple(claims) for key, claims in wanted.items()}
        old = self.forget(cluster, binding)
        if accepted:
            self._accepted[(cluster, binding)] = accepted
        if new:
            self._by_binding[(cluster, binding)] = new
        for key, claims in new.items():
            self._targets.setdefault((cluster, key), {})[binding] = claims
        return {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}, failed

    def forget(self, cluster: str, binding: str) -> dict[str, tuple[AcceptedClaim, ...]]:
        """Drop a binding from the index; returns what it labelled (storage key → claims)."""
        self._accepted.pop((cluster, binding), None)
        old = self._by_binding.pop((cluster, binding), {})
        for key in old:
            per_target = self._targets.get((cluster, key), {})
            per_target.pop(binding, None)
            if not per_target:
                self._targets.pop((cluster, key), None)
        return old

    def concerns(self, event: ChangeEvent) -> bool:
        """Whether a commit may need labels changed: a claimed resource here, or claim labels on it."""
        if (event.obj.cluster, event.storage_key) in self._targets:
            return True
        return any(k.startswith(kcp.CLAIMED_LABEL_PREFIX) for k in event.obj.labels)

    def claims_of_export(self, export_cluster: str, export_name: str) -> dict[str, list[AcceptedClaim]]:
        """consumer cluster → accepted claims of its bindings to the export that the export makes."""
        out: dict[str, list[AcceptedClaim]] = {}
        for (cluster, _), claims in self._accepted.items():
            for claim in claims:
                if claim.export_cluster == export_cluster and claim.export_name == export_name and claim.exported:
                    out.setdefault(cluster, []).append(claim)
        return out

    def storage_keys_of(self, cluster: str, binding: str) -> set[str]:
        return set(self._by_binding.get((cluster, binding), {}))

    def claims_at(self, cluster: str, binding: str, storage_key: str) -> tuple[AcceptedClaim, ...]:
        return self._by_binding.get((cluster, binding), {}).get(storage_key, ())

    def claimed_targets(self) -> set[Target]:
        return set(self._targets)

    # -- what an object's claim labels should be ------------------------------------------------

    def expected_labels(self, cluster: str, storage_key: str, labels: dict[str, str], binding: Obj | None = None) -> dict[str, str]:
        """The claim labels an object should carry (kcp's `Labeler.LabelsFor`); for an APIBinding
        (`binding` given) also the reflexive label of its own export."""
        out: dict[str, str] = {}
        for claims in self._targets.get((cluster, storage_key), {}).values():
            for claim in claims:
                if claim.selects(labels):
                    out[claim.label_key] = claim.label_value
        if binding is not None:
            export_cluster, export_name = export_reference(self.store, cluster, binding)
            if export_cluster is not None and self.store.stored(API_EXPORTS, export_cluster, export_name) is not None:
                key, value = kcp.reflexive_claim_label(export_cluster, export_name)
                out.setdefault(key, value)
        return out

    def relabelled(self, cluster: str, storage_key: str, obj: Obj) -> Obj | None:
        """`obj` with its claim labels as they should be, or None if they already are."""
        md = obj.get("metadata") or {}
        labels: dict[str, str] = dict(md.get("labels") or {})
        want = self.expected_labels(cluster, storage_key, labels, obj if storage_key == APIBINDINGS_KEY else None)
        have = {k: v for k, v in labels.items() if k.startswith(kcp.CLAIMED_LABEL_PREFIX)}
        if have == want:
            return None
        kept = {k: v for k, v in labels.items() if not k.startswith(kcp.CLAIMED_LABEL_PREFIX)}
        new_labels = {**kept, **want}
        out = {**obj, "metadata": {**md, "labels": new_labels}}
        if not new_labels:
            del out["metadata"]["labels"]
        return out

    # -- labelling on the embedded shard -------------------------------------------------------

    def relabel_object(self, cluster: str, storage_key: str, namespace: str, name: str) -> None:
        """Bring one object's claim labels up to date (a commit touched it)."""
        stored = self.shard.table(storage_key).get(cluster, namespace, name)
        if stored is not None:
            self._relabel(cluster, storage_key, stored)

    async def relabel_all(self, cluster: str, storage_key: str, skip: str = "") -> list[str]:
        """Every object of a storage key in `cluster` (but `skip`); returns the failures."""
        failures: list[str] = []
        table = self.shard.table(storage_key)
        for count, listed in enumerate(list(table.ordered(cluster)), 1):
            if storage_key == APIBINDINGS_KEY and listed.name == skip:
                continue  # the binding being reconciled sets its own labels
            stored = table.get(cluster, listed.namespace, listed.name)  # as it is now: requests ran between yields
            if stored is None:
                continue
            try:
                self._relabel(cluster, storage_key, stored)
            except errors.StatusError as exc:
                if exc.code != 404:
                    failures.append(f"error patching {storage_key} {cluster}|{stored.namespace}/{stored.name}: {exc.message}")
            if count % OBJECTS_PER_YIELD == 0:
                await asyncio.sleep(0)
        return failures

    def _relabel(self, cluster: str, storage_key: str, stored: StoredObject) -> None:
        if stored.deleting:
            return  # an object on its way out keeps what it has (a write could finish its deletion)
        current = stored.decode()
        changed = self.relabelled(cluster, storage_key, current)
        if changed is None:
            return
        info = self.shard.info_for_storage_key(storage_key, cluster)
        if info is None:
            return
        changed["metadata"]["resourceVersion"] = str(stored.rv)
        changed = managedfields.track(info, current, changed, SYSTEM_MANAGER)
        self.writing = True
        try:
            self.shard.update(info, cluster, stored.namespace, stored.name, changed)
        finally:
            self.writing = False

    def own_labels(self, cluster: str, binding: Obj) -> dict[str, str] | None:
        """A binding's labels with its claim labels as they should be, None if they already are."""
        changed = self.relabelled(cluster, APIBINDINGS_KEY, binding)
        return None if changed is None else dict(changed["metadata"].get("labels") or {})

    def bindings_in(self, cluster: str) -> list[str]:
        return [o.name for o in self.shard.table(self.store.info(API_BINDINGS).storage_key).ordered(cluster)]
