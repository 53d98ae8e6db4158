"""Where the harness points: a virtual workspace URL, the resource measured there, and the
kubeconfig's credentials (CA, bearer token, client certificate) for talking to it."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from vwproxy.upstream.backends import Backend, BackendConfigError, backend_from_kubeconfig, tls_context

SLICES = "/apis/apis.kcp.io/v1alpha1/apiexportendpointslices"
REQUEST_TIMEOUT = 60.0  # one list of a large view on a busy machine; watches set their own


class HarnessError(Exception):
    """A request failed or an answer was not what a virtual workspace answers; the message says which."""


@dataclass(frozen=True)
class Resource:
    """`group/version/resource`; the core group is written `core/v1/configmaps` or `v1/configmaps`."""

    group: str
    version: str
    plural: str

    @classmethod
    def parse(cls, text: str) -> Resource:
        parts = text.strip("/").split("/")
        if len(parts) == 2:
            parts = ["", *parts]
        if len(parts) != 3 or not all(parts[1:]):
            raise HarnessError(f"--resource {text!r}: expected group/version/resource, e.g. example.dev/v1alpha1/widgets")
        group = "" if parts[0] == "core" else parts[0]
        return cls(group, parts[1], parts[2])

    @property
    def group_version_path(self) -> str:
        return f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"

    def __str__(self) -> str:
        return f"{self.group or 'core'}/{self.version}/{self.plural}"


@dataclass(frozen=True)
class Target:
    """A virtual workspace URL (`vw`, no trailing slash) and how to reach it."""

    vw: str
    resource: Resource
    credentials: Backend

    def wildcard_url(self) -> str:
        return f"{self.vw}/clusters/*{self.resource.group_version_path}/{self.resource.plural}"

    def cluster_url(self, cluster: str, namespace: str = "") -> str:
        ns = f"/namespaces/{quote(namespace)}" if namespace else ""
        return f"{self.vw}/clusters/{quote(cluster)}{self.resource.group_version_path}{ns}/{self.resource.plural}"

    def discovery_url(self, cluster: str = "*") -> str:
        return f"{self.vw}/clusters/{cluster}{self.resource.group_version_path}"

    def session(self, connections: int = 16) -> aiohttp.ClientSession:
        return open_session(self.credentials, connections)


def open_session(credentials: Backend, connections: int = 16) -> aiohttp.ClientSession:
    """An aiohttp session presenting the kubeconfig's credentials on every request."""
    tls: ssl.SSLContext | bool = tls_context(credentials) if credentials.url.startswith("https:") else False
    headers = {"accept": "application/json"}
    if credentials.token:
        headers["authorization"] = f"Bearer {credentials.token}"
    connector = aiohttp.TCPConnector(limit=connections, ssl=tls, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                                 trust_env=False)


def load_credentials(kubeconfig: Path, context: str = "") -> Backend:
    if not kubeconfig.is_file():
        raise HarnessError(f"--kubeconfig {kubeconfig}: no such file")
    try:
        return backend_from_kubeconfig(kubeconfig, context)
    except BackendConfigError as exc:  # names the file and field
        raise HarnessError(str(exc).replace("spec.kubeconfig: ", "").replace("spec.context", "--context")) from None


def server_root(server: str) -> str:
    """A kubeconfig's server without a workspace path (kcp kubeconfigs often end in /clusters/root)."""
    return server.split("/clusters/", 1)[0].rstrip("/")


async def read_endpoint_slice(credentials: Backend, workspace: str, name: str) -> tuple[str, list[str]]:
    """(the first endpoint URL, all of them) of APIExportEndpointSlice `name` in `workspace`."""
    url = f"{server_root(credentials.url)}/clusters/{workspace}{SLICES}/{name}"
    async with open_session(credentials, 1) as session, session.get(url) as r:
        body = await r.read()
        if r.status != 200:
            raise HarnessError(f"GET {url}: HTTP {r.status}: {body[:300]!r}")
    slice_: Any = orjson.loads(body)
    urls = [str(e["url"]).rstrip("/") for e in (slice_.get("status") or {}).get("endpoints") or [] if e.get("url")]
    if not urls:
        raise HarnessError(f"endpoint slice {workspace}/{name} has no status.endpoints yet (is the export bound anywhere?)")
    return urls[0], urls


async def expect(resp: aiohttp.ClientResponse, status: int | tuple[int, ...], what: str) -> bytes:
    body = await resp.read()
    wanted = (status,) if isinstance(status, int) else status
    if resp.status not in wanted:
        raise HarnessError(f"{what}: HTTP {resp.status}: {body[:300]!r}")
    return body
