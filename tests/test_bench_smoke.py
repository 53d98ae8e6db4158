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
