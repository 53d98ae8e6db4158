"""Names kcp defines on the wire: annotation keys, groups, the logical-cluster name grammar.

See kcp-reference.md section 4 (`kcp.io/cluster`, names) and section 5 (watch bookmarks).
"""

from __future__ import annotations

import hashlib
import re

CLUSTER_ANNOTATION = "kcp.io/cluster"
PATH_ANNOTATION = "kcp.io/path"
INITIAL_EVENTS_END_ANNOTATION = "k8s.io/initial-events-end"

ROOT_CLUSTER = "root"
WILDCARD_CLUSTER = "*"

# The singleton LogicalCluster object that brings a logical cluster into existence.
LOGICAL_CLUSTER_OBJECT_NAME = "cluster"

KCP_GROUPS = frozenset({"apis.kcp.io", "core.kcp.io", "tenancy.kcp.io"})

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SYSTEM_NAME = re.compile(r"^system:[a-z0-9]([a-z0-9:-]{0,200}[a-z0-9])?$")


def is_workspace_path(path: str) -> bool:
    """A workspace path: colon-separated workspace names under a logical cluster (`root:org:ws`)."""
    parts = path.split(":")
    return len(parts) > 1 and parts[0] != "system" and all(_NAME.match(p) for p in parts)


def is_logical_cluster_name(name: str) -> bool:
    """A single-segment logical cluster name, `root`, or a `system:` name (never a path)."""
    return bool(_NAME.match(name) or _SYSTEM_NAME.match(name))


_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
LOGICAL_CLUSTER_NAME_LENGTH = 16


def _base36(number: int) -> str:
    digits = ""
    while number:
        number, rest = divmod(number, 36)
        digits = _BASE36[rest] + digits
    return digits or "0"


def new_logical_cluster_name(random_bytes: bytes) -> str:
    """kcp's workspace cluster name: the first 16 of the zero-padded base36 of SHA-224 of 32 random bytes."""
    digest = hashlib.sha224(random_bytes).digest()
    text = _base36(int.from_bytes(digest, "big"))
    # A SHA-224 number has up to 43 base36 digits; pad so leading zeros count, as kcp does.
    return text.rjust(43, "0")[:LOGICAL_CLUSTER_NAME_LENGTH]
