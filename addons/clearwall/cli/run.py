"""`clearwall run`: check everything an operator can get wrong, then start the proxy."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
from pathlib import Path

from clearwall import allocator, ca
from clearwall.errors import StartupError
from clearwall.policy.loader import load_rules


def parse_hostport(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise StartupError(f"{flag} {value!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host.strip("[]") or "0.0.0.0", int(port)


def check_port_free(host: str, port: int, flag: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise StartupError(f"{host}:{port} is already in use ({flag}); stop the other process or pick another port") from None
            raise StartupError(f"cannot listen on {host}:{port} ({flag}): {e.strerror}") from None


def check_log_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".clearwall-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StartupError(f"log directory {path} is not writable (--log-dir): {e.strerror}") from None


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s clearwall %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("clearwall").setLevel(logging.INFO)


def register(sub) -> None:
    p = sub.add_parser("run", help="start the proxy",
                       description="Start the proxy. Arguments after -- go to mitmproxy (e.g. -- --set ssl_insecure=false).")
    p.add_argument("--rules", default=os.environ.get("CLEARWALL_RULES", "rules/default.yaml"),
                   help="rule file or directory (env CLEARWALL_RULES; default rules/default.yaml)")
    p.add_argument("--listen", default="127.0.0.1:8080", help="proxy address (default 127.0.0.1:8080)")
    p.add_argument("--ca-dir", default=os.environ.get("CLEARWALL_CA_DIR", "ca"),
                   help="CA directory (env CLEARWALL_CA_DIR; default ca/)")
    p.add_argument("--log-dir", default=os.environ.get("CLEARWALL_LOG_DIR", "logs"),
                   help="body log directory (env CLEARWALL_LOG_DIR; default logs/)")
    p.add_argument("--admin", default=os.environ.get("CLEARWALL_ADMIN", "127.0.0.1:9090"),
                   help="admin endpoint for /metrics, /healthz, /readyz, /rules (default 127.0.0.1:9090; 'off' disables)")
    p.set_defaults(func=run)


def run(args) -> int:
    listen = parse_hostport(args.listen, "--listen")
    rules = load_rules(args.rules)  # every problem, located, before anything starts
    check_port_free(*listen, "--listen")
    admin = None if args.admin == "off" else parse_hostport(args.admin, "--admin")
    if admin:
        check_port_free(*admin, "--admin")
    ca_dir, log_dir = Path(args.ca_dir), Path(args.log_dir)
    info, created = ca.ensure_ca(ca_dir)
    check_log_dir(log_dir)
    _setup_logging()
    proxy = f"http://{'127.0.0.1' if listen[0] in ('0.0.0.0', '::') else listen[0]}:{listen[1]}"
    cert = info.cert_path.resolve()
    print(
        f"clearwall: {'created a new CA' if created else 'using the CA'} in {ca_dir.resolve()} ({info.subject}, sha256 {info.fingerprint_sha256})\n"
        f"clearwall: rules {rules.version} from {', '.join(rules.files)} ({len(rules.destinations)} destinations, mode {rules.settings.mode})\n"
        f"clearwall: proxy listening on {listen[0]}:{listen[1]}; body log in {log_dir.resolve()}\n"
        f"clearwall: clients set (docs/CLIENTS.md has each runtime's recipe):\n"
        f"  export HTTPS_PROXY={proxy} https_proxy={proxy} HTTP_PROXY={proxy} http_proxy={proxy}\n"
        f"  export SSL_CERT_FILE={cert} REQUESTS_CA_BUNDLE={cert} NODE_EXTRA_CA_CERTS={cert} CURL_CA_BUNDLE={cert}",
        file=sys.stderr, flush=True,
    )
    allocator.keep_large_blocks()  # large bodies stop page-faulting their memory back in
    from clearwall.mitm.master import serve  # mitmproxy is imported only when the proxy runs
    from clearwall.mitm.runtime import Runtime

    runtime = Runtime(admin=admin)
    return asyncio.run(serve(rules=args.rules, listen=listen, ca_dir=ca_dir, log_dir=log_dir,
                             mitm_args=getattr(args, "passthrough", []), runtime=runtime))
