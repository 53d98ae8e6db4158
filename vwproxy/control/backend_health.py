"""Whether each declared kube backend answers: probed on a timer, reported on transitions.

The reflectors only look at a backend while a view needs one of its workspaces; a workspace on a
backend with nothing bound would never notice the backend is gone. So every declared backend is
probed here, and a change of its reachability (never each probe) is logged once and handed to
`on_change`, which puts it in the conditions of the Workspaces on it. `/readyz` reads `state`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from vwproxy.kube import errors
from vwproxy.upstream.client import BackendClient

log = logging.getLogger(__name__)

# How often each backend is probed: a down backend shows in Workspace conditions and /readyz
# within about this, and a returning one clears as fast; one tiny GET per backend per second is
# nothing next to a reflector's watch.
PROBE_INTERVAL_SECONDS = 1.0
# What is probed: served by every Kubernetes API server (and under a kcp workspace URL), cheap,
# and answered only by a server that is actually up.
PROBE_PATH = "/version"

REASON_UNREACHABLE = "BackendUnreachable"
REASON_REFUSED = "BackendRefusedCredentials"
REASON_REACHABLE = "BackendReachable"


@dataclass(frozen=True)
class Reachability:
    """The last probe's verdict on one backend: reachable or not, and why in kcp's condition terms."""

    reachable: bool
    reason: str
    message: str


def verdict(name: str, status: int | None, failure: str = "") -> Reachability:
    """What a probe's outcome means: an HTTP status (None when the request itself failed)."""
    if status is None:
        return Reachability(False, REASON_UNREACHABLE, failure)
    if status in (401, 403):
        return Reachability(False, REASON_REFUSED, f"backend {name} refused vwproxy's credentials for it (HTTP {status}); check its token or client certificate in backends.yaml")
    if status >= 500:
        return Reachability(False, REASON_UNREACHABLE, f"backend {name} answered HTTP {status}")
    return Reachability(True, REASON_REACHABLE, f"backend {name} answers")


def what_is_wrong(name: str, message: str) -> str:
    """A verdict's message without its leading "backend <name> ", for lines that name the backend already."""
    return message.removeprefix(f"backend {name} ")


class BackendHealth:
    """Probes every declared backend; `state[name]` is its latest verdict (absent until probed)."""

    def __init__(self, clients: Mapping[str, BackendClient], on_change: Callable[[str], None], interval: float = PROBE_INTERVAL_SECONDS) -> None:
        self.clients = dict(clients)
        self.on_change = on_change
        self.interval = interval
        self.state: dict[str, Reachability] = {}
        self.rounds = 0  # probe rounds completed: lets a test wait for "a few more probes" without sleeping

    async def probe(self, name: str) -> Reachability:
        client = self.clients[name]
        try:
            status = await client.probe(PROBE_PATH)
        except errors.StatusError as exc:
            return verdict(name, None, exc.message)
        return verdict(name, status)

    async def check_all(self) -> None:
        """Probe every backend once; record, log and report the ones whose verdict changed."""
        names = sorted(self.clients)
        verdicts = await asyncio.gather(*(self.probe(name) for name in names))
        for name, now in zip(names, verdicts, strict=True):
            before = self.state.get(name)
            self.state[name] = now
            if before is not None and before.reachable == now.reachable and before.reason == now.reason:
                continue  # the same verdict (a changed error text alone is not a transition)
            if not now.reachable:
                log.warning("backend %s went unreachable, its Ready workspaces are Unavailable: %s", name, now.message)
            elif before is not None:
                log.info("backend %s is reachable again", name)
            self.on_change(name)
        self.rounds += 1

    async def run(self) -> None:
        """Probe until cancelled."""
        if not self.clients:
            return
        while True:
            try:
                await self.check_all()
            except Exception:  # a bug here must not end the probing of every backend
                log.exception("probing the backends failed")
            await asyncio.sleep(self.interval)
