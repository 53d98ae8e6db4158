"""A harness run's results: the Markdown table (stdout and `<out>/<label>.md`), the raw samples
(`<label>.json`, what `compare` reads), and latency plots (`<label>-cdf.png`, `<label>-hist.png`)
when matplotlib is installed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

# The series plotted and compared: (key in `samples`, title).
SERIES = [
    ("list_seconds", "wildcard LIST"),
    ("sync_seconds", "watch-list to initial-events-end"),
    ("write_seconds", "write round trip (create + patch)"),
    ("watch_delay_seconds", "write response → wildcard watch event"),
    ("sent_to_event_seconds", "write sent → wildcard watch event"),
]
LOG_SCALE_SPREAD = 10.0  # runs whose medians differ by more than this share a log axis


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


@dataclass
class Run:
    """One run of `python -m benchmarks run`: what was measured where, the table rows, the samples."""

    label: str
    when: str
    command: str
    vw_url: str
    resource: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (metric, value, note)
    metrics: dict[str, float] = field(default_factory=dict)  # what `compare` divides; lower is better unless named
    samples: dict[str, list[float]] = field(default_factory=dict)
    ok: bool = True

    def add(self, metric: str, value: str, note: str = "") -> None:
        self.rows.append((metric, value, note))
        print(f"  {metric}: {value}" + (f"  ({note})" if note else ""), flush=True)

    def add_latency(self, metric: str, key: str, values: list[float], note: str = "", high: float = 0.9) -> None:
        """A row `p50 / p90 ms` (or p99 with high=0.99), and the same numbers in `metrics`."""
        self.samples[key] = values
        name = f"p{round(high * 100)}"
        p50, phigh = percentile(values, 0.5), percentile(values, high)
        series = key.removesuffix("_seconds").replace("_", " ")
        self.metrics[f"{series} p50 ms"] = p50 * 1000
        self.metrics[f"{series} {name} ms"] = phigh * 1000
        self.add(f"{metric} p50 / {name}", f"{ms(p50)} / {ms(phigh)} ms", note or f"{len(values)} samples, max {ms(max(values))} ms")

    def to_json(self) -> bytes:
        # Samples to the microsecond, one series a line: a few thousand of them stay a readable, diffable file.
        head = orjson.dumps({"label": self.label, "when": self.when, "command": self.command, "vw_url": self.vw_url, "resource": self.resource,
                             "ok": self.ok, "rows": self.rows, "metrics": self.metrics}, option=orjson.OPT_INDENT_2)
        series = b",\n".join(b"    " + orjson.dumps(key) + b": " + orjson.dumps([round(v, 6) for v in values]) for key, values in self.samples.items())
        return head[:-2] + b',\n  "samples": {\n' + series + b"\n  }\n}\n"

    @classmethod
    def from_json(cls, data: bytes) -> Run:
        d: Any = orjson.loads(data)
        return cls(label=d["label"], when=d["when"], command=d["command"], vw_url=d["vw_url"], resource=d["resource"], ok=d["ok"],
                   rows=[(str(m), str(v), str(n)) for m, v, n in d["rows"]], metrics=d["metrics"], samples=d["samples"])


def table(rows: list[tuple[str, str, str]], header: tuple[str, str, str] = ("metric", "value", "note")) -> str:
    lines = [f"| {' | '.join(header)} |", "|---|---|---|"]
    lines += [f"| {m} | {v} | {n} |" for m, v, n in rows]
    return "\n".join(lines)


def markdown(run: Run, plots: list[Path]) -> str:
    parts = [f"# `{run.label}`: virtual workspace harness run", "",
             f"- when: {run.when}", f"- virtual workspace: `{run.vw_url}`", f"- resource: `{run.resource}`",
             f"- command: `{run.command}`", "", table(run.rows), ""]
    parts += [f"![{p.stem}]({p.name})" for p in plots]
    parts.append(f"\nresult: {'OK' if run.ok else 'FAILED'}\n")
    return "\n".join(parts)


def write_outputs(run: Run, out: Path) -> tuple[Path, Path, list[Path] | str]:
    """(<label>.md, <label>.json, the plots written or why none)."""
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_run(run, out)
    md, js = out / f"{run.label}.md", out / f"{run.label}.json"
    md.write_text(markdown(run, plots if isinstance(plots, list) else []))
    js.write_bytes(run.to_json())
    return md, js, plots


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_run(run: Run, out: Path) -> list[Path] | str:
    """A CDF and a histogram per measured series; the reason instead when matplotlib is missing."""
    return plot_series([run], out, run.label)


def plot_series(runs: list[Run], out: Path, stem: str) -> list[Path] | str:
    plt = _pyplot()
    if plt is None:
        return "matplotlib is not installed (pip install -e '.[bench]'): no plots"
    present = [(key, title) for key, title in SERIES if any(r.samples.get(key) for r in runs)]
    if not present:
        return "no samples to plot"
    written = []
    for kind in ("cdf", "hist"):
        fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
        for ax, (key, title) in zip(axes[0], present):
            series = [(r.label, sorted(v * 1000 for v in r.samples.get(key) or [])) for r in runs]
            series = [(label, values) for label, values in series if values]
            log = _log_axis([values for _, values in series])
            for label, values in series:
                if kind == "cdf":
                    ax.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post", label=label)
                    ax.set_ylabel("fraction ≤ x")
                else:
                    bins: Any = min(40, max(5, len(values) // 3))
                    if log:
                        low, high = min(v[0] for _, v in series), max(v[-1] for _, v in series)
                        bins = [low * (high / low) ** (i / 40) for i in range(41)]
                    ax.hist(values, bins=bins, alpha=0.6, label=label)
                    ax.set_ylabel("samples")
            if log:
                ax.set_xscale("log")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("ms")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{stem}-{kind}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _log_axis(series: list[list[float]]) -> bool:
    """A log x axis when every value is positive and the runs' medians lie far apart (kcp's list
    in seconds next to vwproxy's in milliseconds would otherwise be one line at zero)."""
    if len(series) < 2 or any(values[0] <= 0 for values in series):
        return False
    medians = [values[len(values) // 2] for values in series]
    return max(medians) / min(medians) > LOG_SCALE_SPREAD


def compare(a: Run, b: Run) -> str:
    """A table of every metric both runs have: a, b, and b / a."""
    rows = []
    for key in a.metrics:
        if key in b.metrics:
            va, vb = a.metrics[key], b.metrics[key]
            # A ratio of a value that can be negative (the delay after a write's response, when the
            # event came first) means nothing: shown only when both are positive.
            ratio = f"{vb / va:.2f}x" if va > 0 and vb > 0 else "n/a"
            rows.append((key, f"{va:,.2f}", f"{vb:,.2f}", ratio))
    lines = [f"| metric | {a.label} | {b.label} | {b.label} / {a.label} |", "|---|---|---|---|"]
    lines += [f"| {k} | {x} | {y} | {r} |" for k, x, y, r in rows]
    if a.resource != b.resource or a.metrics.get("list items") != b.metrics.get("list items"):
        lines.append(f"\nnote: not the same view ({a.resource}, {a.metrics.get('list items', 0):,.0f} items vs "
                     f"{b.resource}, {b.metrics.get('list items', 0):,.0f} items): compare with care")
    return "\n".join(lines)
