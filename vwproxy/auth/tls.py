"""Serving certificates and the admin kubeconfig, generated into the data dir on first start
and reused afterwards (what `kcp start` does: HTTPS with its own CA, `admin.kubeconfig`).

Files in the data dir:
  ca.crt / ca.key            the CA (EC P-256, CA_VALIDITY_DAYS)
  serving.crt / serving.key  the server's certificate, signed by the CA; SANs localhost,
                             127.0.0.1, ::1 and the hosts asked for
  tokens.csv                 static tokens (kube's --token-file format) holding the admin's
  admin.kubeconfig           server URL, the CA, the admin token
"""

from __future__ import annotations

import base64
import csv
import datetime
import io
import ipaddress
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vwproxy.auth.identity import MASTERS
from vwproxy.auth.keys import write_private_file
from vwproxy.auth.static import StaticTokens

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVING_CERT, SERVING_KEY = "serving.crt", "serving.key"
TOKEN_FILE = "tokens.csv"
ADMIN_KUBECONFIG = "admin.kubeconfig"
ADMIN_USER = "admin"
CA_VALIDITY_DAYS = 3650  # a local CA outlives any data dir in practice
SERVING_VALIDITY_DAYS = 365  # as kcp's self-signed serving certs; renewed below when near expiry
RENEW_BEFORE_DAYS = 30  # a serving cert closer than this to expiry is replaced at start
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
ADMIN_TOKEN_BYTES = 32


@dataclass(frozen=True)
class ServingFiles:
    ca_cert: Path
    cert: Path
    key: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def new_ca(now: datetime.datetime, common_name: str = "vwproxy-ca") -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a fresh self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name}@{int(now.timestamp())}")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def new_serving_certificate(ca_cert_pem: bytes, ca_key_pem: bytes, hosts: Sequence[str],
                            now: datetime.datetime) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for a TLS server answering to `hosts`, signed by the CA."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    names = list(dict.fromkeys([*DEFAULT_HOSTS, *hosts]))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVING_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_san(name) for name in names]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _serving_cert_usable(cert_pem: bytes, ca_cert_pem: bytes, hosts: Sequence[str], now: datetime.datetime) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_cert_pem)
    if cert.issuer != ca.subject:
        return False
    if cert.not_valid_after_utc - now < datetime.timedelta(days=RENEW_BEFORE_DAYS):
        return False
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    present = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    present |= {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    wanted = {str(_san(h).value) for h in (*DEFAULT_HOSTS, *hosts)}
    return wanted <= present


def ensure_serving_certificate(data_dir: Path, hosts: Sequence[str] = (), now: datetime.datetime | None = None) -> ServingFiles:
    """The CA and serving certificate in `data_dir`, created on first start. Later starts reuse
    them; the serving certificate alone is replaced when near expiry or missing a host, so
    kubeconfigs holding the CA keep working."""
    now = now or _now()
    files = ServingFiles(data_dir / CA_CERT, data_dir / SERVING_CERT, data_dir / SERVING_KEY)
    ca_key_path = data_dir / CA_KEY
    if not (files.ca_cert.exists() and ca_key_path.exists()):
        ca_pem, ca_key = new_ca(now)
        write_private_file(ca_key_path, ca_key)
        files.ca_cert.write_bytes(ca_pem)
        files.cert.unlink(missing_ok=True)
    ca_pem = files.ca_cert.read_bytes()
    if files.cert.exists() and files.key.exists() and _serving_cert_usable(files.cert.read_bytes(), ca_pem, hosts, now):
        return files
    cert, key = new_serving_certificate(ca_pem, ca_key_path.read_bytes(), hosts, now)
    write_private_file(files.key, key)
    files.cert.write_bytes(cert)
    return files


def ensure_admin_token(data_dir: Path) -> tuple[Path, str]:
    """The token file (created with an admin in system:masters when missing) and the admin's token."""
    path = data_dir / TOKEN_FILE
    if not path.exists():
        token = secrets.token_urlsafe(ADMIN_TOKEN_BYTES)
        write_private_file(path, f'{token},{ADMIN_USER},{uuid.uuid4()},"{MASTERS}"\n'.encode())
    text = path.read_text()
    StaticTokens.parse(text, str(path))  # refuse a broken file early
    for cells in csv.reader(io.StringIO(text)):
        if len(cells) >= 2 and cells[1].strip() == ADMIN_USER:
            return path, cells[0].strip()
    raise ValueError(f"{path} has no line for user {ADMIN_USER!r}")


def admin_kubeconfig(server_url: str, ca_cert_pem: bytes, token: str, cluster: str = "root") -> bytes:
    """A kubeconfig with contexts `base` (the server) and `<cluster>` (its /clusters/<cluster>),
    the latter current, as kcp's admin.kubeconfig."""
    ca_data = base64.b64encode(ca_cert_pem).decode()
    base = server_url.rstrip("/")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "base", "cluster": {"server": base, "certificate-authority-data": ca_data}},
            {"name": cluster, "cluster": {"server": f"{base}/clusters/{cluster}", "certificate-authority-data": ca_data}},
        ],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [
            {"name": "base", "context": {"cluster": "base", "user": ADMIN_USER}},
            {"name": cluster, "context": {"cluster": cluster, "user": ADMIN_USER}},
        ],
        "current-context": cluster,
    }
    return yaml.safe_dump(config, sort_keys=False).encode()


def write_admin_kubeconfig(data_dir: Path, server_url: str, cluster: str = "root") -> Path:
    """`data_dir/admin.kubeconfig` for `server_url`, from the CA and the admin token (both ensured)."""
    files = ensure_serving_certificate(data_dir)
    _, token = ensure_admin_token(data_dir)
    path = data_dir / ADMIN_KUBECONFIG
    write_private_file(path, admin_kubeconfig(server_url, files.ca_cert.read_bytes(), token, cluster))
    return path
