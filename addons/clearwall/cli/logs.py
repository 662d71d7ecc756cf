"""`clearwall logs`: review of the body log (tail, search, show, stats, verify, export)."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import sys
import time
from collections import deque
from pathlib import Path

import orjson

from clearwall.audit import display
from clearwall.audit.errors import AuditError
from clearwall.audit.fields import parse_timestamp
from clearwall.audit.files import all_files, read_lines
from clearwall.audit.har import write_har
from clearwall.audit.follow import Follower
from clearwall.audit.reader import Filter, iter_records, parse_status, search
from clearwall.audit.record import ACTIONS
from clearwall.audit.stats import compute
from clearwall.audit.verify import verify

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, now: float, flag: str) -> float:
    """Epoch seconds from an ISO 8601 time or a duration ago (30m, 2h, 7d)."""
    m = _RELATIVE.match(text.strip())
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return parse_timestamp(text)
    except ValueError:
        raise AuditError(
            f"{flag} {text!r} is neither an ISO 8601 time (2026-11-22T06:00:00Z) nor a duration ago (30m, 2h, 7d)"
        ) from None


def _count(text: str) -> int:
    """argparse type: a whole number >= 0."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return n


def _log_dir(args) -> Path:
    path = Path(args.log_dir)
    if not path.is_dir():
        raise AuditError(f"log directory {path} does not exist (set --log-dir or CLEARWALL_LOG_DIR)")
    return path


def _filter(args) -> Filter:
    now = time.time()
    flt = Filter(client=args.client, host=args.host, rule=args.rule, action=args.action, text=args.text)
    if args.since:
        flt.since = parse_when(args.since, now, "--since")
    if args.until:
        flt.until = parse_when(args.until, now, "--until")
    if args.status:
        try:
            flt.status = parse_status(args.status)
        except ValueError as e:
            raise AuditError(f"--status: {e}") from None
    if args.regex:
        try:
            flt.regex = re.compile(args.regex)
        except re.error as e:
            raise AuditError(f"--regex {args.regex!r} is not a valid regular expression: {e}") from None
    return flt


def _out():
    return sys.stdout.buffer


def _print_records(records, as_json: bool) -> int:
    out, n = _out(), 0
    if not as_json:
        out.write((display.HEADER + "\n").encode())
    for record in records:
        line = orjson.dumps(record) if as_json else display.row(record).encode()
        out.write(line + b"\n")
        n += 1
    out.flush()
    return n


def cmd_search(args) -> int:
    flt = _filter(args)
    found = (loc.record for loc in search(_log_dir(args), flt))
    if args.limit:
        found = (r for r, _ in zip(found, range(args.limit)))
    n = _print_records(found, args.json)
    if not args.json:
        print(f"{n} record(s)", file=sys.stderr)
    return 0


def _last(log_dir: Path, count: int, flt: Filter) -> list[dict]:
    """The last `count` matching records, reading files newest first and stopping early."""
    collected: deque = deque()
    for f in reversed(all_files(log_dir)):
        chunk: deque = deque(maxlen=count)
        for raw in read_lines(f.path):
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and flt.matches(record):
                chunk.append(record)
        collected.extendleft(reversed(chunk))
        if len(collected) >= count:
            break
    return list(collected)[-count:] if count else []


def cmd_tail(args) -> int:
    log_dir = _log_dir(args)
    flt = _filter(args)
    follower = Follower(log_dir) if args.follow else None
    if follower is not None:
        follower.start()  # before reading the last records: nothing falls in between
    last = _last(log_dir, args.lines, flt)
    _print_records(last, args.json)
    if follower is not None:
        follower.skip = {h for h in ((r.get("log") or {}).get("hash") for r in last) if h}
        out = _out()
        try:
            for record in follower.run(stop=lambda: False):
                if flt.matches(record):
                    out.write((orjson.dumps(record) if args.json else display.row(record).encode()) + b"\n")
                    out.flush()
        except KeyboardInterrupt:
            return 0
    return 0


def cmd_show(args) -> int:
    found = [loc for loc in iter_records(_log_dir(args)) if (loc.record.get("event") or {}).get("id") == args.event_id]
    if not found:
        raise AuditError(f"no record with event.id {args.event_id!r} in {args.log_dir}")
    out = _out()
    for loc in found:
        if args.json:
            out.write(orjson.dumps(loc.record) + b"\n")
        else:
            out.write(f"# {loc.path}:{loc.line}\n".encode())
            out.write(orjson.dumps(loc.record, option=orjson.OPT_INDENT_2) + b"\n")
    out.flush()
    return 0


def cmd_stats(args) -> int:
    flt = _filter(args)
    d = compute(loc.record for loc in search(_log_dir(args), flt)).as_dict(top=args.top)
    if args.json:
        _out().write(orjson.dumps(d) + b"\n")
    else:
        print(display.stats_text(d))
    return 0


def cmd_verify(args) -> int:
    if args.expect_head and not re.fullmatch(r"[0-9a-f]{64}", args.expect_head):
        raise AuditError(f"--expect-head {args.expect_head!r} is not a sha256 hash (64 lower-case hex digits)")
    result = verify(_log_dir(args), expect_head=args.expect_head).as_dict()
    if args.json:
        _out().write(orjson.dumps(result) + b"\n")
    else:
        print(display.verify_text(result))
    return 0 if result["ok"] else 1


def cmd_export(args) -> int:
    if not args.har:
        raise AuditError("export needs a format: --har")
    records = (loc.record for loc in search(_log_dir(args), _filter(args)))
    if args.out and args.out != "-":
        try:
            with open(args.out, "wb") as f:
                n = write_har(records, f)
        except OSError as e:
            raise AuditError(f"cannot write --out {args.out}: {e.strerror or e}") from None
        print(f"{n} entries written to {args.out}", file=sys.stderr)
    else:
        write_har(records, _out())
        _out().flush()
    return 0


def _warnings_to_stderr(func):
    """Show the audit package's warnings (a damaged archive skipped) to the operator, and
    end quietly when the output pipe is closed."""

    @functools.wraps(func)
    def wrapper(args) -> int:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("clearwall: warning: %(message)s"))
        handler.setLevel(logging.WARNING)
        logger = logging.getLogger("clearwall.audit")
        logger.addHandler(handler)
        try:
            return func(args)
        except BrokenPipeError:
            # `clearwall logs search | head`: the reader left; stop quietly, like grep does.
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):
                pass
            return 0
        finally:
            logger.removeHandler(handler)

    return wrapper


def _common(p, *, filters: bool) -> None:
    p.add_argument(
        "--log-dir",
        default=os.environ.get("CLEARWALL_LOG_DIR", "logs"),
        help="log directory (env CLEARWALL_LOG_DIR, default logs/)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output (JSON lines)")
    if filters:
        p.add_argument("--since", help="from this time: ISO 8601 or a duration ago (30m, 2h, 7d)")
        p.add_argument("--until", help="before this time: ISO 8601 or a duration ago")
        p.add_argument("--client", help="client name, proxy user or IP (* globs)")
        p.add_argument("--host", help="destination host or IP (* globs)")
        p.add_argument("--rule", help="records where this rule contributed")
        p.add_argument("--action", choices=sorted(ACTIONS), help="event.action")
        p.add_argument("--status", help="response status: 403, 4xx or 500-599")
        p.add_argument("--text", help="text contained in a request, response or WebSocket body")
        p.add_argument("--regex", help="Python regular expression searched in bodies")


def register(sub) -> None:
    p = sub.add_parser("logs", help="review body logs", description=__doc__)
    cmds = p.add_subparsers(dest="logs_command", required=True, metavar="SUBCOMMAND")

    t = cmds.add_parser("tail", help="last records; -f follows new ones")
    _common(t, filters=True)
    t.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    t.add_argument("-n", "--lines", type=_count, default=20, help="records to show first (default 20)")
    t.set_defaults(func=_warnings_to_stderr(cmd_tail))

    s = cmds.add_parser("search", help="records matching every filter given")
    _common(s, filters=True)
    s.add_argument("--limit", type=_count, default=0, help="stop after this many records")
    s.set_defaults(func=_warnings_to_stderr(cmd_search))

    sh = cmds.add_parser("show", help="every record with this event.id, in full")
    _common(sh, filters=False)
    sh.add_argument("event_id", metavar="EVENT_ID")
    sh.set_defaults(func=_warnings_to_stderr(cmd_show))

    st = cmds.add_parser("stats", help="counts: blocked, rate-limited, auth failures, upstream errors, top rules/clients/hosts")
    _common(st, filters=True)
    st.add_argument("--top", type=_count, default=10, help="entries in each top list (default 10)")
    st.set_defaults(func=_warnings_to_stderr(cmd_stats))

    v = cmds.add_parser("verify", help="check the hash chain; exit 1 naming the first broken record")
    _common(v, filters=False)
    v.add_argument("--expect-head", metavar="HASH",
                   help="a log.hash recorded elsewhere (e.g. at shutdown) that must be in the chain")
    v.set_defaults(func=_warnings_to_stderr(cmd_verify))

    e = cmds.add_parser("export", help="export records (filtered) as HAR 1.2")
    _common(e, filters=True)
    e.add_argument("--har", action="store_true", help="HAR 1.2 (the only format)")
    e.add_argument("--out", help="output file (default standard output)")
    e.set_defaults(func=_warnings_to_stderr(cmd_export))
