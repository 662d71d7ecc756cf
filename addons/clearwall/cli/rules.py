"""`clearwall rules`: check rule files in CI, and generate their JSON Schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from clearwall.errors import RuleSetError
from clearwall.policy import model
from clearwall.policy.loader import load_rules


def register(sub) -> None:
    p = sub.add_parser("rules", help="check, test and explain rule files")
    rs = p.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    c = rs.add_parser("check", help="validate rule files; every error as file:line:column: message")
    c.add_argument("path", help="rule file or directory")
    c.set_defaults(func=check)
    s = rs.add_parser("schema", help="print the JSON Schema of rule files (rules/schema.json)")
    s.add_argument("--out", help="write to this file instead of stdout")
    s.set_defaults(func=schema)


def check(args) -> int:
    try:
        rules = load_rules(args.path)
    except RuleSetError as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        n = len(e.errors)
        print(f"{n} error{'s' if n != 1 else ''} in {args.path}", file=sys.stderr)
        return 1
    print(f"{args.path}: ok (version {rules.version}: {len(rules.destinations)} destinations, "
          f"{len(rules.deny)} deny, {len(rules.filters)} filters, {len(rules.rate_limits)} rate limits, "
          f"{len(rules.clients)} clients)")
    return 0


def schema_text() -> str:
    return json.dumps(model.json_schema(), indent=2, sort_keys=True) + "\n"


def schema(args) -> int:
    text = schema_text()
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
