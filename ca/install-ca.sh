#!/bin/sh
# Installs Clearwall's CA certificate into a container's trust store (Debian/Ubuntu,
# Alpine, RHEL/Fedora) and writes the variables for runtimes that ignore that store.
#
# usage: install-ca.sh [--root DIR] [--env-file FILE] CERT.pem
#   --root DIR       install into the file system rooted at DIR (default /), e.g. an image
#                    being built or a mounted volume; the host's own store is never touched
#   --env-file FILE  where to write VAR=value lines (default ROOT/etc/clearwall/ca.env)
#
# stdout carries only `export VAR=value` lines, so `eval "$(install-ca.sh ca.pem)"` works;
# progress and errors go to stderr. Exit 0 installed, 1 refused or failed, 2 usage.
set -eu

PROG=install-ca.sh
ROOT=/
ENV_FILE=
CERT=

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { say "$*"; exit 1; }
usage() {
    printf 'usage: %s [--root DIR] [--env-file FILE] CERT.pem\n' "$PROG" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
        --root) [ $# -ge 2 ] || usage; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#--root=}; shift ;;
        --env-file) [ $# -ge 2 ] || usage; ENV_FILE=$2; shift 2 ;;
        --env-file=*) ENV_FILE=${1#--env-file=}; shift ;;
        -h|--help) usage ;;
        --) shift; break ;;
        -*) say "unknown option $1"; usage ;;
        *) [ -z "$CERT" ] || usage; CERT=$1; shift ;;
    esac
done
if [ $# -gt 0 ]; then
    if [ -n "$CERT" ] || [ $# -ne 1 ]; then usage; fi
    CERT=$1
fi
[ -n "$CERT" ] || usage

# --- the certificate: public, PEM, certificates only -------------------------------------
if [ ! -f "$CERT" ] || [ ! -r "$CERT" ]; then die "cannot read certificate file $CERT"; fi
if grep -q 'PRIVATE KEY' "$CERT"; then
    die "$CERT contains a private key; install only the public certificate (clearwall ca export --out FILE)"
fi
if ! grep -q -e '-----BEGIN CERTIFICATE-----' "$CERT" || ! grep -q -e '-----END CERTIFICATE-----' "$CERT"; then
    die "$CERT is not a PEM certificate; export one with: clearwall ca export --format pem --out FILE"
fi
if grep -e '-----BEGIN ' "$CERT" | grep -v -q -e '-----BEGIN CERTIFICATE-----'; then
    die "$CERT holds PEM blocks other than certificates; install only the public certificate"
fi
if command -v openssl >/dev/null 2>&1; then
    openssl x509 -in "$CERT" -noout 2>/dev/null || die "$CERT is not a valid PEM certificate (openssl cannot parse it)"
fi

# --- the target file system ---------------------------------------------------------------
[ -d "$ROOT" ] || die "--root $ROOT is not a directory"
ROOT=$(cd "$ROOT" && pwd -P)
if [ "$ROOT" = / ]; then P=; else P=$ROOT; fi

os_field() {  # os_field NAME: value of NAME= in os-release, quotes removed
    sed -n "s/^$1=//p" "$P/etc/os-release" | head -n 1 | tr -d '"'"'" | tr '[:upper:]' '[:lower:]'
}

FAMILY=
if [ -r "$P/etc/os-release" ]; then
    for id in $(os_field ID) $(os_field ID_LIKE); do
        case $id in
            debian|ubuntu) FAMILY=debian ;;
            alpine) FAMILY=alpine ;;
            rhel|fedora|centos|rocky|almalinux|ol|amzn) FAMILY=rhel ;;
        esac
        [ -z "$FAMILY" ] || break
    done
fi
if [ -z "$FAMILY" ]; then  # images without os-release, or an unknown ID with a known layout
    if [ -f "$P/etc/debian_version" ]; then FAMILY=debian
    elif [ -f "$P/etc/alpine-release" ]; then FAMILY=alpine
    elif [ -f "$P/etc/redhat-release" ]; then FAMILY=rhel
    else die "cannot tell the distribution from $P/etc/os-release (supported: Debian, Ubuntu, Alpine, RHEL, Fedora)"
    fi
fi

case $FAMILY in
    debian|alpine)
        ANCHOR=/usr/local/share/ca-certificates/clearwall.crt
        BUNDLE=/etc/ssl/certs/ca-certificates.crt
        TOOL=update-ca-certificates; TOOL_ARGS= ;;
    rhel)
        ANCHOR=/etc/pki/ca-trust/source/anchors/clearwall.pem
        BUNDLE=/etc/pki/tls/certs/ca-bundle.crt
        TOOL=update-ca-trust; TOOL_ARGS=extract ;;
esac
say "distribution family: $FAMILY (root $ROOT)"

# --- install the anchor -------------------------------------------------------------------
umask 022
mkdir -p "$P$(dirname "$ANCHOR")" || die "cannot create $P$(dirname "$ANCHOR")"
if ! { cp "$CERT" "$P$ANCHOR.tmp.$$" && mv -f "$P$ANCHOR.tmp.$$" "$P$ANCHOR"; }; then
    die "cannot write $P$ANCHOR"
fi
chmod 644 "$P$ANCHOR"
say "installed $P$ANCHOR"

tool_in_root() {  # path of the update tool inside the root, empty when absent
    for d in /usr/sbin /usr/bin /sbin /bin; do
        if [ -x "$P$d/$TOOL" ]; then printf '%s\n' "$d/$TOOL"; return 0; fi
    done
    return 0
}

resolve_in_root() {  # follow symlinks without leaving the root (absolute links are root-relative)
    f=$1; n=0
    while [ -L "$P$f" ] && [ $n -lt 10 ]; do
        t=$(readlink "$P$f")
        case $t in /*) f=$t ;; *) f=$(dirname "$f")/$t ;; esac
        n=$((n + 1))
    done
    printf '%s\n' "$f"
}

append_to_bundle() {  # fallback: put the certificate into the bundle file itself
    b=$(resolve_in_root "$BUNDLE")
    mkdir -p "$P$(dirname "$b")" || die "cannot create $P$(dirname "$b")"
    [ -f "$P$b" ] || say "no bundle at $P$b; creating one holding only the Clearwall CA"
    # Replace an earlier Clearwall block, so re-running (or rotating the CA) leaves one copy.
    if ! { { if [ -f "$P$b" ]; then sed '/^# BEGIN clearwall CA$/,/^# END clearwall CA$/d' "$P$b"; fi
             echo '# BEGIN clearwall CA'; cat "$CERT"; echo '# END clearwall CA'; } >"$P$b.tmp.$$" \
           && mv -f "$P$b.tmp.$$" "$P$b"; }; then
        die "cannot write $P$b"
    fi
    chmod 644 "$P$b"
    say "appended the certificate to $P$b"
}

if [ -z "$P" ]; then
    if command -v "$TOOL" >/dev/null 2>&1; then
        # shellcheck disable=SC2086  # TOOL_ARGS is empty or one word
        "$TOOL" $TOOL_ARGS >&2 || die "$TOOL failed"
        say "ran $TOOL $TOOL_ARGS"
    else
        say "$TOOL not found (package ca-certificates missing?)"
        append_to_bundle
    fi
else
    inner=$(tool_in_root)
    if [ -n "$inner" ] && [ "$(id -u)" = 0 ] && command -v chroot >/dev/null 2>&1; then
        # shellcheck disable=SC2086
        chroot "$ROOT" "$inner" $TOOL_ARGS >&2 || die "chroot $ROOT $inner failed"
        say "ran $inner inside $ROOT"
    else
        append_to_bundle
    fi
fi

# --- variables for runtimes that ignore the system store ---------------------------------
# Paths are as seen inside the root. NODE_EXTRA_CA_CERTS adds to Node's own roots, so it
# takes the single certificate; the others replace their store, so they take the bundle.
BUNDLE_IN=$(resolve_in_root "$BUNDLE")
[ -n "$ENV_FILE" ] || ENV_FILE=$P/etc/clearwall/ca.env
mkdir -p "$(dirname "$ENV_FILE")" || die "cannot create $(dirname "$ENV_FILE")"
if ! { {
    echo "SSL_CERT_FILE=$BUNDLE_IN"
    echo "REQUESTS_CA_BUNDLE=$BUNDLE_IN"
    echo "NODE_EXTRA_CA_CERTS=$ANCHOR"
    echo "CURL_CA_BUNDLE=$BUNDLE_IN"
    echo "PIP_CERT=$BUNDLE_IN"
    echo "GIT_SSL_CAINFO=$BUNDLE_IN"
} >"$ENV_FILE.tmp.$$" && mv -f "$ENV_FILE.tmp.$$" "$ENV_FILE"; }; then
    die "cannot write $ENV_FILE"
fi
say "wrote $ENV_FILE (load it with: set -a; . $ENV_FILE; set +a)"
sed 's/^/export /' "$ENV_FILE"
