"""Rule unit tests (`clearwall rules test`): requests and the decision each one must get.

A cases file:

    cases:
      - name: the agent may read issues
        request: {client: github-mcp, method: GET, url: "https://api.github.com/repos/a/b/issues"}
        expect: {action: allowed, destination: github-api}
      - name: an AWS key in a body is blocked
        request:
          method: POST
          url: https://api.github.com/repos/a/b/issues
          headers: {Content-Type: application/json}
          body: '{"k": "AKIAABCDEFGHIJKLMNOP"}'
        expect: {action: blocked, kind: content_blocked, rule: aws-access-key, status: 403}

`expect` names only what matters to the case; each key given must equal the outcome's
(`action`, `status`, `kind`, `rule`, `destination`, `filters`, `rate_limits`, `would_block`).
`body_file` (relative to the cases file) may replace `body`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clearwall.errors import ClearwallError
from clearwall.policy.explain import Outcome, Request, evaluate
from clearwall.policy.ruleset import RuleSet
from clearwall.policy.yamlpos import Located, load_yaml

EXPECT_KEYS = ("action", "status", "kind", "rule", "destination", "filters", "rate_limits", "would_block")
REQUEST_KEYS = {"client", "method", "url", "headers", "body", "body_file"}
ACTIONS = {"allowed", "redacted", "would_block", "blocked"}


class CasesError(ClearwallError):
    """The cases file itself is wrong (not a mismatch): one located sentence."""


@dataclass(frozen=True)
class Case:
    name: str
    where: str  # file:line of the case, for the report
    request: Request
    expect: dict[str, Any]


@dataclass(frozen=True)
class Result:
    case: Case
    outcome: Outcome | None
    error: str | None = None  # the request could not be evaluated (bad URL, unknown client)

    @property
    def passed(self) -> bool:
        if self.outcome is None:
            return False
        actual = self.outcome.as_dict()
        return all(actual[k] == v for k, v in self.case.expect.items())

    def diff(self) -> str:
        """Expected vs actual, as a unified diff of the expected keys (YAML lines)."""
        if self.outcome is None:
            return f"  error: {self.error}"
        actual = self.outcome.as_dict()
        want = {k: self.case.expect[k] for k in EXPECT_KEYS if k in self.case.expect}
        got = {k: actual[k] for k in want}
        lines = difflib.unified_diff(_yaml_lines(want), _yaml_lines(got), "expected", "actual", lineterm="", n=len(want))
        out = [f"  {line}" for line in lines]
        if self.outcome.refusal is not None:
            out.append(f"  (refusal message: {self.outcome.refusal.message})")
        return "\n".join(out)


def _yaml_lines(d: dict) -> list[str]:
    """One `key: value` line per key (flow style), so a diff shows exactly the keys that differ."""
    return [f"{k}: {yaml.safe_dump(v, default_flow_style=True, width=1000).strip().removesuffix('...').strip()}"
            for k, v in d.items()]


def _fail(doc: Located, loc: tuple, message: str) -> CasesError:
    line, col = doc.where(loc)
    return CasesError(f"{doc.file}:{line}:{col}: {message}")


def _request(doc: Located, loc: tuple, raw: Any, base: Path) -> Request:
    if not isinstance(raw, dict):
        raise _fail(doc, loc, "request must be a mapping with at least `url`")
    unknown = set(raw) - REQUEST_KEYS
    if unknown:
        raise _fail(doc, loc + (sorted(unknown)[0],), f"unknown request key {sorted(unknown)[0]!r} "
                    f"(known: {', '.join(sorted(REQUEST_KEYS))})")
    if not isinstance(raw.get("url"), str):
        raise _fail(doc, loc, "request needs `url` (an absolute https:// or http:// URL)")
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict):
        raise _fail(doc, loc + ("headers",), "headers must be a mapping of name: value")
    body: bytes = b""
    if "body" in raw and "body_file" in raw:
        raise _fail(doc, loc + ("body_file",), "give `body` or `body_file`, not both")
    if "body" in raw:
        body = str(raw["body"]).encode()
    elif "body_file" in raw:
        path = base / str(raw["body_file"])
        try:
            body = path.read_bytes()
        except OSError as e:
            raise _fail(doc, loc + ("body_file",), f"body_file {path} cannot be read: {e.strerror}") from None
    client = raw.get("client")
    return Request(raw["url"], str(raw.get("method", "GET")).upper(), str(client) if client is not None else None,
                   tuple((str(k), str(v)) for k, v in headers.items()), body)


def _expect(doc: Located, loc: tuple, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        raise _fail(doc, loc, f"expect must be a mapping of one or more of: {', '.join(EXPECT_KEYS)}")
    for k, v in raw.items():
        if k not in EXPECT_KEYS:
            raise _fail(doc, loc + (k,), f"unknown expect key {k!r} (known: {', '.join(EXPECT_KEYS)})")
        if k == "action" and v not in ACTIONS:
            raise _fail(doc, loc + (k,), f"action must be one of {', '.join(sorted(ACTIONS))}, not {v!r}")
    return dict(raw)


def load_cases(path: str | Path) -> list[Case]:
    """Parse a cases file; CasesError (located) when it is malformed."""
    p = Path(path)
    if not p.is_file():
        raise CasesError(f"cases file {p} not found")
    doc = load_yaml(p, environ={}, substitute_vars=False)
    if doc.errors:
        raise CasesError(str(doc.errors[0]))
    data = doc.data
    root: tuple = ()
    if isinstance(data, dict):
        if set(data) - {"cases", "version"}:
            raise _fail(doc, (sorted(set(data) - {"cases", "version"})[0],), "a cases file holds `cases:` (a list)")
        data, root = data.get("cases"), ("cases",)
    if not isinstance(data, list) or not data:
        raise _fail(doc, root, "a cases file holds `cases:`, a non-empty list of {name, request, expect}")
    cases, names = [], set()
    for i, raw in enumerate(data):
        loc = root + (i,)
        if not isinstance(raw, dict) or "request" not in raw or "expect" not in raw:
            raise _fail(doc, loc, "each case needs `request:` and `expect:` (and a `name:`)")
        name = str(raw.get("name") or f"case {i + 1}")
        if name in names:
            raise _fail(doc, loc + ("name",), f"case name {name!r} is used twice")
        names.add(name)
        line = doc.where(loc)[0]
        cases.append(Case(name, f"{doc.file}:{line}", _request(doc, loc + ("request",), raw["request"], p.parent),
                          _expect(doc, loc + ("expect",), raw["expect"])))
    return cases


def run_cases(rules: RuleSet, cases: list[Case]) -> list[Result]:
    out = []
    for case in cases:
        try:
            out.append(Result(case, evaluate(rules, case.request)))
        except ValueError as e:
            out.append(Result(case, None, str(e)))
    return out
