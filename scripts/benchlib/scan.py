"""Content-filter scanner throughput: the shipped libraries, fast engine vs plain-regex reference.

    scripts/bench scan [--size BYTES] [--repeat N] [--json]

Bodies (all of --size characters, default 1 MiB):
  clean-json    digit-dense API JSON (random ids, node ids, 40-hex digests, timestamps in every
                ~300-byte object), nothing to find: the hard case for the PII patterns
  github-json   shaped like GitHub's REST issue list (API URLs, user objects, prose bodies)
  clean-text    prose and log lines in several languages
  with-secrets  clean JSON with a token, a key and a few e-mail addresses every ~64 KiB
For each body and target (request.body uses secrets + PII, response.body the injection phrases):
MB/s of Scanner.scan with engine=auto (Hyperscan prefilter) and engine=regex (each pattern with
regex.finditer: the reference semantics), checked to return identical matches. Then the cost of
the evasion variants and of a whole inspect_text on the same bodies. MB/s are per core (one
thread): the best and the median of --repeat rounds, each round measuring every case once (this
VM's CPU speed drifts within minutes; interleaving gives every case the same phases). Rows
"body bytes given" are what the proxy runs: inspect_body passes the body's own bytes, which for
ASCII JSON are the prefilter's bytes already and for other UTF-8 text a cheaper start.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import time

from clearwall import allocator
from clearwall.content.evasions import Evasions
from clearwall.content.inspect import inspect_text
from clearwall.content.library import shipped_specs
from clearwall.content.scanner import Scanner

WORDS = (
    "the agent fetched repository issues and summarised pull request reviews before deploying "
    "build artifacts to staging while the scheduler retried failed jobs with exponential backoff"
).split()


def clean_json(size: int, rng: random.Random) -> str:
    parts, total = [], 0
    while total < size:
        item = json.dumps(
            {
                "id": rng.randint(1, 10**9),
                "node_id": "".join(rng.choices(string.ascii_letters + string.digits, k=20)),
                "title": " ".join(rng.choices(WORDS, k=8)),
                "url": f"https://api.example.net/v1/items/{rng.randint(1, 99999)}?page={rng.randint(1, 9)}",
                "sha": "".join(rng.choices("0123456789abcdef", k=40)),
                "created_at": f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:00:00Z",
                "labels": ["bug", "p2"],
                "score": round(rng.random(), 4),
                "draft": False,
            }
        )
        parts.append(item)
        total += len(item) + 2
    return ("[" + ", ".join(parts) + "]")[:size]


def github_json(size: int, rng: random.Random) -> str:
    """Shaped like GitHub's REST issue list: many API URLs, a user object, prose bodies."""
    parts, total = [], 0
    while total < size:
        n, uid = rng.randint(1, 9999), rng.randint(1000, 99999999)
        login = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 12)))
        repo = "https://api.github.com/repos/octo-org/widgets"
        item = json.dumps(
            {
                "url": f"{repo}/issues/{n}", "repository_url": repo,
                "labels_url": f"{repo}/issues/{n}/labels{{/name}}", "comments_url": f"{repo}/issues/{n}/comments",
                "html_url": f"https://github.com/octo-org/widgets/issues/{n}",
                "id": rng.randint(10**9, 3 * 10**9),
                "node_id": "I_kwDO" + "".join(rng.choices(string.ascii_letters + string.digits + "-_", k=10)),
                "number": n, "title": " ".join(rng.choices(WORDS, k=rng.randint(4, 10))).capitalize(),
                "user": {"login": login, "id": uid, "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
                         "html_url": f"https://github.com/{login}", "type": "User", "site_admin": False},
                "labels": [{"name": rng.choice(["bug", "enhancement", "docs", "good first issue"]), "color": "d73a4a"}],
                "state": rng.choice(["open", "closed"]), "locked": False, "comments": rng.randint(0, 40),
                "created_at": f"2025-0{rng.randint(1, 9)}-{rng.randint(10, 28)}T{rng.randint(10, 23)}:04:05Z",
                "author_association": "CONTRIBUTOR",
                "body": " ".join(rng.choices(WORDS, k=rng.randint(20, 120))).capitalize() + ".",
            }
        )
        parts.append(item)
        total += len(item) + 2
    return ("[" + ", ".join(parts) + "]")[:size]


def clean_text(size: int, rng: random.Random) -> str:
    lines = [
        "Die Bereitstellung wurde um 10:42 Uhr abgeschlossen; keine Fehler.",
        "La réunion est reportée à jeudi, merci de prévenir l'équipe.",
        "数据已经同步到服务器，请检查结果。",
        "2024-05-01T10:00:00Z INFO request completed status=200 duration_ms=42",
    ]
    out, total = [], 0
    while total < size:
        line = rng.choice(lines) if rng.random() < 0.3 else " ".join(rng.choices(WORDS, k=14)) + "."
        out.append(line)
        total += len(line) + 1
    return "\n".join(out)[:size]


def with_secrets(size: int, rng: random.Random) -> str:
    base = list(clean_json(size, rng))
    alnum = string.ascii_letters + string.digits
    for at in range(1000, size - 200, 64 * 1024):
        secret = rng.choice(
            [
                "ghp_" + "".join(rng.choices(alnum, k=36)),
                "AKIA" + "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", k=16)),
                "xoxb-123456789012-1234567890123-" + "".join(rng.choices(alnum, k=24)),
            ]
        )
        insert = f' "{secret}" jane{at}@acme-corp.net '
        base[at : at + len(insert)] = insert
    return "".join(base)[:size]


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench scan", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.add_argument("--default-allocator", action="store_true",
                        help="keep glibc's default thresholds instead of the proxy's (clearwall run's) settings")
    args = parser.parse_args(argv)
    # As `clearwall run` does: large freed blocks stay in the heap (see clearwall/allocator.py).
    tuned = not args.default_allocator and allocator.keep_large_blocks()

    specs = shipped_specs()
    fast = Scanner(specs, engine="auto", timeout=60)
    reference = Scanner(specs, engine="regex", timeout=600)
    evasions = Evasions()
    rng = random.Random(1)
    bodies = {"clean-json": clean_json(args.size, rng), "github-json": github_json(args.size, rng),
              "clean-text": clean_text(args.size, rng), "with-secrets": with_secrets(args.size, rng)}
    mb = args.size / 1e6
    rows = []
    print(f"engine: {fast.engine_description}; allocator: {'as clearwall run sets it' if tuned else 'glibc defaults'}",
          file=sys.stderr)
    from clearwall.content.library import SHIPPED_DIR, load_library

    # The class-only PII patterns (cards, IBANs, SSNs) dominate on digit-dense JSON: the
    # credential library alone is measured too.
    secrets_only = Scanner([e.spec for e in load_library(SHIPPED_DIR / "secrets.yaml")], timeout=60)
    cases = []  # (row, scanner, text, target)
    for name, text in bodies.items():
        for target in ("request.body", "response.body"):
            got = fast.scan(text, target)
            ref_time = best_of(lambda: reference.scan(text, target), 1)
            if reference.scan(text, target) != got:
                print(f"MISMATCH between engines on {name} / {target}", file=sys.stderr)
                return 1
            row = {"body": name, "target": target, "matches": len(got), "regex_MBps": round(mb / ref_time, 1)}
            rows.append(row)
            cases.append((row, fast, text, target))
    for name in ("clean-json", "with-secrets"):
        row = {"body": name, "target": "request.body", "library": "secrets.yaml only"}
        rows.append(row)
        cases.append((row, secrets_only, bodies[name], "request.body"))
    # The proxy's path: inspect_body hands the scanner the body's own bytes with the text.
    for name in ("clean-json", "github-json", "clean-text", "with-secrets"):
        row = {"body": name, "target": "request.body", "library": "all libraries, body bytes given: the proxy's path"}
        rows.append(row)
        cases.append((row, fast, bodies[name], "request.body", bodies[name].encode("utf-8", "surrogateescape")))
    # Rounds interleave the cases: this VM's CPU speed drifts by up to ~1.6x within minutes, and
    # one case measured back to back would get one phase of it.
    times: dict[int, list[float]] = {id(c[0]): [] for c in cases}
    for _ in range(args.repeat):
        for row, scanner, text, target, *raw in cases:
            start = time.perf_counter()
            scanner.scan(text, target, raw=raw[0] if raw else None)
            times[id(row)].append(time.perf_counter() - start)
    for row, *_rest in cases:
        ts = sorted(times[id(row)])
        row["fast_MBps"] = round(mb / ts[0], 1)
        row["median_MBps"] = round(mb / ts[len(ts) // 2], 1)
        if "regex_MBps" in row:
            row["speedup"] = round(mb / row["regex_MBps"] / ts[0], 1)
    for name, text in bodies.items():
        variants_time = best_of(lambda: evasions.variants(text), max(1, args.repeat // 2))
        inspect_time = best_of(lambda: inspect_text(fast, "request.body", text), max(1, args.repeat // 2))
        rows.append({"body": name, "target": "request.body", "evasions_MBps": round(mb / variants_time, 1),
                     "inspect_text_MBps": round(mb / inspect_time, 1)})
    if args.json:
        print(json.dumps({"size": args.size, "engine": fast.engine_description, "rows": rows}))
        return 0
    print(f"best / median of {args.repeat} interleaved rounds; regex: one run")
    print(f"{'body':<13} {'target':<14} {'matches':>7} {'fast MB/s':>10} {'median':>8} {'regex MB/s':>11} {'speedup':>8}")
    for r in rows:
        if "regex_MBps" in r:
            print(f"{r['body']:<13} {r['target']:<14} {r['matches']:>7} {r['fast_MBps']:>10} {r['median_MBps']:>8}"
                  f" {r['regex_MBps']:>11} {r['speedup']:>7}x")
    for r in rows:
        if "library" in r:
            print(f"{r['body']:<13} {r['target']:<14} {'':>7} {r['fast_MBps']:>10} {r['median_MBps']:>8}   ({r['library']})")
    print(f"\n{'body':<13} {'evasion variants MB/s':>22} {'inspect_text (scan+variants) MB/s':>35}")
    for r in rows:
        if "evasions_MBps" in r:
            print(f"{r['body']:<13} {r['evasions_MBps']:>22} {r['inspect_text_MBps']:>35}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
