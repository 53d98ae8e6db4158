"""Building the Go programs of tests/go, once per session, for the tests that run them
(tests/test_go_controllers.py: controllers against the proxy; tests/test_compose.py: the Compose
file checker).

The programs are built in one `go build` into a cache folder keyed by the Go toolchain and the
module's sources, so reruns on the same machine skip the build; a cold build relies on Go's own
GOCACHE and GOMODCACHE. A missing `go` fails the tests that need the programs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

GO_MODULE = Path(__file__).parent / "go"
# kcp's own example controller, built unchanged from the multicluster-provider module that
# go.mod pins (so go.sum keys its sources); `go build -o DIR/` names it after its package.
STOCK_EXAMPLE_MODULE = "github.com/kcp-dev/multicluster-provider"
STOCK_EXAMPLE_PACKAGE = f"{STOCK_EXAMPLE_MODULE}/examples/apiexport"
STOCK_EXAMPLE = "apiexport"
# compose-check validates docker-compose.yml with compose-go's loader (tests/test_compose.py).
PROGRAMS = ("apiexport-controller", "compose-check", "configmap-controller", "initializer", STOCK_EXAMPLE)
# No VCS stamp (the module sits in this repository's work tree); no symbol table or DWARF,
# which nearly halves the link time and the size of the binaries (stack traces still work).
BUILD_FLAGS = ("-trimpath", "-buildvcs=false", "-ldflags=-s -w")
# A cold build (empty GOCACHE) of the four controller programs costs 190-240 CPU-seconds (the
# two permission-claim programs add two main packages and two links, under 40 of them): 2.5
# minutes on a 2-core machine, up to 7 on a heavily loaded one, the module downloads (~220 MB)
# adding little. compose-check adds no measurable time to that build (on 2 cores: 193 s wall,
# 188 CPU-seconds with it, 200 s and 193 without, one cold run each): built alone it takes 26
# CPU-seconds, mostly standard-library packages the controllers compile anyway. This leaves room
# for a slower runner or module proxy.
BUILD_TIMEOUT_SECONDS = 600
# Builds for other sources (other branches, older commits) are dropped after a week unused.
STALE_BUILD_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class GoPrograms:
    folder: Path
    build_seconds: float  # 0 when the cache folder already held this build

    def path(self, name: str) -> str:
        return str(self.folder / name)


def go_environment(go: str) -> str:
    """What besides the sources decides the binaries: toolchain, target, cgo."""
    return subprocess.run([go, "env", "GOVERSION", "GOOS", "GOARCH", "CGO_ENABLED"], capture_output=True, text=True, check=True, timeout=60).stdout


def sources_digest(go: str) -> str:
    digest = hashlib.sha256(go_environment(go).encode() + "\0".join(BUILD_FLAGS).encode())
    files = [GO_MODULE / "go.mod", GO_MODULE / "go.sum", *sorted(GO_MODULE.rglob("*.go"))]
    for file in files:
        digest.update(str(file.relative_to(GO_MODULE)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def build_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vwproxy-go-tests"


def drop_stale_builds(root: Path) -> None:
    cutoff = time.time() - STALE_BUILD_SECONDS
    for folder in root.iterdir():
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)


def build_go_programs(record_testsuite_property: Callable[[str, object], None]) -> GoPrograms:
    """Every program of PROGRAMS, built once into the cache folder for these sources (or found
    there); fails the calling test, with the compiler's output, if `go` is missing or the build
    fails. The session fixture `go_programs` (conftest.py) calls it."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("`go` is not on PATH: install Go 1.26 or newer (https://go.dev/dl/) to run the tests that build tests/go (the Go controllers, the Compose file check); they are not optional")
    target = build_cache_root() / sources_digest(go)
    if all((target / name).is_file() for name in PROGRAMS):
        os.utime(target)  # in use: not stale
        drop_stale_builds(target.parent)
        log.info("Go programs cached in %s", target)
        record_testsuite_property("go_build_seconds", "cached")
        return GoPrograms(target, 0.0)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    started = time.monotonic()
    # One invocation for all programs, so their shared packages are compiled once.
    try:
        result = subprocess.run(
            [go, "build", *BUILD_FLAGS, "-o", f"{staging}{os.sep}", "./cmd/...", STOCK_EXAMPLE_PACKAGE],
            cwd=GO_MODULE, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, check=False,
        )
    except subprocess.TimeoutExpired as timeout:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"go build ./cmd/... {STOCK_EXAMPLE_PACKAGE} in {GO_MODULE} took over {BUILD_TIMEOUT_SECONDS} s (module proxy unreachable?):\n{timeout.stderr!r}")
    build_seconds = time.monotonic() - started
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"go build ./cmd/... {STOCK_EXAMPLE_PACKAGE} in {GO_MODULE} exited {result.returncode} after {build_seconds:.0f} s:\n{result.stderr}")
    try:
        staging.rename(target)
    except OSError:  # another session finished the same build first
        shutil.rmtree(staging, ignore_errors=True)
    drop_stale_builds(target.parent)
    log.info("built Go programs in %.1f s into %s", build_seconds, target)
    record_testsuite_property("go_build_seconds", round(build_seconds, 1))
    return GoPrograms(target, build_seconds)
