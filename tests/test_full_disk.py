"""A full disk (issue 12): SQLite's "database or disk is full" is one clear log line and a
Status for the client, not a traceback; nothing half-written, and the shard keeps serving."""

from __future__ import annotations

import logging

import httpx
import pytest

from vwproxy.testing.shard import EmbeddedShard

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def test_a_full_disk_is_one_line_and_a_status(shard: EmbeddedShard, api: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    db = shard.shard._db._db  # the SQLite connection: cap its size where it is now, as a full disk would
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count={pages}")
    caplog.set_level(logging.INFO)
    r = api.post(CONFIGMAPS, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"a": "x" * 500_000}})
    assert r.status_code == 500 and r.json()["kind"] == "Status", r.text
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and "database or disk is full" in errors[0].getMessage() and errors[0].exc_info is None, [e.getMessage() for e in errors]
    assert "Traceback" not in caplog.text
    assert api.get(f"{CONFIGMAPS}/big").status_code == 404, "nothing half-written"
    assert api.get(CONFIGMAPS).status_code == 200
