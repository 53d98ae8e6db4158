"""`vwproxy shard` as a child process on loopback: a second, real server for tests that need one
(a kube backend behind a token, a backend that stops, freezes or crashes, restart durability).

The child imports the same `vwproxy` as the test (its checkout goes first on PYTHONPATH), runs
without the caller's HTTP proxy settings, and logs to a file that failure messages quote.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

import vwproxy

# A cold interpreter importing vwproxy and opening SQLite takes about a second here; slow CI
# machines get a wide margin before a start counts as failed.
READY_TIMEOUT_SECONDS = 15.0
# uvicorn's graceful shutdown plus closing the database; past this the child is killed.
STOP_TIMEOUT_SECONDS = 5.0
# Readiness polling step: the child is usually up within a few hundred milliseconds.
POLL_SECONDS = 0.05
# A free port can be taken by someone else between choosing it and the child binding it.
PORT_ATTEMPTS = 3

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a vwproxy child: this checkout's package first, no HTTP proxies."""
    checkout = str(Path(vwproxy.__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH", "")]))
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_child(proc: subprocess.Popen[Any]) -> int:
    """SIGTERM a child, SIGKILL it if it has not exited within STOP_TIMEOUT_SECONDS; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_SECONDS)
    return int(proc.returncode)


class ShardProcess:
    """`python -m vwproxy.cli shard` on 127.0.0.1; restartable on the same data dir and port.

    `token` (or `token_file`) makes it require a bearer token, like a real cluster; `history`
    bounds its watch history (a tiny one makes 410 Expired easy to reach). `stop()` is graceful
    (SIGTERM), `kill()` is a crash (SIGKILL), `freeze()`/`resume()` make it hang and come back.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        token: str | None = None,
        token_file: Path | None = None,
        history: int | None = None,
        bookmark_interval: float | None = None,
        log: Path | None = None,
        port: int = 0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.token = token
        self.token_file = token_file
        self.history = history
        self.bookmark_interval = bookmark_interval
        self.log = log if log is not None else data_dir.parent / f"{data_dir.name}.log"
        self.port = port
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cluster_url(self, name: str) -> str:
        return f"{self.url}/clusters/{name}"

    def headers(self) -> dict[str, str]:
        """The Authorization header this shard wants (empty without a token)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def create_logical_cluster(self, name: str) -> str:
        """Make logical cluster `name` exist, as kcp does (a LogicalCluster `cluster`), and wait for
        its `default` namespace; returns the cluster's URL."""
        body = {"apiVersion": "core.kcp.io/v1alpha1", "kind": "LogicalCluster", "metadata": {"name": "cluster"}}
        with httpx.Client(base_url=self.cluster_url(name), headers=self.headers(), timeout=STOP_TIMEOUT_SECONDS, trust_env=False) as client:
            made = client.post("/apis/core.kcp.io/v1alpha1/logicalclusters", json=body)
            if made.status_code != 201:
                raise AssertionError(f"creating logical cluster {name}: HTTP {made.status_code} {made.text}")
            deadline = time.monotonic() + READY_TIMEOUT_SECONDS
            while client.get("/api/v1/namespaces/default").status_code != 200:
                if time.monotonic() > deadline:
                    raise AssertionError(f"namespace default of logical cluster {name} never appeared")
                time.sleep(POLL_SECONDS)  # bounded by the deadline above
        return self.cluster_url(name)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "vwproxy.cli", "shard", "--data-dir", str(self.data_dir),
                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        if self.token:
            argv += ["--token", self.token]
        if self.token_file is not None:
            argv += ["--token-file", str(self.token_file)]
        if self.history is not None:
            argv += ["--history", str(self.history)]
        if self.bookmark_interval is not None:
            argv += ["--bookmark-interval", str(self.bookmark_interval)]
        return argv + list(self.extra_args)

    def start(self) -> ShardProcess:
        """Start (or restart, on the same port) and wait until `/readyz` answers 200."""
        if self.running:
            raise RuntimeError(f"shard on {self.url} is already running")
        for _ in range(PORT_ATTEMPTS):
            may_move = self.port == 0  # a port we chose, before any client knows the URL
            if may_move:
                self.port = free_port()
            self.starts += 1
            self.log.parent.mkdir(parents=True, exist_ok=True)
            offset = self.log.stat().st_size if self.log.exists() else 0
            with self.log.open("ab") as out:
                out.write(f"--- start {self.starts}: {' '.join(self.argv()[1:])}\n".encode())
                out.flush()
                self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env())
            if self._wait_ready():
                return self
            if self.running:  # up but not ready in time: not a port clash
                self.kill()
                break
            clash = "address already in use" in self.log_text()[offset:].lower()
            if not (may_move and clash):
                break
            self.port = 0  # someone took the port we chose: choose again
        raise AssertionError(f"vwproxy shard did not become ready on {self.url} within {READY_TIMEOUT_SECONDS} s:\n{self.log_text()}")

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0, trust_env=False).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(POLL_SECONDS)  # bounded by the deadline above
        return False

    def stop(self) -> int | None:
        """SIGTERM (graceful), SIGKILL if it has not exited in time; the exit code, None if never started."""
        if self.proc is None:
            return None
        self.resume()  # a frozen process cannot handle SIGTERM
        return stop_child(self.proc)

    def terminate(self) -> int:
        """SIGTERM and the exit code, without falling back to SIGKILL (the test judges the exit)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(STOP_TIMEOUT_SECONDS * 2)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or the OOM killer."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP_TIMEOUT_SECONDS)

    def freeze(self) -> None:
        """SIGSTOP: the port stays open and connections are accepted, but nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `freeze()`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> ShardProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
