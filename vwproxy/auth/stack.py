"""Everything the server needs from the auth layer, built from a data dir in one call at start.

    auth = build_auth(data_dir, sa_lookup=..., rbac_source=..., server_url="https://127.0.0.1:6443")
    user = auth.authenticator.authenticate(request.headers.get("authorization"))
    checked(workspace_chain(auth.rbac.authorize), user, cluster, attributes)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from vwproxy.auth.authenticator import Authenticator
from vwproxy.auth.keys import load_or_create_signing_key
from vwproxy.auth.oidc import JWTIssuer, load_authentication_config
from vwproxy.auth.policy import load_bootstrap_policy
from vwproxy.auth.rbac import RBACAuthorizer, RBACSource
from vwproxy.auth.static import StaticTokens
from vwproxy.auth.tls import (
    ServingFiles,
    ensure_admin_token,
    ensure_serving_certificate,
    write_admin_kubeconfig,
)
from vwproxy.auth.tokens import (
    DEFAULT_ISSUER,
    ServiceAccountLookup,
    ServiceAccountTokens,
)


@dataclass(frozen=True)
class AuthStack:
    authenticator: Authenticator
    rbac: RBACAuthorizer
    service_accounts: ServiceAccountTokens
    serving: ServingFiles
    admin_kubeconfig: Path | None


def _static_tokens(files: Sequence[Path]) -> StaticTokens:
    text = "\n".join(path.read_text() for path in files)
    return StaticTokens.parse(text, where=", ".join(str(p) for p in files))


def _issuers(path: Path | None, development: bool) -> tuple[JWTIssuer, ...]:
    if path is None:
        return ()
    return load_authentication_config(yaml.safe_load(path.read_text()) or {}, path.parent, development=development)


def build_auth(
    data_dir: Path,
    *,
    sa_lookup: ServiceAccountLookup,
    rbac_source: RBACSource,
    server_url: str | None = None,
    hosts: Sequence[str] = (),
    policy_paths: Sequence[Path] = (),
    token_files: Sequence[Path] = (),
    authentication_config: Path | None = None,
    development: bool = False,
    issuer: str = DEFAULT_ISSUER,
    api_audiences: Sequence[str] = (),
) -> AuthStack:
    """Generate or reuse the CA, serving certificate, signing key and admin token in `data_dir`;
    load the policies, token files and external issuers. Configuration errors raise ValueError."""
    data_dir.mkdir(parents=True, exist_ok=True)
    serving = ensure_serving_certificate(data_dir, hosts)
    admin_tokens, _ = ensure_admin_token(data_dir)
    service_accounts = ServiceAccountTokens(load_or_create_signing_key(data_dir), issuer, api_audiences)
    authenticator = Authenticator(
        service_accounts=service_accounts, sa_lookup=sa_lookup,
        static=_static_tokens([admin_tokens, *token_files]),
        issuers=_issuers(authentication_config, development),
    )
    rbac = RBACAuthorizer(rbac_source, load_bootstrap_policy(policy_paths))
    kubeconfig = write_admin_kubeconfig(data_dir, server_url) if server_url else None
    return AuthStack(authenticator, rbac, service_accounts, serving, kubeconfig)
