"""Scanner behaviour: construction errors, targets, secret groups, limits, timeouts, threads."""

from __future__ import annotations

import importlib.util
import threading
import time

import pytest

from clearwall.content.errors import ContentError, PatternError, ScanTimeout
from clearwall.content.scanner import Scanner
from clearwall.content.spec import FilterSpec, Match

HAVE_HYPERSCAN = importlib.util.find_spec("hyperscan") is not None
ENGINES = ["regex", pytest.param("hyperscan", marks=pytest.mark.skipif(not HAVE_HYPERSCAN, reason="no hyperscan"))]
BODY = frozenset({"request.body"})

AWS = FilterSpec("aws", r"\b(?:AKIA|ASIA)[A-Z2-7]{16}\b", where=frozenset({"request.body", "request.url"}))
EMAIL = FilterSpec("email", r"[\w.+-]+@[\w-]+\.[\w.]+", where=BODY, action="redact")
PASSWORD = FilterSpec("password", r"password=(?P<secret>\S{4,40})", where=BODY, validate="entropy:2.5")
INJECTION = FilterSpec("inject", r"(?i)ignore previous instructions", where=frozenset({"response.body"}), action="alert")
ALL = [AWS, EMAIL, PASSWORD, INJECTION]
KEY = "AKIA" + "BCDEFGHIJKLMNOP2"


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


def test_matches_carry_filter_action_target_and_offsets(engine):
    text = f"id {KEY} mail bob@corp.io"
    got = Scanner(ALL, engine=engine, timeout=10).scan(text, "request.body")
    assert got == [
        Match("aws", "block", "request.body", 3, 23),
        Match("email", "redact", "request.body", 29, 40),
    ]
    assert text[3:23] == KEY


@pytest.mark.parametrize(
    "target, expected",
    [
        ("request.body", ["aws", "email"]),
        ("request.url", ["aws"]),
        ("response.body", []),
        ("request.body|base64", ["aws", "email"]),
    ],
    ids=["body-gets-body-filters", "url-gets-url-filters", "response-gets-none", "variant-uses-base-target"],
)
def test_only_filters_for_the_target_apply(engine, target, expected):
    got = Scanner(ALL, engine=engine, timeout=10).scan(f"{KEY} a@b.io", target)
    assert [m.filter for m in got] == expected
    assert {m.target for m in got} <= {target}


def test_secret_group_is_what_is_located_and_validated(engine):
    scanner = Scanner([PASSWORD], engine=engine, timeout=10)
    text = "password=Xk9!qLm2 password=aaaaaaaa"
    got = scanner.scan(text, "request.body")
    assert [(text[m.start : m.end]) for m in got] == ["Xk9!qLm2"]  # the repetitive one fails entropy


def test_every_non_overlapping_match_of_a_filter_is_reported(engine):
    got = Scanner([AWS], engine=engine, timeout=10).scan(" ".join([KEY] * 5), "request.body")
    assert len(got) == 5 and len({m.start for m in got}) == 5


def test_a_pattern_that_does_not_compile_names_its_filter():
    with pytest.raises(PatternError, match="filter 'broken'"):
        Scanner([FilterSpec("broken", "(unclosed")])


def test_an_unknown_validator_names_its_filter():
    with pytest.raises(PatternError, match="filter 'v'.*unknown validator"):
        Scanner([FilterSpec("v", "x", validate="crc32")])


def test_duplicate_filter_names_are_refused():
    with pytest.raises(PatternError, match="unique"):
        Scanner([AWS, AWS])


@pytest.mark.parametrize(
    "kwargs",
    [{"engine": "fast"}, {"timeout": 0}, {"overlap": 63}, {"max_hits": 0}],
    ids=["unknown-engine", "zero-timeout", "tiny-overlap", "zero-hits"],
)
def test_bad_limits_are_refused(kwargs):
    with pytest.raises(ValueError):
        Scanner(ALL, **kwargs)


def test_limits_at_their_boundary_are_accepted():
    s = Scanner(ALL, timeout=0.001, overlap=64, max_hits=1)
    assert s.overlap == 64 and s.max_hits == 1


@pytest.mark.skipif(HAVE_HYPERSCAN, reason="only meaningful without hyperscan")
def test_asking_for_hyperscan_without_it_is_an_error():  # pragma: no cover
    with pytest.raises(ContentError):
        Scanner(ALL, engine="hyperscan")


def test_engine_description_names_the_engine(engine):
    description = Scanner(ALL, engine=engine, timeout=10).engine_description
    assert description.startswith("hyperscan" if engine == "hyperscan" else "regex")


def test_regex_only_filters_are_named_in_the_description():
    if not HAVE_HYPERSCAN:
        pytest.skip("no hyperscan")
    fuzzy = FilterSpec("fuzzy", r"(?:secret){e<=1}", where=BODY)
    scanner = Scanner([AWS, fuzzy], engine="hyperscan")
    assert "regex alone for: fuzzy" in scanner.engine_description
    assert [m.filter for m in scanner.scan("my secrat", "request.body")] == ["fuzzy"]


@pytest.mark.parametrize("timeout", [0.05, 0.2])
def test_catastrophic_backtracking_times_out_within_about_the_limit(engine, timeout):
    scanner = Scanner([FilterSpec("bad", r"(a+)+$", where=BODY)], engine=engine, timeout=timeout)
    start = time.monotonic()
    with pytest.raises(ScanTimeout):
        scanner.scan("a" * 50000 + "!", "request.body")
    assert time.monotonic() - start < timeout * 3 + 0.1


def test_a_quick_scan_fits_a_small_budget(engine):
    scanner = Scanner([FilterSpec("bad", r"(a+)+$", where=BODY)], engine=engine, timeout=0.05)
    assert scanner.scan("a" * 10 + "!", "request.body") == []


@pytest.mark.parametrize("max_hits", [1, 2, 4096])
def test_too_many_prefilter_hits_fall_back_to_the_same_answer(engine, max_hits):
    text = " ".join(f"u{i}@corp{i}.io" for i in range(50))
    ref = Scanner([EMAIL], engine="regex", timeout=10).scan(text, "request.body")
    assert Scanner([EMAIL], engine=engine, max_hits=max_hits, timeout=10).scan(text, "request.body") == ref
    assert len(ref) == 50


def test_non_ascii_text_is_scanned_with_character_offsets(engine):
    text = "日本語 ümlaut " + KEY + " é"
    got = Scanner([AWS], engine=engine, timeout=10).scan(text, "request.body")
    assert [text[m.start : m.end] for m in got] == [KEY]


def test_one_scanner_serves_many_threads(engine):
    scanner = Scanner(ALL, engine=engine, timeout=10)
    texts = [f"{'x' * i} {KEY} u{i}@corp.io password=Zq{i}x!Lm9" for i in range(40)]
    expected = [scanner.scan(t, "request.body") for t in texts]
    errors: list[str] = []

    def worker():
        for _ in range(20):
            for t, want in zip(texts, expected):
                if scanner.scan(t, "request.body") != want:
                    errors.append(t)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("per_mib, fits", [(0.0, False), (30.0, True)])
def test_time_budget_grows_with_the_text(per_mib, fits):
    # ~1 MiB of e-mail addresses: linear work that a flat 1 ms limit cannot cover.
    text = " ".join(f"user{i}@corp{i % 97}.io" for i in range(60000))
    scanner = Scanner([EMAIL], engine="regex", timeout=0.001, timeout_per_mib=per_mib)
    if fits:
        assert len(scanner.scan(text, "request.body")) == 60000
    else:
        with pytest.raises(ScanTimeout):
            scanner.scan(text, "request.body")


@pytest.mark.parametrize("pattern", [r"a*", r"(secret)?", r"\b", r"x|", r"(?=a)", r"[[:alpha:]]*"],
                         ids=["star", "optional-group", "boundary", "empty-branch", "lookahead", "posix-star"])
def test_a_pattern_that_can_match_nothing_is_refused(pattern):
    with pytest.raises(PatternError, match="empty string"):
        Scanner([FilterSpec("e", pattern)])


@pytest.mark.parametrize("pattern", [r"a+", r"(?:ab){e<=1}", r"[[:alpha:]]+"])
def test_patterns_that_always_consume_are_accepted(pattern):
    assert Scanner([FilterSpec("e", pattern)], engine="regex").filters


@pytest.mark.parametrize(
    "pattern, starts_with",
    [
        # A one-character lookbehind is consumed: digit runs inside hex digests stop being candidates.
        (r"(?<![A-Za-z0-9_.+-])(?:[0-9]{4}[ -]?){3}[0-9]{1,7}", rb"(?:^|["),
        # After common punctuation (`://`), a rare character anchors the prefilter instead.
        (r"\b(?:https?|git)://(?P<user>[^:/\s@]{1,64}):(?P<secret>[^@/\s]{4,128})@[a-z.-]{1,253}", rb"\x40"),
        # A first literal with letters stays the anchor.
        (r"\bghp_[A-Za-z0-9]{36}\b", rb"\x67\x68\x70\x5f"),
        # A lookbehind before a trimmed class run says nothing about the suffix: no guard.
        (r"(?<![\w-])[0-9]{3}-[0-9]{2}-[0-9]{4}", rb"\x2d"),
    ],
)
def test_prefilter_forms_that_keep_hyperscan_fast(pattern, starts_with):
    from clearwall.content import relax

    assert relax.hyperscan_pattern(pattern).startswith(starts_with)


@pytest.mark.parametrize(
    "text",
    ["plain ascii", "café über naïve", "数据 sync 😀 done", "K \u0130 \u017f", "lone \udc80 surrogate", "\x7f\x80\xff"],
)
def test_prefilter_bytes_keep_one_byte_per_character_and_ascii_as_itself(text):
    from clearwall.content import relax
    from clearwall.content.prefilter import prefilter_bytes, prefilter_bytes_utf8

    forms = [prefilter_bytes(text)]
    if "\udc80" not in text:  # from its UTF-8 too (a lone surrogate has no valid UTF-8)
        forms.append(prefilter_bytes_utf8(text, text.encode("utf-8")))
    for data in forms:
        if data is None:  # a folding character: the UTF-8 route declines, the text is used
            assert any(c in text for c in relax.FOLD_MAP)
            continue
        assert len(data) == len(text)
        for char, byte in zip(text, data):
            if char in relax.FOLD_MAP:
                assert chr(byte) == relax.FOLD_MAP[char]
            elif char.isascii():
                assert byte == ord(char)
            else:
                assert byte >= 0x80
