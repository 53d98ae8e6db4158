"""Authentication and authorization in front of everything `serve` answers (DESIGN.md decision 6).

Every request is authenticated (a bearer token: a ServiceAccount token this server issued, a
static token, an external issuer's JWT; none is `system:anonymous`; a bad one is 401), then
authorized by the chain its URL calls for:

- `/clusters/<workspace>/…` and the root API: workspace access, then RBAC in that workspace;
- `/services/apiexport/<cluster>/<export>/…`: the binding authorizer, `apiexports/content` with the
  request's verb in the export's workspace, and the maximal permission policy of a claimed identity;
- `/services/{initializing,terminating}workspaces/<type>/…`: `initialize` / `terminate` on the
  WorkspaceType.

Denials are kcp's anonymised 403; the reason goes to the log. Client headers never assert identity:
impersonation is refused, and choosing a Workspace's backend is for `system:masters` only. The
TokenRequest subresource (`…/serviceaccounts/<name>/token`) is answered here, since the tokens are
this server's, and so are the self reviews (`kubectl auth can-i`, `kubectl auth whoami`:
`vwproxy.auth.reviews`), since the decisions are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vwproxy.auth.errors import AuthenticationFailed
from vwproxy.auth.authorizers import ALWAYS_ALLOWED_PATHS, ExportPolicy, checked, first_opinion, lifecycle, always_allow_groups, always_allow_paths, workspace_chain
from vwproxy.auth.identity import MASTERS, User, without_lifecycle_groups
from vwproxy.auth.requestattributes import attributes_for
from vwproxy.auth.reviews import NAMESPACED_REVIEWS, REVIEWS, Reviewer, review
from vwproxy.auth.stack import AuthStack
from vwproxy.auth.tokenrequest import token_request
from vwproxy.auth.vwbinding import apiexport_chain
from vwproxy.cache.hub import binds
from vwproxy.control.objects import API_BINDINGS, API_EXPORTS, LOGICAL_CLUSTERS, ControlStore
from vwproxy.control.reconcilers import BACKEND_ANNOTATION
from vwproxy.kube import errors, vwpaths
from vwproxy.kube.kcp import LOGICAL_CLUSTER_OBJECT_NAME, ROOT_CLUSTER, WILDCARD_CLUSTER, is_logical_cluster_name
from vwproxy.kube.paths import ResourcePath, parse_api_path
from vwproxy.server import http
from vwproxy.store.shard import Shard

log = logging.getLogger(__name__)

USER_SCOPE_KEY = "vwproxy.user"  # where the authenticated User rides in the ASGI scope
RBAC_STORAGE_PREFIX = "rbac.authorization.k8s.io/"
SERVICE_ACCOUNTS_KEY = "/serviceaccounts"
_OPEN_PATHS = frozenset(p for p in ALWAYS_ALLOWED_PATHS if not p.endswith("*"))


def user_of(scope: Scope) -> User | None:
    user = scope.get(USER_SCOPE_KEY)
    return user if isinstance(user, User) else None


def service_account_lookup(shard: Shard) -> Callable[[str, str, str], str | None]:
    """uid of a ServiceAccount, from the shard's memory (asked on every ServiceAccount token)."""
    def lookup(cluster: str, namespace: str, name: str) -> str | None:
        found = shard.table(SERVICE_ACCOUNTS_KEY).get(cluster, namespace, name)
        return found.uid if found is not None else None
    return lookup


def rbac_source(shard: Shard) -> Callable[[str], Iterable[Mapping[str, Any]]]:
    """A logical cluster's Roles, ClusterRoles and their bindings, for the RBAC evaluator."""
    def objects(cluster: str) -> Iterable[Mapping[str, Any]]:
        for resource in ("roles", "clusterroles", "rolebindings", "clusterrolebindings"):
            for obj in shard.table(RBAC_STORAGE_PREFIX + resource).ordered(cluster):
                yield obj.decode()
    return objects


class ShardAuthSource:
    """What the guard reads from the embedded shard: ServiceAccounts and workspace phases."""

    def __init__(self, shard: Shard, store: ControlStore) -> None:
        self.shard = shard
        self.store = store

    def service_account_uid(self, cluster: str, namespace: str, name: str) -> str | None:
        return service_account_lookup(self.shard)(cluster, namespace, name)

    def phase(self, cluster: str) -> str | None:
        if not self.shard.cluster_exists(cluster):
            return None
        lc = self.store.get(LOGICAL_CLUSTERS, cluster, LOGICAL_CLUSTER_OBJECT_NAME)
        return str(((lc or {}).get("status") or {}).get("phase") or "Ready")


class Guard:
    """ASGI middleware: authenticate, authorize by route, then hand the request on."""

    def __init__(self, app: ASGIApp, auth: AuthStack, shard: Shard, store: ControlStore) -> None:
        self.app = app
        self.auth = auth
        self.shard = shard
        self.store = store
        self.source = ShardAuthSource(shard, store)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = unquote(scope["path"])
        headers = Headers(scope=scope)
        if any(name.lower().startswith("impersonate-") for name in headers.keys()):
            raise errors.forbidden("impersonation is not supported by this server")
        try:
            # Groups only the lifecycle VWs may add are never the client's to assert.
            user = without_lifecycle_groups(self.auth.authenticator.authenticate(headers.get("authorization")))
        except AuthenticationFailed as exc:
            log.info("authentication failed for %s %s: %s", scope["method"], path, exc.reason)
            raise exc.to_status() from None
        scope[USER_SCOPE_KEY] = user
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        method = scope["method"]
        if path in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if path.startswith(vwpaths.SERVICES_PREFIX):
            self._virtual_workspace(user, method, path, params)
            await self.app(scope, receive, send)
            return
        cluster, rest = self._workspace(path)
        chain = workspace_chain(self.auth.rbac.authorize, self.source.phase)
        checked(chain, user, cluster, attributes_for(method, rest, params))
        target = _resource(rest)
        if target is not None and method == "POST" and target.resource == "serviceaccounts" and target.subresource == "token":
            await self._token_request(scope, receive, send, cluster, target)
            return
        reviewed = None
        if target is not None and not target.name:
            reviewed = REVIEWS.get((target.group, target.version, target.resource))
            if reviewed is not None and bool(target.namespace) != (reviewed[1] in NAMESPACED_REVIEWS):
                reviewed = None  # a namespaced path of a cluster-wide review, or the other way round: not served
        if reviewed is not None and cluster != WILDCARD_CLUSTER:
            assert target is not None
            if method != "POST":
                raise errors.method_not_allowed(attributes_for(method, rest, params).verb, target.resource, target.group)
            # JSON, YAML, or protobuf as kubectl sends it.
            content_type = headers.get("content-type", http.JSON).split(";", 1)[0].strip().lower() or http.JSON
            request = http.decode_object(await _read(receive), content_type)
            reviewer = Reviewer(chain, self.auth.rbac.rules_for, self._user_of_token, self.auth.service_accounts.api_audiences)
            answer = review(reviewed[1], request, user, cluster, reviewer, target.namespace)
            await http.object_response(answer, 201)(scope, receive, send)
            return
        if target is not None and target.group == "tenancy.kcp.io" and target.resource == "workspaces" and method in ("POST", "PUT", "PATCH"):
            receive = await self._backend_choice_is_admin_only(user, receive)
        await self.app(scope, receive, send)

    def _user_of_token(self, token: str) -> User:
        """Whom a request carrying `token` is taken for (a TokenReview's question)."""
        return without_lifecycle_groups(self.auth.authenticator.authenticate(f"Bearer {token}"))

    # -- routes ------------------------------------------------------------------------------------

    def _workspace(self, path: str) -> tuple[str, str]:
        """(logical cluster, the path after its prefix); paths without /clusters/ are root's."""
        if not path.startswith("/clusters/"):
            return ROOT_CLUSTER, path
        segment, _, tail = path[len("/clusters/"):].partition("/")
        rest = "/" + tail
        if segment == WILDCARD_CLUSTER or is_logical_cluster_name(segment):
            return segment, rest
        resolved = self.store.resolve_path(segment)
        return (resolved or segment), rest

    def _virtual_workspace(self, user: User, method: str, path: str, params: dict[str, str]) -> None:
        try:
            vw = vwpaths.parse(path)
        except errors.StatusError:
            return  # the virtual workspace answers its own 404; there is nothing to reach
        attributes = attributes_for(method, vw.rest, params)
        if vw.kind == vwpaths.APIEXPORT:
            export = self.store.get(API_EXPORTS, vw.owner_cluster, vw.owner_name) or {}
            bindings = [] if vw.wildcard else [
                b for _, b in self.store.all(API_BINDINGS, vw.cluster) if binds(b, vw.owner_cluster, vw.owner_name)
            ]
            claims = [c for c in (export.get("spec") or {}).get("permissionClaims") or [] if isinstance(c, dict)]
            chain = apiexport_chain(self.auth.rbac.authorize, vw.owner_cluster, vw.owner_name, bindings, claims,
                                    self._claim_exports(claims, attributes.api_group, attributes.resource))
        else:
            verb = "initialize" if vw.kind == vwpaths.INITIALIZING else "terminate"
            chain = first_opinion(always_allow_paths(), always_allow_groups(),
                                  lifecycle(self.auth.rbac.authorize, verb, vw.owner_cluster, vw.owner_name))
        checked(chain, user, vw.cluster, attributes)

    def _claim_exports(self, claims: list[dict[str, Any]], group: str, resource: str) -> list[ExportPolicy] | None:
        """The exports with the identity of the claim a request's resource is served by (§7.3)."""
        claim_group = "" if (group, resource) == ("events.k8s.io", "events") else group
        identity = next((str(c.get("identityHash")) for c in claims
                         if (str(c.get("group") or ""), c.get("resource")) == (claim_group, resource) and c.get("identityHash")), "")
        if not identity:
            return None
        return [ExportPolicy(cluster, str(e["metadata"]["name"]), bool(((e.get("spec") or {}).get("maximalPermissionPolicy") or {}).get("local") is not None))
                for cluster, e in self.store.all(API_EXPORTS) if (e.get("status") or {}).get("identityHash") == identity]

    async def _token_request(self, scope: Scope, receive: Receive, send: Send, cluster: str, target: ResourcePath) -> None:
        """`kubectl create token <sa>`: a token signed by this server, for a ServiceAccount that exists."""
        uid = self.source.service_account_uid(cluster, target.namespace, target.name)
        if uid is None:
            raise errors.not_found("serviceaccounts", target.name)
        body = await _read(receive)
        try:
            request = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            raise errors.bad_request("the TokenRequest is not valid JSON") from None
        if not isinstance(request, dict):
            raise errors.bad_request("the TokenRequest must be an object")
        answer = token_request(self.auth.service_accounts, request, cluster=cluster, namespace=target.namespace,
                               sa_name=target.name, sa_uid=uid, now=time.time())
        await http.object_response(answer, 201)(scope, receive, send)

    async def _backend_choice_is_admin_only(self, user: User, receive: Receive) -> Receive:
        """A Workspace naming a backend reads that backend with the proxy's credentials: admins only."""
        body = await _read(receive)
        if BACKEND_ANNOTATION.encode() in body and MASTERS not in user.groups:
            log.info("refused %s choosing a Workspace backend: not in %s", user.name, MASTERS)
            raise errors.forbidden(f'only {MASTERS} may set the "{BACKEND_ANNOTATION}" annotation of a Workspace: access denied',
                                   "workspaces", "tenancy.kcp.io")
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # after the body: the client's own messages (a disconnect)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay


def _resource(rest: str) -> ResourcePath | None:
    try:
        target = parse_api_path(rest)
    except errors.StatusError:
        return None
    return target if isinstance(target, ResourcePath) else None


async def _read(receive: Receive) -> bytes:
    """The request body, bounded as every body this server reads."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > http.MAX_BODY_BYTES:
            raise errors.request_entity_too_large("the request body is larger than 3 MiB")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)
