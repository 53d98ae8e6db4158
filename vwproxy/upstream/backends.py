"""Backend configuration: where a workspace's content lives and how to reach it.

A workspace lives on the built-in `embedded` shard (the default) or on a `kube` backend
declared in `backends.yaml` in the `--config` folder, one `Backend` document each:

    apiVersion: vwproxy.dev/v1alpha1
    kind: Backend
    metadata: {name: cluster-a}
    spec:
      url: https://10.0.0.1:6443      # a kcp workspace: …/clusters/<path>
      token: "…"                       # or tokenFile: path
      caFile: ca.crt                   # or insecureSkipTLSVerify: true
      clientCertFile: c.crt            # with clientKeyFile
      clientKeyFile: c.key
    # … or instead of url and credentials:
    #   kubeconfig: ./kubeconfig
    #   context: kind-a                # the current-context by default
      shard: false                     # true: the URL serves many logical clusters under
                                       # /clusters/<name> (a `vwproxy shard`, a kcp shard)

A `shard: true` backend is followed with one wildcard list+watch (`/clusters/*/…`) per resource,
whatever the number of its workspaces; each workspace on it names its logical cluster there with
the `vwproxy.dev/backend-cluster` annotation (default: the workspace's own logical cluster name).

Relative paths are relative to the folder of the file that names them (backends.yaml's folder
for `spec`, the kubeconfig's folder for paths inside a kubeconfig, as kubectl does). Inline
kubeconfig data (`certificate-authority-data`, `client-certificate-data`, `client-key-data`)
is written to a private temporary folder that is removed when the process exits.

Every error names the file, the document and the field; no error message and no `repr`
carries a credential.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import dataclasses
import os
import re
import shutil
import functools
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

API_VERSION = "vwproxy.dev/v1alpha1"
KIND = "Backend"
FILE_NAME = "backends.yaml"
# The built-in embedded shard; no declared backend may take its name.
EMBEDDED = "embedded"

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SPEC_FIELDS = frozenset(
    {"url", "token", "tokenFile", "caFile", "insecureSkipTLSVerify", "clientCertFile", "clientKeyFile", "kubeconfig", "context", "shard"}
)
_URL_ONLY_FIELDS = ("token", "tokenFile", "caFile", "insecureSkipTLSVerify", "clientCertFile", "clientKeyFile")
# kubeconfig user fields that name a way of authenticating vwproxy cannot use; ignoring them
# would send unauthenticated requests and fail later with a less helpful 401.
_UNSUPPORTED_USER_FIELDS = {
    "exec": "exec credential plugins are not supported",
    "auth-provider": "auth-provider plugins are not supported",
    "username": "basic authentication is not supported",
    "password": "basic authentication is not supported",
    "as": "impersonation is not supported",
}


class BackendConfigError(Exception):
    """A backends.yaml (or a kubeconfig it names) that cannot be used; the message names file and field."""


@dataclass(frozen=True)
class Backend:
    """One resolved kube backend: a base URL and the credentials vwproxy presents to it.

    `url` has no trailing slash; request paths (`/api/v1/…`) are appended to its path, so a URL
    ending in `/clusters/<path>` addresses one kcp workspace. Files are absolute paths.
    """

    name: str
    url: str
    token: str = field(default="", repr=False)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure: bool = False
    shard: bool = False  # serves many logical clusters under /clusters/<name>, and /clusters/* across them


def load_backends(path: Path) -> dict[str, Backend]:
    """The kube backends declared in `path` (a backends.yaml, or a config folder holding one).

    A folder without backends.yaml declares none: every workspace is on the embedded shard.
    The result never contains `embedded`, which is built in.
    """
    if path.is_dir():
        path = path / FILE_NAME
        if not path.exists():
            return {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BackendConfigError(f"{path}: does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BackendConfigError(f"{path}: cannot read: {_os_reason(exc)}") from None
    documents = _load_yaml_documents(text, str(path))
    backends: dict[str, Backend] = {}
    declared_at: dict[str, str] = {}
    for index, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        where = f"{path}#{index}"
        backend = _parse_document(doc, where, path.parent)
        if backend.name in backends:
            raise BackendConfigError(f"{where}: metadata.name: duplicate backend {backend.name!r} (first declared in {declared_at[backend.name]})")
        backends[backend.name] = backend
        declared_at[backend.name] = where
    return backends


@functools.cache
def _system_context() -> ssl.SSLContext:
    """One context with the system CAs, shared by every backend that needs nothing else."""
    return ssl.create_default_context()


def tls_context(backend: Backend) -> ssl.SSLContext:
    """The TLS settings for talking to `backend` (system CAs unless `ca_file`; client cert if any).

    Raises `ssl.SSLError` or `OSError` for unusable files; `load_backends` has already checked
    them, so this fails only if a file changed since.
    """
    if not backend.ca_file and not backend.cert_file and not backend.insecure:
        return _system_context()
    ctx = ssl.create_default_context(cafile=backend.ca_file or None)
    if backend.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if backend.cert_file:
        ctx.load_cert_chain(backend.cert_file, backend.key_file)
    return ctx


# --- parsing -----------------------------------------------------------------------------------


def _load_yaml_documents(text: str, where: str) -> list[Any]:
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        # Never str(exc): PyYAML quotes the offending line, which may hold a token.
        raise BackendConfigError(f"{where}: not valid YAML: {_yaml_reason(exc)}") from None


def _yaml_reason(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or "syntax error"
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(problem)


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _parse_backend(doc: Any, where: str, folder: Path) -> Backend:
    if not isinstance(doc, dict):
        raise BackendConfigError(f"{where}: a Backend must be a YAML mapping")
    if doc.get("apiVersion") != API_VERSION:
        raise BackendConfigError(f"{where}: apiVersion: must be {API_VERSION}, got {_show(doc.get('apiVersion'))}")
    if doc.get("kind") != KIND:
        raise BackendConfigError(f"{where}: kind: must be {KIND}, got {_show(doc.get('kind'))}")
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict):
        raise BackendConfigError(f"{where}: metadata.name: required")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise BackendConfigError(f"{where}: metadata.name: required")
    if not _NAME.match(name):
        raise BackendConfigError(f"{where}: metadata.name: {name!r} is not a valid name (lowercase letters, digits and '-', at most 63)")
    if name == EMBEDDED:
        raise BackendConfigError(f"{where}: metadata.name: {EMBEDDED!r} is reserved for the built-in embedded shard")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise BackendConfigError(f"{where}: spec: required (give either url or kubeconfig)")
    for key in spec:
        if key not in _SPEC_FIELDS:
            raise BackendConfigError(f"{where}: spec.{key}: unknown field (known: {', '.join(sorted(_SPEC_FIELDS))})")
    has_url, has_kubeconfig = "url" in spec, "kubeconfig" in spec
    if has_url == has_kubeconfig:
        raise BackendConfigError(f"{where}: spec: give either url or kubeconfig")
    if has_kubeconfig:
        for key in _URL_ONLY_FIELDS:
            if key in spec:
                raise BackendConfigError(f"{where}: spec.{key}: only with spec.url (a kubeconfig brings its own credentials)")
        return _from_kubeconfig(name, spec, where, folder)
    if "context" in spec:
        raise BackendConfigError(f"{where}: spec.context: only with spec.kubeconfig")
    return _from_url(name, spec, where, folder)


def _parse_document(doc: Any, where: str, folder: Path) -> Backend:
    backend = _parse_backend(doc, where, folder)
    spec = doc["spec"]
    if "shard" in spec:
        backend = dataclasses.replace(backend, shard=_bool(spec, "shard", where))
    return backend


def _show(value: Any) -> str:
    """A wrong non-secret value for a message (apiVersion, kind): quoted, or `nothing`."""
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _string(spec: dict[str, Any], key: str, where: str, prefix: str = "spec.") -> str:
    value = spec.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        # The value is not quoted: it may be a credential.
        raise BackendConfigError(f"{where}: {prefix}{key}: must be a string")
    return value


def _bool(spec: dict[str, Any], key: str, where: str, prefix: str = "spec.") -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise BackendConfigError(f"{where}: {prefix}{key}: must be true or false")
    return value


def _check_url(url: str, where: str, fld: str) -> str:
    if not url:
        raise BackendConfigError(f"{where}: {fld}: required")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        raise BackendConfigError(f"{where}: {fld}: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendConfigError(f"{where}: {fld}: must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise BackendConfigError(f"{where}: {fld}: credentials in the URL are not supported; use a token or a client certificate")
    if parts.query or parts.fragment:
        raise BackendConfigError(f"{where}: {fld}: must not have a query or fragment")
    return url.rstrip("/")


def _existing_file(value: str, folder: Path, where: str, fld: str) -> str:
    path = Path(value).expanduser()
    resolved = path if path.is_absolute() else folder / path
    if not resolved.exists():
        shown = value if path.is_absolute() else f"{value} (looked at {resolved})"
        raise BackendConfigError(f"{where}: {fld}: {shown} does not exist")
    if not resolved.is_file():
        raise BackendConfigError(f"{where}: {fld}: {value} is not a file")
    return str(resolved.resolve())


def _read_token_file(path: str, where: str, fld: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise BackendConfigError(f"{where}: {fld}: cannot read {path}: {_os_reason(exc)}") from None
    if not token:
        raise BackendConfigError(f"{where}: {fld}: {path} is empty")
    return token


@dataclass
class _Fields:
    """Which configuration field each TLS file came from, to name it when the file is unusable."""

    ca: str = ""
    cert: str = ""
    key: str = ""


def _from_url(name: str, spec: dict[str, Any], where: str, folder: Path) -> Backend:
    url = _check_url(_string(spec, "url", where), where, "spec.url")
    token = _string(spec, "token", where)
    token_file = _string(spec, "tokenFile", where)
    if "token" in spec and "tokenFile" in spec:
        raise BackendConfigError(f"{where}: spec.tokenFile: give either token or tokenFile")
    if "token" in spec and not token.strip():
        raise BackendConfigError(f"{where}: spec.token: must not be empty")
    if token_file:
        token = _read_token_file(_existing_file(token_file, folder, where, "spec.tokenFile"), where, "spec.tokenFile")
    insecure = _bool(spec, "insecureSkipTLSVerify", where)
    ca = _string(spec, "caFile", where)
    if ca and insecure:
        raise BackendConfigError(f"{where}: spec.insecureSkipTLSVerify: cannot be combined with spec.caFile")
    cert, key = _string(spec, "clientCertFile", where), _string(spec, "clientKeyFile", where)
    if bool(cert) != bool(key):
        missing = "clientKeyFile" if cert else "clientCertFile"
        raise BackendConfigError(f"{where}: spec.{missing}: required with {'clientCertFile' if cert else 'clientKeyFile'}")
    backend = Backend(
        name=name,
        url=url,
        token=token.strip(),
        ca_file=_existing_file(ca, folder, where, "spec.caFile") if ca else "",
        cert_file=_existing_file(cert, folder, where, "spec.clientCertFile") if cert else "",
        key_file=_existing_file(key, folder, where, "spec.clientKeyFile") if key else "",
        insecure=insecure,
    )
    _check_tls(backend, where, _Fields("spec.caFile", "spec.clientCertFile", "spec.clientKeyFile"))
    return backend


def _check_tls(backend: Backend, where: str, fields: _Fields) -> None:
    """Load the TLS files now, so a bad PEM is reported at start with the field that named it."""
    if not backend.ca_file and not backend.cert_file:
        return  # nothing of ours to load (and the system CA bundle costs ~20 ms and ~1 MB a context)
    try:
        ctx = ssl.create_default_context()
        if backend.ca_file:
            ctx.load_verify_locations(cafile=backend.ca_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise BackendConfigError(f"{where}: {fields.ca}: not a usable PEM CA bundle: {_ssl_reason(exc)}") from None
    if backend.cert_file:
        try:
            ctx.load_cert_chain(backend.cert_file, backend.key_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise BackendConfigError(
                f"{where}: {fields.cert}, {fields.key}: not a usable PEM certificate and matching key: {_ssl_reason(exc)}"
            ) from None


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc.args[-1] if exc.args else type(exc).__name__)
    return _os_reason(exc)


# --- kubeconfig --------------------------------------------------------------------------------


def backend_from_kubeconfig(path: Path, context: str = "", name: str = "kubeconfig") -> Backend:
    """The server and credentials of one kubeconfig context (default: its current context), as
    kubectl would use them: for clients outside the proxy, such as the benchmark harness."""
    spec: dict[str, Any] = {"kubeconfig": str(path.resolve())}
    if context:
        spec["context"] = context
    return _from_kubeconfig(name, spec, str(path), path.parent)


def _from_kubeconfig(name: str, spec: dict[str, Any], where: str, folder: Path) -> Backend:
    given = _string(spec, "kubeconfig", where)
    if not given:
        raise BackendConfigError(f"{where}: spec.kubeconfig: must not be empty")
    path = Path(_existing_file(given, folder, where, "spec.kubeconfig"))
    kwhere = f"{where}: spec.kubeconfig: {given}"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BackendConfigError(f"{kwhere}: cannot read: {_os_reason(exc)}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BackendConfigError(f"{kwhere}: not valid YAML: {_yaml_reason(exc)}") from None
    if not isinstance(config, dict):
        raise BackendConfigError(f"{kwhere}: not a kubeconfig (expected a mapping)")
    context_name = _string(spec, "context", where)
    if not context_name:
        current = config.get("current-context")
        if not isinstance(current, str) or not current:
            raise BackendConfigError(f"{where}: spec.context: {given} has no current-context; name a context")
        context_name = current
    contexts = _named(config, "contexts", "context", kwhere)
    if context_name not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        raise BackendConfigError(f"{where}: spec.context: context {context_name!r} not found in {given} (it has: {known})")
    context = contexts[context_name]
    cwhere = f"contexts[{context_name}].context"
    cluster_name = _string(context, "cluster", kwhere, f"{cwhere}.")
    if not cluster_name:
        raise BackendConfigError(f"{kwhere}: {cwhere}.cluster: required")
    clusters = _named(config, "clusters", "cluster", kwhere)
    if cluster_name not in clusters:
        raise BackendConfigError(f"{kwhere}: {cwhere}.cluster: cluster {cluster_name!r} not found")
    cluster = clusters[cluster_name]
    cl = f"clusters[{cluster_name}].cluster."
    url = _check_url(_string(cluster, "server", kwhere, cl), kwhere, f"{cl}server")
    kfolder = path.parent
    fields = _Fields()
    insecure = _bool(cluster, "insecure-skip-tls-verify", kwhere, cl)
    ca_file, fields.ca = _file_or_data(name, cluster, "certificate-authority", kfolder, kwhere, cl)
    if ca_file and insecure:
        raise BackendConfigError(f"{kwhere}: {cl}insecure-skip-tls-verify: cannot be combined with a certificate authority")

    token, cert_file, key_file = "", "", ""
    user_name = _string(context, "user", kwhere, f"{cwhere}.")
    if user_name:
        users = _named(config, "users", "user", kwhere)
        if user_name not in users:
            raise BackendConfigError(f"{kwhere}: {cwhere}.user: user {user_name!r} not found")
        user = users[user_name]
        us = f"users[{user_name}].user."
        for key, why in _UNSUPPORTED_USER_FIELDS.items():
            if user.get(key):
                raise BackendConfigError(f"{kwhere}: {us}{key}: {why}; use a token or a client certificate")
        token = _string(user, "token", kwhere, us)
        token_file = _string(user, "tokenFile", kwhere, us)
        if token_file and not token:
            token = _read_token_file(_existing_file(token_file, kfolder, kwhere, f"{us}tokenFile"), kwhere, f"{us}tokenFile")
        cert_file, fields.cert = _file_or_data(name, user, "client-certificate", kfolder, kwhere, us)
        key_file, fields.key = _file_or_data(name, user, "client-key", kfolder, kwhere, us)
        if bool(cert_file) != bool(key_file):
            have, missing = ("client-certificate", "client-key") if cert_file else ("client-key", "client-certificate")
            raise BackendConfigError(f"{kwhere}: {us}{missing}: required with {have} (or its -data form)")
    backend = Backend(name=name, url=url, token=token.strip(), ca_file=ca_file, cert_file=cert_file, key_file=key_file, insecure=insecure)
    _check_tls(backend, kwhere, fields)
    return backend


def _named(config: dict[str, Any], section: str, inner: str, kwhere: str) -> dict[str, dict[str, Any]]:
    """A kubeconfig's `clusters`/`contexts`/`users` list as {name: inner mapping}."""
    entries = config.get(section) or []
    if not isinstance(entries, list):
        raise BackendConfigError(f"{kwhere}: {section}: must be a list")
    out: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BackendConfigError(f"{kwhere}: {section}[{i}].name: required")
        body = entry.get(inner)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise BackendConfigError(f"{kwhere}: {section}[{entry['name']}].{inner}: must be a mapping")
        out[entry["name"]] = body
    return out


def _file_or_data(backend: str, section: dict[str, Any], key: str, kfolder: Path, kwhere: str, prefix: str) -> tuple[str, str]:
    """(absolute file, field name) for `key` or `key-data` (inline base64, written to a private file)."""
    data = _string(section, f"{key}-data", kwhere, prefix)
    if data:
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BackendConfigError(f"{kwhere}: {prefix}{key}-data: not valid base64") from None
        return _write_private(backend, key, raw), f"{prefix}{key}-data"
    value = _string(section, key, kwhere, prefix)
    if value:
        return _existing_file(value, kfolder, kwhere, f"{prefix}{key}"), f"{prefix}{key}"
    return "", ""


_private_dir: Path | None = None


def _write_private(backend: str, key: str, data: bytes) -> str:
    """Write inline credential data to a 0600 file in a 0700 folder removed at exit."""
    global _private_dir
    if _private_dir is None or not _private_dir.is_dir():
        _private_dir = Path(tempfile.mkdtemp(prefix="vwproxy-credentials-"))  # mode 0700
        atexit.register(shutil.rmtree, str(_private_dir), True)
    fd, name = tempfile.mkstemp(prefix=f"{backend}-{key}-", suffix=".pem", dir=_private_dir)  # mode 0600
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return name
