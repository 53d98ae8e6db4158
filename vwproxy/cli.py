"""The `vwproxy` command: `serve` (the proxy on the example topology), `shard` (the embedded shard
alone) and `kubeconfig` (a kubeconfig for a running `serve`)."""

from __future__ import annotations

import argparse
import gc
import logging
import re
import shutil
import socket
import sys
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from starlette.types import ASGIApp

from vwproxy import __version__
from vwproxy import kubeconfig_command, up_command
from vwproxy.control.manifests import ManifestError, load_folder
from vwproxy.auth.keys import SIGNING_KEY_FILE, write_private_file
from vwproxy.auth.stack import build_auth
from vwproxy.auth.tls import CA_CERT, CA_KEY, SERVING_CERT, TOKEN_FILE, ensure_admin_token
from vwproxy.control.shards import DEFAULT_SHARD_NAME
from vwproxy.core.partition import Partition, PartitionError
from vwproxy.server.app import ServeApp
from vwproxy.server.guard import rbac_source, service_account_lookup
from vwproxy.server.auth_middleware import require_bearer_token
from vwproxy.server import serving
from vwproxy.server.reads import DEFAULT_BOOKMARK_INTERVAL, ReadHandler
from vwproxy.server.requestlog import RequestLog
from vwproxy.server.shard_app import build_shard_app
from vwproxy.store.shard import DEFAULT_HISTORY_SIZE, SEEDED_MARKER, Shard
from vwproxy.store.sqlite import StorageError, stored_marker
from vwproxy.upstream.backends import Backend, BackendConfigError, load_backends
from vwproxy.upstream.client import BackendClient

log = logging.getLogger("vwproxy")

DEFAULT_SERVE_PORT = 6443
DEFAULT_SHARD_PORT = 6444
# What a proxy shard copies from the control plane's data dir (--join-secrets).
JOIN_FILES = (CA_CERT, CA_KEY, SIGNING_KEY_FILE, TOKEN_FILE)
# A proxy shard's throwaway copy of the control plane, inside its data dir.
MIRROR_DIR = "mirror"
_SHARD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# One format for vwproxy's lines and uvicorn's (uvicorn's own logging config is not loaded).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

SERVE_DESCRIPTION = """\
Run vwproxy: kcp's virtual workspaces (the APIExport, initializing and terminating virtual
workspaces) and a kcp-shaped control plane, over an embedded shard of logical clusters kept in
SQLite in --data-dir. The config folder (default: the example topology) seeds a new data dir
once; later starts keep what users changed unless --reseed is given."""

SERVE_EXAMPLES = """\
examples:
  vwproxy serve
      the example topology on http://127.0.0.1:6443, data in ./.vwproxy
  vwproxy serve --config ./topology --data-dir /tmp/vw --port 7443
      your own manifests (and backends.yaml) in a fresh data dir
  vwproxy serve --reseed
      apply the config folder again over what the data dir holds
  vwproxy serve --data-dir cp --partition none --external-url https://cp.example:6443
  vwproxy serve --join https://cp.example:6443 --join-secrets cp --shard-name shard-1 --partition hash:0/2
          --data-dir s1 --port 6444 --external-url https://s1.example:6444
      a control plane and a proxy shard serving half the workspaces (README: Scaling out)
  kubectl --server http://127.0.0.1:6443/clusters/root:provider get apiexportendpointslices
      the virtual workspace URLs, as a controller finds them"""


def example_topology() -> Path:
    return Path(str(resources.files("vwproxy") / "data" / "example"))


def _shard_options(parser: argparse.ArgumentParser, default_port: int, default_dir: str) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path(default_dir), help=f"where the SQLite database lives (default: {default_dir})")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=default_port, help=f"listen port (default: {default_port})")
    parser.add_argument("--history", type=int, default=DEFAULT_HISTORY_SIZE, help="watch events kept per resource for resuming (default: %(default)s)")
    parser.add_argument("--durable", action="store_true", help="fsync every write (survive power loss, not only process crashes)")
    parser.add_argument("--bookmark-interval", type=float, default=DEFAULT_BOOKMARK_INTERVAL, help="seconds between watch BOOKMARKs (default: %(default)s)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--tls-cert-file", type=Path, default=None, help="serve HTTPS with this PEM certificate (kubectl sends bearer tokens only over HTTPS)")
    parser.add_argument("--tls-private-key-file", type=Path, default=None, help="the PEM private key of --tls-cert-file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vwproxy", description="A stand-in for kcp's virtual workspaces.")
    parser.add_argument("--version", action="version", version=f"vwproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", help="run vwproxy on the embedded shard with the example topology (or --config)",
        description=SERVE_DESCRIPTION, epilog=SERVE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _shard_options(serve, DEFAULT_SERVE_PORT, ".vwproxy")
    serve.add_argument("--config", type=Path, default=None, help="folder of kcp YAML manifests (default: the example topology)")
    serve.add_argument("--reseed", action="store_true", help="apply the config folder again, though the data dir was seeded before")
    serve.add_argument("--external-url", default="", help="the URL clients use to reach this server (default: the listen address)")
    serve.add_argument("--insecure-open", action="store_true",
                       help="DEMOS ONLY: plain HTTP (unless --tls-cert-file), no authentication, every caller an admin")
    serve.add_argument("--policy", type=Path, action="append", default=[],
                       help="RBAC policy file or folder replacing the bootstrap policies shipped in policies/ (repeatable)")
    serve.add_argument("--token-auth-file", type=Path, action="append", default=[],
                       help="static bearer tokens, kube-apiserver's CSV format: token,user,uid,\"group1,group2\" (repeatable)")
    serve.add_argument("--authentication-config", type=Path, default=None,
                       help="external JWT issuers, in Kubernetes' AuthenticationConfiguration format")
    serve.add_argument("--dev-allow-hs256", action="store_true", help="DEVELOPMENT ONLY: accept HS256 (shared-secret) JWTs from external issuers")
    shard = sub.add_parser("shard", help="run the embedded shard alone (a Kubernetes API for many logical clusters)")
    _shard_options(shard, DEFAULT_SHARD_PORT, ".vwproxy-shard")
    auth = shard.add_mutually_exclusive_group()
    auth.add_argument("--token", default="", help="require 'Authorization: Bearer TOKEN' (visible in the process list: prefer --token-file)")
    auth.add_argument("--token-file", type=Path, default=None, help="require the bearer token read from this file")
    serve.add_argument("--shard-name", default=DEFAULT_SHARD_NAME,
                       help="the name this process registers as its Shard in root (default: %(default)s)")
    serve.add_argument("--partition", default="",
                       help="the logical clusters whose virtual workspaces this process serves: all, none, hash:I/N or "
                            "clusters:NAME,... (default: all; a proxy shard must say)")
    serve.add_argument("--join", default="", metavar="URL",
                       help="run as a proxy shard of the control plane at URL (its front), serving its --partition")
    serve.add_argument("--join-secrets", type=Path, default=None, metavar="DIR",
                       help="with --join: the control plane's data dir, or a copy of its ca.crt, ca.key, service-account.key and tokens.csv")
    serve.add_argument("--deterministic", action="store_true",
                       help="logical cluster names derived from workspace paths and a fixed proxy RV base (for tests that assert on them)")
    kubeconfig_command.add_parser(sub)
    up_command.add_parsers(sub)
    return parser


def _shard_token(args: argparse.Namespace) -> str:
    """The bearer token the shard requires ("" for none), from --token or --token-file."""
    if args.token_file is not None:
        try:
            token = str(args.token_file.read_text()).strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(f"vwproxy: --token-file {args.token_file}: cannot read: {exc.__class__.__name__}") from None
        if not token:
            raise SystemExit(f"vwproxy: --token-file {args.token_file}: the file is empty")
        return token
    token = str(args.token).strip()
    if args.token and not token:
        raise SystemExit("vwproxy: --token must not be blank")
    return token


def _partition(args: argparse.Namespace) -> Partition:
    if not _SHARD_NAME.match(args.shard_name):
        raise ValueError(f"--shard-name {args.shard_name!r}: a shard name is a DNS label (lowercase letters, digits and '-', at most 63)")
    if args.join and not args.partition:
        raise ValueError("--join needs --partition: which logical clusters this proxy shard serves (hash:I/N, clusters:NAME,...)")
    try:
        return Partition.parse(args.partition or "all")
    except PartitionError as exc:
        raise ValueError(f"--partition {exc}") from None


def _joining(args: argparse.Namespace) -> BackendClient | None:
    """With --join: the control plane's credentials copied from --join-secrets into the data dir
    (its CA signs this shard's serving certificate, its signing key verifies ServiceAccount
    tokens, its admin token reaches it), and a client for its front."""
    if not args.join:
        if args.join_secrets is not None:
            raise ValueError("--join-secrets goes with --join")
        return None
    if args.join_secrets is None:
        raise ValueError("--join needs --join-secrets DIR: the control plane's data dir (ca.crt, ca.key, service-account.key, tokens.csv)")
    if args.shard_name == DEFAULT_SHARD_NAME:
        raise ValueError(f"--join needs a --shard-name of its own (the control plane is {DEFAULT_SHARD_NAME!r} unless told otherwise)")
    url = args.join.rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"--join {args.join!r}: the control plane's URL, e.g. https://control-plane:6443")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    for name in JOIN_FILES:
        source = args.join_secrets / name
        try:
            content = source.read_bytes()
        except OSError as exc:
            raise ValueError(f"--join-secrets {args.join_secrets}: {name}: cannot read: {exc.strerror or exc.__class__.__name__}") from None
        target = args.data_dir / name
        if not target.exists() or target.read_bytes() != content:
            write_private_file(target, content)
            if name == CA_CERT:
                (args.data_dir / SERVING_CERT).unlink(missing_ok=True)  # signed by another CA: made anew
    _, token = ensure_admin_token(args.data_dir)
    ca = "" if url.startswith("http://") else str(args.data_dir / CA_CERT)
    try:
        return BackendClient(Backend(name="control-plane", url=url, token=token, ca_file=ca))
    except BackendConfigError as exc:
        raise ValueError(f"--join: {exc}") from None


def _open_mirror(args: argparse.Namespace) -> Shard:
    """A proxy shard's copy of the control plane: made anew at every start (it is re-listed)."""
    folder = args.data_dir / MIRROR_DIR
    shutil.rmtree(folder, ignore_errors=True)
    try:
        return Shard(folder, history_size=args.history)
    except StorageError as exc:
        raise SystemExit(f"vwproxy: {exc}") from None


def _hosts(host: str, external: str) -> tuple[str, ...]:
    """The names the serving certificate must hold: the listen address and the external URL's host."""
    name = urlsplit(external).hostname or ""
    return tuple(dict.fromkeys(h for h in (host, name) if h and h not in ("0.0.0.0", "::")))


def _open_shard(args: argparse.Namespace) -> Shard:
    if args.history < 1:
        raise SystemExit("vwproxy: --history must be at least 1")
    try:
        shard = Shard(args.data_dir, history_size=args.history, durable=args.durable)
    except StorageError as exc:
        raise SystemExit(f"vwproxy: {exc}") from None
    # What was loaded lives as long as the process: keep it out of the cyclic collector's
    # generations, which otherwise walks all of it again at every full collection.
    gc.freeze()
    return shard


def _check_tls(args: argparse.Namespace) -> None:
    cert, key = args.tls_cert_file, args.tls_private_key_file
    if (cert is None) != (key is None):
        raise SystemExit("vwproxy: --tls-cert-file and --tls-private-key-file go together")
    for flag, path in (("--tls-cert-file", cert), ("--tls-private-key-file", key)):
        if path is not None and not path.is_file():
            raise SystemExit(f"vwproxy: {flag}: {path} is not a readable file")


def _scheme(args: argparse.Namespace) -> str:
    return "https" if args.tls_cert_file else "http"


def _bind(args: argparse.Namespace) -> socket.socket | None:
    """With `--port 0`, bind a free port now, so the URLs, certificates and kubeconfig made
    before listening name the port actually served."""
    if args.port != 0:
        return None
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, 0))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"vwproxy: --host {args.host}: cannot bind: {exc.strerror}") from None
    args.port = sock.getsockname()[1]
    return sock


def _run(app: ASGIApp, args: argparse.Namespace, reads: ReadHandler | None, sock: socket.socket | None = None) -> None:
    config = serving.config(
        RequestLog(app),
        args.host,
        args.port,
        loop="uvloop",
        log_config=None,
        log_level=args.log_level,
        access_log=False,  # RequestLog writes one line per request instead
        ssl_certfile=str(args.tls_cert_file) if args.tls_cert_file else None,
        ssl_keyfile=str(args.tls_private_key_file) if args.tls_private_key_file else None,
    )
    server = serving.GracefulServer(config, on_shutdown=reads.end_watches if reads is not None else None)
    server.run(sockets=[sock] if sock is not None else None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "kubeconfig":
        try:
            sys.stdout.write(kubeconfig_command.run(args))
        except kubeconfig_command.KubeconfigError as exc:
            print(f"vwproxy kubeconfig: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command in ("up", "down"):
        return up_command.run(args)
    _check_tls(args)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))  # one line per request is RequestLog's job
    if args.command == "shard":
        token = _shard_token(args)
        shard = _open_shard(args)
        shard_sock = _bind(args)
        log.info("embedded shard: %s, revision %d, serving on %s://%s:%d", shard.data_dir, shard.revision, _scheme(args), args.host, args.port)
        shard_app = build_shard_app(shard, args.bookmark_interval)
        app: ASGIApp = shard_app
        if token:
            log.info("requests need a bearer token (health endpoints excepted)")
            app = require_bearer_token(app, token)
        try:
            _run(app, args, shard_app.state.reads, shard_sock)
        finally:
            shard.close()
        return 0
    try:
        partition = _partition(args)
        join = _joining(args)
    except ValueError as exc:
        print(f"vwproxy: {exc}", file=sys.stderr)
        return 2
    config = args.config or (None if join is not None else example_topology())
    # A data dir seeded before is not seeded again (DESIGN §5): its manifests are not even read.
    seeded = join is None and not args.reseed and stored_marker(args.data_dir, SEEDED_MARKER) > 0
    if seeded:
        log.info("data dir %s was seeded before: the manifests in %s are not read (--reseed applies them again)", args.data_dir, config)
    try:
        manifests = load_folder(config) if config is not None and join is None and not seeded else []
        backends = load_backends(config) if config is not None else {}
    except (ManifestError, BackendConfigError) as exc:
        print(f"vwproxy: {exc}", file=sys.stderr)
        return 2
    if join is not None:
        shard = _open_mirror(args)
    else:
        shard = _open_shard(args)
    sock = _bind(args)
    auth = None
    if args.insecure_open:
        log.warning("INSECURE: --insecure-open: no authentication, every caller is treated as an admin; for throwaway demos only")
    else:
        scheme = "https"
        external = args.external_url.rstrip("/") or f"{scheme}://{args.host}:{args.port}"
        try:
            auth = build_auth(
                args.data_dir, sa_lookup=service_account_lookup(shard), rbac_source=rbac_source(shard), server_url=external,
                hosts=_hosts(args.host, external), policy_paths=args.policy, token_files=args.token_auth_file,
                authentication_config=args.authentication_config, development=args.dev_allow_hs256,
            )
        except (ValueError, OSError) as exc:
            shard.close()
            print(f"vwproxy: {exc}", file=sys.stderr)
            return 2
        if args.tls_cert_file is None:
            # Secure by default, like `kcp start`: a CA and serving certificate of our own in the data dir.
            args.tls_cert_file, args.tls_private_key_file = auth.serving.cert, auth.serving.key
    external = args.external_url.rstrip("/") or f"{_scheme(args)}://{args.host}:{args.port}"
    clients = {name: BackendClient(backend) for name, backend in backends.items()}
    log.info("vwproxy %s on %s: config %s, %d manifests, backends: %s", __version__, external, config, len(manifests), ", ".join(["embedded", *sorted(backends)]))
    serve_app = ServeApp(shard, external, manifests, clients, args.bookmark_interval, reseed=args.reseed, auth=auth, deterministic=args.deterministic,
                         shard_name=args.shard_name, partition=partition, join=join)
    del manifests  # the app drops its copy once started
    state = up_command.write_serve_state(args.data_dir, external)
    try:
        _run(serve_app, args, serve_app.reads, sock)
    finally:
        state.unlink(missing_ok=True)
        shard.close()
    return 0

if __name__ == "__main__":
    sys.exit(main())
