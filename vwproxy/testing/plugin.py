"""pytest fixtures for projects that test against vwproxy (registered as a pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vwproxy.testing.shard import EmbeddedShard


@pytest.fixture
def vwproxy_shard(tmp_path: Path) -> Iterator[EmbeddedShard]:
    """A fresh embedded shard on loopback, with `root` and its `default` namespace."""
    with EmbeddedShard(tmp_path / "shard") as shard:
        yield shard
