"""The shard benchmark runs end to end (`--quick`) and prints its result lines; no timing is judged."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from vwproxy.testing.process import child_env, stop_child
from support import eventually, free_port


def _run_script(script: Path, args: list[str], timeout: float) -> str:
    """Run a benchmark script from the checkout's root; its standard output, once it exited 0."""
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=script.parent.parent, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"{script.name} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


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
    out = _run_script(BENCH, ["--quick"], 100)
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
    "(e1) restart after clean stop: start to synced view",
    "(e1) restart after SIGKILL: start to synced view",
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
    out = _run_script(VW_BENCH, ["--quick"], 150)
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
    assert re.search(rf"^\| \(e1\) restart after SIGKILL: start to synced view +\| {number} s", out, re.M), out
    assert re.search(rf"^\| \(e1\) new binding engaged: binding to widget at VW, p50 / max +\| {number} / {number} ms", out, re.M), out
    assert re.search(rf"^\| \(a\) VW list: first body byte \(median\) +\| {number} ms", out, re.M), out
    assert re.search(r"^\| \(e2\) backend processes started +\| 3 ", out, re.M), out
    assert re.search(rf"^\| \(e2\) proxy RSS, synced +\| {number} MiB", out, re.M), out
    assert re.search(r"^command: .*vw_bench\.py --quick$", out, re.M), out
    assert "result: OK" in out
    # Every process the benchmark started is gone: none still runs on its temporary folder.
    folder = re.search(r"^server: .* --config (\S*/vwproxy-vwbench-[^/\s]+)/", out, re.M)
    assert folder, out
    leftover = [cmd for cmd in _command_lines() if folder.group(1) in cmd]
    assert not leftover, f"benchmark processes left running: {leftover}"


MEMORY_BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "memory_bench.py"


def test_memory_benchmark_runs_and_reports() -> None:
    """`memory_bench.py` on a tiny shard: bytes per widget in the shard and the views, the list join."""
    out = _run_script(MEMORY_BENCH, ["--clusters", "3", "--objects", "20", "--runs", "3"], 100)
    number = r"[\d.,]+"
    for row in ("shard: traced bytes per widget", "view (embedded shard, shared bytes): bytes per widget",
                "view (decoded path, a kube backend's): bytes per widget"):
        assert re.search(rf"^\| {re.escape(row)} +\| +-?{number} B \| -?{number}x the JSON", out, re.M), out
    assert re.search(rf"^\| list body / orjson.dumps +\| +{number}x", out, re.M), out
    assert re.search(r"^command: python3 benchmarks/memory_bench\.py --clusters 3", out, re.M), out


WRITE_CPU = Path(__file__).resolve().parent.parent / "benchmarks" / "write_cpu.py"


def test_write_cpu_benchmark_runs_and_reports() -> None:
    """`write_cpu.py` on 20 PATCHes: the server CPU per write row and its command."""
    out = _run_script(WRITE_CPU, ["--patches", "20", "--runs", "2"], 100)
    assert re.search(r"^\| server CPU per merge PATCH, min / median of 2 runs \| \d+ / \d+ us \| runs \d+, \d+ us; 10 PATCHes each", out, re.M), out
    assert re.search(r"^command: python3 benchmarks/write_cpu\.py --patches 20 --runs 2$", out, re.M), out


def _command_lines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass  # gone meanwhile
    return lines


# -- `python -m benchmarks run --quick` through a kubeconfig: real TLS and a bearer token ----------

HARNESS_ROWS = [
    "virtual workspace",
    "(a) wildcard LIST p50 / p90",
    "(d) watch-list to initial-events-end p50 / p90",
    "(b, c) writes",
    "(c) write round trip, create p50 / p99",
    "(c) write round trip, patch p50 / p99",
    "(b) write response → watch event p50 / p99",
    "(b) write sent → watch event p50 / p99",
    "(b) delivered",
    "load average (1 min), start / end",
    "server RSS, start / end / peak",
    "server CPU time during the run",
]


@pytest.mark.timeout(120)
def test_quick_harness_measures_vwproxy_through_its_admin_kubeconfig(tmp_path: Path) -> None:
    """`vwproxy serve` (HTTPS, its own CA, the admin token), measured as a real kcp would be:
    the endpoint slice read through the kubeconfig's server, then the four measurements, the
    Markdown/JSON files (and plots when matplotlib is installed), and `compare` of two runs."""
    data_dir = tmp_path / "data"
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen([sys.executable, "-m", "vwproxy.cli", "serve", "--data-dir", str(data_dir), "--port", str(port), "--log-level", "warning"],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env(), cwd=tmp_path)
    try:
        kubeconfig = data_dir / "admin.kubeconfig"
        eventually(lambda: _slice_published(port, data_dir), "the endpoint slice and the example's widgets in its view", timeout=30)
        out_dir = tmp_path / "results"
        harness = [sys.executable, "-m", "benchmarks", "run", "--kubeconfig", str(kubeconfig), "--endpointslice-workspace", "root:provider",
                   "--endpointslice", "widgets", "--resource", "example.dev/v1alpha1/widgets", "--write-cluster", "auto", "--quick", "--out", str(out_dir),
                   "--server-pid", str(serve.pid)]
        runs = []
        for label in ("first", "second"):
            proc = subprocess.run([*harness, "--label", label], cwd=BENCH.parent.parent, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=child_env())
            out = proc.stdout
            assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{proc.stderr}"
            runs.append(out)
        out = runs[0]
        for row in HARNESS_ROWS:
            assert re.search(rf"^\| {re.escape(row)} \|", out, re.M), f"no table row {row!r} in:\n{out}"
        assert re.search(rf"^\| virtual workspace \| https://127\.0\.0\.1:{port}/services/apiexport/\w+/widgets \|", out, re.M), out
        assert re.search(r"^\| \(a\) wildcard LIST p50 / p90 \| [\d.]+ / [\d.]+ ms \| \d+ runs, 5 items", out, re.M), out  # the example's widgets
        assert re.search(r"^\| \(d\) watch-list to initial-events-end p50 / p90 \| [\d.]+ / [\d.]+ ms \| \d+ runs, 5 initial ADDED", out, re.M), out
        assert re.search(r"^\| \(b, c\) writes \| [\d,]+ in 3 clusters \|", out, re.M), out  # the three consumers of root:provider's export
        assert re.search(r"^\| \(b\) delivered \| (\d+)/\1 OK \| duplicates 0", out, re.M), out
        assert re.search(r"^\| server RSS, start / end / peak \| [\d.]+ / [\d.]+ / [\d.]+ MiB \| pid \d+", out, re.M), out
        assert "result: OK" in out
        for name in ("first.md", "first.json"):
            assert (out_dir / name).stat().st_size > 0, name
        assert "| (b) delivered |" in (out_dir / "first.md").read_text()
        if importlib.util.find_spec("matplotlib"):
            for name in ("first-cdf.png", "first-hist.png"):
                assert (out_dir / name).read_bytes().startswith(b"\x89PNG"), name
        compared = subprocess.run([sys.executable, "-m", "benchmarks", "compare", str(out_dir / "first.json"), str(out_dir / "second.json"), "--out", str(out_dir)],
                                  cwd=BENCH.parent.parent, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env=child_env())
        assert compared.returncode == 0, compared.stderr
        assert re.search(r"^\| list p50 ms \| [\d.,]+ \| [\d.,]+ \| [\d.]+x \|", compared.stdout, re.M), compared.stdout
        assert re.search(r"^\| watch delay p99 ms \|", compared.stdout, re.M), compared.stdout
        assert re.search(r"^\| server RSS MiB \| [\d.,]+ \| [\d.,]+ \|", compared.stdout, re.M), compared.stdout
        if importlib.util.find_spec("matplotlib"):
            assert (out_dir / "compare-first-second-cdf.png").read_bytes().startswith(b"\x89PNG")
        # The harness deleted what it wrote: only the example's widgets are left.
        with _admin_client(port, data_dir) as client:
            widgets = client.get("/clusters/*/apis/example.dev/v1alpha1/widgets").json()["items"]
        assert not [w for w in widgets if "vwbench-run" in (w["metadata"].get("labels") or {})]
    finally:
        stop_child(serve)
        log.close()


def _admin_client(port: int, data_dir: Path) -> httpx.Client:
    token = (data_dir / "tokens.csv").read_text().splitlines()[0].split(",")[0]
    return httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=str(data_dir / "ca.crt")),
                        headers={"Authorization": f"Bearer {token}"}, timeout=5)


def _slice_published(port: int, data_dir: Path) -> bool:
    """The server answers, and root:provider's endpoint slice has its URL and the consumers' widgets are in the view."""
    if not (data_dir / "admin.kubeconfig").exists() or not (data_dir / "tokens.csv").exists():
        return False
    try:
        with _admin_client(port, data_dir) as client:
            r = client.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets")
            endpoints = (r.json().get("status") or {}).get("endpoints") if r.status_code == 200 else None
            if not endpoints:
                return False
            listed = client.get(f"{endpoints[0]['url']}/clusters/*/apis/example.dev/v1alpha1/widgets")
            return listed.status_code == 200 and len(listed.json()["items"]) == 5
    except (httpx.TransportError, ValueError):
        return False


def test_harness_presents_the_kubeconfigs_client_certificate(tmp_path: Path) -> None:
    """A kubeconfig with a CA and a client certificate (inline data), against a server that requires
    one: the harness's session gets through; with the other context (no certificate) it does not."""
    import asyncio
    import base64

    import aiohttp

    from benchmarks.vw_target import load_credentials, open_session
    from test_upstream import CA_CRT, CLIENT_CRT, CLIENT_KEY, TLSServer, kubeconfig

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    with TLSServer(tmp_path) as server:
        user = f"client-certificate-data: {b64(CLIENT_CRT)}\n    client-key-data: {b64(CLIENT_KEY)}"
        text = kubeconfig(user_a=user, cluster_a_extra=f"    certificate-authority-data: {b64(CA_CRT)}").replace("https://127.0.0.1:6443", server.url)
        (tmp_path / "kube").mkdir()
        (tmp_path / "kube" / "kubeconfig").write_text(text.replace("server: http://127.0.0.1:7000\n    insecure-skip-tls-verify: true",
                                                          f"server: {server.url}\n    certificate-authority-data: {b64(CA_CRT)}"))
        (tmp_path / "tokens").mkdir()
        (tmp_path / "tokens" / "b").write_text("token-b\n")  # kind-b's tokenFile, relative to the kubeconfig

        async def get_api(context: str) -> int:
            async with open_session(load_credentials(tmp_path / "kube" / "kubeconfig", context)) as session, session.get(f"{server.url}/api") as r:
                return r.status

        assert asyncio.run(get_api("")) == 200  # the current context: kind-a, with the certificate
        with pytest.raises(aiohttp.ClientError):
            asyncio.run(get_api("kind-b"))  # a token, no certificate: the TLS handshake is refused


def test_compare_gives_no_ratio_of_signed_delays_and_puts_far_apart_runs_on_a_log_axis(tmp_path: Path) -> None:
    """kcp sends most watch events before the write's response: the delay after the response is
    negative at the median, and a ratio of it to vwproxy's positive one means nothing. Its lists
    take seconds where vwproxy's take milliseconds: the overlaid plots need a log axis."""
    from benchmarks.vw_report import Run, _log_axis, compare, plot_series

    def run(label: str, list_ms: float, delay_ms: float) -> Run:
        r = Run(label=label, when="now", command="", vw_url="https://x", resource="example.dev/v1alpha1/widgets")
        r.add_latency("(a) wildcard LIST", "list_seconds", [list_ms / 1000 * f for f in (0.9, 1.0, 1.3)])
        r.add_latency("(b) write response → watch event", "watch_delay_seconds", [delay_ms / 1000 * f for f in (1.0, 1.0, 3.0)], high=0.99)
        r.metrics["list items"] = 10
        return r

    kcp, vwp = run("kcp", 900.0, -0.2), run("vwproxy", 20.0, 0.05)
    table = compare(kcp, vwp)
    assert re.search(r"^\| list p50 ms \| 900\.00 \| 20\.00 \| 0\.02x \|", table, re.M), table
    assert re.search(r"^\| watch delay p50 ms \| -0\.20 \| 0\.05 \| n/a \|", table, re.M), table
    assert _log_axis([[810.0, 900.0, 1170.0], [18.0, 20.0, 26.0]])
    assert not _log_axis([[18.0, 20.0], [19.0, 25.0]])  # close together: linear
    assert not _log_axis([[-0.2, 0.1], [0.05, 0.1]])  # a negative value: linear
    if importlib.util.find_spec("matplotlib"):
        plots = plot_series([kcp, vwp], tmp_path, "cmp")
        assert isinstance(plots, list) and all(p.read_bytes().startswith(b"\x89PNG") for p in plots)


@pytest.mark.timeout(120)
def test_kcp_setup_builds_the_topology_through_a_kubeconfig_and_is_idempotent(tmp_path: Path) -> None:
    """`python -m benchmarks.kcp_setup` against `vwproxy serve` on an empty config folder (kcp's API,
    HTTPS and the admin token, as on a real kcp): the provider's export, N workspaces bound, M widgets
    each, the endpoint slice's VW listing them all; a second run creates nothing."""
    with _serve_on_an_empty_config(tmp_path) as (_, port, data_dir):
        setup = [sys.executable, "-m", "benchmarks.kcp_setup", "--kubeconfig", str(data_dir / "admin.kubeconfig"), "--workspaces", "2", "--widgets", "3"]
        outs = []
        for _ in range(2):
            proc = subprocess.run(setup, cwd=BENCH.parent.parent, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL, env=child_env())
            assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            outs.append(proc.stdout)
        assert re.search(rf"virtual workspace: https://127\.0\.0\.1:{port}/services/apiexport/\w+/widgets$", outs[0], re.M), outs[0]
        assert "all 6 widgets in the VW's list" in outs[0], outs[0]
        assert "measure it with: python -m benchmarks run --kubeconfig" in outs[0], outs[0]
        assert re.search(r"2 x 3 widgets: .*\(0 created, ", outs[1]), outs[1]  # the second run found everything in place
        with _admin_client(port, data_dir) as client:
            bindings = client.get("/clusters/*/apis/apis.kcp.io/v1alpha2/apibindings").json()["items"]
            widgets = client.get("/clusters/*/apis/example.dev/v1alpha1/widgets").json()["items"]
        assert len([b for b in bindings if b["metadata"]["name"] == "widgets"]) == 2
        assert len(widgets) == 6


@contextlib.contextmanager
def _serve_on_an_empty_config(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`vwproxy serve` (HTTPS, its CA, the admin token) on an empty config folder, up and
    answering: (the process, its port, its data dir); stopped on the way out."""
    data_dir, empty = tmp_path / "data", tmp_path / "empty"
    empty.mkdir()
    port = free_port()
    with (tmp_path / "serve.log").open("wb") as log:
        serve = subprocess.Popen([sys.executable, "-m", "vwproxy.cli", "serve", "--data-dir", str(data_dir), "--port", str(port), "--config", str(empty),
                                  "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env(), cwd=tmp_path)
        try:
            eventually(lambda: (data_dir / "admin.kubeconfig").exists() and (data_dir / "tokens.csv").exists() and _answers(port, data_dir), "serve up",
                       timeout=30)
            yield serve, port, data_dir
        finally:
            stop_child(serve)


def _answers(port: int, data_dir: Path) -> bool:
    try:
        with _admin_client(port, data_dir) as client:
            return client.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces").status_code == 200
    except (httpx.TransportError, ValueError, IndexError):
        return False


FANOUT_BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "fanout_bench.py"
# The delivered row of a run with 6 watchers (every 2nd checked) and 40 changes: all complete, in order.
SMALL_RUN_DELIVERED = re.compile(r"^\| delivered +\| 6/6 watchers complete OK +\| 240 events; 3/3 checked event by event \(every 2nd: missing 0, "
                                 r"duplicates 0, unexpected 0, out of RV order 0\), 3/3 others received the same bytes", re.M)


@pytest.mark.timeout(150)
def test_fanout_benchmark_delivers_every_change_to_every_watcher() -> None:
    """`fanout_bench.py` with tiny numbers: every watcher got every change once, in RV order (half of
    them checked event by event, the others by the same bytes); no timing is judged."""
    args = ["--watchers", "6", "--rate", "40", "--seconds", "1", "--client-procs", "2", "--workspaces", "2", "--objects", "3", "--sample-every", "2"]
    out = _run_script(FANOUT_BENCH, args, 130)
    table = [line for line in out.splitlines() if line.startswith("| ")]
    for row in ("watchers opened", "changes committed", "delivered", "delivery latency p50 / p99 / max", "concurrent GET p50 / p99 / max",
                "server CPU", "server RSS", "client CPU", "load average"):
        assert any(line.startswith(f"| {row} ") for line in table), f"no table row {row!r} in:\n{out}"
    assert re.search(r"^\| changes committed +\| 40 ", out, re.M), out
    assert SMALL_RUN_DELIVERED.search(out), out
    assert re.search(r"^command: .*fanout_bench\.py --watchers 6 ", out, re.M), out
    assert "result: OK" in out
    folder = re.search(r"^server: .* --config (\S*/vwproxy-fanout-[^/\s]+)/", out, re.M)
    assert folder, out
    leftover = [cmd for cmd in _command_lines() if folder.group(1) in cmd or "fanout_bench.py --client-role" in cmd]
    assert not leftover, f"benchmark processes left running: {leftover}"


@pytest.mark.timeout(400)
def test_fanout_benchmark_with_the_go_watcher_checks_the_same() -> None:
    """`fanout_bench.py --client go --writer go`: the Go binary (built from benchmarks/go/fanoutwatch,
    standard library only) opens the watches and checks every change once and in order, as the
    Python watcher does, and in its writer role makes the changes and the GETs."""
    args = ["--watchers", "6", "--rate", "40", "--seconds", "1", "--client", "go", "--writer", "go", "--client-procs", "2", "--workspaces", "2",
            "--objects", "3", "--sample-every", "2", "--in-process", "0"]
    out = _run_script(FANOUT_BENCH, args, 380)
    assert re.search(r"^client: +watches: the Go watcher \(fanoutwatch-[0-9a-f]{16}, go[0-9.]+\), 2 processes; writers and GETs: the Go writer", out, re.M), out
    assert re.search(r"^\| changes committed +\| 40 +\| .* [0-9]+/s done over [0-9.]+ s; write p50 [0-9.]+ ms", out, re.M), out
    assert re.search(r"^\| concurrent GET p50 / p99 / max +\| [0-9.]+ / [0-9.]+ / [0-9.]+ ms +\| [1-9][0-9]* GETs", out, re.M), out
    assert SMALL_RUN_DELIVERED.search(out), out
    assert re.search(r"^\| delivery latency p50 / p99 / max +\| [0-9.]+ / [0-9.]+ / [0-9.]+ ms +\| .* over 120 \(event, checked watcher\) pairs", out, re.M), out
    assert "result: OK" in out
    leftover = [cmd for cmd in _command_lines() if "fanoutwatch-" in cmd]
    assert not leftover, f"Go watchers left running: {leftover}"


@pytest.mark.timeout(150)
def test_fanout_benchmark_through_a_proxy_shard_writes_to_the_control_plane_and_watches_the_shard() -> None:
    """`fanout_bench.py --proxy-shard`: a control plane serving no VW and a proxy shard joined to it;
    the watches go to the shard's URL from the endpoint slice, the changes to the control plane, and
    every change reaches every watcher once and in order; both processes are measured and stopped."""
    args = ["--watchers", "6", "--rate", "40", "--seconds", "1", "--client-procs", "2", "--workspaces", "2", "--objects", "3", "--sample-every", "2",
            "--in-process", "0", "--proxy-shard"]
    out = _run_script(FANOUT_BENCH, args, 130)
    servers = re.findall(r"^server: +(.*)$", out, re.M)
    assert len(servers) == 2, out
    control, shard = servers
    assert "--partition none" in control and "--join" not in control, control
    plane_port = re.search(r"--port (\d+)", control)
    shard_port = re.search(r"--port (\d+)", shard)
    assert plane_port and shard_port, servers
    assert f"--join http://127.0.0.1:{plane_port.group(1)} " in shard and "--partition all" in shard, shard
    watches = re.search(r"^watches: (\S+)$", out, re.M)
    assert watches and watches.group(1).startswith(f"http://127.0.0.1:{shard_port.group(1)}/services/apiexport/"), out
    assert SMALL_RUN_DELIVERED.search(out), out
    for row in ("control plane CPU", "proxy shard CPU"):
        assert re.search(rf"^\| {row} +\| [0-9.]+ s ", out, re.M), out
    assert re.search(r"^\| server RSS +\| control plane [0-9.]+ MiB \+ proxy shard [0-9.]+ MiB ", out, re.M), out
    assert "result: OK" in out
    folder = re.search(r"--config (\S*/vwproxy-fanout-[^/\s]+)/", control)
    assert folder, control
    leftover = [cmd for cmd in _command_lines() if folder.group(1) in cmd or "fanout_bench.py --client-role" in cmd]
    assert not leftover, f"benchmark processes left running: {leftover}"


@pytest.mark.timeout(480)
def test_fanout_benchmark_measures_a_server_through_its_kubeconfig(tmp_path: Path) -> None:
    """`fanout_bench.py --kubeconfig`: it starts no server; `vwproxy serve` (HTTPS, its CA, the admin
    token), set up by kcp_setup as a real kcp would be, gets the watches, changes and GETs from the
    Go and from the Python clients, each presenting the kubeconfig's credentials, and every change
    reaches every watcher once and in order; the server is read through --server-pid, never
    stopped. Too few workspaces set up, or a token the server does not know, is one line."""
    small = ["--watchers", "6", "--rate", "40", "--seconds", "1", "--client-procs", "2", "--workspaces", "2", "--objects", "3", "--sample-every", "2"]
    with _serve_on_an_empty_config(tmp_path) as (serve, port, data_dir):
        kubeconfig = data_dir / "admin.kubeconfig"
        setup = subprocess.run([sys.executable, "-m", "benchmarks.kcp_setup", "--kubeconfig", str(kubeconfig), "--workspaces", "2", "--widgets", "3"],
                               cwd=BENCH.parent.parent, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL, env=child_env())
        assert setup.returncode == 0, setup.stdout + setup.stderr
        for clients in (["--client", "go", "--writer", "go", "--http2"], []):
            out = _run_script(FANOUT_BENCH, ["--kubeconfig", str(kubeconfig), "--server-pid", str(serve.pid), *small, *clients], 380)
            if "--http2" in clients:  # offered, as client-go offers it; vwproxy (uvicorn) answers HTTP/1.1
                assert re.search(r"^\| watchers opened +\| 6 +\| in [0-9.]+ s by 2 client processes \(6 over HTTP/1\.1\)", out, re.M), out
            assert re.search(rf"^server: +https://127\.0\.0\.1:{port} \(--kubeconfig {re.escape(str(kubeconfig))}\), pid {serve.pid}$", out, re.M), out
            assert re.search(rf"^watches: https://127\.0\.0\.1:{port}/services/apiexport/\w+/widgets/clusters/\*/apis/example\.dev/v1alpha1/widgets$", out, re.M), out
            assert SMALL_RUN_DELIVERED.search(out), out
            assert re.search(r"^\| concurrent GET p50 / p99 / max +\| [0-9.]+ / [0-9.]+ / [0-9.]+ ms +\| [1-9][0-9]* GETs", out, re.M), out
            assert re.search(r"^\| server CPU +\| [0-9.]+ s +\| .* its threads waited", out, re.M), out
            assert re.search(r"^\| server RSS +\| [0-9.]+ MiB ", out, re.M), out
            assert "in process" not in out and "result: OK" in out, out
            assert serve.poll() is None, "the benchmark stopped a server it did not start"
        leftover = [cmd for cmd in _command_lines() if "fanoutwatch-" in cmd or "fanout_bench.py --client-role" in cmd]
        assert not leftover, f"benchmark clients left running: {leftover}"

        def failing(args: list[str]) -> str:
            proc = subprocess.run([sys.executable, str(FANOUT_BENCH), *args], cwd=BENCH.parent.parent, capture_output=True, text=True, timeout=120,
                                  stdin=subprocess.DEVNULL)
            assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            assert "Traceback" not in proc.stderr, proc.stderr
            return proc.stderr.strip()

        said = failing(["--kubeconfig", str(kubeconfig), "--watchers", "2", "--workspaces", "3", "--objects", "3"])
        assert said == (f"benchmark failed: the VW list has 2 clusters holding widgets w-00000…w-00002 in namespace default, --workspaces asks 3: "
                        f"run python -m benchmarks.kcp_setup --kubeconfig {kubeconfig} -n 3 -m 3 first"), said
        stranger = tmp_path / "stranger.kubeconfig"
        text = kubeconfig.read_text()
        token = re.search(r"token: (\S+)", text)
        assert token, text
        stranger.write_text(text.replace(token.group(1), "not-a-token-this-server-knows"))
        for clients in (["--client", "go", "--writer", "go"], []):
            said = failing(["--kubeconfig", str(stranger), *small, *clients])
            assert said.startswith("benchmark failed: GET https://127.0.0.1:") and "HTTP 401" in said, said


def test_eventually_waits_while_a_check_says_not_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmarks' bounded poll: a check that says what it saw (`NotYet`) is not done, though a
    string is true; the wait ends with what it returns when done, or names the last `NotYet`."""
    monkeypatch.syspath_prepend(str(FANOUT_BENCH.parent))
    from vw_bench import BenchError, NotYet, eventually

    polls: list[int] = []

    async def check() -> object:
        polls.append(1)
        return len(polls) >= 3 or NotYet(f"{len(polls)}/3 polls")

    assert asyncio.run(eventually(check, "three polls", 5, 0.001)) is True
    assert len(polls) == 3

    async def never() -> object:
        return NotYet("0/10 Ready")

    with pytest.raises(BenchError, match=r"waiting for ten; last saw 0/10 Ready"):
        asyncio.run(eventually(never, "ten", 0.05, 0.01))


@pytest.mark.parametrize(("value", "said"), [
    ("x", "--server-cpus 'x': a CPU list such as 1 or 0,2 or 2-3"),
    ("3-1", "--server-cpus '3-1': a CPU list such as 1 or 0,2 or 2-3"),
    ("4096", "--server-cpus '4096': a CPU list such as 1 or 0,2 or 2-3"),
    ("99", "--server-cpus [99]: must be some, not all, of the CPUs this process may use"),
])
def test_fanout_benchmark_refuses_a_bad_cpu_list_in_one_line(value: str, said: str) -> None:
    """`--server-cpus` is checked before anything starts: one usage line naming the option, exit 2."""
    proc = subprocess.run([sys.executable, str(FANOUT_BENCH), "--server-cpus", value, "--quick"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc
    assert said in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout, proc


@pytest.mark.parametrize(("args", "said"), [
    (["--http2", "--client", "go"], "--http2 needs --kubeconfig (an HTTPS server) and --client go"),
    (["--server-pid", "1"], "--server-pid and --context go with --kubeconfig"),
    (["--kubeconfig", "/nonexistent/kubeconfig"], "--kubeconfig /nonexistent/kubeconfig: no such file"),
    (["--kubeconfig", "KUBECONFIG", "--proxy-shard"], "--proxy-shard is for the server this script starts"),
    (["--kubeconfig", "KUBECONFIG", "--in-process", "10"], "--in-process measures vwproxy's view in this process"),
    (["--kubeconfig", "KUBECONFIG", "--server-pid", "999999999"], "--server-pid 999999999: no such process on this machine"),
])
def test_fanout_benchmark_refuses_options_that_do_not_go_together_in_one_line(tmp_path: Path, args: list[str], said: str) -> None:
    """The options of `--kubeconfig` (a server started elsewhere) and those of a server this script
    starts are checked before anything starts: one usage line, exit 2."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
                          "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n")
    args = [str(kubeconfig) if a == "KUBECONFIG" else a for a in args]
    proc = subprocess.run([sys.executable, str(FANOUT_BENCH), *args, "--quick"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc
    assert said in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout, proc


FANOUT_FLOOR = Path(__file__).resolve().parent.parent / "benchmarks" / "fanout_floor.py"


def test_fanout_floor_reads_every_byte_and_reports_its_rows() -> None:
    """`fanout_floor.py` with tiny numbers: every reader got every byte; the rows and the command."""
    args = ["--watchers", "6", "--rate", "50", "--interval-ms", "20", "--seconds", "0.5", "--client-procs", "2"]
    out = _run_script(FANOUT_FLOOR, args, 100)
    assert re.search(r"^\| load \| 6 connections, 50 changes/s of 700 B \| one write per connection every 20 ms \(300 writes/s, 1 frames each\)", out, re.M), out
    for row in ("writer CPU", "reader CPU"):
        assert re.search(rf"^\| {row} \| \d+\.\d\d core \|", out, re.M), out
    assert re.search(r"^\| intervals not kept \| \d+ of 25 \|", out, re.M), out
    assert re.search(r"^\| every byte read \| yes \|", out, re.M), out
    assert re.search(r"^\| the proxy's watch stream, per write \| \d+\.\d us of CPU \|", out, re.M), out
    assert re.search(r"^\| the same through ASGI's send \| \d+\.\d us of CPU \|", out, re.M), out
    assert re.search(r"^command: python3 benchmarks/fanout_floor\.py --watchers 6 ", out, re.M), out


PACK_BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "pack_bench.py"


def test_pack_benchmark_runs_and_reports() -> None:
    """`pack_bench.py` on 30 logical clusters: both packings' rows (each checked to unpack to the
    same bytes inside the script), the load row and the command."""
    out = _run_script(PACK_BENCH, ["--clusters", "30", "--runs", "1"], 100)
    for name in ("zstd, dictionary digested once", "deflate, preset dictionary"):
        assert re.search(rf"^\| {name} \| \d+\.\d us \| \d+\.\d us \| \d+ B \(0\.\d\dx its \d+-byte JSON\) \|$", out, re.M), out
    assert re.search(r"^\| `Shard` loading the data dir again \(31 logical clusters and their namespaces\), median of 1 \| \d+ ms \|$", out, re.M), out
    assert re.search(r"^command: python3 benchmarks/pack_bench\.py --clusters 30 --runs 1$", out, re.M), out
