"""Names kcp defines on the wire: annotation keys, groups, the logical-cluster name grammar.

See kcp-reference.md section 4 (`kcp.io/cluster`, names) and section 5 (watch bookmarks).
"""

from __future__ import annotations

import base64
import json
import functools
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


def path_logical_cluster_name(path: str) -> str:
    """A logical cluster name derived from a workspace path, in kcp's shape (deterministic mode:
    the same path gets the same name on every run and machine, so tests may assert on it)."""
    return new_logical_cluster_name(b"vwproxy.dev/deterministic:" + path.encode())


# -- hashes kcp puts in labels and statuses (kcp-reference.md sections 3 and 8.3) ---------------

IDENTITY_SECRET_NAMESPACE = "kcp-system"
IDENTITY_SECRET_KEY = "key"
IDENTITY_ANNOTATION = "apis.kcp.io/identity"
EXPORT_LABEL = "internal.apis.kcp.io/export"
CLAIMED_LABEL_PREFIX = "claimed.internal.apis.kcp.io/"
INITIALIZER_LABEL_PREFIX = "initializer.internal.kcp.io/"
TERMINATOR_LABEL_PREFIX = "terminator.internal.kcp.io/"
PHASE_LABEL = "tenancy.kcp.io/phase"
SKIP_ENDPOINT_SLICE_ANNOTATION = "apiexports.apis.kcp.io/skip-endpointslice"

_BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def identity_hash(key: str) -> str:
    """An APIExport's identity: lowercase hex SHA-256 of the key text as stored (not decoded)."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_identity_key(random_bytes: bytes) -> str:
    """32 random bytes, base64url without padding (43 characters), as kcp generates them."""
    return base64.urlsafe_b64encode(random_bytes).decode().rstrip("=")


def base62(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = _BASE62[rest] + digits
    return digits or "0"


def base62_sha224(text: str | bytes) -> str:
    return base62(hashlib.sha224(text.encode() if isinstance(text, str) else text).digest())


@functools.lru_cache(maxsize=4096)
def export_label_value(export_cluster: str, export_name: str) -> str:
    """`internal.apis.kcp.io/export` on every APIBinding to that export (a few exports, asked
    for by every binding's reconcile: remembered)."""
    return base62_sha224(f"{export_cluster}:{export_name}")


def lifecycle_label(prefix: str, owner: str) -> tuple[str, str]:
    """(key, value) of the initializer or terminator label for `<cluster>:<WorkspaceType>`."""
    digest = hashlib.sha224(owner.encode()).hexdigest()
    return prefix + digest[:35], digest


# -- the workspace lifecycle (kcp-reference.md sections 1.3, 1.4 and 6.3) ------------------------

# On a Workspace: held until its LogicalCluster is gone.
WORKSPACE_FINALIZER = "core.kcp.io/logicalcluster"
# On a LogicalCluster: held until the workspace's content is deleted.
CONTENT_DELETION_FINALIZER = "core.kcp.io/logicalcluster-deletion"
# On a LogicalCluster: held while status.terminators is non-empty.
TERMINATORS_FINALIZER = "kcp.io/has-terminators"
# On an APIBinding (added at admission): held until the objects it bound are deleted.
APIBINDING_FINALIZER = "apis.kcp.io/apibinding-finalizer"
# The built-in initializer that creates a WorkspaceType's defaultAPIBindings.
APIBINDINGS_INITIALIZER = "system:apibindings"
# On a LogicalCluster: `<WorkspaceType path>:<name>` of the type it was created from.
WORKSPACE_TYPE_ANNOTATION = "internal.tenancy.kcp.io/type"

PHASE_SCHEDULING = "Scheduling"
PHASE_INITIALIZING = "Initializing"
PHASE_READY = "Ready"
PHASE_UNAVAILABLE = "Unavailable"
PHASE_TERMINATING = "Terminating"
PHASE_DELETING = "Deleting"

# A default binding's name: the export name (cut to leave room for the suffix) and a dash.
_BINDING_NAME_PREFIX_MAX = 253 - 1 - 5


def lifecycle_owner(type_cluster: str, type_name: str) -> str:
    """An initializer or terminator name: `<WorkspaceType's logical cluster name>:<type name>`."""
    return f"{type_cluster}:{type_name}"


def default_binding_name(cluster: str, export_path: str, export_name: str) -> str:
    """The name kcp gives the APIBinding a WorkspaceType's defaultAPIBindings entry creates."""
    suffix = base62_sha224(f"{cluster}|{export_path}|{export_name}")[:5].lower()
    return f"{export_name[:_BINDING_NAME_PREFIX_MAX]}-{suffix}"


# -- permission claims (kcp-reference.md section 8) -----------------------------------------------

CLAIM_ACCEPTED = "Accepted"
CLAIM_REJECTED = "Rejected"
# Resources nobody stores: a claim on them is about verbs, never about labels.
NON_PERSISTED_CLAIMABLE = frozenset({
    ("authorization.k8s.io", "localsubjectaccessreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("authentication.k8s.io", "tokenreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
})

# The value every APIBinding carries under its own export's claim key, so the provider always
# sees the bindings to its export: Base62 of the bytes 0..9 0..9 0..7.
REFLEXIVE_CLAIM_VALUE = base62(bytes([*range(10), *range(10), *range(8)]))

ClaimKey = tuple[str, str, str]  # (group, resource, identityHash): how claims are matched


def claim_key(claim: dict[str, object]) -> ClaimKey:
    """(group, resource, identityHash) of a claim: kcp's EqualGRI, the key claims are matched by."""
    return (str(claim.get("group") or ""), str(claim.get("resource") or ""), str(claim.get("identityHash") or ""))


def go_json_string(text: str) -> str:
    """A JSON string as Go's encoding/json writes it (HTML characters and U+2028/9 escaped)."""
    out = json.dumps(text, ensure_ascii=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        out = out.replace(raw, escaped)
    return out


def claim_hash_input(claim: dict[str, object]) -> bytes:
    """The claim as kcp marshals it for hashing: group (if set), resource, verbs null, identityHash (if set)."""
    group, resource, identity = claim_key(claim)
    parts = []
    if group:
        parts.append(f'"group":{go_json_string(group)}')
    parts.append(f'"resource":{go_json_string(resource)}')
    parts.append('"verbs":null')
    if identity:
        parts.append(f'"identityHash":{go_json_string(identity)}')
    return ("{" + ",".join(parts) + "}").encode()


def claim_label_key(export_cluster: str, export_name: str) -> str:
    """`claimed.internal.apis.kcp.io/<Base62Sha224("<export cluster>:<export name>")>`."""
    return CLAIMED_LABEL_PREFIX + base62_sha224(f"{export_cluster}:{export_name}")


def claim_label(export_cluster: str, export_name: str, claim: dict[str, object]) -> tuple[str, str]:
    """(key, value) of the label an accepted claim puts on the objects it selects. Verbs and
    selectors are not part of it: changing them relabels nothing."""
    return claim_label_key(export_cluster, export_name), base62_sha224(claim_hash_input(claim))


def reflexive_claim_label(export_cluster: str, export_name: str) -> tuple[str, str]:
    """(key, value) every APIBinding to the export carries unless a claim gave that key a value."""
    return claim_label_key(export_cluster, export_name), REFLEXIVE_CLAIM_VALUE
