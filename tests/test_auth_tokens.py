"""ServiceAccount tokens (TokenRequest-shaped, kcp's cluster claim), the static token file and the
chained Authenticator: every forged, stale or revoked token is refused, and the wire says 401."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jwt
import pytest

from vwproxy.auth.authenticator import (
    TOKEN_CACHE_TTL_SECONDS,
    Authenticator,
    bearer_token,
)
from vwproxy.auth.errors import AuthenticationFailed
from vwproxy.auth.identity import (
    ANONYMOUS,
    AUTHENTICATED,
    CLUSTER_NAME_EXTRA,
    SCOPES_EXTRA,
    UNAUTHENTICATED,
    User,
)
from vwproxy.auth.keys import (
    SIGNING_KEY_FILE,
    SigningKey,
    generate_signing_key,
    load_or_create_signing_key,
)
from vwproxy.auth.static import StaticTokens
from vwproxy.auth.tokens import DEFAULT_ISSUER, ServiceAccountTokens

NOW = 1_800_000_000.0
CLUSTER = "yqzkjxmzl9turgsf"
UID = "6f1c0a4e-0000-4000-8000-000000000001"


class Accounts:
    """The ServiceAccounts that exist, as the control plane would answer."""

    def __init__(self) -> None:
        self.uids: dict[tuple[str, str, str], str] = {(CLUSTER, "default", "robot"): UID}
        self.calls = 0

    def __call__(self, cluster: str, namespace: str, name: str) -> str | None:
        self.calls += 1
        return self.uids.get((cluster, namespace, name))


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module", params=["RS256", "ES256"])
def key(request: pytest.FixtureRequest) -> SigningKey:
    return generate_signing_key(request.param)


@pytest.fixture
def tokens(key: SigningKey) -> ServiceAccountTokens:
    return ServiceAccountTokens(key)


def _b64(data: dict[str, object] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, object]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def test_issued_token_has_kubernetes_and_kcp_claims(tokens: ServiceAccountTokens) -> None:
    token, expires = tokens.issue(CLUSTER, "default", "robot", UID, ["api"], 3600, NOW)
    claims = _claims(token)
    assert expires == int(NOW) + 3600 == claims["exp"]
    assert claims["iss"] == DEFAULT_ISSUER and claims["aud"] == ["api"]
    assert claims["sub"] == "system:serviceaccount:default:robot"
    assert claims["iat"] == claims["nbf"] == int(NOW)
    assert claims["kubernetes.io"] == {
        "clusterName": CLUSTER, "namespace": "default", "serviceaccount": {"name": "robot", "uid": UID},
    }
    assert jwt.get_unverified_header(token)["kid"] == tokens.key.key_id


def test_verified_token_is_the_service_account_scoped_to_its_workspace(tokens: ServiceAccountTokens) -> None:
    token, _ = tokens.issue(CLUSTER, "default", "robot", UID, now=NOW)
    user = tokens.verify(token, Accounts(), NOW + 10)
    assert user.name == "system:serviceaccount:default:robot"
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:default", AUTHENTICATED)
    assert user.extra == {CLUSTER_NAME_EXTRA: (CLUSTER,), SCOPES_EXTRA: (f"cluster:{CLUSTER}",)}
    assert user.cluster == CLUSTER and user.uid == UID


@pytest.mark.parametrize("seconds", [0, 599, 2**32 + 1])
def test_token_request_expiration_bounds(tokens: ServiceAccountTokens, seconds: int) -> None:
    with pytest.raises(ValueError):
        tokens.issue(CLUSTER, "default", "robot", UID, expiration_seconds=seconds, now=NOW)


# --- attacks: each must be refused ------------------------------------------------------------


def _forge(tokens: ServiceAccountTokens, header: dict[str, object], claims: dict[str, object], signature: bytes) -> str:
    return f"{_b64(header)}.{_b64(claims)}.{_b64(signature) if signature else ''}"


def _valid_claims(tokens: ServiceAccountTokens) -> dict[str, object]:
    token, _ = tokens.issue(CLUSTER, "default", "robot", UID, now=NOW)
    return _claims(token)


def test_alg_none_is_refused(tokens: ServiceAccountTokens) -> None:
    forged = _forge(tokens, {"alg": "none", "typ": "JWT"}, _valid_claims(tokens), b"")
    with pytest.raises(AuthenticationFailed, match="algorithm 'none' is not"):  # our allow-list, before pyjwt's
        tokens.verify(forged, Accounts(), NOW)


def test_hmac_keyed_with_our_public_key_is_refused(tokens: ServiceAccountTokens) -> None:
    """The HS/RS confusion: sign HS256 with the PEM public key as the HMAC secret."""
    import hashlib
    import hmac

    public_pem = tokens.key.public_pem()
    header = {"alg": "HS256", "typ": "JWT", "kid": tokens.key.key_id}
    claims = _valid_claims(tokens)
    signing_input = f"{_b64(header)}.{_b64(claims)}".encode()
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    forged = f"{signing_input.decode()}.{_b64(signature)}"
    with pytest.raises(AuthenticationFailed, match="algorithm 'HS256' is not"):  # our allow-list, before pyjwt's
        tokens.verify(forged, Accounts(), NOW)


def test_tampered_claims_break_the_signature(tokens: ServiceAccountTokens) -> None:
    token, _ = tokens.issue(CLUSTER, "default", "robot", UID, now=NOW)
    header, _, signature = token.split(".")
    claims = _claims(token)
    claims["kubernetes.io"] = {"clusterName": "root", "namespace": "default", "serviceaccount": {"name": "robot", "uid": UID}}
    accounts = Accounts()
    accounts.uids[("root", "default", "robot")] = UID
    with pytest.raises(AuthenticationFailed):
        tokens.verify(f"{header}.{_b64(claims)}.{signature}", accounts, NOW)


def test_another_keys_signature_is_refused(tokens: ServiceAccountTokens) -> None:
    stranger = ServiceAccountTokens(generate_signing_key(tokens.key.algorithm))
    token, _ = stranger.issue(CLUSTER, "default", "robot", UID, now=NOW)
    with pytest.raises(AuthenticationFailed):
        tokens.verify(token, Accounts(), NOW)


def test_expired_token_is_refused(tokens: ServiceAccountTokens) -> None:
    token, expires = tokens.issue(CLUSTER, "default", "robot", UID, expiration_seconds=600, now=NOW)
    tokens.verify(token, Accounts(), expires - 1)
    with pytest.raises(AuthenticationFailed, match="expired"):
        tokens.verify(token, Accounts(), expires)


def test_not_yet_valid_token_is_refused(tokens: ServiceAccountTokens) -> None:
    token, _ = tokens.issue(CLUSTER, "default", "robot", UID, now=NOW + 3600)
    with pytest.raises(AuthenticationFailed, match="not valid yet"):
        tokens.verify(token, Accounts(), NOW)


def test_wrong_audience_is_refused(key: SigningKey) -> None:
    issuer = ServiceAccountTokens(key, api_audiences=["vault"])
    token, _ = issuer.issue(CLUSTER, "default", "robot", UID, now=NOW)
    with pytest.raises(AuthenticationFailed):
        ServiceAccountTokens(key, api_audiences=["vwproxy"]).verify(token, Accounts(), NOW)


def test_wrong_issuer_is_refused(key: SigningKey) -> None:
    token, _ = ServiceAccountTokens(key, issuer="https://elsewhere", api_audiences=[DEFAULT_ISSUER]).issue(
        CLUSTER, "default", "robot", UID, now=NOW)
    with pytest.raises(AuthenticationFailed):
        ServiceAccountTokens(key).verify(token, Accounts(), NOW)


def test_deleted_service_account_revokes_its_tokens(tokens: ServiceAccountTokens) -> None:
    token, _ = tokens.issue(CLUSTER, "default", "robot", UID, now=NOW)
    accounts = Accounts()
    del accounts.uids[(CLUSTER, "default", "robot")]
    with pytest.raises(AuthenticationFailed, match="deleted"):
        tokens.verify(token, accounts, NOW)


def test_recreated_service_account_does_not_inherit_old_tokens(tokens: ServiceAccountTokens) -> None:
    token, _ = tokens.issue(CLUSTER, "default", "robot", UID, now=NOW)
    accounts = Accounts()
    accounts.uids[(CLUSTER, "default", "robot")] = "a-new-uid"
    with pytest.raises(AuthenticationFailed, match="uid"):
        tokens.verify(token, accounts, NOW)


def test_same_name_in_another_workspace_is_not_the_same_account(tokens: ServiceAccountTokens) -> None:
    token, _ = tokens.issue(CLUSTER, "default", "robot", UID, now=NOW)
    accounts = Accounts()
    accounts.uids = {("2x9kq0z8vbc1ab3d", "default", "robot"): UID}
    with pytest.raises(AuthenticationFailed):
        tokens.verify(token, accounts, NOW)


def test_subject_must_agree_with_the_kubernetes_claim(key: SigningKey) -> None:
    claims = {"iss": DEFAULT_ISSUER, "aud": [DEFAULT_ISSUER], "sub": "system:serviceaccount:kube-system:admin",
              "exp": NOW + 600, "nbf": NOW, "iat": NOW,
              "kubernetes.io": {"clusterName": CLUSTER, "namespace": "default", "serviceaccount": {"name": "robot", "uid": UID}}}
    token = jwt.encode(claims, key.private_key, algorithm=key.algorithm)
    with pytest.raises(AuthenticationFailed, match="subject"):
        ServiceAccountTokens(key).verify(token, Accounts(), NOW)


def test_signing_key_is_created_once_and_kept(tmp_path: Path) -> None:
    first = load_or_create_signing_key(tmp_path, "ES256")
    assert (tmp_path / SIGNING_KEY_FILE).stat().st_mode & 0o777 == 0o600
    again = load_or_create_signing_key(tmp_path, "RS256")
    assert again.key_id == first.key_id and again.algorithm == "ES256"
    token, _ = ServiceAccountTokens(first).issue(CLUSTER, "default", "robot", UID, now=NOW)
    assert ServiceAccountTokens(again).verify(token, Accounts(), NOW).name.endswith(":robot")


# --- static tokens ------------------------------------------------------------------------


def test_static_token_file() -> None:
    table = StaticTokens.parse('t0ken,admin,1,"system:masters,ops"\nother,bob,2\n# comment\n\n')
    assert table.lookup("t0ken") == User("admin", ("system:masters", "ops"), uid="1")
    assert table.lookup("other") == User("bob", (), uid="2")
    assert table.lookup("t0ke") is None and len(table) == 2


@pytest.mark.parametrize("text", ["only,two\n", "dup,a,1\ndup,b,2\n", ",nobody,1\n"])
def test_static_token_file_errors(text: str) -> None:
    with pytest.raises(ValueError):
        StaticTokens.parse(text)


# --- the chained authenticator -------------------------------------------------------------


def _authenticator(tokens: ServiceAccountTokens, accounts: Accounts, clock: Clock) -> Authenticator:
    return Authenticator(service_accounts=tokens, sa_lookup=accounts, clock=clock,
                         static=StaticTokens.parse('adm1n,admin,1,"system:masters"\n'))


def test_no_header_is_anonymous(tokens: ServiceAccountTokens) -> None:
    user = _authenticator(tokens, Accounts(), Clock()).authenticate(None)
    assert user == ANONYMOUS and user.name == "system:anonymous" and user.groups == (UNAUTHENTICATED,)


@pytest.mark.parametrize("header", ["Bearer nonsense", "Bearer ", "Basic YWRtaW46YWRtaW4=", "Bearer a b", "bearer",
                                    "Bearer eyJhbGciOiJub25lIn0.e30."])
def test_present_but_unusable_header_is_401(tokens: ServiceAccountTokens, header: str) -> None:
    with pytest.raises(AuthenticationFailed) as failure:
        _authenticator(tokens, Accounts(), Clock()).authenticate(header)
    status = failure.value.to_status()
    assert (status.code, status.reason, status.message) == (401, "Unauthorized", "Unauthorized")


def test_static_admin_and_service_account(tokens: ServiceAccountTokens) -> None:
    auth = _authenticator(tokens, Accounts(), Clock())
    admin = auth.authenticate("Bearer adm1n")
    assert admin.name == "admin" and admin.groups == ("system:masters", AUTHENTICATED)
    token, _ = tokens.issue(CLUSTER, "default", "robot", UID, now=NOW)
    assert auth.authenticate(f"bearer {token}").cluster == CLUSTER


def test_cached_token_still_rechecks_the_service_account(tokens: ServiceAccountTokens) -> None:
    accounts, clock = Accounts(), Clock()
    auth = _authenticator(tokens, accounts, clock)
    token, _ = tokens.issue(CLUSTER, "default", "robot", UID, now=NOW)
    auth.authenticate(f"Bearer {token}")
    del accounts.uids[(CLUSTER, "default", "robot")]
    with pytest.raises(AuthenticationFailed, match="deleted"):
        auth.authenticate(f"Bearer {token}")  # still cached, yet refused at once


def test_cached_token_still_expires(tokens: ServiceAccountTokens) -> None:
    clock = Clock()
    auth = _authenticator(tokens, Accounts(), clock)
    token, expires = tokens.issue(CLUSTER, "default", "robot", UID, expiration_seconds=600, now=NOW)
    clock.now = expires - 1
    auth.authenticate(f"Bearer {token}")
    clock.now = expires
    with pytest.raises(AuthenticationFailed, match="expired"):
        auth.authenticate(f"Bearer {token}")


def test_token_cache_spares_the_signature_check_and_expires(tokens: ServiceAccountTokens, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    auth = _authenticator(tokens, Accounts(), clock)
    token, _ = tokens.issue(CLUSTER, "default", "robot", UID, now=NOW)
    verifications = []
    original = tokens.verify_signature
    monkeypatch.setattr(tokens, "verify_signature", lambda t: verifications.append(t) or original(t))
    auth.authenticate(f"Bearer {token}")
    auth.authenticate(f"Bearer {token}")
    assert len(verifications) == 1
    clock.now += TOKEN_CACHE_TTL_SECONDS + 1
    auth.authenticate(f"Bearer {token}")
    assert len(verifications) == 2


def test_unknown_issuer_is_401(tokens: ServiceAccountTokens, key: SigningKey) -> None:
    token = jwt.encode({"iss": "https://stranger", "sub": "x", "exp": NOW + 60}, key.private_key, algorithm=key.algorithm)
    with pytest.raises(AuthenticationFailed, match="issuer"):
        _authenticator(tokens, Accounts(), Clock()).authenticate(f"Bearer {token}")


def test_bearer_token_parsing() -> None:
    assert bearer_token(None) is None
    assert bearer_token("Bearer abc") == "abc" and bearer_token("  BEARER abc ") == "abc"
