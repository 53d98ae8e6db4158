"""kcp's names and hashes, checked against the vectors in kcp-reference.md (sections 3, 4, 8.3)."""

from __future__ import annotations

import secrets

from vwproxy.kube import kcp


def test_identity_hash_vector() -> None:
    assert kcp.identity_hash("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8") == "ea866a757e4c38babfa8127cbe9a409d3e1f93a00ff1488ff735fcf917afffd0"


def test_new_identity_key_shape() -> None:
    key = kcp.new_identity_key(bytes(range(32)))
    assert key == "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8" and len(key) == 43


def test_base62_sha224_vectors() -> None:
    assert kcp.CLAIMED_LABEL_PREFIX + kcp.base62_sha224("root:tenancy.kcp.io") == "claimed.internal.apis.kcp.io/bmCdly9xXiUpEHe3ypvDwvXMTfoVZUE92mqAQf"
    assert kcp.base62_sha224(b'{"resource":"configmaps","verbs":null}') == "3QVjs6pfBjMpLEVYYhysJnroYGsQGlWm05E4qe"
    assert kcp.base62_sha224(b'{"group":"apps","resource":"deployments","verbs":null,"identityHash":"deadbeef"}') == "4CpOMiJ5JL9ZC4cG8ne7nGNQbSOEUiwZ89KHal"
    assert kcp.base62(bytes(list(range(10)) * 2 + list(range(8)))) == "LstvmbbzVDDOn90ZbhzSQO5U3DMCf88h1pZ"


def test_initializer_label_vector() -> None:
    key, value = kcp.lifecycle_label(kcp.INITIALIZER_LABEL_PREFIX, "root:universal")
    assert key == "initializer.internal.kcp.io/d1d6459a03641b6fd7560fc2849f6c66fa9"
    assert value == "d1d6459a03641b6fd7560fc2849f6c66fa971a0afeded6ba2d2743f2"


def test_logical_cluster_names_are_kcp_shaped() -> None:
    names = {kcp.new_logical_cluster_name(secrets.token_bytes(32)) for _ in range(200)}
    assert len(names) == 200
    assert all(len(n) == 16 and kcp.is_logical_cluster_name(n) and n.isalnum() and n == n.lower() for n in names)


def test_paths_and_names() -> None:
    assert kcp.is_workspace_path("root:org:ws") and not kcp.is_workspace_path("root")
    assert not kcp.is_workspace_path("system:admin") and kcp.is_logical_cluster_name("system:admin")
    assert not kcp.is_logical_cluster_name("root:org")
