"""External JWT issuers configured like Kubernetes' structured AuthenticationConfiguration:
claim mappings with prefixes, keys from PEM or JWKS, the algorithm allow-list, HS256 only in
development."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from vwproxy.auth.authenticator import Authenticator
from vwproxy.auth.errors import AuthenticationFailed
from vwproxy.auth.identity import AUTHENTICATED
from vwproxy.auth.oidc import load_authentication_config

NOW = 1_800_000_000.0
URL = "https://issuer.example"
SECRET = b"a-development-secret-of-32-bytes!!"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _config(**issuer: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "issuer": {"url": URL, "audiences": ["vwproxy"], "keysFile": "issuer.pem", **issuer},
        "claimMappings": {"username": {"claim": "email", "prefix": "oidc:"}, "groups": {"claim": "groups", "prefix": "oidc:"}},
    }
    return {"apiVersion": "apiserver.config.k8s.io/v1beta1", "kind": "AuthenticationConfiguration", "jwt": [entry]}


def _write_pem(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    (tmp_path / "issuer.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _claims(**extra: Any) -> dict[str, Any]:
    return {"iss": URL, "aud": "vwproxy", "sub": "u-1", "email": "jane@example.com", "email_verified": True,
            "groups": ["dev", "ops"], "exp": NOW + 300, "iat": NOW, "nbf": NOW, **extra}


def _authenticate(config: dict[str, Any], tmp_path: Path, token: str, development: bool = False) -> Any:
    issuers = load_authentication_config(config, tmp_path, development=development)
    return Authenticator(issuers=issuers, clock=lambda: NOW).authenticate(f"Bearer {token}")


def test_claims_map_to_a_prefixed_user(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    _write_pem(tmp_path, rsa_key)
    user = _authenticate(_config(), tmp_path, jwt.encode(_claims(), rsa_key, algorithm="RS256"))
    assert user.name == "oidc:jane@example.com"
    assert user.groups == ("oidc:dev", "oidc:ops", AUTHENTICATED)


def test_empty_prefix_and_string_group(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    _write_pem(tmp_path, rsa_key)
    config = _config()
    config["jwt"][0]["claimMappings"] = {"username": {"claim": "sub", "prefix": ""}, "groups": {"claim": "groups", "prefix": ""}}
    user = _authenticate(config, tmp_path, jwt.encode(_claims(groups="solo"), rsa_key, algorithm="RS256"))
    assert (user.name, user.groups) == ("u-1", ("solo", AUTHENTICATED))


def test_jwks_file_selects_the_key_by_kid(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    keys = [json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())) | {"kid": "r1"},
            json.loads(jwt.algorithms.ECAlgorithm.to_jwk(other.public_key())) | {"kid": "e1"}]
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": keys}))
    config = _config(keysFile="jwks.json")
    assert _authenticate(config, tmp_path, jwt.encode(_claims(), other, algorithm="ES256", headers={"kid": "e1"})).name
    with pytest.raises(AuthenticationFailed):  # right kid, wrong key
        _authenticate(config, tmp_path, jwt.encode(_claims(), other, algorithm="ES256", headers={"kid": "r1"}))


@pytest.mark.parametrize("change", [
    {"aud": "someone-else"}, {"iss": URL + "/other"}, {"exp": NOW - 1}, {"nbf": NOW + 3600},
    {"email_verified": False}, {"email": "system:admin"},
])
def test_refused_claims(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, change: dict[str, Any]) -> None:
    _write_pem(tmp_path, rsa_key)
    config = _config()
    if change.get("email") == "system:admin":
        config["jwt"][0]["claimMappings"]["username"]["prefix"] = ""
    with pytest.raises(AuthenticationFailed):
        _authenticate(config, tmp_path, jwt.encode(_claims(**change), rsa_key, algorithm="RS256"))


def test_algorithm_allow_list(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    _write_pem(tmp_path, rsa_key)
    token = jwt.encode(_claims(), rsa_key, algorithm="RS384")
    with pytest.raises(AuthenticationFailed, match="algorithm"):
        _authenticate(_config(), tmp_path, token)
    assert _authenticate(_config(algorithms=["RS384"]), tmp_path, token).name
    unsigned = jwt.encode(_claims(), None, algorithm="none")
    with pytest.raises(AuthenticationFailed):
        _authenticate(_config(), tmp_path, unsigned)


def test_hs256_only_behind_the_development_flag(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(SECRET)
    config = _config(algorithms=["HS256"], hmacSecretFile="secret")
    with pytest.raises(ValueError, match="development"):
        load_authentication_config(config, tmp_path)
    token = jwt.encode(_claims(), SECRET, algorithm="HS256")
    assert _authenticate(config, tmp_path, token, development=True).name == "oidc:jane@example.com"
    with pytest.raises(AuthenticationFailed):
        _authenticate(config, tmp_path, jwt.encode(_claims(), b"x" * 40, algorithm="HS256"), development=True)


def test_hs256_never_mixes_with_public_keys(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    _write_pem(tmp_path, rsa_key)
    with pytest.raises(ValueError, match="combined"):
        load_authentication_config(_config(algorithms=["RS256", "HS256"], hmacSecretFile="secret"), tmp_path, development=True)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["jwt"][0]["claimMappings"]["username"].pop("prefix"), "prefix is required"),
    (lambda c: c["jwt"][0]["claimMappings"].pop("username"), "username.claim is required"),
    (lambda c: c["jwt"][0]["issuer"].update(url="http://plain"), "https"),
    (lambda c: c["jwt"][0]["issuer"].update(audiences=[]), "audiences"),
    (lambda c: c["jwt"][0]["claimMappings"]["username"].update(expression="claims.sub"), "CEL"),
    (lambda c: c["jwt"][0]["issuer"].update(algorithms=["none"]), "not allowed"),
    (lambda c: c["jwt"].append(c["jwt"][0]), "unique"),
])
def test_configuration_errors(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, mutate: Any, message: str) -> None:
    _write_pem(tmp_path, rsa_key)
    config = _config()
    mutate(config)
    with pytest.raises(ValueError, match=message):
        load_authentication_config(config, tmp_path)


def test_claim_validation_rules(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    _write_pem(tmp_path, rsa_key)
    config = _config()
    config["jwt"][0]["claimValidationRules"] = [{"claim": "hd", "requiredValue": "example.com"}]
    assert _authenticate(config, tmp_path, jwt.encode(_claims(hd="example.com"), rsa_key, algorithm="RS256")).name
    with pytest.raises(AuthenticationFailed):
        _authenticate(config, tmp_path, jwt.encode(_claims(hd="evil.com"), rsa_key, algorithm="RS256"))


def test_expiry_is_checked_by_the_issuer_itself(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    _write_pem(tmp_path, rsa_key)
    (issuer,) = load_authentication_config(_config(), tmp_path)
    with pytest.raises(AuthenticationFailed, match="expired"):
        issuer.authenticate(jwt.encode(_claims(exp=NOW - 1), rsa_key, algorithm="RS256"), NOW)


def test_a_cached_token_still_expires(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    _write_pem(tmp_path, rsa_key)
    now = [NOW]
    auth = Authenticator(issuers=load_authentication_config(_config(), tmp_path), clock=lambda: now[0])
    header = "Bearer " + jwt.encode(_claims(exp=NOW + 5), rsa_key, algorithm="RS256")
    assert auth.authenticate(header).name
    now[0] = NOW + 5  # inside the cache TTL, at the token's exp
    with pytest.raises(AuthenticationFailed, match="expired"):
        auth.authenticate(header)
