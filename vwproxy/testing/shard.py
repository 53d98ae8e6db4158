"""The embedded shard as a test fixture: a fresh SQLite folder, real HTTP on loopback."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from vwproxy.server.reads import DEFAULT_BOOKMARK_INTERVAL
from vwproxy.server.shard_app import build_shard_app
from vwproxy.store.shard import DEFAULT_HISTORY_SIZE, Shard
from vwproxy.testing.server import ServerThread


class EmbeddedShard:
    """A running embedded shard; `url` is its base, `cluster_url(name)` a logical cluster's."""

    def __init__(self, data_dir: Path, *, history_size: int = DEFAULT_HISTORY_SIZE, bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL) -> None:
        self.data_dir = data_dir
        self.shard = Shard(data_dir, history_size=history_size)
        self.server = ServerThread(build_shard_app(self.shard, bookmark_interval))

    @property
    def url(self) -> str:
        return self.server.url

    def cluster_url(self, name: str) -> str:
        return f"{self.server.url}/clusters/{name}"

    def create_logical_cluster(self, name: str, path: str = "") -> str:
        """Make logical cluster `name` exist (with a `default` namespace); returns its URL."""
        self.server.call(lambda: self.shard.create_logical_cluster(name, path=path))
        return self.cluster_url(name)

    def start(self) -> EmbeddedShard:
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server.stop():
            self.shard.close()  # never from this thread while the server's loop may still use it

    def __enter__(self) -> EmbeddedShard:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
