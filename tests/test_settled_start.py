"""A start after a clean stop with the control plane settled reconciles only what may have changed
(issue 14): what is still reconciled then, and what makes a start reconcile everything again.

`ServeApp` runs in this test's own event loop on the example topology, reached through its ASGI
entry (no socket), so the external URL stays the same from one start to the next unless a test
changes it, as it does for a restarted service that keeps its address."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from vwproxy.control.manifests import load_folder
from vwproxy.control.plane import SETTLED_INPUTS_MARKER, SETTLED_MARKER, ControlPlane
from vwproxy.server.app import ServeApp
from vwproxy.store.shard import Shard
from vwproxy.testing.proxy import example_topology

pytestmark = pytest.mark.timeout(90)

URL = "https://127.0.0.1:7443"
KCP = "/apis/apis.kcp.io/v1alpha2"
CONSUMER = "/clusters/root:consumer-1"
SECRETS = f"{CONSUMER}/api/v1/namespaces/default/secrets"
PREFIX = "claimed.internal.apis.kcp.io/"

T = TypeVar("T")
Body = Callable[[ServeApp, httpx.AsyncClient], Awaitable[T]]


@pytest.fixture
def full_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per start that reconciled everything."""
    calls: list[int] = []
    original = ControlPlane.enqueue_all

    def counted(self: ControlPlane) -> None:
        calls.append(1)
        original(self)

    monkeypatch.setattr(ControlPlane, "enqueue_all", counted)
    return calls


@contextlib.asynccontextmanager
async def started(data: Path, url: str = URL, *, clean: bool = True) -> AsyncIterator[tuple[ServeApp, httpx.AsyncClient]]:
    """`ServeApp` on `data` right after `startup` (its control loop running), with a client of
    its ASGI entry; then stopped cleanly (`ServeApp.shutdown`), or as a killed process would be
    (nothing recorded, the database closed)."""
    shard = Shard(data)
    app = ServeApp(shard, url, load_folder(example_topology()), {})
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app.entry), base_url="http://proxy") as client:
            yield app, client
    finally:
        if clean:
            await app.shutdown()
        else:
            assert app._loop_task is not None
            app._loop_task.cancel()
            await asyncio.gather(app._loop_task, return_exceptions=True)
            await app.hub.aclose()
            shard.close()


def run(data: Path, body: Body[T] | None = None, *, url: str = URL, clean: bool = True) -> T | None:
    """Start on `data`, wait until the control plane is idle, run `body`, wait again, then stop
    (cleanly or as a killed process would, see `started`)."""

    async def main() -> T | None:
        result = None
        async with started(data, url, clean=clean) as (app, client):
            # A start reconciles while it serves: the body reads what the pass left.
            assert await app.control.wait_idle(30)
            if body is not None:
                result = await body(app, client)
            assert await app.control.wait_idle(30)
        return result

    return asyncio.run(main())


def markers(data: Path) -> tuple[int, int, int]:
    """(settled revision, settled inputs, current revision) as kept in the data dir."""
    shard = Shard(data)
    try:
        return shard.marker(SETTLED_MARKER), shard.marker(SETTLED_INPUTS_MARKER), shard.revision
    finally:
        shard.close()


async def bind_tools_with_accepted_claim(app: ServeApp, client: httpx.AsyncClient) -> None:
    export = {"metadata": {"name": "tools"}, "spec": {"permissionClaims": [{"group": "", "resource": "secrets", "verbs": ["*"]}]}}
    assert (await client.post(f"/clusters/root:provider{KCP}/apiexports", json=export)).status_code == 201
    binding = {"metadata": {"name": "tools"}, "spec": {
        "reference": {"export": {"path": "root:provider", "name": "tools"}},
        "permissionClaims": [{"group": "", "resource": "secrets", "verbs": ["*"], "selector": {"matchAll": True}, "state": "Accepted"}],
    }}
    assert (await client.post(f"{CONSUMER}{KCP}/apibindings", json=binding)).status_code == 201
    assert (await client.post(SECRETS, json={"metadata": {"name": "before"}})).status_code == 201


async def claim_labels(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    for _ in range(200):
        labels = (await client.get(f"{SECRETS}/{name}")).json()["metadata"].get("labels") or {}
        found = {k: v for k, v in labels.items() if k.startswith(PREFIX)}
        if found:
            return found
        await asyncio.sleep(0.02)
    return {}


def test_settled_restart_reconciles_only_what_may_have_changed(tmp_path: Path, full_passes: list[int]) -> None:
    data = tmp_path / "data"
    run(data, bind_tools_with_accepted_claim)
    settled, inputs, revision = markers(data)
    assert settled == revision and inputs != 0, "a clean stop with nothing left to do is recorded"

    async def after_restart(app: ServeApp, client: httpx.AsyncClient) -> None:
        # The claim index lives in memory: the binding with claims was reconciled at start.
        assert await claim_labels(client, "before")
        assert (await client.post(SECRETS, json={"metadata": {"name": "after"}})).status_code == 201
        assert await claim_labels(client, "after"), "a secret created after the restart is labelled"
        # The rest of the control plane works as ever: a new workspace gets ready.
        ws = {"metadata": {"name": "late"}}
        assert (await client.post("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces", json=ws)).status_code == 201
        for _ in range(200):
            got = (await client.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/late")).json()
            if (got.get("status") or {}).get("phase") == "Ready":
                break
            await asyncio.sleep(0.02)
        assert got["status"]["phase"] == "Ready" and got["spec"]["URL"] == f"{URL}/clusters/root:late"
        # The virtual workspace serves the consumers' widgets.
        endpoints = (await client.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets")).json()
        vw = endpoints["status"]["endpoints"][0]["url"].removeprefix(URL)
        listed = (await client.get(f"{vw}/clusters/*/apis/example.dev/v1alpha1/widgets")).json()
        assert listed["items"]

    full_passes.clear()
    run(data, after_restart)
    assert full_passes == [], "nothing changed since the control plane settled: no full pass"


def test_a_new_url_writes_made_meanwhile_or_an_unclean_stop_reconcile_everything(tmp_path: Path, full_passes: list[int]) -> None:
    data = tmp_path / "data"
    run(data)
    full_passes.clear()

    # Another external URL: every workspace's URL is written again.
    other = "https://127.0.0.1:8443"

    async def urls(app: ServeApp, client: httpx.AsyncClient) -> Any:
        got = (await client.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/consumer-1")).json()
        return got["spec"]["URL"]

    assert run(data, urls, url=other) == f"{other}/clusters/root:consumer-1"
    assert full_passes == [1]

    # A write while no proxy ran (a bare shard on the data dir): the revision moved on.
    shard = Shard(data)
    try:
        consumer = shard.cluster_for_path("root:consumer-1")
        assert consumer is not None
        info = shard.resolve(consumer, "", "v1", "configmaps")
        shard.create(info, consumer, "default", {"metadata": {"name": "offline"}})
    finally:
        shard.close()
    run(data, url=other)
    assert full_passes == [1, 1]

    # Killed after a write: the record of the last clean stop no longer matches the revision.
    async def write(app: ServeApp, client: httpx.AsyncClient) -> None:
        assert (await client.post(f"{CONSUMER}/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "y"}})).status_code == 201

    run(data, url=other)
    assert full_passes == [1, 1], "the clean stop before was recorded"
    run(data, write, url=other, clean=False)
    run(data, url=other)
    assert full_passes == [1, 1, 1]
    # Killed without a write: the store is as the control plane left it settled.
    run(data, url=other, clean=False)
    run(data, url=other)
    assert full_passes == [1, 1, 1]


def test_a_stop_with_work_queued_is_not_recorded(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run(data)
    settled, _, revision = markers(data)
    assert settled == revision

    async def queue_and_stop(app: ServeApp, client: httpx.AsyncClient) -> None:
        assert await app.control.wait_idle(30)
        assert (await client.post(f"{CONSUMER}/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "x"}})).status_code == 201
        app.control.enqueue(("workspace", "root", "consumer-1"))
        assert not app.control.settled
        app.control.record_settled()  # what shutdown does: with work queued it writes nothing

    asyncio.run(_queue_and_stop(data, queue_and_stop))
    settled_after, _, revision_after = markers(data)
    assert revision_after > revision and settled_after == settled, "the older record no longer matches the revision"


async def _queue_and_stop(data: Path, body: Body[None]) -> None:
    async with started(data, clean=False) as (app, client):
        await body(app, client)


def test_a_start_listens_before_the_full_pass_with_its_own_address_already_in_the_slices(tmp_path: Path) -> None:
    """The full pass runs while the process serves (as kcp's controllers resync beside its
    servers): `startup` returns with the workspaces still queued, but the endpoint slices and
    workspace types, which carry this process's address, already name the new one."""
    data = tmp_path / "data"
    run(data)
    other = "https://127.0.0.1:8443"

    async def main() -> None:
        async with started(data, other) as (app, client):
            pending = {key[0] for key in app.control._pending}
            assert "workspace" in pending and "binding" in pending, pending
            assert not pending & {"workspacetype", "export", "slice"}, pending
            endpoints = (await client.get("/clusters/root:provider/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets")).json()
            assert [e["url"].startswith(f"{other}/services/") for e in endpoints["status"]["endpoints"]] == [True]
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and "[-]control-plane: reconciling" in ready.text
            # The VW serves from the store as it is while the pass runs.
            vw = endpoints["status"]["endpoints"][0]["url"].removeprefix(other)
            assert (await client.get(f"{vw}/clusters/*/apis/example.dev/v1alpha1/widgets")).json()["items"]
            assert await app.control.wait_idle(30)
            got = (await client.get("/clusters/root/apis/tenancy.kcp.io/v1alpha1/workspaces/consumer-1")).json()
            assert got["spec"]["URL"] == f"{other}/clusters/root:consumer-1"
            assert "[+]control-plane settled" in (await client.get("/readyz")).text

    asyncio.run(main())
