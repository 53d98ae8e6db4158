"""`vwproxy serve` as a test fixture: the front, the control plane and the example topology
(or a config folder of yours), on a free loopback port, in well under a second."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from vwproxy.control.manifests import load_folder
from vwproxy.server.app import ServeApp
from vwproxy.server.reads import DEFAULT_BOOKMARK_INTERVAL
from vwproxy.store.shard import Shard
from vwproxy.testing.server import ServerThread
from vwproxy.upstream.backends import Backend, load_backends
from vwproxy.upstream.client import BackendClient

# How long `start()` waits for the control plane to settle after seeding.
SETTLE_TIMEOUT_SECONDS = 10.0


def example_topology() -> Path:
    from importlib import resources

    return Path(str(resources.files("vwproxy") / "data" / "example"))


class RunningProxy:
    """A running `vwproxy serve`: `url`, `workspace_url(path)`, `cluster_of(path)`."""

    def __init__(self, data_dir: Path, config: Path | None = None, *, bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL, backends: dict[str, Backend] | None = None, reseed: bool = False) -> None:
        """`reseed` applies the config again over a data dir seeded before (`serve --reseed`)."""
        folder = config if config is not None else example_topology()
        manifests = load_folder(folder)
        if backends is None:
            backends_file = folder / "backends.yaml"
            backends = load_backends(backends_file) if backends_file.exists() else {}
        self.shard = Shard(data_dir)
        self._backends = backends

        def build(url: str) -> ServeApp:
            clients = {name: BackendClient(backend) for name, backend in self._backends.items()}
            return ServeApp(self.shard, url, manifests, clients, bookmark_interval, reseed=reseed)

        self.server = ServerThread(app_factory=build)
        self.app: ServeApp = self.server.app

    @property
    def url(self) -> str:
        return self.server.url

    def workspace_url(self, path: str) -> str:
        return f"{self.server.url}/clusters/{path}"

    def cluster_of(self, path: str) -> str:
        """The logical cluster name of a workspace path."""
        name = self.server.call(lambda: self.app.control.store.resolve_path(path))
        if name is None:
            raise KeyError(path)
        return name

    def settle(self, timeout: float = SETTLE_TIMEOUT_SECONDS) -> bool:
        """Wait until the control plane has nothing left to do."""
        return bool(self.server.run(self.app.control.wait_idle(timeout)))

    def start(self) -> RunningProxy:
        try:
            self.server.start()
        except RuntimeError:
            if self.app.startup_error is not None:
                raise self.app.startup_error from None
            raise
        return self

    def stop(self) -> None:
        if self.server.stop():
            self.shard.close()  # never from this thread while the server's loop may still use it

    def __enter__(self) -> RunningProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
