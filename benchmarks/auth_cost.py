"""What authentication and authorization cost per request: the same small VW wildcard list
(the example's 5 widgets) through `vwproxy serve --insecure-open` (plain HTTP, no checks) and
through the default `serve` (HTTPS, the admin's bearer token, the VW's authorizer chain), 300
requests each over one keep-alive connection, medians and p99 in one run.

    python3 benchmarks/auth_cost.py
"""

import pathlib
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
def run(open_mode):
    d = pathlib.Path(tempfile.mkdtemp())
    port = 27000 + (1 if open_mode else 2)  # fixed loopback ports: this is a manual benchmark
    args = [sys.executable, "-m", "vwproxy.cli", "serve", "--data-dir", str(d), "--port", str(port), "--log-level", "warning"] + (["--insecure-open"] if open_mode else [])
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        scheme = "http" if open_mode else "https"
        url = f"{scheme}://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(url + "/readyz", verify=False, timeout=1); break
            except Exception: time.sleep(0.05)
        time.sleep(1)
        headers = {} if open_mode else {"Authorization": "Bearer " + (d / "tokens.csv").read_text().split(",")[0]}
        verify = True if open_mode else ssl.create_default_context(cafile=str(d / "ca.crt"))
        with httpx.Client(base_url=url, headers=headers, verify=verify, timeout=10) as c:
            vw = c.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()["status"]["endpoints"][0]["url"]
            path = f"{vw}/clusters/*/apis/example.dev/v1alpha1/widgets"
            for _ in range(20): c.get(path)
            times = []
            for _ in range(300):
                t = time.perf_counter(); r = c.get(path); times.append(time.perf_counter() - t); assert r.status_code == 200
        return statistics.median(times) * 1000, sorted(times)[int(0.99 * len(times))] * 1000
    finally:
        p.terminate(); p.wait(10)
if __name__ == "__main__":
    o = run(True)
    a = run(False)
    print(f"open (http, no auth): p50 {o[0]:.2f} ms p99 {o[1]:.2f} ms")
    print(f"secure (https + token + authz): p50 {a[0]:.2f} ms p99 {a[1]:.2f} ms; ratio p50 {a[0]/o[0]:.2f}x")
