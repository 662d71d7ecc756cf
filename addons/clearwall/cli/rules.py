"""`clearwall rules`: check, test and explain rule files; propose rules from logged traffic."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from clearwall.errors import ClearwallError, RuleSetError
from clearwall.policy import model
from clearwall.policy.casetest import load_cases, run_cases
from clearwall.policy.explain import Request, evaluate
from clearwall.policy.loader import load_rules
from clearwall.policy.suggest import suggest_yaml


def register(sub) -> None:
    p = sub.add_parser("rules", help="check, test and explain rule files")
    rs = p.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    c = rs.add_parser("check", help="validate rule files; every error as file:line:column: message")
    c.add_argument("path", help="rule file or directory")
    c.set_defaults(func=check)
    t = rs.add_parser("test", help="rule unit tests: requests and the decision each must get; exit 1 on a mismatch")
    t.add_argument("path", help="rule file or directory")
    t.add_argument("cases", help="cases file (YAML: cases: [{name, request, expect}])")
    t.set_defaults(func=test)
    e = rs.add_parser("explain", help="the decision for one request and every rule that contributed, in order")
    e.add_argument("path", help="rule file or directory")
    e.add_argument("--url", required=True, help="absolute URL, e.g. https://api.github.com/user")
    e.add_argument("--method", default="GET", help="HTTP method (default GET)")
    e.add_argument("--client", help="client name from the rules (default: unidentified)")
    e.add_argument("--header", "-H", action="append", default=[], metavar="'NAME: VALUE'", help="request header (repeatable)")
    e.add_argument("--body-file", help="file holding the request body")
    e.set_defaults(func=explain)
    g = rs.add_parser("suggest", help="propose destination rules (hosts, methods, paths) from a body log")
    g.add_argument("log_dir", help="log directory (flows.jsonl and rotated files)")
    g.add_argument("--client", help="only traffic of this client")
    g.add_argument("--out", help="write the YAML to this file instead of stdout")
    g.set_defaults(func=suggest)
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


def _load(path: str):
    try:
        return load_rules(path)
    except RuleSetError as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        n = len(e.errors)
        raise ClearwallError(f"{path} is not a valid rule set ({n} error{'s' if n != 1 else ''} above)") from None


def test(args) -> int:
    rules = _load(args.path)
    results = run_cases(rules, load_cases(args.cases))
    failed = [r for r in results if not r.passed]
    for r in results:
        print(f"{'ok  ' if r.passed else 'FAIL'} {r.case.name}  ({r.case.where})")
        if not r.passed:
            print(r.diff())
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed (rules {rules.version})")
    return 1 if failed else 0


def _headers(values: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for v in values:
        name, sep, value = v.partition(":")
        if not sep or not name.strip():
            raise ClearwallError(f"--header {v!r} is not 'NAME: VALUE'")
        out.append((name.strip(), value.strip()))
    return tuple(out)


def explain(args) -> int:
    rules = _load(args.path)
    body = b""
    if args.body_file:
        try:
            body = Path(args.body_file).read_bytes()
        except OSError as e:
            raise ClearwallError(f"--body-file {args.body_file} cannot be read: {e.strerror}") from None
    req = Request(args.url, args.method.upper(), args.client, _headers(args.header), body)
    try:
        out = evaluate(rules, req)
    except ValueError as e:
        raise ClearwallError(f"{e} (--url/--client)") from None
    print(f"{req.method} {req.url}  client: {req.client or '(unidentified)'}  rules: {rules.version}")
    if out.refusal is not None:
        print(f"decision: {out.action}, {out.status} {out.refusal.kind} by rule {out.refusal.rule}: {out.refusal.message}")
    else:
        extra = f" (report mode would refuse: {', '.join(out.would_block)})" if out.would_block else ""
        print(f"decision: {out.action} by destination {out.destination or '(none)'}{extra}")
    print("evaluation, in order:")
    width = max((len(s.rule) for s in out.steps), default=0)
    for i, s in enumerate(out.steps, 1):
        where = rules.sources.get(s.rule, "")
        print(f"  {i:2}. {s.section:<11} {s.rule:<{width}}  {s.outcome:<11} {s.detail}" + (f"  [{where}]" if where else ""))
    return 0


def suggest(args) -> int:
    from clearwall.audit.reader import iter_records

    log_dir = Path(args.log_dir)
    if not log_dir.is_dir():
        raise ClearwallError(f"log directory {log_dir} not found")
    text, used = suggest_yaml((loc.record for loc in iter_records(log_dir)), args.client, str(log_dir))
    if args.out:
        Path(args.out).write_text(text)
        print(f"{args.out}: {text.count('- name:')} destination(s) from {used} request(s)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if used == 0:
        print(f"no allowed or report-mode requests{' of client ' + args.client if args.client else ''} in {log_dir}",
              file=sys.stderr)
    return 0
