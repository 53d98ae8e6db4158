"""One log line per client request; another vwproxy's heartbeat probes are not traffic."""

from __future__ import annotations

import logging

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from vwproxy.server.requestlog import RequestLog


def test_requests_are_logged_but_vwproxy_probes_are_not(caplog: pytest.LogCaptureFixture) -> None:
    app = RequestLog(Starlette(routes=[Route("/x", lambda request: PlainTextResponse("ok"))]))
    with TestClient(app) as client, caplog.at_level(logging.INFO, logger="vwproxy.requests"):
        client.get("/x?limit=1", headers={"user-agent": "vwproxy/1.0"})   # a heartbeat probe
        client.get("/x?limit=1", headers={"user-agent": "kubectl/v1.37"})  # a client's own one-item list
        client.get("/x?limit=500", headers={"user-agent": "vwproxy/1.0"})  # a reflector's list page
    lines = [r.getMessage() for r in caplog.records if r.name == "vwproxy.requests"]
    assert [line.split(" ")[1] for line in lines] == ["/x?limit=1", "/x?limit=500"], lines
