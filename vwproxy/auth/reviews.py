"""The reviews a caller makes of itself, as kube-apiserver answers them in every workspace:

- SelfSubjectAccessReview (`kubectl auth can-i VERB RESOURCE`): may I do this here?
- SelfSubjectRulesReview (`kubectl auth can-i --list`): what may I do in this namespace here?
- SelfSubjectReview (`kubectl auth whoami`): who does this server take me for?
- SubjectAccessReview and LocalSubjectAccessReview (a namespace's): may this user do that here?
  Asked by whoever may create them (cluster-admin: a sidecar such as kube-rbac-proxy, an
  admission webhook); the user is the one the spec names, never the caller.
- TokenReview: who is this token? Asked by whoever may create them (the same sidecars), answered
  by the server's own authenticator, for this server's API audiences only (a token issued for
  another audience is not authenticated here, where kube-apiserver would check it for that one).

Each is a create that stores nothing: the answer is the request with its `status` filled in. The
access review asks the same authorizer chain the caller's own requests in that workspace meet, so
its answer is what the request would get; the rules review lists the RBAC rules that apply there
(the bootstrap policy's and the workspace's). A denial's reason stays in the log, as a request's
own 403 keeps it (kcp anonymises denials); an allowance carries it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vwproxy.auth.authorizers import Authorizer
from vwproxy.auth.decision import Attributes
from vwproxy.auth.errors import AuthenticationFailed
from vwproxy.auth.identity import ANONYMOUS_NAME, User, owner_info
from vwproxy.auth.rbac import Rule
from vwproxy.kube import errors
from vwproxy.kube.errors import Cause
from vwproxy.kube.meta import now_rfc3339

AUTHORIZATION_V1 = "authorization.k8s.io/v1"
AUTHENTICATION_V1 = "authentication.k8s.io/v1"
ACCESS_REVIEW = "SelfSubjectAccessReview"
RULES_REVIEW = "SelfSubjectRulesReview"
SELF_REVIEW = "SelfSubjectReview"
SUBJECT_REVIEW = "SubjectAccessReview"
LOCAL_REVIEW = "LocalSubjectAccessReview"
TOKEN_REVIEW = "TokenReview"
# (group, version, resource) -> (apiVersion, kind) of the reviews served here.
REVIEWS: Mapping[tuple[str, str, str], tuple[str, str]] = {
    ("authorization.k8s.io", "v1", "selfsubjectaccessreviews"): (AUTHORIZATION_V1, ACCESS_REVIEW),
    ("authorization.k8s.io", "v1", "selfsubjectrulesreviews"): (AUTHORIZATION_V1, RULES_REVIEW),
    ("authentication.k8s.io", "v1", "selfsubjectreviews"): (AUTHENTICATION_V1, SELF_REVIEW),
    ("authorization.k8s.io", "v1", "subjectaccessreviews"): (AUTHORIZATION_V1, SUBJECT_REVIEW),
    ("authorization.k8s.io", "v1", "localsubjectaccessreviews"): (AUTHORIZATION_V1, LOCAL_REVIEW),
    ("authentication.k8s.io", "v1", "tokenreviews"): (AUTHENTICATION_V1, TOKEN_REVIEW),
}
NAMESPACED_REVIEWS = frozenset({LOCAL_REVIEW})
REVIEW_GROUPS = frozenset({"authentication.k8s.io", "authorization.k8s.io"})
_RESOURCE_FIELDS = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
_MAX_FIELD = 1024  # longer than any name, path or verb; a review is not a place for more
_MAX_ITEMS = 256  # groups of a user, keys of its extra, values of one key
_MAX_TOKEN = 16 * 1024  # far longer than any JWT this server or an issuer signs


@dataclass(frozen=True)
class Reviewer:
    """What answers reviews: the authorizer chain of the workspace, its RBAC rules, and the
    server's authenticator with the API audiences its tokens are checked for."""

    authorize: Authorizer
    rules_for: Callable[[User, str, str], Sequence[Rule]]
    authenticate: Callable[[str], User]  # a bearer token -> its user; AuthenticationFailed otherwise
    api_audiences: Sequence[str]


def review(kind: str, request: Any, user: User, cluster: str, reviewer: Reviewer, namespace: str = "") -> dict[str, Any]:
    """The answer to one review of `kind` (one of REVIEWS' kinds) by `user` in `cluster` (and
    `namespace`, the path's, for a LocalSubjectAccessReview).

    `request` is the decoded body; a body that is not such a review is a 400 or 422 `Status`.
    """
    api_version = AUTHENTICATION_V1 if kind in (SELF_REVIEW, TOKEN_REVIEW) else AUTHORIZATION_V1
    if not isinstance(request, dict):
        raise errors.bad_request(f"the {kind} must be a JSON object")
    sent_kind, sent_version = request.get("kind"), request.get("apiVersion")
    if sent_kind not in (None, kind) or sent_version not in (None, api_version):
        raise errors.bad_request(f"the body is a {sent_kind or '?'} of {sent_version or '?'}, not a {kind} of {api_version}")
    metadata = request.get("metadata")
    answer: dict[str, Any] = {"kind": kind, "apiVersion": api_version,
                              "metadata": {**(metadata if isinstance(metadata, dict) else {}), "creationTimestamp": None}}
    if kind == SELF_REVIEW:
        answer["metadata"]["creationTimestamp"] = now_rfc3339()  # kube stamps this one with the time it answered
        answer["status"] = {"userInfo": owner_info(user)}  # an authentication/v1 UserInfo, as the owner annotation holds
        return answer
    spec = request.get("spec")
    if not isinstance(spec, dict):
        raise errors.invalid(kind, "", [Cause("FieldValueRequired", "Required value", "spec")], api_version.split("/")[0])
    if kind == TOKEN_REVIEW:
        answer["spec"] = spec
        answer["status"] = token_status(spec, reviewer)
        return answer
    if kind == RULES_REVIEW:
        namespace = _text(spec, "namespace", "spec.namespace", kind)
        if not namespace:
            raise errors.bad_request("no namespace on request")  # kube's answer: the rules are asked per namespace
        answer["spec"] = {"namespace": namespace}
        answer["status"] = rules_status(reviewer.rules_for(user, cluster, namespace))
        return answer
    attributes = access_attributes(spec, kind)
    subject = user
    if kind in (SUBJECT_REVIEW, LOCAL_REVIEW):
        subject = subject_of(spec, kind)
    if kind == LOCAL_REVIEW:
        if not attributes.resource_request:
            raise errors.invalid(kind, "", [Cause("FieldValueInvalid", "disallowed on this kind of request", "spec.nonResourceAttributes")],
                                 "authorization.k8s.io")
        if attributes.namespace and attributes.namespace != namespace:
            raise errors.bad_request(f"spec.resourceAttributes.namespace must match namespace: {namespace}")
        attributes = replace(attributes, namespace=namespace)
        answer["metadata"]["namespace"] = namespace
    decision = reviewer.authorize(subject, cluster, attributes)
    status: dict[str, Any] = {"allowed": decision.allowed}
    if decision.denied:
        status["denied"] = True
    if decision.allowed and decision.reason:
        status["reason"] = decision.reason
    answer["spec"] = spec
    answer["status"] = status
    return answer


def access_attributes(spec: Mapping[str, Any], kind: str = ACCESS_REVIEW) -> Attributes:
    """The Attributes a SelfSubjectAccessReview's spec asks about: exactly one of
    `resourceAttributes` and `nonResourceAttributes`, as kube validates it."""
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if (resource is None) == (non_resource is None):
        raise errors.invalid(kind, "", [Cause("FieldValueInvalid", "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                                              "spec.resourceAttributes")], "authorization.k8s.io")
    if resource is not None:
        if not isinstance(resource, dict):
            raise errors.invalid(kind, "", [Cause("FieldValueInvalid", "must be an object", "spec.resourceAttributes")], "authorization.k8s.io")
        values = {name: _text(resource, name, f"spec.resourceAttributes.{name}", kind) for name in _RESOURCE_FIELDS}
        return Attributes(values["verb"], values["group"], values["resource"], values["subresource"], values["name"], values["namespace"],
                          resource_request=True)  # even with `resource` empty, as kube reads resourceAttributes
    if not isinstance(non_resource, dict):
        raise errors.invalid(kind, "", [Cause("FieldValueInvalid", "must be an object", "spec.nonResourceAttributes")], "authorization.k8s.io")
    return Attributes(_text(non_resource, "verb", "spec.nonResourceAttributes.verb", kind),
                      path=_text(non_resource, "path", "spec.nonResourceAttributes.path", kind))


def token_status(spec: Mapping[str, Any], reviewer: Reviewer) -> dict[str, Any]:
    """A TokenReview's status: the token's user as a request carrying it would be taken for, or
    `authenticated: false` with the reason (the caller may create token reviews: an admin)."""
    token = spec.get("token")
    if not isinstance(token, str) or not token:
        raise errors.bad_request("token is required for TokenReview in authentication")
    if len(token) > _MAX_TOKEN:
        return {"authenticated": False, "error": f"the token is longer than {_MAX_TOKEN} bytes"}
    asked = spec.get("audiences") or []
    if not isinstance(asked, list) or not all(isinstance(a, str) for a in asked) or len(asked) > _MAX_ITEMS:
        raise errors.invalid(TOKEN_REVIEW, "", [Cause("FieldValueInvalid", f"must be a list of at most {_MAX_ITEMS} strings", "spec.audiences")],
                             "authentication.k8s.io")
    audiences = [a for a in asked if a in reviewer.api_audiences] if asked else list(reviewer.api_audiences)
    if not audiences:
        return {"authenticated": False, "error": f"this server checks tokens for its API audiences only: {', '.join(reviewer.api_audiences)}"}
    try:
        user = reviewer.authenticate(token)
    except AuthenticationFailed as failed:
        return {"authenticated": False, "error": failed.reason}
    if user.name == ANONYMOUS_NAME:
        return {"authenticated": False}
    return {"authenticated": True, "user": owner_info(user), "audiences": audiences}


def subject_of(spec: Mapping[str, Any], kind: str) -> User:
    """The user a SubjectAccessReview asks about: `user`, `groups`, `extra`, `uid` as the spec gives
    them (at least a user or a group, as kube requires). Only asked about, never acted as."""
    name = _text(spec, "user", "spec.user", kind)
    groups = spec.get("groups") or []
    extra = spec.get("extra") or {}
    if not isinstance(groups, list) or not all(isinstance(g, str) and len(g) <= _MAX_FIELD for g in groups) or len(groups) > _MAX_ITEMS:
        raise errors.invalid(kind, "", [Cause("FieldValueInvalid", f"must be a list of at most {_MAX_ITEMS} strings", "spec.groups")], "authorization.k8s.io")
    if not isinstance(extra, dict) or len(extra) > _MAX_ITEMS or not all(
            isinstance(k, str) and len(k) <= _MAX_FIELD and isinstance(v, list) and len(v) <= _MAX_ITEMS
            and all(isinstance(x, str) and len(x) <= _MAX_FIELD for x in v) for k, v in extra.items()):
        raise errors.invalid(kind, "", [Cause("FieldValueInvalid", f"must map at most {_MAX_ITEMS} keys to lists of strings", "spec.extra")],
                             "authorization.k8s.io")
    if not name and not groups:
        raise errors.invalid(kind, "", [Cause("FieldValueInvalid", "at least one of user or group must be specified", "spec.user")],
                             "authorization.k8s.io")
    return User(name, tuple(groups), {k: tuple(v) for k, v in extra.items()}, _text(spec, "uid", "spec.uid", kind))


def rules_status(rules: Sequence[Rule]) -> dict[str, Any]:
    """A SelfSubjectRulesReview's status: the rules as kube lists them (resource and non-resource
    rules apart, each list field sorted), none missing: `incomplete` is false."""
    resource_rules: list[dict[str, Any]] = []
    non_resource_rules: list[dict[str, Any]] = []
    for rule in rules:
        if rule.resources or rule.api_groups:
            entry: dict[str, Any] = {"verbs": sorted(rule.verbs), "apiGroups": sorted(rule.api_groups), "resources": sorted(rule.resources)}
            if rule.resource_names:
                entry["resourceNames"] = sorted(rule.resource_names)
            resource_rules.append(entry)
        if rule.non_resource_urls:
            non_resource_rules.append({"verbs": sorted(rule.verbs), "nonResourceURLs": list(rule.non_resource_urls)})
    return {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": False}


def _text(obj: Mapping[str, Any], key: str, field: str, kind: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > _MAX_FIELD:
        reason = "must be a string" if not isinstance(value, str) else f"must be at most {_MAX_FIELD} characters"
        raise errors.invalid(kind, "", [Cause("FieldValueInvalid", reason, field)], "authorization.k8s.io")
    return value
