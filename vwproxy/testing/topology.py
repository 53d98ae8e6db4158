"""A sharded vwproxy as child processes on loopback: one control plane and proxy shards that
join it (DESIGN §7), for tests of partitions, endpoint slices and a shard dying and coming back.

    with ShardedTopology(tmp_path, partitions=("hash:0/2", "hash:1/2")) as topo:
        topo.endpoint_urls("root:provider", "widgets")   # one URL per shard hosting a binding
        topo.members[0].kill(); topo.members[0].start()   # its partition down, then resynced

Every process serves HTTPS with the control plane's CA and accepts its admin token, so
`topo.client()` reaches each of them.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from vwproxy.auth.tls import CA_CERT, TOKEN_FILE
from vwproxy.testing.process import POLL_SECONDS, READY_TIMEOUT_SECONDS, child_env, free_port, stop_child

ENDPOINT_SLICES = "apis/apis.kcp.io/v1alpha1/apiexportendpointslices"


class ServeProcess:
    """`python -m vwproxy.cli serve …` on 127.0.0.1 with a port of its own, restartable on it."""

    def __init__(self, name: str, data_dir: Path, args: Sequence[str], ca_file: Path, port: int = 0) -> None:
        self.name = name
        self.data_dir = data_dir
        self.args = list(args)
        self.ca_file = ca_file
        self.port = port or free_port()
        self.log = data_dir.parent / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "vwproxy.cli", "serve", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                "--port", str(self.port), "--external-url", self.url, "--log-level", "warning", *self.args]

    def start(self, token: str | None = None) -> ServeProcess:
        """Start and wait until `/readyz` answers 200 (trusting `ca_file`, once it exists)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"--- start: {' '.join(self.argv()[3:])}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env())
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ca_file.exists():
                try:
                    with httpx.Client(verify=ssl.create_default_context(cafile=str(self.ca_file)), trust_env=False, timeout=1.0) as client:
                        if client.get(f"{self.url}/readyz", headers={"Authorization": f"Bearer {token}"} if token else {}).status_code == 200:
                            return self
                except httpx.HTTPError:
                    pass
            time.sleep(POLL_SECONDS)  # bounded by the deadline above
        raise AssertionError(f"{self.name} did not become ready on {self.url} within {READY_TIMEOUT_SECONDS} s:\n{self.log_text()[-6000:]}")

    def stop(self) -> int | None:
        return stop_child(self.proc) if self.proc is not None else None

    def kill(self) -> None:
        """SIGKILL: a crash; nothing of the process's shutdown runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class ShardedTopology:
    """A control plane (`--partition none` unless told) and one proxy shard per partition."""

    def __init__(self, root: Path, partitions: Sequence[str] = ("hash:0/2", "hash:1/2"), *, config: Path | None = None,
                 control_partition: str = "none", member_config: Path | None = None, deterministic: bool = True) -> None:
        """`deterministic` (the default) names logical clusters after their workspace paths, so
        which shard's partition holds a workspace is the same on every run."""
        self.root = root
        cp_dir = root / "control-plane"
        self.ca_file = cp_dir / CA_CERT
        args = ["--shard-name", "root", "--partition", control_partition] + (["--config", str(config)] if config is not None else [])
        args += ["--deterministic"] if deterministic else []
        self.control = ServeProcess("control-plane", cp_dir, args, self.ca_file)
        self.members = [
            ServeProcess(
                f"shard-{i + 1}", root / f"shard-{i + 1}",
                ["--join", "", "--join-secrets", str(cp_dir), "--shard-name", f"shard-{i + 1}", "--partition", partition]
                + (["--config", str(member_config)] if member_config is not None else []),
                self.ca_file,
            )
            for i, partition in enumerate(partitions)
        ]
        for member in self.members:
            member.args[1] = self.control.url

    @property
    def token(self) -> str:
        return (self.control.data_dir / TOKEN_FILE).read_text().split(",", 1)[0]

    def client(self, base_url: str = "", timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=base_url or self.control.url, verify=ssl.create_default_context(cafile=str(self.ca_file)), trust_env=False, timeout=timeout,
                            headers={"Authorization": f"Bearer {self.token}"})

    def start(self) -> ShardedTopology:
        self.control.start()
        for member in self.members:
            member.start(self.token)
        self.settle()
        return self

    def settle(self) -> None:
        """Wait until the control plane has reconciled everything, the shards' registrations
        (and so the endpoint slices) included."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        with self.client() as client:
            while "[+]control-plane settled" not in client.get("/readyz").text:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the control plane did not settle within {READY_TIMEOUT_SECONDS} s:\n{self.logs()}")
                time.sleep(POLL_SECONDS)  # bounded by the deadline above

    def stop(self) -> None:
        for process in [*self.members, self.control]:
            process.stop()

    def endpoint_urls(self, path: str, name: str) -> list[str]:
        with self.client() as client:
            resp = client.get(f"/clusters/{path}/{ENDPOINT_SLICES}/{name}")
            resp.raise_for_status()
            return [str(e["url"]) for e in (resp.json().get("status") or {}).get("endpoints") or []]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_text()[-4000:]}" for p in [self.control, *self.members])

    def __enter__(self) -> ShardedTopology:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def items(response: httpx.Response) -> list[dict[str, Any]]:
    response.raise_for_status()
    return list(response.json()["items"])
