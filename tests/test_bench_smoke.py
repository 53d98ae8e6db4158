"""The shard benchmark runs end to end (`--quick`) and prints its result lines; no timing is judged."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "shard_bench.py"

RESULT_ROWS = [
    "create rate, 1 client",
    "create rate, 8 clients",
    "wildcard list time (median)",
    "orjson.dumps(items) time (median)",
    "list / orjson.dumps ratio",
    "updates committed",
    "watch events received",
    "watch delivered vs committed",
    "server RSS after load",
]


@pytest.mark.timeout(120)
def test_quick_benchmark_runs_and_reports() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        cwd=BENCH.parent.parent, capture_output=True, text=True, timeout=100, stdin=subprocess.DEVNULL,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{proc.stderr}"
    table = [line for line in out.splitlines() if line.startswith("| ")]
    for row in RESULT_ROWS:
        assert any(line.startswith(f"| {row} ") for line in table), f"no table row {row!r} in:\n{out}"
    assert re.search(r"^\| create rate, 1 client +\| [\d,]+ objects/s", out, re.M), out
    assert re.search(r"^\| watch delivered vs committed +\| (\d+)/\1 OK", out, re.M), out
    assert re.search(r"^\| server RSS after load +\| [\d.]+ MiB", out, re.M), out
    assert re.search(r"^command: .*shard_bench\.py --quick$", out, re.M), out
    assert "result: OK" in out


VW_BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "vw_bench.py"

VW_RESULT_ROWS = [
    "workspaces bound",
    "widgets created",
    "(a) VW wildcard list (median)",
    "(a) direct workspace lists (median)",
    "(a) shard wildcard list, for reference (median)",
    "(a) proxy / direct ratio",
    "(b) orjson.dumps(items) (median)",
    "(b) VW list / orjson.dumps ratio",
    "(d) widget JSON size (mean)",
    "(d) proxy RSS per widget, shard",
    "(d) proxy RSS per widget, view",
    "(c) changes committed",
    "(c) VW watcher delay p50 / p99",
    "(c) direct watcher delay p50 / p99",
    "(c) delivered",
    "proxy RSS after the load",
    "(e1) first start: all bindings Ready",
    "(e1) widgets created",
    "(e1) restart: start to synced view",
    "(e1) proxy RSS, synced",
    "(e2) backend processes started",
    "(e2) first start: all bindings Ready",
    "(e2) widgets created",
    "(e2) restart: start to synced view",
    "(e2) proxy RSS, synced",
]


@pytest.mark.timeout(180)
def test_quick_vw_benchmark_runs_and_reports() -> None:
    """`vw_bench.py --quick`: the proxy, the scale phases and their backend processes, end to end."""
    proc = subprocess.run(
        [sys.executable, str(VW_BENCH), "--quick"],
        cwd=VW_BENCH.parent.parent, capture_output=True, text=True, timeout=150, stdin=subprocess.DEVNULL,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{proc.stderr}"
    table = [line for line in out.splitlines() if line.startswith("| ")]
    for row in VW_RESULT_ROWS:
        assert any(line.startswith(f"| {row} ") for line in table), f"no table row {row!r} in:\n{out}"
    number = r"[\d.,]+"
    assert re.search(r"^\| widgets created +\| 40 ", out, re.M), out  # 4 workspaces x 10 widgets
    assert re.search(rf"^\| \(a\) proxy / direct ratio +\| {number}x", out, re.M), out
    assert re.search(rf"^\| \(b\) VW list / orjson.dumps ratio +\| {number}x", out, re.M), out
    assert re.search(rf"^\| \(c\) VW watcher delay p50 / p99 +\| -?{number} / -?{number} ms", out, re.M), out
    assert re.search(r"^\| \(c\) delivered +\| VW (\d+)/\1, direct (\d+)/\2 OK", out, re.M), out
    assert re.search(rf"^\| \(d\) proxy RSS per widget, view +\| -?{number} KiB", out, re.M), out
    assert re.search(rf"^\| \(e1\) restart: start to synced view +\| {number} s", out, re.M), out
    assert re.search(r"^\| \(e2\) backend processes started +\| 3 ", out, re.M), out
    assert re.search(rf"^\| \(e2\) proxy RSS, synced +\| {number} MiB", out, re.M), out
    assert re.search(r"^command: .*vw_bench\.py --quick$", out, re.M), out
    assert "result: OK" in out
    # Every process the benchmark started is gone: none still runs on its temporary folder.
    folder = re.search(r"^server: .* --config (\S*/vwproxy-vwbench-[^/\s]+)/", out, re.M)
    assert folder, out
    leftover = [cmd for cmd in _command_lines() if folder.group(1) in cmd]
    assert not leftover, f"benchmark processes left running: {leftover}"


def _command_lines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass  # gone meanwhile
    return lines
