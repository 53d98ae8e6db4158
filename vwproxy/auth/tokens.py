"""ServiceAccount tokens as the TokenRequest API issues them, and their verification.

Claims are Kubernetes' bound-token claims plus kcp's cluster claim:
`kubernetes.io.clusterName` (kcp `pkg/server/filters/serviceaccounts.go` reads it to route an
in-cluster request to its workspace). Verification is sans-I/O: the clock is an argument and
whether the ServiceAccount still exists is an injected lookup.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from vwproxy.auth.errors import AuthenticationFailed
from vwproxy.auth.identity import SERVICE_ACCOUNT_PREFIX, User, service_account_user
from vwproxy.auth.keys import SigningKey

DEFAULT_ISSUER = "https://kubernetes.default.svc"
DEFAULT_EXPIRATION_SECONDS = 3600  # TokenRequest's default
MIN_EXPIRATION_SECONDS = 600  # TokenRequest validation: "may not specify a duration less than 10 minutes"
MAX_EXPIRATION_SECONDS = 2**32  # TokenRequest validation's upper bound
CLOCK_SKEW_SECONDS = 60  # tolerated for nbf only; exp is strict so a revoked lifetime really ends

KUBERNETES_CLAIM = "kubernetes.io"
CLUSTER_CLAIM = "clusterName"  # inside "kubernetes.io": kcp's addition
LEGACY_CLUSTER_CLAIM = "kubernetes.io/serviceaccount/clusterName"  # secret-based tokens; not issued

# (cluster, namespace, name) -> the ServiceAccount's current uid, or None when it does not exist.
ServiceAccountLookup = Callable[[str, str, str], "str | None"]


@dataclass(frozen=True)
class ServiceAccountRef:
    """Which ServiceAccount a verified token speaks for."""

    cluster: str
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class VerifiedServiceAccountToken:
    """A token whose signature, algorithm, issuer and audience checked out; `expires` is its exp.
    Liveness (exp against now, the ServiceAccount's existence) is checked on every use."""

    ref: ServiceAccountRef
    expires: int
    not_before: int


class ServiceAccountTokens:
    """Issues and verifies one signing key's ServiceAccount tokens."""

    def __init__(self, key: SigningKey, issuer: str = DEFAULT_ISSUER, api_audiences: Sequence[str] = ()) -> None:
        self.key = key
        self.issuer = issuer
        # kube-apiserver's --api-audiences: tokens must carry one of these; default the issuer.
        self.api_audiences = tuple(api_audiences) or (issuer,)

    def issue(
        self,
        cluster: str,
        namespace: str,
        sa_name: str,
        sa_uid: str,
        audiences: Sequence[str] = (),
        expiration_seconds: int = DEFAULT_EXPIRATION_SECONDS,
        now: float = 0.0,
    ) -> tuple[str, int]:
        """A signed token and its expiry (Unix seconds), as TokenRequest's status.token and
        status.expirationTimestamp. Raises ValueError where TokenRequest validation would 422."""
        if not (cluster and namespace and sa_name and sa_uid):
            raise ValueError("a ServiceAccount token needs the cluster, namespace, name and uid")
        if expiration_seconds < MIN_EXPIRATION_SECONDS:
            raise ValueError("may not specify a duration less than 10 minutes")
        if expiration_seconds > MAX_EXPIRATION_SECONDS:
            raise ValueError("may not specify a duration larger than 2^32 seconds")
        issued = int(now)
        expires = issued + expiration_seconds
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{sa_name}",
            "aud": list(audiences) or list(self.api_audiences),
            "exp": expires,
            "iat": issued,
            "nbf": issued,
            "jti": str(uuid.uuid4()),
            KUBERNETES_CLAIM: {
                CLUSTER_CLAIM: cluster,
                "namespace": namespace,
                "serviceaccount": {"name": sa_name, "uid": sa_uid},
            },
        }
        token = jwt.encode(claims, self.key.private_key, algorithm=self.key.algorithm, headers={"kid": self.key.key_id})
        return token, expires

    def is_ours(self, unverified_issuer: str) -> bool:
        return unverified_issuer == self.issuer

    def verify_signature(self, token: str) -> VerifiedServiceAccountToken:
        """Signature, algorithm, issuer, audience and claim shape; not the clock or liveness."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise AuthenticationFailed(f"malformed token: {error}") from error
        if header.get("alg") != self.key.algorithm:
            # Exactly our key's algorithm: never "none", never HS* keyed with our public key.
            raise AuthenticationFailed(f"service account token algorithm {header.get('alg')!r} is not {self.key.algorithm}")
        try:
            claims = jwt.decode(
                token,
                self.key.public_key,
                algorithms=[self.key.algorithm],
                audience=list(self.api_audiences),
                issuer=self.issuer,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "require": ["iss", "sub", "aud", "exp", "nbf", "iat"]},
            )
        except jwt.PyJWTError as error:
            raise AuthenticationFailed(f"service account token rejected: {error}") from error
        return VerifiedServiceAccountToken(_service_account_ref(claims), int(claims["exp"]), int(claims["nbf"]))

    def verify(self, token: str, sa_lookup: ServiceAccountLookup, now: float) -> User:
        """The ServiceAccount user a token authenticates as; AuthenticationFailed otherwise."""
        return check_live(self.verify_signature(token), sa_lookup, now)


def check_live(verified: VerifiedServiceAccountToken, sa_lookup: ServiceAccountLookup, now: float) -> User:
    """The per-use checks: not expired, already valid, and the ServiceAccount still exists with
    the uid the token was issued for (a deleted and recreated SA does not inherit old tokens)."""
    if now >= verified.expires:
        raise AuthenticationFailed("service account token has expired")
    if now + CLOCK_SKEW_SECONDS < verified.not_before:
        raise AuthenticationFailed("service account token is not valid yet")
    ref = verified.ref
    current_uid = sa_lookup(ref.cluster, ref.namespace, ref.name)
    if current_uid is None:
        raise AuthenticationFailed(f"service account {ref.cluster}/{ref.namespace}/{ref.name} has been deleted")
    if current_uid != ref.uid:
        raise AuthenticationFailed(
            f"service account {ref.cluster}/{ref.namespace}/{ref.name} uid {ref.uid} does not match the current uid {current_uid}"
        )
    return service_account_user(ref.cluster, ref.namespace, ref.name, ref.uid)


def _service_account_ref(claims: Mapping[str, Any]) -> ServiceAccountRef:
    private = claims.get(KUBERNETES_CLAIM)
    if not isinstance(private, Mapping):
        raise AuthenticationFailed("service account token lacks the kubernetes.io claim")
    account = private.get("serviceaccount")
    cluster, namespace = private.get(CLUSTER_CLAIM), private.get("namespace")
    if not isinstance(account, Mapping):
        raise AuthenticationFailed("service account token lacks kubernetes.io.serviceaccount")
    name, uid = account.get("name"), account.get("uid")
    fields = (cluster, namespace, name, uid)
    if not all(isinstance(value, str) and value for value in fields):
        raise AuthenticationFailed("service account token lacks the cluster, namespace, name or uid")
    ref = ServiceAccountRef(str(cluster), str(namespace), str(name), str(uid))
    if claims.get("sub") != f"{SERVICE_ACCOUNT_PREFIX}{ref.namespace}:{ref.name}":
        raise AuthenticationFailed("service account token subject does not match its kubernetes.io claim")
    return ref
