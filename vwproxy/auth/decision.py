"""What an authorizer is asked and what it answers (kcp/Kubernetes `authorizer.Attributes`
and `Decision`): allow, deny or no opinion, always with a reason that goes to the log."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    ALLOW = "allow"
    DENY = "deny"
    NO_OPINION = "no-opinion"


@dataclass(frozen=True)
class Decision:
    """An authorizer's answer. `allowed` is what a caller acts on; `verdict` tells a deny from
    "no opinion" so composed authorizers can fall through; `reason` is for the log only."""

    verdict: Verdict
    reason: str

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    @property
    def denied(self) -> bool:
        return self.verdict is Verdict.DENY


def allow(reason: str) -> Decision:
    return Decision(Verdict.ALLOW, reason)


def deny(reason: str) -> Decision:
    return Decision(Verdict.DENY, reason)


def no_opinion(reason: str) -> Decision:
    return Decision(Verdict.NO_OPINION, reason)


@dataclass(frozen=True)
class Attributes:
    """One request as an authorizer sees it.

    A resource request has `resource` set (and `api_group` "" for core); a non-resource request
    (discovery, /version, /healthz) has `resource` "" and `path` set. `namespace` "" means the
    cluster scope, `name` "" a collection.
    """

    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    namespace: str = ""
    path: str = ""
    resource_request: bool = False  # a resource request even without `resource` (an access review's resourceAttributes)

    @property
    def is_resource_request(self) -> bool:
        return self.resource_request or bool(self.resource)


def resource_attributes(verb: str, api_group: str, resource: str, *, subresource: str = "",
                        name: str = "", namespace: str = "") -> Attributes:
    return Attributes(verb, api_group, resource, subresource, name, namespace)


def non_resource_attributes(verb: str, path: str) -> Attributes:
    return Attributes(verb, path=path)
