"""The ServiceAccount token signing key: generated into the data dir on first start, loaded after.

The key ID is what kube-apiserver uses, base64url(SHA-256(DER public key)), so a JWKS published
later identifies the same key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

SIGNING_KEY_FILE = "service-account.key"
RSA_KEY_BITS = 2048  # kube-apiserver's usual service-account key size
# Asymmetric only: a verifier that accepted HS* could be fed our public key as an HMAC secret.
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")


@dataclass(frozen=True)
class SigningKey:
    """A private key, the JWS algorithm it signs with, and its key ID."""

    private_key: PrivateKey
    algorithm: str
    key_id: str

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RS256"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError(f"unsupported signing key {type(key).__name__}: use RSA or EC P-256")


def key_id(public_key: PublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def generate_signing_key(algorithm: str = "RS256") -> SigningKey:
    private: PrivateKey
    if algorithm == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"signing algorithm must be one of {', '.join(ASYMMETRIC_ALGORITHMS)}, not {algorithm!r}")
    return SigningKey(private, algorithm, key_id(private.public_key()))


def signing_key_from_pem(pem: bytes) -> SigningKey:
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError("the service-account signing key must be an RSA or EC P-256 private key")
    return SigningKey(private, algorithm_for(private), key_id(private.public_key()))


def load_or_create_signing_key(data_dir: Path, algorithm: str = "RS256") -> SigningKey:
    """The key in `data_dir/service-account.key`, created (mode 0600) if missing.

    An existing key is kept whatever `algorithm` says: replacing it would revoke every token
    already issued.
    """
    path = data_dir / SIGNING_KEY_FILE
    if path.exists():
        return signing_key_from_pem(path.read_bytes())
    key = generate_signing_key(algorithm)
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(path, pem)
    return key


def write_private_file(path: Path, content: bytes) -> None:
    """Write a secret readable by the owner only, atomically (a crash never leaves half a key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    os.replace(tmp, path)

