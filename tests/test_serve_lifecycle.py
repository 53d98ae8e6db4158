"""`vwproxy serve` and `vwproxy shard` from start to stop as a user sees them (issue 12): what
the start prints, one request log line per client request, a clean stop with open watches and
a write in flight, one-line errors for a bad data dir, one process per data dir."""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support import eventually
from test_serve_cli import Serve
from vwproxy import __version__
from vwproxy.cli import main
from vwproxy.testing.kubectl import kubectl_binary
from vwproxy.testing.process import ShardProcess, child_env, free_port

pytestmark = pytest.mark.timeout(60)

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
# A clean stop is quick: watches end at once, then in-flight writes finish.
STOP_SECONDS = 4.0


def vwproxy(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vwproxy.cli", *args], capture_output=True, text=True, env=child_env(), timeout=timeout)


def test_version_and_serve_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--version"], ["serve", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"vwproxy {__version__}\n")
    assert "embedded shard of logical clusters" in printed and "examples:" in printed and "--reseed" in printed


def _watch(proc: Serve, url: str, out: dict[str, object], opened: threading.Event) -> None:
    try:
        with proc.client(timeout=30) as client, client.stream("GET", url, params={"watch": "1", "allowWatchBookmarks": "true"}) as resp:
            opened.set()  # the response head arrived: the watch is registered
            chunks = list(resp.iter_bytes())
            out["body"] = b"".join(chunks)
    except Exception as exc:  # what a cut stream raises (RemoteProtocolError: incomplete chunked read)
        out["error"] = exc
    opened.set()


def test_start_banner_request_log_and_clean_stop_with_watches_and_a_write_in_flight(tmp_path: Path) -> None:
    proc = Serve(tmp_path).wait_ready()
    try:
        stderr = proc.stderr
        assert f"front: {proc.url}" in stderr
        vw_lines = [line for line in stderr.splitlines() if "virtual workspace (endpoint slice root:provider/widgets): " in line]
        assert vw_lines and vw_lines[0].split(": ")[-1].startswith(f"{proc.url}/services/apiexport/")
        assert f"data dir: {(tmp_path / 'data').resolve()}" in stderr
        kubectl_line = next(line for line in stderr.splitlines() if "try: kubectl " in line).split("try: ", 1)[1]
        listed = subprocess.run([str(kubectl_binary()), *shlex.split(kubectl_line)[1:]], capture_output=True, text=True, env=child_env(), timeout=30)
        assert listed.returncode == 0 and "consumer-1" in listed.stdout, listed.stderr

        # A write through the VW reaches the embedded shard in-process: one log line, the VW's.
        vw = vw_lines[0].split(": ")[-1]
        with proc.client(timeout=10) as front:
            cluster = front.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/consumer-1").json()["spec"]["cluster"]
            widgets = f"{vw}/clusters/{cluster}/apis/example.dev/v1alpha1/namespaces/default/widgets"
            eventually(lambda: front.get(widgets).status_code == 200, "consumer-1 engaged")
            created = front.post(widgets, json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "logged"}, "spec": {}})
            assert created.status_code == 201, created.text
        def requests() -> list[str]:
            return [line for line in proc.stderr.splitlines() if " vwproxy.requests: " in line]

        eventually(lambda: any(line.endswith("ms") and f"POST {widgets.removeprefix(proc.url)} 201 " in line for line in requests()), "the POST's log line")
        assert not [line for line in requests() if f"/clusters/{cluster}/apis/example.dev" in line and "/services/" not in line], requests()

        # Open watches (the shard and the VW) and a POST whose body is still arriving.
        watches: list[tuple[dict[str, object], threading.Event]] = []
        for url in (f"{proc.url}/clusters/root{CONFIGMAPS}", widgets):
            out: dict[str, object] = {}
            opened = threading.Event()
            threading.Thread(target=_watch, args=(proc, url, out, opened), daemon=True).start()
            watches.append((out, opened))
        for _, opened in watches:
            assert opened.wait(10)
        body = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"in-flight"},"data":{"a":"b"}}'
        trust = proc.verify
        assert not isinstance(trust, bool)
        writer = trust.wrap_socket(socket.create_connection(("127.0.0.1", proc.port)), server_hostname="127.0.0.1")
        head = b"POST /clusters/root" + CONFIGMAPS.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        writer.sendall(head + b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" % (str(proc.token).encode(), len(body)) + body[:20])
        time.sleep(0.3)
        stopped_at = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        writer.sendall(body[20:])
        writer.settimeout(STOP_SECONDS)
        answer = writer.recv(65536)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
        assert proc.proc.wait(STOP_SECONDS) == 0, proc.stderr
        assert time.monotonic() - stopped_at < STOP_SECONDS
        for out, _ in watches:
            eventually(lambda: "body" in out or "error" in out, "the watch stream to end", STOP_SECONDS)
            assert "error" not in out, out.get("error")
        stderr = proc.stderr
        assert "Traceback" not in stderr and "CancelledError" not in stderr and "Cancel " not in stderr, stderr
    finally:
        proc.stop()


def test_a_second_process_on_one_data_dir_exits_naming_the_dir_and_the_holder(tmp_path: Path) -> None:
    data = tmp_path / "shared"
    with ShardProcess(data) as first:
        assert first.proc is not None
        second = vwproxy("serve", "--data-dir", str(data), "--port", str(free_port()))
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert lines == [f"vwproxy: data dir {data} is in use by another vwproxy process (pid {first.proc.pid})"], second.stderr


def test_bad_data_dirs_are_one_line_without_traceback(tmp_path: Path) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a directory")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "shard.db").write_bytes(b"this is not an SQLite database" * 100)
    cases = {
        str(in_the_way): "a file is in the way",
        str(in_the_way / "below"): "cannot create it",
        str(broken): "cannot open the shard database",
    }
    for data_dir, why in cases.items():
        with pytest.raises(SystemExit) as done:
            main(["shard", "--data-dir", data_dir, "--port", str(free_port())])
        message = str(done.value.code)
        assert message.startswith("vwproxy: data dir" if "file" in why or "create" in why else "vwproxy: cannot open") or why in message
        assert why in message and "\n" not in message, message
