"""From an HTTP request to authorizer Attributes, as kube-apiserver's RequestInfoFactory:
resource requests get the Kubernetes verb (get, list, watch, create, update, patch, delete,
deletecollection); everything else (discovery, /version, /openapi, /healthz) is a non-resource
request whose verb is the lower-cased HTTP method (HEAD counts as get).

`path` is what follows the `/clusters/<name>` prefix (or a virtual workspace's prefix), already
percent-decoded, so the same request is authorized alike on the shard and through a VW.
"""

from __future__ import annotations

from collections.abc import Mapping

from vwproxy.auth.decision import Attributes
from vwproxy.kube.errors import StatusError
from vwproxy.kube.paths import ResourcePath, parse_api_path, verb_of


def attributes_for(method: str, path: str, params: Mapping[str, str]) -> Attributes:
    method = method.upper()
    try:
        target = parse_api_path(path)
    except StatusError:
        target = None
    if not isinstance(target, ResourcePath):
        verb = "get" if method == "HEAD" else method.lower()
        return Attributes(verb, path=path or "/")
    namespace = target.namespace
    if target.resource == "namespaces" and target.name:
        namespace = target.name  # kube: a namespace object lives in itself, so RoleBindings there apply
    return Attributes(verb_of(method, target, params), target.group, target.resource, target.subresource,
                      target.name, namespace, path)
