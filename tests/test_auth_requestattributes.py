"""HTTP method and path → authorizer Attributes, as kube-apiserver's RequestInfo."""

from __future__ import annotations

import pytest

from vwproxy.auth.decision import Attributes
from vwproxy.auth.requestattributes import attributes_for


@pytest.mark.parametrize("method, path, params, expected", [
    ("GET", "/api/v1/namespaces/n/pods", {}, Attributes("list", "", "pods", "", "", "n", "/api/v1/namespaces/n/pods")),
    ("GET", "/api/v1/namespaces/n/pods", {"watch": "true"}, Attributes("watch", "", "pods", "", "", "n", "/api/v1/namespaces/n/pods")),
    ("GET", "/api/v1/watch/namespaces/n/pods/p", {}, Attributes("watch", "", "pods", "", "p", "n", "/api/v1/watch/namespaces/n/pods/p")),
    ("HEAD", "/apis/apps/v1/deployments", {}, Attributes("list", "apps", "deployments", path="/apis/apps/v1/deployments")),
    ("POST", "/api/v1/namespaces/n/serviceaccounts/robot/token", {},
     Attributes("create", "", "serviceaccounts", "token", "robot", "n", "/api/v1/namespaces/n/serviceaccounts/robot/token")),
    ("PUT", "/apis/wildwest.dev/v1alpha1/namespaces/n/cowboys/c/status", {},
     Attributes("update", "wildwest.dev", "cowboys", "status", "c", "n", "/apis/wildwest.dev/v1alpha1/namespaces/n/cowboys/c/status")),
    ("PATCH", "/api/v1/namespaces/n/configmaps/c", {}, Attributes("patch", "", "configmaps", "", "c", "n", "/api/v1/namespaces/n/configmaps/c")),
    ("DELETE", "/api/v1/namespaces/n/configmaps", {}, Attributes("deletecollection", "", "configmaps", "", "", "n", "/api/v1/namespaces/n/configmaps")),
    ("DELETE", "/api/v1/namespaces/n", {}, Attributes("delete", "", "namespaces", "", "n", "n", "/api/v1/namespaces/n")),
    ("GET", "/api/v1/namespaces", {}, Attributes("list", "", "namespaces", path="/api/v1/namespaces")),
    ("GET", "/apis/wildwest.dev/v1alpha1", {}, Attributes("get", path="/apis/wildwest.dev/v1alpha1")),
    ("GET", "/api", {}, Attributes("get", path="/api")),
    ("HEAD", "/version", {}, Attributes("get", path="/version")),
    ("GET", "/healthz", {}, Attributes("get", path="/healthz")),
    ("POST", "/metrics", {}, Attributes("post", path="/metrics")),
    ("GET", "", {}, Attributes("get", path="/")),
])
def test_attributes_for(method: str, path: str, params: dict[str, str], expected: Attributes) -> None:
    assert attributes_for(method, path, params) == expected
