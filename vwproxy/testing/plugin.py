"""pytest fixtures for projects that test against vwproxy (registered as a pytest plugin).

Proxies at three scopes (`vwproxy_proxy` per test, `vwproxy_proxy_module`, `vwproxy_proxy_session`:
a wider scope starts once and its tests share the topology), and factories bound to the per-test
proxy (`make_workspace`, `make_binding`, `service_account_kubeconfig`, `wait_visible`); with a
wider-scoped proxy, call the same functions from `vwproxy.testing.factories` with it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vwproxy.testing import factories
from vwproxy.testing.proxy import RunningProxy
from vwproxy.testing.shard import EmbeddedShard


@pytest.fixture
def vwproxy_shard(tmp_path: Path) -> Iterator[EmbeddedShard]:
    """A fresh embedded shard on loopback, with `root` and its `default` namespace."""
    with EmbeddedShard(tmp_path / "vwproxy-shard") as shard:
        yield shard


def _settled_proxy(data_dir: Path) -> Iterator[RunningProxy]:
    with RunningProxy(data_dir) as proxy:
        proxy.settle()
        yield proxy


@pytest.fixture
def vwproxy_proxy(tmp_path: Path) -> Iterator[RunningProxy]:
    """`vwproxy serve` on loopback with the example topology, settled (bindings Ready).

    `.url`, `.workspace_url("root:consumer-1")`, `.cluster_of("root:provider")`; the APIExport
    virtual workspace's URL is in the `widgets` endpoint slice of `root:provider`.
    """
    yield from _settled_proxy(tmp_path / "vwproxy-data")


@pytest.fixture(scope="module")
def vwproxy_proxy_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    """`vwproxy_proxy` shared by the tests of one module (what one test changes, the next sees)."""
    yield from _settled_proxy(tmp_path_factory.mktemp("vwproxy-module"))


@pytest.fixture(scope="session")
def vwproxy_proxy_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    """`vwproxy_proxy` shared by the whole test session."""
    yield from _settled_proxy(tmp_path_factory.mktemp("vwproxy-session"))


@pytest.fixture
def make_workspace(vwproxy_proxy: RunningProxy) -> Callable[..., str]:
    """`make_workspace("root:mine", type=None)` -> its logical cluster name, once scheduled."""
    return functools.partial(factories.make_workspace, vwproxy_proxy)


@pytest.fixture
def make_binding(vwproxy_proxy: RunningProxy) -> Callable[..., dict[str, Any]]:
    """`make_binding(workspace, export_path, export_name)` -> the APIBinding, once Ready."""
    return functools.partial(factories.make_binding, vwproxy_proxy)


@pytest.fixture
def service_account_kubeconfig(vwproxy_proxy: RunningProxy) -> Callable[..., Path]:
    """`service_account_kubeconfig(workspace, name, rules, server=None)` -> a kubeconfig file."""
    return functools.partial(factories.service_account_kubeconfig, vwproxy_proxy)


@pytest.fixture
def wait_visible(vwproxy_proxy: RunningProxy) -> Callable[..., dict[str, Any]]:
    """`wait_visible(vw_url, resource_path, name, cluster)` -> the object, once the VW shows it."""
    return functools.partial(factories.wait_visible, vwproxy_proxy)
