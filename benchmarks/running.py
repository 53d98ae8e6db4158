"""Running a benchmark script: its event loop, its clean-up, its table, its exit status.

    sys.exit(run_and_report(run(args, command), command, BenchError, started_processes))

One place for what every script does around its measurement: uvloop when it is there (the
server runs on it too), SIGTERM turned into a clean exit, a failure said in one line, and no child
process outliving the script, whatever happened."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from procstats import Results, print_table  # noqa: E402  (benchmarks/ is on sys.path when a script here runs)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run_and_report(measurement: Coroutine[Any, Any, Results], command: str, failure: type[Exception] | tuple[type[Exception], ...],
                   started: Sequence[subprocess.Popen[bytes]] = ()) -> int:
    """Run `measurement`, print its table; 0 when it is OK, 1 when it is not or raised `failure`."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            results = runner.run(measurement)
    except failure as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in started:  # last resort: nothing this benchmark started outlives it
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    print_table(results, command)
    return 0 if results.ok else 1


def keep_or_remove(folder: Path, keep: bool) -> None:
    """A run's temporary folder (data dirs, server logs): kept, and said where, with --keep."""
    if keep:
        print(f"kept: {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
