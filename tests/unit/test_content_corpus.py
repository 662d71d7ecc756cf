"""Quality on realistic traffic: ordinary requests pass, leaks are caught plain and encoded.

Benign corpus: API JSON (GitHub, OpenAI, Anthropic, MCP, Slack, Stripe test mode), source code,
logs, docs, data URIs, hashes, UUIDs, URLs and header blocks. `.lines` files hold one request
per line. Leaks corpus: one realistic leak per JSON line, in many shapes (env files, code, curl,
config, connection strings, key files), each also sent percent-, double-percent-, base64-,
JSON-escaped and gzip-encoded.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from urllib.parse import quote

import pytest

from clearwall.content.inspect import inspect_body, inspect_text
from clearwall.content.library import shipped_specs
from clearwall.content.scanner import Scanner

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
# A generous time limit: the machine running the suite may be busy; limits have their own tests.
SCANNER = Scanner(shipped_specs(), timeout=10)
TARGET_BY_FILE = {"urls.lines": "request.url", "headers.lines": "request.headers"}


def benign_documents() -> list[tuple[str, str, str]]:
    docs = []
    for path in sorted((CORPUS / "benign").iterdir()):
        text = path.read_text(encoding="utf-8")
        target = TARGET_BY_FILE.get(path.name, "request.body")
        if path.suffix == ".lines":
            docs += [(f"{path.name}:{i + 1}", target, line) for i, line in enumerate(text.splitlines()) if line]
        else:
            docs.append((path.name, target, text))
    return docs


def leaks() -> list[tuple[str, str]]:
    lines = (CORPUS / "leaks" / "leaks.jsonl").read_text(encoding="utf-8").splitlines()
    return [(d["kind"], d["text"]) for d in map(json.loads, lines)]


def json_escaped(text: str) -> str:
    return json.dumps(text)[1:-1].replace("/", "\\/").replace("_", "\\u005f").replace(":", "\\u003a")


ENCODINGS = {
    "plain": lambda t: t,
    "percent": lambda t: quote(t, safe=""),
    "double-percent": lambda t: quote(quote(t, safe=""), safe=""),
    "base64": lambda t: base64.b64encode(t.encode()).decode(),
    "json-escaped": json_escaped,
}


def caught(kind: str, result) -> bool:
    if kind == "alert":
        return bool(result.alerts) or result.refused
    return result.refused or result.redacted is not None


def test_corpora_are_substantial():
    assert len(benign_documents()) >= 500
    assert len(leaks()) >= 80


def test_ordinary_traffic_is_almost_never_refused():
    refused = []
    for name, target, text in benign_documents():
        result = inspect_text(SCANNER, target, text)
        if result.refused:
            refused.append((name, result.blocked_by, result.error))
    rate = len(refused) / len(benign_documents())
    assert rate <= 0.03, refused
    assert not [r for r in refused if r[2]], "benign traffic must never hit an inspection error"


def test_benign_files_raise_nothing_blocking():
    # Whole files (not lines) are the shapes the corpus was written for: none may block.
    blocked = [
        (name, inspect_text(SCANNER, target, text).blocked_by)
        for name, target, text in benign_documents()
        if ":" not in name
    ]
    assert [b for b in blocked if b[1]] == []


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_leaks_are_caught_in_every_encoding(encoding):
    encode = ENCODINGS[encoding]
    missed = [text[:60] for kind, text in leaks() if not caught(kind, inspect_text(SCANNER, "request.body", encode(text)))]
    assert len(missed) / len(leaks()) <= 0.05, missed


def test_gzip_encoded_leaks_are_caught():
    missed = []
    for kind, text in leaks():
        result = inspect_body(
            SCANNER, "request.body", gzip.compress(text.encode()),
            content_type="text/plain", content_encoding="gzip", max_size=1 << 20,
        )
        if not caught(kind, result):
            missed.append(text[:60])
    assert len(missed) / len(leaks()) <= 0.05, missed


def test_plain_secret_leaks_are_all_blocked():
    missed = [text[:60] for kind, text in leaks() if kind == "secret" and inspect_text(SCANNER, "request.body", text).blocked_by is None]
    assert missed == []
