"""pytest fixtures for projects that test against vwproxy (registered as a pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vwproxy.testing.proxy import RunningProxy
from vwproxy.testing.shard import EmbeddedShard


@pytest.fixture
def vwproxy_shard(tmp_path: Path) -> Iterator[EmbeddedShard]:
    """A fresh embedded shard on loopback, with `root` and its `default` namespace."""
    with EmbeddedShard(tmp_path / "vwproxy-shard") as shard:
        yield shard


@pytest.fixture
def vwproxy_proxy(tmp_path: Path) -> Iterator[RunningProxy]:
    """`vwproxy serve` on loopback with the example topology, settled (bindings Ready).

    `.url`, `.workspace_url("root:consumer-1")`, `.cluster_of("root:provider")`; the APIExport
    virtual workspace's URL is in the `widgets` endpoint slice of `root:provider`.
    """
    with RunningProxy(tmp_path / "vwproxy-data") as proxy:
        proxy.settle()
        yield proxy
