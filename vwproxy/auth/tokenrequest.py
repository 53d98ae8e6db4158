"""The TokenRequest subresource (`POST …/namespaces/<ns>/serviceaccounts/<name>/token`,
`authentication.k8s.io/v1`): validate the request body as kube-apiserver does and answer it
with a signed token. The caller has already checked that the ServiceAccount exists and that the
user may `create` `serviceaccounts/token`."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from vwproxy.auth.tokens import (
    DEFAULT_EXPIRATION_SECONDS,
    MAX_EXPIRATION_SECONDS,
    MIN_EXPIRATION_SECONDS,
    ServiceAccountTokens,
)
from vwproxy.kube.errors import Cause, invalid

GROUP = "authentication.k8s.io"
API_VERSION = f"{GROUP}/v1"


def _rfc3339(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _problems(spec: Mapping[str, Any]) -> tuple[list[Cause], int, list[str]]:
    causes: list[Cause] = []
    seconds = spec.get("expirationSeconds", DEFAULT_EXPIRATION_SECONDS)
    if seconds is None:
        seconds = DEFAULT_EXPIRATION_SECONDS
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        causes.append(Cause("FieldValueInvalid", f"Invalid value: {seconds!r}: must be an integer", "spec.expirationSeconds"))
        seconds = DEFAULT_EXPIRATION_SECONDS
    elif seconds < MIN_EXPIRATION_SECONDS:
        causes.append(Cause("FieldValueInvalid", f"Invalid value: {seconds}: may not specify a duration less than 10 minutes",
                            "spec.expirationSeconds"))
    elif seconds > MAX_EXPIRATION_SECONDS:
        causes.append(Cause("FieldValueInvalid", f"Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds",
                            "spec.expirationSeconds"))
    audiences = spec.get("audiences") or []
    if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
        causes.append(Cause("FieldValueInvalid", "Invalid value: audiences must be non-empty strings", "spec.audiences"))
        audiences = []
    if spec.get("boundObjectRef"):
        # Tokens bound to a Pod or Secret need those objects' lifetimes; vwproxy does not track them.
        causes.append(Cause("FieldValueNotSupported", "Unsupported value: bound tokens are not supported", "spec.boundObjectRef"))
    return causes, seconds, list(audiences)


def token_request(tokens: ServiceAccountTokens, body: Mapping[str, Any], *, cluster: str, namespace: str,
                  sa_name: str, sa_uid: str, now: float) -> dict[str, Any]:
    """The TokenRequest object to return (201), or StatusError 422 for an invalid request."""
    spec = body.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise invalid("TokenRequest", sa_name, [Cause("FieldValueInvalid", "Invalid value: must be an object", "spec")], GROUP)
    causes, seconds, audiences = _problems(spec)
    if causes:
        raise invalid("TokenRequest", sa_name, causes, GROUP)
    token, expires = tokens.issue(cluster, namespace, sa_name, sa_uid, audiences, seconds, now)
    return {
        "kind": "TokenRequest",
        "apiVersion": API_VERSION,
        "metadata": {"name": sa_name, "namespace": namespace, "creationTimestamp": None},
        "spec": {"audiences": audiences or list(tokens.api_audiences), "expirationSeconds": seconds, "boundObjectRef": None},
        "status": {"token": token, "expirationTimestamp": _rfc3339(expires)},
    }


