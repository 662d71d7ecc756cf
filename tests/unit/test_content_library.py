"""The shipped pattern libraries: size, shape, defaults, and every example through both engines."""

from __future__ import annotations

import importlib.util

import pytest

from clearwall.content import relax
from clearwall.content.library import (
    SHIPPED_DIR,
    example_failures,
    load_library,
    parse_entry,
    shipped_entries,
)
from clearwall.content.scanner import Scanner
from clearwall.content.spec import REQUEST_TARGETS

ENTRIES = shipped_entries()
HAVE_HYPERSCAN = importlib.util.find_spec("hyperscan") is not None
ENGINES = ["regex", pytest.param("hyperscan", marks=pytest.mark.skipif(not HAVE_HYPERSCAN, reason="no hyperscan"))]


@pytest.fixture(scope="module", params=ENGINES)
def scanner(request):
    return Scanner([e.spec for e in ENTRIES], engine=request.param, timeout=2)


def by_file(name: str):
    return load_library(SHIPPED_DIR / name)


def test_secrets_library_has_at_least_sixty_credential_patterns():
    assert len(by_file("secrets.yaml")) >= 60


@pytest.mark.parametrize(
    "family, names",
    [
        ("cloud", ["aws-access-key-id", "aws-secret-access-key", "google-api-key", "gcp-service-account-key",
                   "azure-storage-account-key", "azure-sas-token", "digitalocean-token", "heroku-api-key",
                   "cloudflare-api-token"]),
        ("source hosting", ["github-pat-classic", "github-fine-grained-pat", "github-oauth-token",
                            "github-user-to-server-token", "github-server-to-server-token",
                            "github-refresh-token", "gitlab-pat"]),
        ("chat", ["slack-bot-token", "slack-webhook", "discord-bot-token", "discord-webhook", "telegram-bot-token"]),
        ("payments", ["stripe-live-secret-key", "stripe-restricted-key", "square-access-token", "braintree-access-token"]),
        ("ai providers", ["openai-api-key", "openai-project-key", "anthropic-api-key", "huggingface-token",
                          "google-api-key", "groq-api-key", "replicate-api-token"]),
        ("registries", ["npm-access-token", "pypi-upload-token", "dockerhub-pat", "rubygems-api-key"]),
        ("saas", ["twilio-api-key", "sendgrid-api-key", "mailgun-api-key", "shopify-token", "atlassian-api-token",
                  "datadog-api-key", "newrelic-key", "sentry-token", "postman-api-key", "linear-api-key", "notion-token"]),
        ("keys", ["pem-private-key", "openssh-private-key", "pgp-private-key"]),
        ("tokens and urls", ["jwt", "database-url-with-password", "url-with-password", "generic-secret-assignment"]),
    ],
)
def test_every_required_family_is_covered(family, names):
    shipped = {e.spec.name for e in ENTRIES}
    assert not set(names) - shipped, family


@pytest.mark.parametrize("file, action", [("pii.yaml", "redact"), ("injection.yaml", "alert")])
def test_library_default_action(file, action):
    assert {e.spec.action for e in by_file(file)} == {action}


def test_injection_patterns_look_at_what_comes_back():
    for e in by_file("injection.yaml"):
        assert e.spec.where == {"response.body", "sse", "websocket"}, e.spec.name


def test_pii_checksums_are_used():
    validators = {e.spec.name: e.spec.validate for e in by_file("pii.yaml")}
    assert validators["payment-card-number"] == "card"
    assert validators["iban"] == "mod97"
    assert validators["us-ssn"] == "ssn"


def test_every_entry_documents_itself_with_both_kinds_of_example():
    for e in ENTRIES:
        assert e.description and e.match and e.no_match, e.spec.name


def test_names_are_unique_across_libraries():
    names = [e.spec.name for e in ENTRIES]
    assert len(names) == len(set(names))


def test_every_shipped_pattern_is_bounded_so_streams_scan_it_exactly():
    scanner = Scanner([e.spec for e in ENTRIES], engine="regex")
    unbounded = [f.spec.name for f in scanner.filters if f.width >= relax.UNBOUNDED or f.width > 8192]
    assert unbounded == []


def test_every_example_behaves(scanner):
    assert example_failures(scanner, ENTRIES) == []


@pytest.mark.parametrize(
    "placeholder",
    [
        "AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "Authorization: Bearer xxxx",
        "api_key: your-api-key",
        "token: <token>",
        "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "OPENAI_API_KEY=sk-...",
        "password: ********",
        "export API_KEY=${API_KEY}",
        "postgres://user:password@localhost:5432/db",
    ],
)
def test_documented_placeholders_are_not_secrets(scanner, placeholder):
    blocking = [m.filter for m in scanner.scan(placeholder, "request.body") if m.action == "block"]
    assert blocking == []


def test_library_entries_default_to_request_targets():
    entry = parse_entry({"name": "x", "pattern": "x"}, "lib.yaml")
    assert entry.spec.where == REQUEST_TARGETS and entry.spec.action == "block"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"name": "x", "pattern": "x", "flags": "i"}, "unknown key 'flags'"),
        ({"name": "x"}, "needs a string name and pattern"),
        ({"name": "x", "pattern": "x", "action": "drop"}, "action must be one of"),
        ({"name": "x", "pattern": "x", "where": ["request.cookies"]}, "unknown target"),
        ("x", "must be a mapping"),
    ],
    ids=["flags-is-not-a-key", "missing-pattern", "unknown-action", "unknown-target", "not-a-mapping"],
)
def test_malformed_library_entries_are_refused_with_a_sentence(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_entry(raw, "lib.yaml")


def test_library_file_without_version_is_refused(tmp_path):
    path = tmp_path / "lib.yaml"
    path.write_text("filters: []\n")
    with pytest.raises(ValueError, match="version: 1"):
        load_library(path)
