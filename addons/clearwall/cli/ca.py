"""`clearwall ca init|show|export`: create, inspect and hand out the private CA."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from clearwall import ca
from clearwall.errors import CAError


def default_ca_dir() -> Path:
    return Path(os.environ.get("CLEARWALL_CA_DIR") or "ca")


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--days must be a whole number, not {value!r}") from None
    if not 1 <= days <= ca.MAX_DAYS:
        raise argparse.ArgumentTypeError(f"--days must be 1 to {ca.MAX_DAYS}, not {days}")
    return days


def _add_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dir", "--ca-dir", dest="dir", type=Path, default=None,
        help="CA directory (default: $CLEARWALL_CA_DIR, else ca/)",
    )


def register(sub) -> None:
    p = sub.add_parser("ca", help="create, show and export the private CA")
    cmds = p.add_subparsers(dest="ca_command", required=True, metavar="ACTION")

    init = cmds.add_parser("init", help="create a private CA in the format mitmproxy reads")
    _add_dir(init)
    init.add_argument("--name", default="Clearwall CA", help="common name (default: Clearwall CA)")
    init.add_argument("--days", type=_days, default=3650, help="validity in days (default: 3650)")
    init.add_argument("--key", choices=("ec", "rsa"), default="ec",
                      help="EC P-256 (default) or RSA 3072")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(func=cmd_init)

    show = cmds.add_parser("show", help="fingerprint, subject and expiry of the CA")
    _add_dir(show)
    show.set_defaults(func=cmd_show)

    export = cmds.add_parser("export", help="write the public certificate (never the key)")
    _add_dir(export)
    export.add_argument("--format", choices=("pem", "der"), default="pem")
    export.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    export.set_defaults(func=cmd_export)


def _describe(info: ca.CAInfo) -> str:
    return "\n".join([
        f"directory:   {info.directory}",
        f"certificate: {info.cert_path}",
        f"subject:     {info.subject}",
        f"key:         {info.key_type}",
        f"sha256:      {info.fingerprint_sha256}",
        f"valid from:  {info.not_before:%Y-%m-%d %H:%M:%S} UTC",
        f"valid until: {info.not_after:%Y-%m-%d %H:%M:%S} UTC "
        f"({ca.expires_in_days(info)} days left)",
    ])


def cmd_init(args) -> int:
    directory = args.dir or default_ca_dir()
    info = ca.init_ca(directory, name=args.name, days=args.days, key=args.key, force=args.force)
    print(_describe(info))
    print("clients trust it with (or: ca/install-ca.sh CERT inside the container):")
    for k, v in ca.client_env(info.cert_path).items():
        print(f"  export {k}={v}")
    return 0


def cmd_show(args) -> int:
    print(_describe(ca.ca_info(args.dir or default_ca_dir())))
    return 0


def cmd_export(args) -> int:
    data = ca.export_cert(args.dir or default_ca_dir(), args.format)
    if args.out is None:
        if args.format == "der" and sys.stdout.isatty():
            raise CAError("refusing to write DER to a terminal; pass --out FILE or redirect stdout")
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    try:
        args.out.write_bytes(data)
    except OSError as e:
        raise CAError(f"cannot write --out {args.out}: {e.strerror}") from e
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
