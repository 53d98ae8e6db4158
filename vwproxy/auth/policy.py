"""The bootstrap RBAC policy: ClusterRoles and ClusterRoleBindings that hold in every logical
cluster, read from YAML. The defaults ship in the package (`policies/` at the repository root,
linked into this package); a path given by the user replaces them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from vwproxy.auth.rbac import Policy

DEFAULT_POLICY_DIR = Path(__file__).resolve().parent / "policies"
BOOTSTRAP_KINDS = ("ClusterRole", "ClusterRoleBinding")
RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"
WORKSPACE_ACCESS_ROLE = "system:kcp:workspace:access"  # kcp: verb "access" on "/"
WORKSPACE_OWNER_BINDING = "workspace-admin"  # kcp binds a workspace's owner to cluster-admin under this name


def policy_files(paths: Sequence[Path] = ()) -> list[Path]:
    """The YAML files of the given files and folders (a folder's top level, sorted), or the defaults."""
    files: list[Path] = []
    for path in paths or (DEFAULT_POLICY_DIR,):
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
        else:
            files.append(path)
    return files


def read_policy_objects(files: Iterable[Path]) -> list[dict[str, Any]]:
    """Every ClusterRole and ClusterRoleBinding in the files; any other kind is an error, since a
    bootstrap Role would bind nothing and a typo should not pass silently."""
    objects: list[dict[str, Any]] = []
    for path in files:
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document is None:
                continue
            items = document.get("items", []) if document.get("kind") == "List" else [document]
            for item in items:
                _check(item, f"{path} (document {index + 1})")
                objects.append(item)
    return objects


def _check(obj: Any, where: str) -> None:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: not an object")
    if obj.get("kind") not in BOOTSTRAP_KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(BOOTSTRAP_KINDS)}, not {obj.get('kind')!r}")
    if obj.get("apiVersion") != RBAC_API_VERSION:
        raise ValueError(f"{where}: apiVersion must be {RBAC_API_VERSION}")
    if not (obj.get("metadata") or {}).get("name"):
        raise ValueError(f"{where}: metadata.name is required")


def load_bootstrap_policy(paths: Sequence[Path] = ()) -> Policy:
    return Policy.from_objects(read_policy_objects(policy_files(paths)))


def workspace_owner_binding(owner: str) -> dict[str, Any]:
    """The ClusterRoleBinding kcp creates in a new workspace for the user who created it
    (the owner becomes cluster-admin there). The control plane writes it into the workspace."""
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": WORKSPACE_OWNER_BINDING},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": owner}],
    }
