"""What the benchmarks share: reading a server process (memory, CPU time, log) and the results table."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of process `pid` in KiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProcessStats:
    """Readings of a started server process: `proc` (Popen) and `log_path` are set by the subclass."""

    proc: subprocess.Popen[bytes] | None
    log_path: Path

    def rss_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the process in KiB."""
        assert self.proc is not None
        return rss_kib(self.proc.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Results:
    """The rows of a run's results table, printed as they are measured."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (metric, value, note)
    ok: bool = True

    def add(self, metric: str, value: str, note: str = "") -> None:
        self.rows.append((metric, value, note))
        print(f"  {metric}: {value}" + (f"  ({note})" if note else ""), flush=True)


def print_table(results: Results, command: str) -> None:
    width = max(len(r[0]) for r in results.rows)
    vwidth = max(len(r[1]) for r in results.rows)
    print()
    print(f"| {'metric'.ljust(width)} | {'value'.ljust(vwidth)} | note")
    print(f"|-{'-' * width}-|-{'-' * vwidth}-|------")
    for metric, value, note in results.rows:
        print(f"| {metric.ljust(width)} | {value.ljust(vwidth)} | {note}")
    print()
    print(f"command: {command}")
    print("result: " + ("OK" if results.ok else "FAILED (see the watch check)"))
