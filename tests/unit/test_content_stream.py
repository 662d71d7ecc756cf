"""Streaming scans find each match exactly once, with absolute offsets, wherever chunks split."""

from __future__ import annotations

import importlib.util

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearwall.content.library import shipped_specs
from clearwall.content.scanner import Scanner
from clearwall.content.spec import FilterSpec

HAVE_HYPERSCAN = importlib.util.find_spec("hyperscan") is not None
ENGINES = ["regex", pytest.param("hyperscan", marks=pytest.mark.skipif(not HAVE_HYPERSCAN, reason="no hyperscan"))]
BODY = frozenset({"request.body"})
SPECS = [
    FilterSpec("aws", r"\b(?:AKIA|ASIA)[A-Z2-7]{16}\b", where=BODY),
    FilterSpec("email", r"[\w.+-]{1,64}@[\w-]{1,63}\.[\w.]{2,24}", where=BODY, action="redact"),
]
KEY = "AKIA" + "BCDEFGHIJKLMNOP2"


def streamed(scanner, text, sizes, target="request.body", overlap=None):
    stream = scanner.stream(target, overlap=overlap)
    out, pos, i = [], 0, 0
    while pos < len(text):
        n = sizes[i % len(sizes)]
        out += stream.feed(text[pos : pos + n])
        pos += n
        i += 1
    return ordered(out + stream.finish())


def ordered(matches):
    """Streams report matches as they settle, whole scans filter by filter: compare as lists
    sorted by position (duplicates still count)."""
    return sorted(matches, key=lambda m: (m.start, m.end, m.filter))


@pytest.fixture(scope="module", params=ENGINES)
def scanner(request):
    return Scanner(SPECS, engine=request.param, overlap=64, timeout=10)


def test_a_match_split_at_every_possible_point_is_found_once(scanner):
    text = "x" * 150 + " " + KEY + " " + "y" * 150
    whole = ordered(scanner.scan(text, "request.body"))
    for cut in range(140, 175):
        stream = scanner.stream("request.body")
        got = stream.feed(text[:cut]) + stream.feed(text[cut:]) + stream.finish()
        assert ordered(got) == whole, cut


@pytest.mark.parametrize("size", [1, 7, 64, 65, 200, 5000], ids=lambda s: f"chunks-of-{s}")
def test_chunk_size_does_not_change_the_result(scanner, size):
    text = " ".join(f"{'z' * (i * 13 % 300)} {KEY} u{i}@corp.io" for i in range(30))
    assert streamed(scanner, text, [size]) == ordered(scanner.scan(text, "request.body"))


def test_offsets_are_absolute(scanner):
    text = "a" * 10_000 + " " + KEY
    (m,) = streamed(scanner, text, [1000])
    assert text[m.start : m.end] == KEY


def test_feed_after_finish_is_an_error(scanner):
    stream = scanner.stream("request.body")
    stream.finish()
    with pytest.raises(ValueError):
        stream.feed("x")


def test_the_window_grows_to_the_widest_filter():
    wide = FilterSpec("wide", r"BEGIN[a-z]{100}END", where=BODY)
    stream = Scanner([wide], overlap=64).stream("request.body")
    assert stream.window >= 108


ALPHABET = "AKIBCDEFGHJLMNOPQRS2345 @.ioxé"


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(st.one_of(st.just(KEY), st.just("u@corp.io"), st.text(alphabet=ALPHABET, max_size=40)), max_size=30),
    sizes=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=5),
)
def test_random_texts_and_chunkings_match_the_whole_text_scan(parts, sizes):
    scanner = Scanner(SPECS, engine="regex", overlap=64, timeout=10)
    text = "".join(parts)
    assert streamed(scanner, text, sizes) == ordered(scanner.scan(text, "request.body"))


def test_shipped_library_streams_like_it_scans():
    scanner = Scanner(shipped_specs(), timeout=10)
    from clearwall.content.library import shipped_entries

    text = "\n".join(x for e in shipped_entries() for x in e.match)
    for target in ("request.body", "response.body"):
        assert streamed(scanner, text, [997, 4096, 13], target) == ordered(scanner.scan(text, target))


def test_an_anchored_sse_filter_decides_the_same_however_the_events_are_chunked():
    from clearwall.content.streaming import SseGuard, Verdict, split_events
    from clearwall.policy.decision import Refusal

    seen: list[str] = []

    def check(text):
        seen.append(text)
        if text.startswith("event: leak"):
            return Verdict(refusal=Refusal("response_blocked", "leak", "an anchored filter matched"))
        return Verdict()

    def run(chunks):
        refused = []
        guard = SseGuard(check, cap=None, max_event=1 << 20, decoder=None, transform=None, split=split_events,
                         on_refuse=lambda r: refused.append(r) or b"")
        for c in chunks:
            guard(c)
        return refused

    assert run([b"data: a\n\n", b"event: leak\ndata: x\n\n"])
    seen.clear()
    assert run([b"data: a\n\nevent: leak\ndata: x\n\n"])  # one chunk: still refused
    assert seen == ["data: a\n\n", "event: leak\ndata: x\n\n"]  # each event scanned once
