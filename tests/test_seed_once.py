"""The config folder seeds a new data dir once (issue 12): a restart keeps what users deleted
or changed; only `--reseed` applies the folder again."""

from __future__ import annotations

from pathlib import Path

import pytest

from vwproxy.testing.proxy import RunningProxy

pytestmark = pytest.mark.timeout(60)

WIDGETS = "/apis/example.dev/v1alpha1/namespaces/default/widgets"
EXPORTS = "/apis/apis.kcp.io/v1alpha2/apiexports"


def test_restart_keeps_users_changes_and_reseed_reapplies(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with RunningProxy(data) as proxy, proxy.client(timeout=10) as front:
        assert proxy.settle()
        assert front.delete(f"/clusters/root:consumer-1{WIDGETS}/red").status_code == 200
        export = front.get(f"/clusters/root:provider{EXPORTS}/widgets").json()
        export["metadata"].setdefault("labels", {})["edited"] = "by-user"
        assert front.put(f"/clusters/root:provider{EXPORTS}/widgets", json=export).status_code == 200
    with RunningProxy(data) as proxy, proxy.client(timeout=10) as front:
        assert proxy.settle()
        assert front.get(f"/clusters/root:consumer-1{WIDGETS}/red").status_code == 404
        assert front.get(f"/clusters/root:consumer-1{WIDGETS}/blue").status_code == 200
        assert front.get(f"/clusters/root:provider{EXPORTS}/widgets").json()["metadata"]["labels"]["edited"] == "by-user"
    with RunningProxy(data, reseed=True) as proxy, proxy.client(timeout=10) as front:
        assert proxy.settle()
        assert front.get(f"/clusters/root:consumer-1{WIDGETS}/red").status_code == 200
