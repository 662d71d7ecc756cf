"""Clearwall's private CA, written in the layout mitmproxy reads from its confdir.

mitmproxy silently generates a fresh CA when `<confdir>/mitmproxy-ca.pem` is missing, and
writes `mitmproxy-dhparam.pem` when that is missing. Either would leave clients trusting a
certificate the proxy no longer uses (or a key nobody reviewed), so Clearwall creates every
file mitmproxy would create, checks the directory before the proxy starts, and refuses a
half-present, unreadable, mismatched, expired or world-readable CA instead of letting
mitmproxy paper over it. Pure: uses `cryptography` only, never mitmproxy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import fcntl
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from clearwall.errors import CAError

log = logging.getLogger(__name__)

BASENAME = "mitmproxy"  # mitmproxy's confdir basename; the CA dir is passed as the confdir
KEY_CERT_FILE = f"{BASENAME}-ca.pem"  # private key + certificate: what mitmproxy signs with
KEY_P12_FILE = f"{BASENAME}-ca.p12"  # PKCS#12 with the key (Windows import)
CERT_FILE = f"{BASENAME}-ca-cert.pem"  # public certificate for clients
CER_FILE = f"{BASENAME}-ca-cert.cer"  # same bytes, the extension Android expects
CERT_P12_FILE = f"{BASENAME}-ca-cert.p12"  # public certificate as PKCS#12
DHPARAM_FILE = f"{BASENAME}-dhparam.pem"  # mitmproxy writes its own if this is absent
KEY_FILES = (KEY_CERT_FILE, KEY_P12_FILE)
PUBLIC_FILES = (CERT_FILE, CER_FILE, CERT_P12_FILE, DHPARAM_FILE)
CA_FILES = KEY_FILES + PUBLIC_FILES

MAX_DAYS = 36500
EXPIRY_WARNING_DAYS = 30  # ensure_ca warns when the CA has fewer days left than this
RSA_BITS = 3072
# RFC 7919 ffdhe3072: a published, vetted group, so nothing has to be generated at start-up.
FFDHE3072_PEM = b"""-----BEGIN DH PARAMETERS-----
MIIBiAKCAYEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEfz9zeNVs7ZRkDW7w09N75nAI4YbRvydbmyQd62R0mkff3
7lmMsPrBhtkcrv4TCYUTknC0EwyTvEN5RPT9RFLi103TZPLiHnH1S/9croKrnJ32
nuhtK8UiNjoNq8Uhl5sN6todv5pC1cRITgq80Gv6U93vPBsg7j/VnXwl5B0rZsYu
N///////////AgEC
-----END DH PARAMETERS-----
"""

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class CAState(enum.Enum):
    EMPTY = "empty"  # no directory, or no CA file in it
    READY = "ready"  # key + certificate present, matching, valid and private


@dataclass(frozen=True)
class CAInfo:
    directory: Path
    cert_path: Path  # the public certificate clients install
    subject: str
    fingerprint_sha256: str  # "AB:CD:..."
    not_before: dt.datetime
    not_after: dt.datetime
    key_type: str  # "EC P-256" | "RSA 3072"


def parse_key_type(value: str) -> str:
    """'ec' or 'rsa' (any case); ValueError otherwise."""
    v = value.strip().lower()
    if v not in ("ec", "rsa"):
        raise ValueError(f"key type must be 'ec' or 'rsa', not {value!r}")
    return v


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def build_ca(name: str, days: int, key: str, now: dt.datetime):
    """A new CA key and self-signed certificate; pure, no I/O."""
    if not name.strip():
        raise ValueError("CA name must not be empty")
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"CA validity must be 1 to {MAX_DAYS} days, not {days}")
    if parse_key_type(key) == "ec":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Clearwall"),
    ])
    public = private.public_key()
    usage = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # A day of slack for clients whose clocks lag the proxy's.
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        # path_length 0: the CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        # mitmproxy 12 copies this into each leaf's AuthorityKeyIdentifier; strict verifiers
        # (X509_STRICT, webpki) need the two to agree.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(private, hashes.SHA256())
    )
    return private, cert


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace `path`; the file is created with `mode`, never chmod-ed after."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # Two replicas sharing one volume must not both create a CA. The lock is taken on the
    # directory itself, so no lock file is left next to the CA.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise CAError(f"cannot open CA directory {directory}: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _public_files(cert: x509.Certificate) -> dict[str, bytes]:
    pem = cert.public_bytes(serialization.Encoding.PEM)
    p12 = pkcs12.serialize_key_and_certificates(
        name=BASENAME.encode(), key=None, cert=cert, cas=None,
        encryption_algorithm=serialization.NoEncryption(),
    )
    return {CERT_FILE: pem, CER_FILE: pem, CERT_P12_FILE: p12, DHPARAM_FILE: FFDHE3072_PEM}


def _mkdir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise CAError(f"cannot create CA directory {directory}: {e.strerror}") from e
    if not directory.is_dir():
        raise CAError(f"CA directory {directory} is not a directory")


def _build(directory: Path, name: str, days: int, key: str, now: dt.datetime):
    try:
        return build_ca(name, days, key, now)
    except ValueError as e:
        raise CAError(f"cannot create a CA in {directory}: {e}") from e


def _create(directory: Path, private, cert: x509.Certificate) -> None:
    """Write every CA file; the caller holds the directory lock."""
    key_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_p12 = pkcs12.serialize_key_and_certificates(
        name=BASENAME.encode(), key=private, cert=cert, cas=None,
        encryption_algorithm=serialization.NoEncryption(),
    )
    try:
        for fname, data in _public_files(cert).items():
            _write(directory / fname, data, 0o644)
        _write(directory / KEY_P12_FILE, key_p12, 0o600)
        # Written last: until then check_ca refuses the directory (half-present, or a
        # certificate file that does not match the old key), never serving a mix.
        key_cert = key_pem + cert.public_bytes(serialization.Encoding.PEM)
        _write(directory / KEY_CERT_FILE, key_cert, 0o600)
    except OSError as e:
        raise CAError(f"cannot write the CA into {directory}: {e.strerror}") from e
    log.info("created CA %s in %s", fingerprint(cert), directory)


def init_ca(
    directory: Path, *, name: str = "Clearwall CA", days: int = 3650, key: str = "ec",
    force: bool = False, clock: Clock = _utcnow,
) -> CAInfo:
    """Create a CA in `directory`; refuses to replace an existing one unless `force`."""
    directory = Path(directory)
    private, cert = _build(directory, name, days, key, clock())
    _mkdir(directory)
    with _locked(directory):
        present = [f for f in CA_FILES if (directory / f).exists()]
        if present and not force:
            raise CAError(
                f"{directory} already holds a CA ({present[0]}); pass --force to replace it"
            )
        _create(directory, private, cert)
    return ca_info(directory, clock=clock)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise CAError(f"cannot read {path}: {e.strerror}") from e


def _load(directory: Path, clock: Clock):
    """(key, cert) from a directory that holds a CA; CAError on every defect."""
    kc = directory / KEY_CERT_FILE
    for fname in KEY_FILES:
        p = directory / fname
        if p.exists() and p.stat().st_mode & 0o077:
            raise CAError(f"{p} holds the CA key but is readable by group or others; "
                          f"run: chmod 600 {p}")
    raw = _read(kc)
    fix = f"restore it or create a new CA with: clearwall ca init --force --dir {directory}"
    try:
        private = serialization.load_pem_private_key(raw, password=None)
        cert = x509.load_pem_x509_certificates(raw)[0]
    except (ValueError, TypeError) as e:
        raise CAError(f"{kc} does not hold an unencrypted PEM private key and certificate; "
                      f"{fix}") from e
    if not isinstance(private, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CAError(f"{kc} holds a {type(private).__name__}; mitmproxy needs an EC or RSA CA key")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
        raise CAError(f"{kc} holds a certificate that does not match its private key; {fix}")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CAError(f"{kc} holds a certificate that is not a CA (no BasicConstraints CA:true); "
                      f"{fix}")
    now = clock()
    if now > cert.not_valid_after_utc:
        raise CAError(f"the CA in {kc} expired on {cert.not_valid_after_utc:%Y-%m-%d}; create a "
                      f"new one with: clearwall ca init --force --dir {directory}")
    if now < cert.not_valid_before_utc:
        raise CAError(f"the CA in {kc} is not valid before "
                      f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check the system clock")
    _check_public_files(directory, cert)
    return private, cert


def _check_public_files(directory: Path, cert: x509.Certificate) -> None:
    # A certificate file from another CA would have clients trust a key the proxy lacks.
    cf = directory / CERT_FILE
    if cf.exists():
        try:
            same = x509.load_pem_x509_certificate(_read(cf)) == cert
        except ValueError:
            same = False
        if not same:
            raise CAError(f"{cf} is not the certificate in {directory / KEY_CERT_FILE}; delete "
                          f"it and run: clearwall ca export --dir {directory} --out {cf}")
    dh = directory / DHPARAM_FILE
    if dh.exists():
        try:
            serialization.load_pem_parameters(_read(dh))
        except ValueError as e:
            raise CAError(f"{dh} does not hold PEM DH parameters; delete it and Clearwall "
                          f"writes a standard one at start-up") from e


def check_ca(directory: Path, *, clock: Clock = _utcnow) -> CAState:
    """EMPTY or READY; CAError (one sentence naming the file and the fix) for anything else."""
    directory = Path(directory)
    if not directory.exists():
        return CAState.EMPTY
    if not directory.is_dir():
        raise CAError(f"CA directory {directory} is not a directory")
    present = [f for f in CA_FILES if (directory / f).exists()]
    if not present:
        return CAState.EMPTY
    if KEY_CERT_FILE not in present:
        raise CAError(
            f"{directory} holds {present[0]} but not {KEY_CERT_FILE} (the CA key and certificate); "
            f"restore it, or remove the CA files and run: clearwall ca init --dir {directory}"
        )
    _load(directory, clock)
    return CAState.READY


def ca_info(directory: Path, *, clock: Clock = _utcnow) -> CAInfo:
    directory = Path(directory)
    if check_ca(directory, clock=clock) is CAState.EMPTY:
        raise CAError(f"no CA in {directory}; create one with: clearwall ca init --dir {directory}")
    private, cert = _load(directory, clock)
    if isinstance(private, ec.EllipticCurvePrivateKey):
        key_type = "EC " + {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(
            private.curve.name, private.curve.name)
    else:
        key_type = f"RSA {private.key_size}"
    return CAInfo(
        directory=directory, cert_path=directory / CERT_FILE, subject=cert.subject.rfc4514_string(),
        fingerprint_sha256=fingerprint(cert), not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc, key_type=key_type,
    )


def export_cert(
    directory: Path, fmt: Literal["pem", "der"] = "pem", *, clock: Clock = _utcnow,
) -> bytes:
    """The CA's public certificate (never the key) as PEM or DER."""
    if fmt not in ("pem", "der"):
        raise CAError(f"export format must be 'pem' or 'der', not {fmt!r}")
    ca_info(directory, clock=clock)  # validates, and refuses an empty directory
    _, cert = _load(Path(directory), clock)
    encoding = serialization.Encoding.PEM if fmt == "pem" else serialization.Encoding.DER
    return cert.public_bytes(encoding)


def ensure_ca(
    directory: Path, *, name: str = "Clearwall CA", days: int = 3650, key: str = "ec",
    clock: Clock = _utcnow, warn_days: int = EXPIRY_WARNING_DAYS,
) -> tuple[CAInfo, bool]:
    """Create a CA if `directory` has none, else validate it; returns (info, created).

    A CA provisioned with only its key file (e.g. from a Kubernetes Secret) gets its missing
    public files written here, so mitmproxy never writes anything into the directory.
    """
    directory = Path(directory)
    created = False
    try:
        ready = check_ca(directory, clock=clock) is CAState.READY
    except CAError:
        ready = False  # perhaps another replica is half-way through creating it: decide below
    if not ready:
        _mkdir(directory)
        with _locked(directory):
            # Authoritative under the lock: a damaged CA raises here and is never replaced.
            if check_ca(directory, clock=clock) is CAState.EMPTY:
                _create(directory, *_build(directory, name, days, key, clock()))
                created = True
    if not created:
        _complete_public_files(directory, _load(directory, clock)[1])
    info = ca_info(directory, clock=clock)
    left = expires_in_days(info, clock)
    if left < warn_days:
        # Every client must be given a new certificate before this date: say so early.
        log.warning("the CA in %s expires in %d days (%s); rotate it with "
                    "`clearwall ca init --force` and redistribute the certificate",
                    directory, left, f"{info.not_after:%Y-%m-%d}")
    return info, created


def expires_in_days(info: CAInfo, clock: Clock = _utcnow) -> int:
    return (info.not_after - clock()).days


def _complete_public_files(directory: Path, cert: x509.Certificate) -> None:
    absent = [f for f in PUBLIC_FILES if not (directory / f).exists()]
    if not absent:
        return
    for fname, data in _public_files(cert).items():
        if fname not in absent:
            continue
        try:
            _write(directory / fname, data, 0o644)
        except OSError as e:
            # mitmproxy would try to write the DH parameters itself and fail at start-up;
            # the other public files are conveniences for clients.
            if fname == DHPARAM_FILE:
                raise CAError(
                    f"{directory / fname} is missing and cannot be written ({e.strerror}); "
                    f"provide it next to {KEY_CERT_FILE}"
                ) from e
            log.warning("cannot write %s: %s", directory / fname, e.strerror)


def client_env(cert_path: Path) -> dict[str, str]:
    """Variables that make common runtimes trust the CA (those that ignore the OS store)."""
    p = str(cert_path)
    return {k: p for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
                           "CURL_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO")}
