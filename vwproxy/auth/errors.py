"""Authentication failures. The reason names what was wrong with the credential and goes to the
log; the wire only ever says `401 Unauthorized`, as kube-apiserver does, so a caller cannot
probe which check a forged token failed."""

from __future__ import annotations

from vwproxy.kube.errors import StatusError, unauthorized


class AuthenticationFailed(Exception):
    """A credential was presented and is not acceptable (invalid, expired, forged, revoked)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def to_status(self) -> StatusError:
        return unauthorized()
