"""Shared fixtures: a running embedded shard on loopback and HTTP clients for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gobuild import GoPrograms, build_go_programs

from vwproxy.testing.proxy import RunningProxy
from vwproxy.testing.shard import EmbeddedShard

# Bookmarks every 0.2 s so tests can see periodic BOOKMARKs without waiting a minute.
TEST_BOOKMARK_INTERVAL = 0.2


@pytest.fixture
def shard(tmp_path: Path) -> Iterator[EmbeddedShard]:
    with EmbeddedShard(tmp_path / "shard", bookmark_interval=TEST_BOOKMARK_INTERVAL) as running:
        yield running


@pytest.fixture
def api(shard: EmbeddedShard) -> Iterator[httpx.Client]:
    """A client for the `root` logical cluster."""
    with httpx.Client(base_url=shard.cluster_url("root"), timeout=10) as client:
        yield client


@pytest.fixture
def base(shard: EmbeddedShard) -> Iterator[httpx.Client]:
    """A client for the shard's base URL (any `/clusters/<name>/…` path)."""
    with httpx.Client(base_url=shard.url, timeout=10) as client:
        yield client


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[RunningProxy]:
    """`vwproxy serve` on the example topology, settled (modules with other needs override it)."""
    with RunningProxy(tmp_path / "data", bookmark_interval=TEST_BOOKMARK_INTERVAL) as running:
        assert running.settle()
        yield running


@pytest.fixture
def front(proxy: RunningProxy) -> Iterator[httpx.Client]:
    """A client for the proxy's front URL."""
    with proxy.client() as client:
        yield client


@pytest.fixture(scope="session")
def go_programs(record_testsuite_property: Any) -> GoPrograms:
    """The programs of tests/go, built once per session (see gobuild.py)."""
    return build_go_programs(record_testsuite_property)
