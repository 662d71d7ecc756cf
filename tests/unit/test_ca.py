"""The private CA: files mitmproxy reads, refusal of unsafe CAs, and `clearwall ca`."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import shutil
import ssl
import stat
import sys
import types
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import PolicyBuilder, Store

from clearwall import ca
from clearwall.errors import CAError

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)


def fixed(t: dt.datetime):
    return lambda: t


@pytest.fixture(scope="module")
def ec_ca(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ec") / "ca"
    ca.init_ca(d)
    return d


@pytest.fixture(scope="module")
def rsa_ca(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rsa") / "ca"
    ca.init_ca(d, key="rsa", name="Test RSA CA")
    return d


def copy_ca(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# --- files and modes -------------------------------------------------------------------------

@pytest.mark.parametrize("fname, expected_mode", [
    ("mitmproxy-ca.pem", 0o600),
    ("mitmproxy-ca.p12", 0o600),
    ("mitmproxy-ca-cert.pem", 0o644),
    ("mitmproxy-ca-cert.cer", 0o644),
    ("mitmproxy-ca-cert.p12", 0o644),
    ("mitmproxy-dhparam.pem", 0o644),
])
def test_init_writes_every_file_mitmproxy_would_create_with_its_mode(ec_ca, fname, expected_mode):
    old = os.umask(0o022)
    os.umask(old)
    assert mode(ec_ca / fname) == expected_mode & ~old


def test_init_creates_the_directory_private_to_its_owner(ec_ca):
    assert mode(ec_ca) == 0o700


def test_init_keeps_an_existing_directory_and_its_other_files(tmp_path):
    (tmp_path / "README").write_text("keep me")
    ca.init_ca(tmp_path)
    assert (tmp_path / "README").read_text() == "keep me"
    assert ca.check_ca(tmp_path) is ca.CAState.READY


def test_key_file_holds_key_then_certificate_and_cert_file_holds_no_key(ec_ca):
    kc = (ec_ca / ca.KEY_CERT_FILE).read_bytes()
    assert kc.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert b"BEGIN CERTIFICATE" in kc
    for public in (ca.CERT_FILE, ca.CER_FILE):
        assert b"PRIVATE KEY" not in (ec_ca / public).read_bytes()
    assert (ec_ca / ca.CERT_FILE).read_bytes() == (ec_ca / ca.CER_FILE).read_bytes()


def test_certificate_has_the_extensions_strict_verifiers_need(ec_ca):
    cert = x509.load_pem_x509_certificate((ec_ca / ca.CERT_FILE).read_bytes())
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert bc.critical and bc.value.ca
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert cert.subject == cert.issuer


@pytest.mark.parametrize("key, key_class, key_type", [
    ("ec", ec.EllipticCurvePrivateKey, "EC P-256"),
    ("rsa", rsa.RSAPrivateKey, "RSA 3072"),
])
def test_ec_and_rsa_keys(request, key, key_class, key_type):
    d = request.getfixturevalue(f"{key}_ca")
    private = serialization.load_pem_private_key((d / ca.KEY_CERT_FILE).read_bytes(), None)
    assert isinstance(private, key_class)
    assert ca.ca_info(d).key_type == key_type


def test_info_reports_subject_fingerprint_and_validity(tmp_path):
    info = ca.init_ca(tmp_path / "ca", name="Acme Egress CA", days=30, clock=fixed(NOW))
    cert = x509.load_pem_x509_certificate(ca.export_cert(tmp_path / "ca", clock=fixed(NOW)))
    assert "CN=Acme Egress CA" in info.subject
    assert info.fingerprint_sha256 == cert.fingerprint(ca.hashes.SHA256()).hex(":").upper()
    assert len(info.fingerprint_sha256.split(":")) == 32
    assert info.not_after == NOW + dt.timedelta(days=30)
    assert info.not_before < NOW
    assert info.cert_path == tmp_path / "ca" / "mitmproxy-ca-cert.pem"


# --- refusal to overwrite ----------------------------------------------------------------------

def test_init_refuses_to_replace_an_existing_ca(tmp_path):
    first = ca.init_ca(tmp_path)
    with pytest.raises(CAError, match="already holds a CA.*--force"):
        ca.init_ca(tmp_path)
    assert ca.ca_info(tmp_path).fingerprint_sha256 == first.fingerprint_sha256


def test_init_refuses_when_only_a_leftover_public_file_exists(tmp_path):
    (tmp_path / ca.DHPARAM_FILE).write_bytes(ca.FFDHE3072_PEM)
    with pytest.raises(CAError, match="already holds a CA"):
        ca.init_ca(tmp_path)


def test_force_replaces_the_ca_and_keeps_modes(tmp_path):
    first = ca.init_ca(tmp_path)
    second = ca.init_ca(tmp_path, force=True, key="rsa")
    assert second.fingerprint_sha256 != first.fingerprint_sha256
    assert mode(tmp_path / ca.KEY_CERT_FILE) == 0o600
    assert ca.check_ca(tmp_path) is ca.CAState.READY
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("kwargs, message", [
    ({"days": 0}, "1 to 36500 days"),
    ({"days": ca.MAX_DAYS + 1}, "1 to 36500 days"),
    ({"name": "  "}, "name must not be empty"),
    ({"key": "dsa"}, "'ec' or 'rsa'"),
])
def test_init_rejects_bad_arguments_without_writing(tmp_path, kwargs, message):
    with pytest.raises(CAError, match=message):
        ca.init_ca(tmp_path / "ca", **kwargs)
    assert not (tmp_path / "ca").exists()


@pytest.mark.parametrize("days", [1, ca.MAX_DAYS])
def test_init_accepts_validity_at_both_ends_of_the_range(tmp_path, days):
    info = ca.init_ca(tmp_path, days=days, clock=fixed(NOW))
    assert info.not_after == NOW + dt.timedelta(days=days)


# --- mitmproxy reads it as is ----------------------------------------------------------------

@pytest.mark.parametrize("key", ["ec", "rsa"])
def test_mitmproxy_certstore_loads_the_ca_and_writes_nothing(request, tmp_path, key):
    from mitmproxy.certs import CertStore

    d = copy_ca(request.getfixturevalue(f"{key}_ca"), tmp_path / "ca")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    store = CertStore.from_store(d, "mitmproxy", 2048)
    store.get_cert("example.test", [x509.DNSName("example.test")])
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert store.default_ca.fingerprint().hex(":").upper() == ca.ca_info(d).fingerprint_sha256


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> None:
    """A full TLS handshake over memory BIOs: no sockets, same verification as on the wire."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj in (("c", client), ("s", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize("key", ["ec", "rsa"])
def test_leaf_issued_by_mitmproxy_verifies_under_strict_x509(request, tmp_path, key):
    from mitmproxy.certs import CertStore

    d = request.getfixturevalue(f"{key}_ca")
    entry = CertStore.from_store(copy_ca(d, tmp_path / "ca"), "mitmproxy", 2048).get_cert(
        "example.test", [x509.DNSName("example.test")])
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(entry.cert.to_pem() + entry.privatekey.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(leaf)
    client_ctx = ssl.create_default_context(cafile=str(d / ca.CERT_FILE))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    _handshake(server_ctx, client_ctx, "example.test")

    # The same leaf under cryptography's RFC 5280 / CA-Browser-Forum verifier.
    root = x509.load_pem_x509_certificate((d / ca.CERT_FILE).read_bytes())
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName("example.test"))
    chain = verifier.verify(x509.load_pem_x509_certificate(entry.cert.to_pem()), [])
    assert chain[-1] == root


def test_leaf_for_another_name_is_refused_so_the_handshake_check_is_real(ec_ca, tmp_path):
    from mitmproxy.certs import CertStore

    entry = CertStore.from_store(copy_ca(ec_ca, tmp_path / "ca"), "mitmproxy", 2048).get_cert(
        "other.test", [x509.DNSName("other.test")])
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(entry.cert.to_pem() + entry.privatekey.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(leaf)
    client_ctx = ssl.create_default_context(cafile=str(ec_ca / ca.CERT_FILE))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_ctx, client_ctx, "example.test")


def test_dhparam_file_is_the_rfc7919_ffdhe3072_group(ec_ca):
    params = serialization.load_pem_parameters((ec_ca / ca.DHPARAM_FILE).read_bytes())
    numbers = params.parameter_numbers()
    assert numbers.g == 2 and numbers.p.bit_length() == 3072
    # RFC 7919 primes start and end with 64 one-bits.
    assert numbers.p >> (3072 - 64) == 2**64 - 1 and numbers.p & (2**64 - 1) == 2**64 - 1


# --- check_ca ---------------------------------------------------------------------------------

def test_missing_or_empty_directory_is_empty(tmp_path):
    assert ca.check_ca(tmp_path / "absent") is ca.CAState.EMPTY
    assert ca.check_ca(tmp_path) is ca.CAState.EMPTY
    (tmp_path / "notes.txt").write_text("not a CA file")
    assert ca.check_ca(tmp_path) is ca.CAState.EMPTY


def _half_present(d: Path) -> None:
    (d / ca.KEY_CERT_FILE).unlink()
    (d / ca.KEY_P12_FILE).unlink()


def _garbage(d: Path) -> None:
    (d / ca.KEY_CERT_FILE).write_bytes(b"not a key\n")


def _mismatch(d: Path) -> None:
    other = d.parent / "other"
    ca.init_ca(other)
    key = (other / ca.KEY_CERT_FILE).read_bytes().split(b"-----BEGIN CERTIFICATE-----")[0]
    cert = (d / ca.CERT_FILE).read_bytes()
    (d / ca.KEY_CERT_FILE).write_bytes(key + cert)


def _group_readable_key(d: Path) -> None:
    (d / ca.KEY_CERT_FILE).chmod(0o640)


def _world_readable_p12(d: Path) -> None:
    (d / ca.KEY_P12_FILE).chmod(0o604)


def _foreign_cert_file(d: Path) -> None:
    other = d.parent / "other"
    ca.init_ca(other)
    shutil.copy(other / ca.CERT_FILE, d / ca.CERT_FILE)


def _garbage_dhparam(d: Path) -> None:
    (d / ca.DHPARAM_FILE).write_bytes(b"junk")


def _key_only(d: Path) -> None:
    key = (d / ca.KEY_CERT_FILE).read_bytes().split(b"-----BEGIN CERTIFICATE-----")[0]
    (d / ca.KEY_CERT_FILE).write_bytes(key)


def _encrypted_key(d: Path) -> None:
    raw = (d / ca.KEY_CERT_FILE).read_bytes()
    key = serialization.load_pem_private_key(raw, None)
    enc = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"secret"))
    (d / ca.KEY_CERT_FILE).write_bytes(enc + (d / ca.CERT_FILE).read_bytes())


@pytest.mark.parametrize("damage, message", [
    (_half_present, r"holds mitmproxy-ca-cert.pem but not mitmproxy-ca.pem"),
    (_garbage, r"mitmproxy-ca.pem does not hold an unencrypted PEM private key"),
    (_key_only, r"mitmproxy-ca.pem does not hold an unencrypted PEM private key"),
    (_encrypted_key, r"mitmproxy-ca.pem does not hold an unencrypted PEM private key"),
    (_mismatch, r"mitmproxy-ca.pem holds a certificate that does not match its private key"),
    (_group_readable_key, r"readable by group or others; run: chmod 600 .*mitmproxy-ca.pem"),
    (_world_readable_p12, r"readable by group or others; run: chmod 600 .*mitmproxy-ca.p12"),
    (_foreign_cert_file, r"mitmproxy-ca-cert.pem is not the certificate in"),
    (_garbage_dhparam, r"mitmproxy-dhparam.pem does not hold PEM DH parameters"),
])
def test_check_refuses_a_damaged_ca_naming_the_file(ec_ca, tmp_path, damage, message):
    d = copy_ca(ec_ca, tmp_path / "ca")
    damage(d)
    with pytest.raises(CAError, match=message) as e:
        ca.check_ca(d)
    assert "\n" not in str(e.value)
    # ensure_ca never papers over a damaged CA by creating a new one.
    with pytest.raises(CAError):
        ca.ensure_ca(d)


def test_unreadable_key_file_is_refused(ec_ca, tmp_path):
    # A directory in place of the key file fails to read even for root.
    d = copy_ca(ec_ca, tmp_path / "ca")
    (d / ca.KEY_CERT_FILE).unlink()
    (d / ca.KEY_CERT_FILE).mkdir(mode=0o700)
    with pytest.raises(CAError, match="cannot read .*mitmproxy-ca.pem"):
        ca.check_ca(d)


@pytest.mark.parametrize("offset, expired", [
    (dt.timedelta(seconds=-1), False),
    (dt.timedelta(seconds=1), True),
])
def test_expiry_is_checked_on_both_sides_of_not_after(tmp_path, offset, expired):
    info = ca.init_ca(tmp_path, days=10, clock=fixed(NOW))
    at = fixed(info.not_after + offset)
    if expired:
        with pytest.raises(CAError, match="expired on .*clearwall ca init --force"):
            ca.check_ca(tmp_path, clock=at)
    else:
        assert ca.check_ca(tmp_path, clock=at) is ca.CAState.READY


def test_a_ca_from_the_future_is_refused(tmp_path):
    ca.init_ca(tmp_path, clock=fixed(NOW))
    with pytest.raises(CAError, match="not valid before"):
        ca.check_ca(tmp_path, clock=fixed(NOW - dt.timedelta(days=5)))


# --- ensure_ca and export ---------------------------------------------------------------------

def test_ensure_creates_once_then_reuses(tmp_path):
    first, created = ca.ensure_ca(tmp_path / "ca")
    again, created_again = ca.ensure_ca(tmp_path / "ca")
    assert (created, created_again) == (True, False)
    assert again.fingerprint_sha256 == first.fingerprint_sha256


def test_ensure_writes_the_public_files_a_key_only_provisioning_lacks(ec_ca, tmp_path):
    d = tmp_path / "ca"
    d.mkdir(mode=0o700)
    shutil.copy(ec_ca / ca.KEY_CERT_FILE, d / ca.KEY_CERT_FILE)
    info, created = ca.ensure_ca(d)
    assert not created
    assert info.fingerprint_sha256 == ca.ca_info(ec_ca).fingerprint_sha256
    for fname in ca.PUBLIC_FILES:
        assert (d / fname).exists(), fname


@pytest.mark.parametrize("unwritable, fails", [
    (ca.DHPARAM_FILE, True),    # mitmproxy would try to write it and fail at start-up
    (ca.CERT_P12_FILE, False),  # a client convenience: warned about, not fatal
])
def test_ensure_on_a_read_only_directory(ec_ca, tmp_path, monkeypatch, unwritable, fails):
    d = tmp_path / "ca"
    d.mkdir(mode=0o700)
    shutil.copy(ec_ca / ca.KEY_CERT_FILE, d / ca.KEY_CERT_FILE)
    for f in ca.PUBLIC_FILES:
        if f != unwritable:
            shutil.copy(ec_ca / f, d / f)
    real_write = ca._write

    def write(path, data, mode):
        if path.name == unwritable:
            raise PermissionError(13, "Read-only file system")
        real_write(path, data, mode)

    monkeypatch.setattr(ca, "_write", write)
    if fails:
        with pytest.raises(CAError, match="dhparam.pem is missing and cannot be written"):
            ca.ensure_ca(d)
    else:
        assert ca.ensure_ca(d)[1] is False


@pytest.mark.parametrize("fmt", ["pem", "der"])
def test_export_gives_the_public_certificate_only(ec_ca, fmt):
    data = ca.export_cert(ec_ca, fmt)
    assert b"PRIVATE KEY" not in data
    load = x509.load_pem_x509_certificate if fmt == "pem" else x509.load_der_x509_certificate
    assert load(data).fingerprint(ca.hashes.SHA256()).hex(":").upper() == ca.ca_info(ec_ca).fingerprint_sha256


def test_export_and_info_refuse_an_empty_directory(tmp_path):
    with pytest.raises(CAError, match="no CA in .*clearwall ca init"):
        ca.export_cert(tmp_path)


def test_client_env_names_every_runtime_variable(tmp_path):
    env = ca.client_env(tmp_path / "c.pem")
    assert set(env) == {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
                        "CURL_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO"}
    assert set(env.values()) == {str(tmp_path / "c.pem")}


def test_ca_module_does_not_import_mitmproxy():
    import ast

    tree = ast.parse(Path(ca.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not [m for m in imported if m.split(".")[0] == "mitmproxy"]
    assert "cryptography.x509" in imported or "cryptography" in imported


# --- the CLI ----------------------------------------------------------------------------------

@pytest.fixture
def cli(monkeypatch):
    """`clearwall.cli.main`; sibling sub-commands that have not landed yet are stubbed out."""
    for name in ("run", "rules", "logs"):
        try:
            importlib.import_module(f"clearwall.cli.{name}")
        except ImportError:
            stub = types.ModuleType(f"clearwall.cli.{name}")
            stub.register = lambda sub, n=name: sub.add_parser(n)
            monkeypatch.setitem(sys.modules, f"clearwall.cli.{name}", stub)
    monkeypatch.delenv("CLEARWALL_CA_DIR", raising=False)
    from clearwall.cli import main
    return main


def test_cli_init_show_export(cli, tmp_path, capsys):
    d = str(tmp_path / "ca")
    assert cli(["ca", "init", "--dir", d, "--name", "CLI CA", "--days", "90"]) == 0
    out = capsys.readouterr().out
    fp = ca.ca_info(Path(d)).fingerprint_sha256
    assert fp in out and "NODE_EXTRA_CA_CERTS=" in out
    assert cli(["ca", "show", "--ca-dir", d]) == 0
    out = capsys.readouterr().out
    assert fp in out and "CN=CLI CA" in out and "EC P-256" in out
    assert cli(["ca", "export", "--dir", d]) == 0
    out = capsys.readouterr().out
    assert out.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY" not in out


def test_cli_refuses_overwrite_with_one_sentence_and_exit_1(cli, tmp_path, capsys):
    d = str(tmp_path)
    assert cli(["ca", "init", "--dir", d]) == 0
    capsys.readouterr()
    assert cli(["ca", "init", "--dir", d]) == 1
    err = capsys.readouterr().err
    assert err.startswith("clearwall: ") and "--force" in err and err.count("\n") == 1
    assert "Traceback" not in err
    assert cli(["ca", "init", "--dir", d, "--force", "--key", "rsa"]) == 0
    assert ca.ca_info(tmp_path).key_type == "RSA 3072"


def test_cli_export_der_to_file(cli, tmp_path, capsys):
    d = tmp_path / "ca"
    assert cli(["ca", "init", "--dir", str(d)]) == 0
    out = tmp_path / "ca.der"
    assert cli(["ca", "export", "--dir", str(d), "--format", "der", "--out", str(out)]) == 0
    data = out.read_bytes()
    assert b"PRIVATE KEY" not in data
    assert x509.load_der_x509_certificate(data).subject.rfc4514_string() == ca.ca_info(d).subject


def test_cli_uses_clearwall_ca_dir_from_the_environment(cli, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLEARWALL_CA_DIR", str(tmp_path / "env-ca"))
    assert cli(["ca", "init"]) == 0
    assert ca.check_ca(tmp_path / "env-ca") is ca.CAState.READY


def test_cli_defaults_to_ca_in_the_working_directory(cli, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli(["ca", "init"]) == 0
    assert (tmp_path / "ca" / ca.KEY_CERT_FILE).exists()


@pytest.mark.parametrize("argv, message", [
    (["ca", "show"], "no CA in"),
    (["ca", "export"], "no CA in"),
])
def test_cli_commands_on_an_empty_directory_exit_1(cli, tmp_path, capsys, argv, message):
    assert cli(argv + ["--dir", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


def test_cli_show_on_a_damaged_ca_exits_1_with_the_fix(cli, ec_ca, tmp_path, capsys):
    d = copy_ca(ec_ca, tmp_path / "ca")
    (d / ca.KEY_CERT_FILE).chmod(0o644)
    assert cli(["ca", "show", "--dir", str(d)]) == 1
    assert f"chmod 600 {d / ca.KEY_CERT_FILE}" in capsys.readouterr().err


@pytest.mark.parametrize("days", ["0", "36501", "ten"])
def test_cli_rejects_bad_days_as_a_usage_error(cli, tmp_path, capsys, days):
    with pytest.raises(SystemExit) as e:
        cli(["ca", "init", "--dir", str(tmp_path), "--days", days])
    assert e.value.code == 2
    assert "--days" in capsys.readouterr().err
    assert not (tmp_path / ca.KEY_CERT_FILE).exists()


def test_init_leaves_no_file_but_the_ca_files(tmp_path):
    ca.init_ca(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ca.CA_FILES)


def test_concurrent_ensure_creates_exactly_one_ca(tmp_path):
    """Replicas sharing a volume: the directory lock lets one create, the rest reuse it."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: ca.ensure_ca(tmp_path / "ca"), range(8)))
    assert sum(created for _, created in results) == 1
    assert len({info.fingerprint_sha256 for info, _ in results}) == 1
    assert ca.check_ca(tmp_path / "ca") is ca.CAState.READY


def test_concurrent_processes_create_exactly_one_ca(tmp_path):
    """Like two replicas starting on one shared volume: separate processes, one CA."""
    import subprocess

    code = ("import sys; from pathlib import Path; from clearwall import ca; "
            "info, created = ca.ensure_ca(Path(sys.argv[1])); print(int(created), info.fingerprint_sha256)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "ca")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    lines = [o.split() for o, _ in outs]
    assert sum(int(created) for created, _ in lines) == 1
    assert len({fp for _, fp in lines}) == 1


def test_ensure_passes_name_days_and_key_to_a_new_ca(tmp_path):
    info, created = ca.ensure_ca(tmp_path, name="Replica CA", days=7, key="rsa", clock=fixed(NOW))
    assert created and "CN=Replica CA" in info.subject and info.key_type == "RSA 3072"
    assert info.not_after == NOW + dt.timedelta(days=7)


@pytest.mark.parametrize("days_left, warned", [(29, True), (30, False)])
def test_ensure_warns_when_the_ca_is_about_to_expire(tmp_path, caplog, days_left, warned):
    info = ca.init_ca(tmp_path, days=100, clock=fixed(NOW))
    at = fixed(info.not_after - dt.timedelta(days=days_left, hours=1))
    with caplog.at_level("WARNING", logger="clearwall.ca"):
        ca.ensure_ca(tmp_path, clock=at, warn_days=30)
    assert any("expires in" in r.getMessage() for r in caplog.records) is warned
