"""One authenticator for every request: the Authorization header in, a User out.

Order, as kube-apiserver's union: static tokens, then JWTs routed by their (unverified) `iss`
to our ServiceAccount issuer or a configured external issuer. No header is `system:anonymous`;
a header that is present and yields no user is AuthenticationFailed (401), never anonymous,
so a typo in a token cannot silently downgrade a caller.

Verified tokens are cached for TOKEN_CACHE_TTL_SECONDS (the signature check is the costly
part). A cached ServiceAccount token still re-checks its expiry and that the ServiceAccount
exists with the same uid on every use, so deleting an SA revokes its tokens at once without
an invalidation hook.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import jwt
from cachetools import TTLCache

from vwproxy.auth.errors import AuthenticationFailed
from vwproxy.auth.identity import ANONYMOUS, AUTHENTICATED, User
from vwproxy.auth.oidc import JWTIssuer
from vwproxy.auth.static import StaticTokens
from vwproxy.auth.tokens import (
    ServiceAccountLookup,
    ServiceAccountTokens,
    VerifiedServiceAccountToken,
    check_live,
)

TOKEN_CACHE_TTL_SECONDS = 10.0  # kube's token cache holds successes 10 s; short enough for config edits
TOKEN_CACHE_SIZE = 4096  # distinct live tokens kept; more only costs re-verification


@dataclass(frozen=True)
class _ExternalToken:
    user: User
    expires: float


_Cached = VerifiedServiceAccountToken | _ExternalToken


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`; None when there is no header at all.
    A header in any other shape is AuthenticationFailed."""
    if authorization is None:
        return None
    parts = authorization.strip().split(" ")
    if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1]:
        raise AuthenticationFailed("Authorization header is not a bearer token")
    return parts[1]


def with_authenticated_group(user: User) -> User:
    """kube's AuthenticatedGroupAdder: every authenticated user is in system:authenticated."""
    return user if AUTHENTICATED in user.groups else replace(user, groups=(*user.groups, AUTHENTICATED))


class Authenticator:
    """Turns a request's Authorization header into a User."""

    def __init__(
        self,
        *,
        service_accounts: ServiceAccountTokens | None = None,
        sa_lookup: ServiceAccountLookup | None = None,
        static: StaticTokens | None = None,
        issuers: Sequence[JWTIssuer] = (),
        clock: Callable[[], float] = time.time,
        cache_ttl: float = TOKEN_CACHE_TTL_SECONDS,
    ) -> None:
        if service_accounts is not None and sa_lookup is None:
            raise ValueError("ServiceAccount tokens need a ServiceAccount lookup")
        self._service_accounts = service_accounts
        self._sa_lookup = sa_lookup
        self._static = static
        self._issuers = {issuer.url: issuer for issuer in issuers}
        self._clock = clock
        self._cache: TTLCache[bytes, _Cached] = TTLCache(maxsize=TOKEN_CACHE_SIZE, ttl=cache_ttl, timer=clock)
        self._lock = threading.Lock()  # cachetools caches are not thread-safe

    def authenticate(self, authorization: str | None) -> User:
        token = bearer_token(authorization)
        if token is None:
            return ANONYMOUS
        if self._static is not None:
            user = self._static.lookup(token)
            if user is not None:
                return with_authenticated_group(user)
        now = self._clock()
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = self._verify(token, now)
            with self._lock:
                self._cache[key] = cached
        return self._live_user(cached, now)

    def _verify(self, token: str, now: float) -> _Cached:
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as error:
            raise AuthenticationFailed(f"token is neither a known static token nor a JWT: {error}") from error
        issuer = claims.get("iss")
        if self._service_accounts is not None and isinstance(issuer, str) and self._service_accounts.is_ours(issuer):
            return self._service_accounts.verify_signature(token)
        external = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if external is None:
            raise AuthenticationFailed(f"no authenticator for token issuer {issuer!r}")
        user = external.authenticate(token, now)
        return _ExternalToken(with_authenticated_group(user), float(claims["exp"]))

    def _live_user(self, cached: _Cached, now: float) -> User:
        if isinstance(cached, _ExternalToken):
            if now >= cached.expires:
                raise AuthenticationFailed("token has expired")
            return cached.user
        assert self._sa_lookup is not None
        return check_live(cached, self._sa_lookup, now)
