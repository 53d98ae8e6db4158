"""The generated CA, serving certificate and admin kubeconfig: valid, verifiable, reused."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from vwproxy.auth.static import StaticTokens
from vwproxy.auth.tls import (
    CA_KEY,
    RENEW_BEFORE_DAYS,
    SERVING_VALIDITY_DAYS,
    ensure_admin_token,
    ensure_serving_certificate,
    write_admin_kubeconfig,
)


def test_serving_certificate_chains_to_the_ca_with_sans(tmp_path: Path) -> None:
    files = ensure_serving_certificate(tmp_path, hosts=["proxy.example", "10.0.0.7"])
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "proxy.example"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.0.0.7")}
    for secret in (files.key, tmp_path / CA_KEY):
        assert secret.stat().st_mode & 0o777 == 0o600


def test_python_ssl_accepts_the_chain_over_a_real_handshake(tmp_path: Path) -> None:
    files = ensure_serving_certificate(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert, files.key)
    client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        hosts = ("localhost", "127.0.0.1")  # the DNS SAN and the IP SAN; hostname checking is on

        def serve() -> None:
            for _ in hosts:
                connection, _address = listener.accept()
                with server_ctx.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(b"ok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        for host in hosts:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=host) as tls:
                    assert tls.recv(2) == b"ok"
        thread.join(5)


def test_reused_on_the_next_start_and_renewed_when_needed(tmp_path: Path) -> None:
    first = ensure_serving_certificate(tmp_path, hosts=["a.example"])
    ca_before, cert_before = first.ca_cert.read_bytes(), first.cert.read_bytes()
    again = ensure_serving_certificate(tmp_path, hosts=["a.example"])
    assert (again.ca_cert.read_bytes(), again.cert.read_bytes()) == (ca_before, cert_before)
    # A new host: a new serving certificate, same CA (kubeconfigs keep working).
    more = ensure_serving_certificate(tmp_path, hosts=["a.example", "b.example"])
    cert_more = more.cert.read_bytes()
    assert more.ca_cert.read_bytes() == ca_before and cert_more != cert_before
    # Near expiry: renewed.
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=SERVING_VALIDITY_DAYS - RENEW_BEFORE_DAYS + 1)
    renewed = ensure_serving_certificate(tmp_path, hosts=["a.example", "b.example"], now=later)
    assert renewed.cert.read_bytes() != cert_more
    cert = x509.load_pem_x509_certificate(renewed.cert.read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_admin_token_and_kubeconfig(tmp_path: Path) -> None:
    path = write_admin_kubeconfig(tmp_path, "https://127.0.0.1:6443")
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "root"
    clusters = {c["name"]: c["cluster"] for c in config["clusters"]}
    assert clusters["root"]["server"] == "https://127.0.0.1:6443/clusters/root"
    assert clusters["base"]["server"] == "https://127.0.0.1:6443"
    ca = base64.b64decode(clusters["root"]["certificate-authority-data"])
    assert ca == (tmp_path / "ca.crt").read_bytes()
    token = config["users"][0]["user"]["token"]
    token_file, same = ensure_admin_token(tmp_path)
    assert same == token and len(token) >= 40
    admin = StaticTokens.load(token_file).lookup(token)
    assert admin is not None and admin.name == "admin" and admin.groups == ("system:masters",)
    assert path.stat().st_mode & 0o777 == 0o600 and token_file.stat().st_mode & 0o777 == 0o600
