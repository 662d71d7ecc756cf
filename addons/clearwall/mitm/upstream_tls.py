"""Per-destination upstream TLS: a private CA bundle and a client certificate (mTLS).

mitmproxy's TlsConfig (a default addon, so it runs first) builds the upstream TLS connection
from global options. For a destination with `upstream: {ca_bundle, client_cert, client_key}`
this addon replaces that connection with one that trusts only the destination's CA bundle
(when given) and presents its client certificate, keeping SNI, hostname verification and ALPN
as TlsConfig set them. Anything that goes wrong leaves no TLS context, so mitmproxy closes the
upstream connection and the client gets 502: never a connection with weaker settings.

Upstream handshake failures (untrusted certificate, wrong name, client certificate refused) are
logged with mitmproxy's reason.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import tempfile
from pathlib import Path

from mitmproxy import connection, ctx
from mitmproxy.addons.tlsconfig import DEFAULT_HOSTFLAGS, _default_ciphers
from mitmproxy.net import tls as net_tls
from mitmproxy.tls import TlsData
from OpenSSL import SSL

from clearwall.mitm.guard import guarded
from clearwall.mitm.runtime import Runtime
from clearwall.policy.ruleset import CompiledDestination, RuleSet

log = logging.getLogger("clearwall")


def upstream_destination(rules: RuleSet, host: str, port: int) -> CompiledDestination | None:
    """The first intercepted destination for host:port that sets `upstream` TLS options."""
    for d in rules.destinations:
        spec = d.spec
        if spec is not None and spec.upstream is not None and spec.tls == "intercept" \
                and d.matches_host(host, port, "https"):
            return d
    return None


def resolve_path(rules: RuleSet, dest_name: str, value: str) -> Path:
    """A path from a destination entry, relative to the file that declares the destination."""
    path = Path(os.path.expanduser(value))
    if path.is_absolute():
        return path
    source = rules.sources.get(dest_name, "")
    base = Path(source.rsplit(":", 1)[0]).parent if source else Path.cwd()
    return base / path


class UpstreamTls:
    name = "clearwall-upstream-tls"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._dir = Path(tempfile.mkdtemp(prefix="clearwall-mtls-"))  # mode 0700
        self._combined: dict[tuple, str] = {}  # (cert, key, mtimes) -> cert+key file

    def _client_pem(self, cert: Path, key: Path) -> str:
        """cert and key in one file (mitmproxy's loader reads both from one path), mode 0600."""
        ident = (str(cert), str(key), cert.stat().st_mtime_ns, key.stat().st_mtime_ns)
        out = self._combined.get(ident)
        if out is None:
            data = cert.read_bytes().rstrip(b"\n") + b"\n" + key.read_bytes()
            fd, out = tempfile.mkstemp(dir=self._dir, suffix=".pem")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self._combined[ident] = out
        return out

    @guarded
    def tls_start_server(self, data: TlsData) -> None:
        server = data.conn
        if not isinstance(server, connection.Server) or server.address is None or data.is_dtls:
            return
        rules = self.runtime.rules
        host = server.sni or server.address[0]
        dest = upstream_destination(rules, host, server.address[1]) if rules is not None else None
        if dest is None:
            return
        opts = dest.spec.upstream
        try:
            ca = str(resolve_path(rules, dest.name, opts.ca_bundle)) if opts.ca_bundle else ctx.options.ssl_verify_upstream_trusted_ca
            client = None
            if opts.client_cert:
                client = self._client_pem(resolve_path(rules, dest.name, opts.client_cert),
                                          resolve_path(rules, dest.name, opts.client_key))
            data.ssl_conn = self._connection(server, ca, client)
        except Exception as e:  # unreadable file, bad PEM, OpenSSL error: fail closed
            data.ssl_conn = None
            log.error("upstream TLS for destination %s cannot be set up (%s); refusing the connection",
                      dest.name, type(e).__name__ + (f": {e}" if isinstance(e, OSError) else ""))

    @staticmethod
    def _connection(server: connection.Server, ca: str | None, client: str | None) -> SSL.Connection:
        cipher_list = server.cipher_list or _default_ciphers(net_tls.Version[ctx.options.tls_version_server_min])
        ssl_ctx = net_tls.create_proxy_server_context(
            method=net_tls.Method.TLS_CLIENT_METHOD,
            min_version=net_tls.Version[ctx.options.tls_version_server_min],
            max_version=net_tls.Version[ctx.options.tls_version_server_max],
            cipher_list=tuple(cipher_list),
            ecdh_curve=ctx.options.tls_ecdh_curve_server,
            verify=net_tls.Verify.VERIFY_PEER,  # never weaker than the default, whatever ssl_insecure says
            ca_path=None,
            ca_pemfile=ca,
            client_cert=client,
            legacy_server_connect=False,
        )
        conn = SSL.Connection(ssl_ctx)
        sni = server.sni or server.address[0]
        param = SSL._lib.SSL_get0_param(conn._ssl)  # hostname verification, as TlsConfig does it
        SSL._lib.X509_VERIFY_PARAM_set_hostflags(param, DEFAULT_HOSTFLAGS)
        try:
            ip = ipaddress.ip_address(sni).packed
        except ValueError:
            name = sni.encode("idna")
            conn.set_tlsext_host_name(name)
            SSL._openssl_assert(SSL._lib.X509_VERIFY_PARAM_set1_host(param, name, len(name)) == 1)
        else:
            SSL._openssl_assert(SSL._lib.X509_VERIFY_PARAM_set1_ip(param, ip, len(ip)) == 1)
        if server.alpn_offers:
            conn.set_alpn_protos(server.alpn_offers)
        conn.set_connect_state()
        return conn

    @guarded
    def tls_failed_server(self, data: TlsData) -> None:
        server = data.conn
        where = server.sni or (server.address[0] if server.address else "?")
        log.warning("upstream TLS handshake with %s failed: %s", where, server.error or "unknown reason")
