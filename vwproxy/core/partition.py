"""Which logical clusters a proxy shard serves (DESIGN §7).

A partition is written the same way on the command line (`serve --partition`) and in the
`vwproxy.dev/partition` annotation of the shard's `Shard` object, which the control plane reads to
decide which shard URLs an endpoint slice lists:

    all                     every logical cluster (one process, the default)
    none                    no logical cluster (a control plane that only reconciles)
    hash:I/N                the clusters whose stable hash of the logical cluster name is I modulo N
    clusters:a,root:team-b  an explicit list of logical cluster names or workspace paths

The hash is the first eight bytes of SHA-256 of the name, so every process (and every machine and
Python version) agrees on it; N shards with I = 0…N-1 cover every cluster exactly once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

ALL = "all"
NONE = "none"
HASH = "hash"
CLUSTERS = "clusters"
# A partition spec is a flag or an annotation value; anything longer is a mistake, not a list.
MAX_SPEC_LENGTH = 16_384
MAX_SHARDS = 1024


class PartitionError(ValueError):
    """A partition spec that cannot be used; the message says what is wrong with it."""


def stable_hash(cluster: str) -> int:
    return int.from_bytes(hashlib.sha256(cluster.encode()).digest()[:8], "big")


@dataclass(frozen=True)
class Partition:
    kind: str
    index: int = 0
    count: int = 1
    members: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, spec: str) -> Partition:
        text = spec.strip()
        if len(text) > MAX_SPEC_LENGTH:
            raise PartitionError(f"a partition is at most {MAX_SPEC_LENGTH} characters")
        if text in (ALL, ""):
            return cls(ALL)
        if text == NONE:
            return cls(NONE)
        kind, sep, rest = text.partition(":")
        if sep and kind == HASH:
            index, slash, count = rest.partition("/")
            if not (slash and index.isdigit() and count.isdigit()):
                raise PartitionError(f"{spec!r}: a hash partition is hash:I/N, e.g. hash:0/2")
            i, n = int(index), int(count)
            if not 1 <= n <= MAX_SHARDS or not 0 <= i < n:
                raise PartitionError(f"{spec!r}: hash:I/N needs 1 <= N <= {MAX_SHARDS} and 0 <= I < N")
            return cls(HASH, i, n)
        if sep and kind == CLUSTERS:
            members = frozenset(m.strip() for m in rest.split(",") if m.strip())
            if not members:
                raise PartitionError(f"{spec!r}: clusters: needs at least one logical cluster name or workspace path")
            return cls(CLUSTERS, members=members)
        raise PartitionError(f"{spec!r}: a partition is all, none, hash:I/N or clusters:NAME,…")

    def owns(self, cluster: str, path: str = "") -> bool:
        """Whether the logical cluster `cluster` (at workspace `path`, when known) is in the partition."""
        if self.kind == ALL:
            return True
        if self.kind == NONE:
            return False
        if self.kind == HASH:
            return stable_hash(cluster) % self.count == self.index
        return cluster in self.members or (bool(path) and path in self.members)

    @property
    def everything(self) -> bool:
        return self.kind == ALL

    def __str__(self) -> str:
        if self.kind == HASH:
            return f"{HASH}:{self.index}/{self.count}"
        if self.kind == CLUSTERS:
            return f"{CLUSTERS}:{','.join(sorted(self.members))}"
        return self.kind


EVERYTHING = Partition(ALL)
