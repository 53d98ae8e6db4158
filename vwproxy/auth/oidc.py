"""JWTs from external issuers, configured like Kubernetes' structured AuthenticationConfiguration
(`apiserver.config.k8s.io`, kind AuthenticationConfiguration, `jwt[]`).

vwproxy does no OIDC discovery (the auth layer does no network I/O): each issuer names its
verification keys in a file, `issuer.keysFile` (a PEM public key or a JWKS document), and its
algorithm allow-list in `issuer.algorithms` (default RS256, ES256). HS256 is refused unless the
loader is told `development=True`, and then takes its secret from `issuer.hmacSecretFile`.
CEL expressions (`claimMappings.*.expression`, `claimValidationRules[].expression`) are not
supported and make the configuration invalid rather than being ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from vwproxy.auth.errors import AuthenticationFailed
from vwproxy.auth.identity import User

DEFAULT_ALGORITHMS = ("RS256", "ES256")
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"})
DEVELOPMENT_ONLY_ALGORITHMS = frozenset({"HS256"})
CLOCK_SKEW_SECONDS = 60  # tolerated on nbf/iat, as kube's OIDC verifier tolerates skew
RESERVED_USER_PREFIX = "system:"  # an external issuer may not mint system users (SAs, system:anonymous)


@dataclass(frozen=True)
class ClaimMapping:
    """Which claim a value comes from and the prefix put in front of it."""

    claim: str
    prefix: str


@dataclass(frozen=True)
class JWTIssuer:
    """One `jwt[]` entry, with its keys loaded."""

    url: str
    audiences: tuple[str, ...]
    username: ClaimMapping
    groups: ClaimMapping | None
    algorithms: tuple[str, ...]
    keys: Mapping[str, Any]  # kid ("" when the file has one unnamed key) -> verification key
    required_claims: Mapping[str, str]  # claimValidationRules[].claim -> requiredValue

    def authenticate(self, token: str, now: float) -> User:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise AuthenticationFailed(f"malformed token: {error}") from error
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise AuthenticationFailed(f"issuer {self.url}: algorithm {algorithm!r} is not allowed")
        key = self._key(header.get("kid"))
        try:
            claims = jwt.decode(
                token, key, algorithms=[str(algorithm)], audience=list(self.audiences), issuer=self.url,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["iss", "aud", "exp"]},
            )
        except (jwt.PyJWTError, TypeError, ValueError) as error:  # TypeError: a key of another family than alg
            raise AuthenticationFailed(f"issuer {self.url}: token rejected: {error}") from error
        _check_times(claims, now, self.url)
        for claim, required in self.required_claims.items():
            if claims.get(claim) != required:
                raise AuthenticationFailed(f"issuer {self.url}: claim {claim!r} is not {required!r}")
        return self._user(claims)

    def _key(self, kid: object) -> Any:
        if isinstance(kid, str) and kid in self.keys:
            return self.keys[kid]
        if len(self.keys) == 1:
            return next(iter(self.keys.values()))
        raise AuthenticationFailed(f"issuer {self.url}: no verification key with kid {kid!r}")

    def _user(self, claims: Mapping[str, Any]) -> User:
        raw_name = claims.get(self.username.claim)
        if not isinstance(raw_name, str) or not raw_name:
            raise AuthenticationFailed(f"issuer {self.url}: username claim {self.username.claim!r} missing")
        if self.username.claim == "email" and claims.get("email_verified", True) is not True:
            raise AuthenticationFailed(f"issuer {self.url}: email not verified")
        name = self.username.prefix + raw_name
        if name.startswith(RESERVED_USER_PREFIX):
            raise AuthenticationFailed(f"issuer {self.url}: user name {name!r} is reserved")
        groups: tuple[str, ...] = ()
        if self.groups is not None:
            raw = claims.get(self.groups.claim, [])
            values = [raw] if isinstance(raw, str) else raw
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise AuthenticationFailed(f"issuer {self.url}: groups claim {self.groups.claim!r} is not a string list")
            groups = tuple(self.groups.prefix + value for value in values)
        return User(name=name, groups=groups, uid=str(claims.get("sub", "")))


def _check_times(claims: Mapping[str, Any], now: float, url: str) -> None:
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or now >= exp:
        raise AuthenticationFailed(f"issuer {url}: token has expired")
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and now + CLOCK_SKEW_SECONDS < nbf:
        raise AuthenticationFailed(f"issuer {url}: token is not valid yet")
    iat = claims.get("iat")
    if isinstance(iat, (int, float)) and now + CLOCK_SKEW_SECONDS < iat:
        raise AuthenticationFailed(f"issuer {url}: token was issued in the future")


def load_authentication_config(
    config: Mapping[str, Any], base_dir: Path, *, development: bool = False
) -> tuple[JWTIssuer, ...]:
    """Read an AuthenticationConfiguration document; files are relative to `base_dir`.
    Raises ValueError naming the offending field."""
    if config.get("kind", "AuthenticationConfiguration") != "AuthenticationConfiguration":
        raise ValueError(f"kind must be AuthenticationConfiguration, not {config.get('kind')!r}")
    entries = config.get("jwt") or []
    if not isinstance(entries, list):
        raise ValueError("jwt must be a list")
    issuers = [_issuer(entry, f"jwt[{index}]", base_dir, development) for index, entry in enumerate(entries)]
    urls = [issuer.url for issuer in issuers]
    if len(set(urls)) != len(urls):
        raise ValueError("jwt[].issuer.url must be unique")
    return tuple(issuers)


def _issuer(entry: Any, where: str, base_dir: Path, development: bool) -> JWTIssuer:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be an object")
    issuer = entry.get("issuer") or {}
    url = issuer.get("url")
    if not isinstance(url, str) or not url.startswith("https://"):
        raise ValueError(f"{where}.issuer.url must be an https URL")
    audiences = issuer.get("audiences") or []
    if not audiences or not all(isinstance(a, str) and a for a in audiences):
        raise ValueError(f"{where}.issuer.audiences must list at least one audience")
    algorithms = tuple(issuer.get("algorithms") or DEFAULT_ALGORITHMS)
    for algorithm in algorithms:
        if algorithm in DEVELOPMENT_ONLY_ALGORITHMS and not development:
            raise ValueError(f"{where}.issuer.algorithms: {algorithm} is only allowed in development mode")
        if algorithm not in ASYMMETRIC_ALGORITHMS | DEVELOPMENT_ONLY_ALGORITHMS:
            raise ValueError(f"{where}.issuer.algorithms: {algorithm!r} is not allowed")
    hmac = [a for a in algorithms if a in DEVELOPMENT_ONLY_ALGORITHMS]
    if hmac and len(algorithms) != len(hmac):
        # One key table cannot safely serve both: an asymmetric public key must never be an HMAC secret.
        raise ValueError(f"{where}.issuer.algorithms: HS256 may not be combined with asymmetric algorithms")
    keys = _hmac_keys(issuer, where, base_dir) if hmac else _public_keys(issuer, where, base_dir)
    mappings = entry.get("claimMappings") or {}
    username = _mapping(mappings.get("username"), f"{where}.claimMappings.username")
    if username is None:
        raise ValueError(f"{where}.claimMappings.username.claim is required")
    groups = _mapping(mappings.get("groups"), f"{where}.claimMappings.groups")
    required: dict[str, str] = {}
    for index, rule in enumerate(entry.get("claimValidationRules") or []):
        if "expression" in rule:
            raise ValueError(f"{where}.claimValidationRules[{index}].expression: CEL is not supported")
        claim, value = rule.get("claim"), rule.get("requiredValue", "")
        if not isinstance(claim, str) or not claim or not isinstance(value, str):
            raise ValueError(f"{where}.claimValidationRules[{index}] needs claim and requiredValue")
        required[claim] = value
    return JWTIssuer(url, tuple(audiences), username, groups, algorithms, keys, required)


def _mapping(raw: Any, where: str) -> ClaimMapping | None:
    if raw is None:
        return None
    if "expression" in raw:
        raise ValueError(f"{where}.expression: CEL is not supported")
    claim = raw.get("claim")
    if not isinstance(claim, str) or not claim:
        raise ValueError(f"{where}.claim is required")
    prefix = raw.get("prefix")
    if not isinstance(prefix, str):
        # As Kubernetes: the prefix must be stated, "" included, so nobody gets none by accident.
        raise ValueError(f'{where}.prefix is required when claim is set (use "" for no prefix)')
    return ClaimMapping(claim, prefix)


def _public_keys(issuer: Mapping[str, Any], where: str, base_dir: Path) -> dict[str, Any]:
    name = issuer.get("keysFile")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.issuer.keysFile (a PEM public key or a JWKS file) is required")
    content = (base_dir / name).read_bytes()
    if content.lstrip().startswith(b"{"):
        document = json.loads(content)
        keys: dict[str, Any] = {}
        for jwk in document.get("keys", []):
            if jwk.get("kty") == "oct":
                raise ValueError(f"{where}.issuer.keysFile: symmetric keys are not verification keys")
            keys[str(jwk.get("kid", ""))] = jwt.PyJWK.from_dict(jwk).key
        if not keys:
            raise ValueError(f"{where}.issuer.keysFile: the JWKS has no keys")
        return keys
    return {"": serialization.load_pem_public_key(content)}


def _hmac_keys(issuer: Mapping[str, Any], where: str, base_dir: Path) -> dict[str, Any]:
    name = issuer.get("hmacSecretFile")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.issuer.hmacSecretFile is required for HS256")
    secret = (base_dir / name).read_bytes().strip()
    if len(secret) < 32:
        raise ValueError(f"{where}.issuer.hmacSecretFile: the secret must be at least 32 bytes")
    return {"": secret}


def issuers_named(issuers: Sequence[JWTIssuer]) -> dict[str, JWTIssuer]:
    return {issuer.url: issuer for issuer in issuers}
