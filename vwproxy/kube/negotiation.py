"""Content negotiation: which representation an `Accept` header asks for.

Kubernetes clients ask for transformed representations with media-type parameters:
`application/json;as=Table;v=v1;g=meta.k8s.io` (kubectl get), `as=PartialObjectMetadata[List]`
(metadata-only informers), `as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io` (aggregated
discovery). vwproxy answers JSON only (as kcp does), so a protobuf range matches only through
its `as=` transformation being one we can write as JSON, never as protobuf itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vwproxy.kube import errors

PLAIN = "plain"
TABLE = "Table"
PARTIAL = "PartialObjectMetadata"
PARTIAL_LIST = "PartialObjectMetadataList"
DISCOVERY = "APIGroupDiscoveryList"


@dataclass(frozen=True)
class MediaRange:
    type: str  # "application/json", "*/*", ...
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Representation:
    """What to answer with: plain JSON, or a transformation and its group version."""

    kind: str  # PLAIN, TABLE, PARTIAL, PARTIAL_LIST, DISCOVERY
    group: str = ""
    version: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def parse_accept(header: str) -> list[MediaRange]:
    ranges = []
    for part in header.split(","):
        pieces = [p.strip() for p in part.split(";")]
        if not pieces[0]:
            continue
        params = {}
        for piece in pieces[1:]:
            key, _, value = piece.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        ranges.append(MediaRange(pieces[0].lower(), params))
    return ranges


_JSONISH = ("application/json", "application/*", "*/*", "application/yaml")
_TRANSFORM_VERSIONS = {
    TABLE: (("meta.k8s.io", "v1"), ("meta.k8s.io", "v1beta1")),
    PARTIAL: (("meta.k8s.io", "v1"), ("meta.k8s.io", "v1beta1")),
    PARTIAL_LIST: (("meta.k8s.io", "v1"), ("meta.k8s.io", "v1beta1")),
    DISCOVERY: (("apidiscovery.k8s.io", "v2"), ("apidiscovery.k8s.io", "v2beta1")),
}


def choose(header: str | None, allowed: frozenset[str]) -> Representation:
    """The first acceptable representation among `allowed` transformations (and plain JSON)."""
    if not header:
        return Representation(PLAIN)
    for media in parse_accept(header):
        transform = media.params.get("as")
        if transform is None:
            if media.type in _JSONISH:
                return Representation(PLAIN)
            continue
        if transform not in allowed or media.type not in _JSONISH + ("application/vnd.kubernetes.protobuf",):
            continue
        if media.type == "application/vnd.kubernetes.protobuf":
            continue  # we never write protobuf; a later JSON range may still match
        group, version = media.params.get("g", ""), media.params.get("v", "")
        if (group, version) in _TRANSFORM_VERSIONS.get(transform, ()):
            return Representation(transform, group, version)
    raise errors.not_acceptable(f"only the following media types are accepted: application/json (Accept: {header})")
