"""WorkspaceTypes as kcp resolves them: a reference found by path (or up the workspace tree), and
the types it extends (`spec.extend.with`, transitively), which together give a new workspace its
initializers, terminators and default APIBindings.

See kcp-reference.md section 6.3; kcp's `workspacetypeexists` admission resolves the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from vwproxy.control.objects import WORKSPACE_TYPES, ControlStore, Obj
from vwproxy.kube import kcp


class WorkspaceTypeError(Exception):
    """A type that cannot be resolved: missing, or extending itself."""


@dataclass(frozen=True)
class ResolvedType:
    cluster: str  # the logical cluster the WorkspaceType lives in
    obj: Obj

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def owner(self) -> str:
        """The initializer / terminator name of this type."""
        return kcp.lifecycle_owner(self.cluster, self.name)

    @property
    def spec(self) -> Obj:
        spec = self.obj.get("spec")
        return spec if isinstance(spec, dict) else {}


def _parents(path: str) -> list[str]:
    """`root:a:b` → [`root:a:b`, `root:a`, `root`]; kcp looks in root last whatever the path."""
    parts = path.split(":")
    out = [":".join(parts[:i]) for i in range(len(parts), 0, -1)]
    if kcp.ROOT_CLUSTER not in out:
        out.append(kcp.ROOT_CLUSTER)
    return out


def find_type(store: ControlStore, ref: Obj, from_path: str) -> ResolvedType:
    """The WorkspaceType `ref` ({name, path?}) names, looked up from the workspace at `from_path`."""
    name = str(ref.get("name") or "")
    if not name:
        raise WorkspaceTypeError("a WorkspaceType reference needs a name")
    path = str(ref.get("path") or "")
    for candidate in [path] if path else _parents(from_path):
        cluster = store.resolve_path(candidate)
        found = store.get(WORKSPACE_TYPES, cluster, name) if cluster else None
        if cluster and found is not None and not found["metadata"].get("deletionTimestamp"):
            return ResolvedType(cluster, found)
    where = path or from_path
    raise WorkspaceTypeError(f'WorkspaceType "{name}" not found from {where}')


def with_extended(store: ControlStore, leaf: ResolvedType) -> list[ResolvedType]:
    """The types `leaf` extends (depth first, each once), then `leaf` itself, as kcp orders them."""
    seen = {leaf.owner}
    out: list[ResolvedType] = []

    def visit(t: ResolvedType, trail: list[str]) -> None:
        for ref in (t.spec.get("extend") or {}).get("with") or []:
            if not isinstance(ref, dict):
                continue
            try:
                base = find_type(store, ref, store.path_of(t.cluster))
            except WorkspaceTypeError as exc:
                raise WorkspaceTypeError(f"unable to find inherited workspace type {ref.get('name')}: {exc}") from None
            if base.owner in trail:
                cycle = " -> ".join(trail[trail.index(base.owner):] + [base.owner])
                raise WorkspaceTypeError(f"circular dependency detected in workspace type {base.owner}: {cycle}")
            if base.owner in seen:
                continue
            seen.add(base.owner)
            out.append(base)
            visit(base, trail + [base.owner])

    visit(leaf, [leaf.owner])
    return out + [leaf]


def initializers_of(types: list[ResolvedType]) -> list[str]:
    """Each type's own initializer, then `system:apibindings` when any has defaultAPIBindings."""
    names = [t.owner for t in types if t.spec.get("initializer")]
    if any(t.spec.get("defaultAPIBindings") for t in types):
        names.append(kcp.APIBINDINGS_INITIALIZER)
    return names


def terminators_of(types: list[ResolvedType]) -> list[str]:
    return [t.owner for t in types if t.spec.get("terminator")]
