"""Pure credential helpers: which text is the secret, placeholder swap, exfiltration needles."""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from pydantic import ValidationError

from clearwall.policy import model
from clearwall.policy.loader import load_rules
from clearwall.policy.secrets import (
    MIN_NEEDLE,
    ExfilDetector,
    credentials_for,
    encoded_forms,
    secret_parts,
    swap_placeholders,
)

SECRET = "ghp_Secret0123456789abcdef"

PARTS = [
    ("a bearer token from one variable", "Bearer ${T}", "Bearer abc123", ["abc123"], False),
    ("an empty variable", "Bearer ${T}", "Bearer ", [], True),
    ("two variables", "${U}:${P}", "user:pass", ["user", "pass"], False),
    ("one of two variables empty", "${U}:${P}", "user:", ["user"], True),
    ("a file reference", "${file:/run/secrets/k}", "k-value", ["k-value"], False),
    ("an escaped dollar before a variable", "$$${T}", "$abc", ["abc"], False),
    ("a literal value in the rule file: its last word", "Token literal-key", "Token literal-key", ["literal-key"], False),
    ("no template known: the last word", None, "Bearer xyz", ["xyz"], False),
    ("no template known and an empty value", None, "", [], True),
]


@pytest.mark.parametrize("case,template,value,parts,empty", PARTS, ids=[p[0] for p in PARTS])
def test_the_secret_is_what_the_references_produced(case, template, value, parts, empty):
    assert secret_parts(template, value) == (parts, empty)


def test_a_value_that_does_not_follow_its_template_is_an_error():
    with pytest.raises(ValueError):
        secret_parts("Bearer ${T}", "Token abc")


def _b64_inside(prefix: bytes, secret: str, suffix: bytes = b"--tail") -> bytes:
    return base64.b64encode(prefix + secret.encode() + suffix)


FOUND = [
    ("plain", f"token={SECRET}".encode()),
    ("base64 at offset 0", _b64_inside(b"", SECRET)),
    ("base64 at offset 1", _b64_inside(b"x", SECRET)),
    ("base64 at offset 2", _b64_inside(b"xy", SECRET)),
    ("url-safe base64", base64.urlsafe_b64encode(b"\xfb\xff" + SECRET.encode())),
    ("percent-encoding of reserved characters only", urllib.parse.quote("k=" + SECRET + "/x").encode()),
    ("percent-encoding of every byte, upper case", "".join(f"%{b:02X}" for b in SECRET.encode()).encode()),
    ("percent-encoding of every byte, lower case", "".join(f"%{b:02x}" for b in SECRET.encode()).encode()),
    ("hex", SECRET.encode().hex().encode()),
]


ENGINES = ["auto", "regex"]  # auto: Hyperscan where installed


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case,data", FOUND, ids=[f[0] for f in FOUND])
def test_detector_finds_the_secret_in_light_encodings(case, data, engine):
    found = ExfilDetector({SECRET}, engine=engine).find(data)
    assert found is not None
    assert found[1] == SECRET


def test_detector_finds_a_secret_with_reserved_characters_percent_encoded():
    secret = "a/b+c=d&e?f#g"
    assert ExfilDetector({secret}).find(urllib.parse.quote(secret, safe="").lower())[1] == secret


NOT_FOUND = [
    ("unrelated text", b"hello world, nothing here"),
    ("the secret with one character changed", SECRET.replace("S", "s").encode()),
    ("a prefix of the secret", SECRET[:12].encode()),
    ("empty body", b""),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case,data", NOT_FOUND, ids=[f[0] for f in NOT_FOUND])
def test_detector_does_not_match_other_text(case, data, engine):
    assert ExfilDetector({SECRET}, engine=engine).find(data) is None


def test_hyperscan_and_regex_engines_agree_on_random_bodies():
    import random

    rng = random.Random(7)
    secrets = {"".join(rng.choice("abcdefXYZ0123/+=") for _ in range(rng.randint(8, 30))) for _ in range(5)}
    fast, slow = ExfilDetector(secrets), ExfilDetector(secrets, engine="regex")
    for _ in range(300):
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
        if rng.random() < 0.5:
            forms = sorted(f for s in sorted(secrets) for f in encoded_forms(s))
            cut = rng.randint(0, len(body))
            body = body[:cut] + rng.choice(forms) + body[cut:]
        a, b = fast.find(body), slow.find(body)
        assert (a is None) == (b is None)
        if a is not None:
            # Overlapping needles may be reported differently; each must really be in the body.
            assert a[0].encode() in body and b[0].encode() in body
            assert a[0].encode() in encoded_forms(a[1]) and b[0].encode() in encoded_forms(b[1])


@pytest.mark.parametrize("length,hunted", [(MIN_NEEDLE - 1, False), (MIN_NEEDLE, True)])
def test_secrets_shorter_than_the_minimum_are_not_hunted(length, hunted):
    secret = "s" * length
    assert (ExfilDetector({secret}).find(f"x{secret}x") is not None) is hunted
    assert bool(ExfilDetector({secret})) is hunted


def test_every_encoded_form_is_at_least_the_minimum_length():
    assert all(len(f) >= MIN_NEEDLE for f in encoded_forms("abcdefgh"))


@pytest.mark.parametrize("text,url,expected", [
    ("Bearer clearwall:gh", False, "Bearer s/e+cret"),
    ("/x?key=clearwall:gh", True, "/x?key=s%2Fe%2Bcret"),
    ("Bearer other", False, "Bearer other"),
])
def test_placeholders_are_swapped_verbatim_in_headers_and_encoded_in_urls(text, url, expected):
    assert swap_placeholders(text, (("clearwall:gh", "s/e+cret"),), url=url) == expected


RULES = """
version: 1
destinations:
  - name: gh
    hosts: [api.example.test]
    inject_headers: {Authorization: "Bearer ${GH}", X-Key: "${file:key.txt}"}
    strip_headers: [Authorization, Cookie]
    require: true
  - name: swap
    hosts: [swap.example.test]
    placeholders: {"clearwall:swap": "${SWAP}"}
  - name: empty
    hosts: [empty.example.test]
    inject_headers: {Authorization: "Bearer ${EMPTY}"}
  - name: plain
    hosts: [plain.example.test]
"""


@pytest.fixture
def creds(tmp_path):
    (tmp_path / "key.txt").write_text("file-key-value-123\n")
    (tmp_path / "rules.yaml").write_text(RULES)
    rules = load_rules(tmp_path / "rules.yaml", environ={"GH": "gh-token-abcdef", "SWAP": "swap-secret-999", "EMPTY": ""})
    return credentials_for(rules)


def test_credentials_know_each_secret_but_not_the_scheme_word(creds):
    gh = creds["gh"]
    assert {"gh-token-abcdef", "file-key-value-123", "Bearer gh-token-abcdef"} <= gh.secrets
    assert "Bearer" not in gh.secrets
    assert gh.strip == ("authorization", "cookie")
    assert gh.require and gh.missing == ()
    assert "plain" not in creds  # injects nothing: nothing to do


def test_an_empty_variable_is_reported_missing(creds):
    assert creds["empty"].missing == ("Authorization",)


def test_placeholder_values_are_secrets(creds):
    assert creds["swap"].placeholders == (("clearwall:swap", "swap-secret-999"),)
    assert "swap-secret-999" in creds["swap"].secrets


def _dest(**kw):
    return model.Destination(name="d", hosts=["a.example.test"], **kw)


@pytest.mark.parametrize("case,kw", [
    ("placeholders on a passthrough destination", {"tls": "passthrough", "placeholders": {"clearwall:x": "v"}}),
    ("require on a passthrough destination", {"tls": "passthrough", "require": True}),
    ("a client certificate without its key", {"upstream": {"client_cert": "c.pem"}}),
    ("a placeholder shorter than 8 characters", {"placeholders": {"cw:x": "v"}}),
    ("an unknown upstream key", {"upstream": {"ca": "x.pem"}}),
])
def test_invalid_credential_keys_are_rejected(case, kw):
    with pytest.raises(ValidationError):
        _dest(**kw)


def test_valid_credential_keys_load():
    d = _dest(require=True, placeholders={"clearwall:x": "v"},
              upstream={"ca_bundle": "ca.pem", "client_cert": "c.pem", "client_key": "k.pem"})
    assert d.upstream.client_key == "k.pem"
