"""ca/install-ca.sh against fake container roots laid out like Debian, Ubuntu, Alpine, Fedora, RHEL."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clearwall import ca

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "ca" / "install-ca.sh"
SH = shutil.which("dash") or shutil.which("sh")  # POSIX sh, not bash, where the system has it

DEB_ANCHOR = "usr/local/share/ca-certificates/clearwall.crt"
DEB_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
RH_ANCHOR = "etc/pki/ca-trust/source/anchors/clearwall.pem"
RH_BUNDLE = "etc/pki/tls/certs/ca-bundle.crt"
ENV_VARS = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE",
            "PIP_CERT", "GIT_SSL_CAINFO"]


def self_signed(cn: str) -> bytes:
    """Stands in for a public root already in the distribution's bundle."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ca") / "ca"
    ca.init_ca(d)
    return d


@pytest.fixture(scope="module")
def cert(ca_dir) -> Path:
    return ca_dir / ca.CERT_FILE


@pytest.fixture
def tools(tmp_path) -> tuple[Path, Path]:
    """Fake update tools on PATH that record being called: with --root they must not be."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in ("update-ca-certificates", "update-ca-trust"):
        p = bin_dir / name
        p.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
        p.chmod(0o755)
    return bin_dir, log


def make_root(base: Path, os_release: str | None, bundle: str | None, extra: dict | None = None) -> Path:
    root = base / "root"
    (root / "etc").mkdir(parents=True)
    if os_release is not None:
        (root / "etc" / "os-release").write_text(os_release)
    if bundle is not None:
        (root / bundle).parent.mkdir(parents=True, exist_ok=True)
        (root / bundle).write_bytes(self_signed("Public Root"))
    for rel, content in (extra or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    return root


def run(args: list[str], bin_dir: Path | None = None, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return subprocess.run([SH, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=30, **kw)


def subjects(bundle: Path) -> list[str]:
    return [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(bundle.read_bytes())]


LAYOUTS = [
    ("debian 12", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n', DEB_ANCHOR, DEB_BUNDLE),
    ("ubuntu 24.04", 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n', DEB_ANCHOR, DEB_BUNDLE),
    ("alpine 3.20", 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.20.3\n', DEB_ANCHOR, DEB_BUNDLE),
    ("fedora 41", 'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=41\n', RH_ANCHOR, RH_BUNDLE),
    ("rhel 9", 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\n', RH_ANCHOR, RH_BUNDLE),
    ("rocky 9 via ID_LIKE", 'ID="rocky"\nID_LIKE="rhel centos fedora"\n', RH_ANCHOR, RH_BUNDLE),
    ("debian derivative via ID_LIKE", 'ID=raspbian\nID_LIKE=debian\n', DEB_ANCHOR, DEB_BUNDLE),
]


@pytest.mark.parametrize("layout, os_release, anchor, bundle", LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_installs_into_each_distribution_layout(tmp_path, cert, tools, layout, os_release, anchor, bundle):
    bin_dir, calls = tools
    root = make_root(tmp_path, os_release, bundle)
    r = run(["--root", root, cert], bin_dir)
    assert r.returncode == 0, r.stderr
    assert (root / anchor).read_bytes() == cert.read_bytes()
    assert subjects(root / bundle) == ["CN=Public Root", "O=Clearwall,CN=Clearwall CA"]
    # The bundle is usable as a CA file by OpenSSL (what SSL_CERT_FILE makes Python use).
    assert len(ssl.create_default_context(cafile=str(root / bundle)).get_ca_certs()) == 2
    # The host's tools update the host's store: never run them for another root.
    assert not calls.exists()
    env = dict(line.split("=", 1) for line in (root / "etc/clearwall/ca.env").read_text().splitlines())
    assert list(env) == ENV_VARS
    assert env["NODE_EXTRA_CA_CERTS"] == "/" + anchor
    assert {env[k] for k in ENV_VARS if k != "NODE_EXTRA_CA_CERTS"} == {"/" + bundle}
    assert r.stdout.splitlines() == [f"export {k}={v}" for k, v in env.items()]


def test_running_twice_or_rotating_the_ca_keeps_one_clearwall_certificate(tmp_path, cert, tools):
    root = make_root(tmp_path, "ID=debian\n", DEB_BUNDLE)
    assert run(["--root", root, cert], tools[0]).returncode == 0
    assert run(["--root", root, cert], tools[0]).returncode == 0
    assert subjects(root / DEB_BUNDLE) == ["CN=Public Root", "O=Clearwall,CN=Clearwall CA"]
    rotated = ca.init_ca(tmp_path / "new-ca", name="Rotated CA").cert_path
    assert run(["--root", root, rotated], tools[0]).returncode == 0
    assert subjects(root / DEB_BUNDLE) == ["CN=Public Root", "O=Clearwall,CN=Rotated CA"]
    assert (root / DEB_ANCHOR).read_bytes() == rotated.read_bytes()


def test_a_missing_bundle_is_created_holding_the_clearwall_ca(tmp_path, cert, tools):
    root = make_root(tmp_path, "ID=alpine\n", None)
    r = run(["--root", root, cert], tools[0])
    assert r.returncode == 0, r.stderr
    assert subjects(root / DEB_BUNDLE) == ["O=Clearwall,CN=Clearwall CA"]
    assert "creating one" in r.stderr


def test_an_absolute_bundle_symlink_is_followed_inside_the_root(tmp_path, cert, tools):
    # RHEL's ca-bundle.crt links to /etc/pki/ca-trust/extracted/...: followed naively from
    # outside the root, that would write into the host's file system.
    target = "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"
    if Path(target).exists():
        pytest.skip(f"{target} exists on this host; the check needs it absent")
    root = make_root(tmp_path, "ID=fedora\n", None, {target.lstrip("/"): self_signed("Public Root").decode()})
    (root / RH_BUNDLE).parent.mkdir(parents=True)
    (root / RH_BUNDLE).symlink_to(target)
    r = run(["--root", root, cert], tools[0])
    assert r.returncode == 0, r.stderr
    assert not Path(target).exists()
    assert subjects(root / target.lstrip("/")) == ["CN=Public Root", "O=Clearwall,CN=Clearwall CA"]
    assert f"SSL_CERT_FILE={target}" in r.stdout


def test_the_update_tool_inside_the_root_is_run_chrooted(tmp_path, cert, tools):
    bin_dir, calls = tools
    chroot = bin_dir / "chroot"
    chroot.write_text(f'#!/bin/sh\necho "chroot $*" >> "{calls}"\n')
    chroot.chmod(0o755)
    root = make_root(tmp_path, "ID=debian\n", DEB_BUNDLE)
    inner = root / "usr/sbin/update-ca-certificates"
    inner.parent.mkdir(parents=True)
    inner.write_text("#!/bin/sh\n")
    inner.chmod(0o755)
    r = run(["--root", root, cert], bin_dir)
    assert r.returncode == 0, r.stderr
    if os.geteuid() == 0:
        assert calls.read_text().splitlines() == [f"chroot {root.resolve()} /usr/sbin/update-ca-certificates"]
        assert subjects(root / DEB_BUNDLE) == ["CN=Public Root"]  # the tool's job, not ours
    else:  # chroot needs root: the script falls back to the bundle file
        assert not calls.exists()
        assert "O=Clearwall,CN=Clearwall CA" in subjects(root / DEB_BUNDLE)


@pytest.mark.parametrize("marker, family_anchor", [
    ("etc/debian_version", DEB_ANCHOR),
    ("etc/alpine-release", DEB_ANCHOR),
    ("etc/redhat-release", RH_ANCHOR),
])
def test_without_os_release_the_layout_is_recognised_by_release_files(tmp_path, cert, tools, marker, family_anchor):
    root = make_root(tmp_path, None, None, {marker: "x\n"})
    r = run(["--root", root, cert], tools[0])
    assert r.returncode == 0, r.stderr
    assert (root / family_anchor).exists()


def test_an_unknown_distribution_is_refused(tmp_path, cert, tools):
    root = make_root(tmp_path, "ID=plan9\n", None)
    r = run(["--root", root, cert], tools[0])
    assert r.returncode == 1
    assert "cannot tell the distribution" in r.stderr
    assert not (root / "etc/clearwall").exists()


def test_env_file_location_can_be_chosen(tmp_path, cert, tools):
    root = make_root(tmp_path, "ID=debian\n", DEB_BUNDLE)
    env_file = tmp_path / "out" / "clearwall.env"
    assert run(["--root", root, "--env-file", env_file, cert], tools[0]).returncode == 0
    assert env_file.read_text().startswith("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n")
    assert not (root / "etc/clearwall/ca.env").exists()


def test_output_can_be_evaluated_by_a_shell(tmp_path, cert, tools):
    root = make_root(tmp_path, "ID=fedora\n", RH_BUNDLE)
    script = f'eval "$({SH} {SCRIPT} --root {root} {cert})"; echo "$NODE_EXTRA_CA_CERTS|$PIP_CERT"'
    r = subprocess.run([SH, "-c", script], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PATH": f"{tools[0]}:{os.environ['PATH']}"})
    assert r.stdout.strip() == f"/{RH_ANCHOR}|/{RH_BUNDLE}"


def _der(ca_dir: Path, tmp: Path) -> Path:
    p = tmp / "ca.der"
    p.write_bytes(ca.export_cert(ca_dir, "der"))
    return p


def _text(content: str):
    def make(ca_dir: Path, tmp: Path) -> Path:
        p = tmp / "input.pem"
        p.write_text(content)
        return p
    return make


def _with_csr(ca_dir: Path, tmp: Path) -> Path:
    p = tmp / "mixed.pem"
    p.write_text((ca_dir / ca.CERT_FILE).read_text()
                 + "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n")
    return p


REJECTED = [
    ("the CA key file", lambda d, t: d / ca.KEY_CERT_FILE, "contains a private key"),
    ("a bare EC key", _text("-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n"),
     "contains a private key"),
    ("a DER certificate", _der, "is not a PEM certificate"),
    ("an empty file", _text(""), "is not a PEM certificate"),
    ("a certificate request alongside", _with_csr, "PEM blocks other than certificates"),
    ("a missing file", lambda d, t: t / "absent.pem", "cannot read certificate file"),
]


@pytest.mark.parametrize("what, make, message", REJECTED, ids=[x[0] for x in REJECTED])
def test_refuses_anything_but_a_public_pem_certificate(tmp_path, ca_dir, tools, what, make, message):
    root = make_root(tmp_path, "ID=debian\n", DEB_BUNDLE)
    before = (root / DEB_BUNDLE).read_bytes()
    r = run(["--root", root, make(ca_dir, tmp_path)], tools[0])
    assert r.returncode == 1
    assert message in r.stderr
    assert r.stdout == ""
    assert not (root / DEB_ANCHOR).exists() and not (root / "etc/clearwall").exists()
    assert (root / DEB_BUNDLE).read_bytes() == before


def test_refuses_a_corrupt_certificate_when_openssl_is_present(tmp_path, tools):
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI absent: the script's parse check is skipped the same way")
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    root = make_root(tmp_path, "ID=debian\n", DEB_BUNDLE)
    r = run(["--root", root, bad], tools[0])
    assert r.returncode == 1 and "openssl cannot parse it" in r.stderr


@pytest.mark.parametrize("args", [[], ["--root"], ["--bogus", "x.pem"], ["a.pem", "b.pem"]],
                         ids=["no arguments", "option without value", "unknown option", "two certificates"])
def test_usage_errors_exit_2(args):
    r = run(args)
    assert r.returncode == 2
    assert "usage: install-ca.sh" in r.stderr


def test_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is not installed; .ci/run installs it")
        pytest.skip("shellcheck is not installed (apt-get install shellcheck); CI runs this check")
    r = subprocess.run([shellcheck, "-s", "sh", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


def test_script_is_executable_and_posix():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run([SH, "-n", str(SCRIPT)], timeout=10).returncode == 0


CHECKER = """
import ssl, sys
server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server.load_cert_chain(sys.argv[1])
client = ssl.create_default_context()          # the system store only: no cafile
client.verify_flags |= ssl.VERIFY_X509_STRICT
bios = [ssl.MemoryBIO() for _ in range(4)]
c = client.wrap_bio(bios[0], bios[1], server_hostname="example.test")
s = server.wrap_bio(bios[2], bios[3], server_side=True)
done = set()
for _ in range(20):
    for name, obj in (("c", c), ("s", s)):
        if name not in done:
            try:
                obj.do_handshake(); done.add(name)
            except ssl.SSLWantReadError:
                pass
    bios[2].write(bios[1].read()); bios[0].write(bios[3].read())
print("trusted" if done == {"c", "s"} else "no handshake")
"""


def test_real_update_ca_certificates_makes_openssl_trust_the_proxy(tmp_path, ca_dir, cert):
    """The `--root /` path with Debian's own tool, inside a private mount namespace.

    /etc/ssl/certs and /usr/local/share/ca-certificates are bind-mounted copies there, so
    the host's trust store is never touched; a leaf issued by mitmproxy from the CA must
    then verify against OpenSSL's default store with no cafile.
    """
    from mitmproxy.certs import CertStore

    tool, unshare = shutil.which("update-ca-certificates"), shutil.which("unshare")
    if os.geteuid() != 0 or not tool or not unshare or not Path("/etc/ssl/certs").is_dir() \
            or not Path("/usr/local/share/ca-certificates").is_dir():
        pytest.skip("needs root, unshare and Debian's update-ca-certificates")
    if subprocess.run([unshare, "-m", "true"], capture_output=True, timeout=10).returncode != 0:
        pytest.skip("mount namespaces are not permitted here")
    host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    before = host_bundle.read_bytes() if host_bundle.exists() else None
    certs, local = tmp_path / "certs", tmp_path / "local"
    certs.mkdir()
    subprocess.run(["cp", "-a", "/etc/ssl/certs/.", str(certs)], check=True, timeout=60)
    local.mkdir()
    (tmp_path / "hooks").mkdir()
    entry = CertStore.from_store(shutil.copytree(ca_dir, tmp_path / "ca"), "mitmproxy", 2048).get_cert(
        "example.test", [x509.DNSName("example.test")])
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(entry.cert.to_pem() + entry.privatekey.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "check.py").write_text(CHECKER)
    # The distribution's hooks (e.g. Java's keystore) are not what is under test: skip them.
    hooks = Path("/etc/ca-certificates/update.d")
    no_hooks = f" && mount --bind {tmp_path / 'hooks'} {hooks}" if hooks.is_dir() else ""
    script = (f"mount --make-rprivate / && mount --bind {certs} /etc/ssl/certs"
              f" && mount --bind {local} /usr/local/share/ca-certificates{no_hooks}"
              f" && {SH} {SCRIPT} --env-file {tmp_path / 'ca.env'} {cert} >/dev/null"
              f" && {sys.executable} {tmp_path / 'check.py'} {leaf}")
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    r = subprocess.run([unshare, "-m", SH, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "trusted"
    assert "ran update-ca-certificates" in r.stderr
    assert (local / "clearwall.crt").read_bytes() == cert.read_bytes()
    assert "O=Clearwall,CN=Clearwall CA" in subjects(certs / "ca-certificates.crt")
    if before is not None:
        assert host_bundle.read_bytes() == before
    assert not Path("/usr/local/share/ca-certificates/clearwall.crt").exists()
    # And the same check outside the namespace fails: the host never learnt the CA.
    outside = subprocess.run([sys.executable, str(tmp_path / "check.py"), str(leaf)],
                             capture_output=True, text=True, env=env, timeout=30)
    assert outside.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in outside.stderr
