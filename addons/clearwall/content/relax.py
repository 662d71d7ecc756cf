"""Derive a Hyperscan prefilter pattern from a `regex`-package pattern.

The scanner maps every non-ASCII character of the text to one byte of 0x80-0xFF (so byte offsets
equal character offsets) and runs Hyperscan over those bytes. For that to be a safe prefilter,
the pattern given to Hyperscan must match wherever the original pattern can match: a superset.
We therefore parse the pattern (with the stdlib's sre parser, whose syntax the shipped patterns
share with `regex`) and re-emit it relaxed:

- anchors, word boundaries and look-arounds are dropped (dropping a condition only widens);
- every construct that can match some non-ASCII character also accepts 0x80-0xFF;
- case-insensitive letters are spelled out as classes; the three non-ASCII characters `regex`
  folds to ASCII letters (U+0130, U+212A, U+017F) reach Hyperscan as i, k and s, and negated
  classes accept those letters;
- backreferences become "anything", atomic groups and possessive repeats become plain ones;
- counted repeats longer than 64, and counted repeats of groups, become open-ended
  (Hyperscan compiles and scans those far faster).

Constructs we cannot relax faithfully (POSIX classes, fuzzy matching, `regex`-only syntax that
the sre parser rejects) raise `Unrelaxable`: the scanner then runs that one filter with `regex`
alone. The differential test keeps this honest.
"""

from __future__ import annotations

import re
import warnings
from re import _constants as C  # noqa: N812 - sre opcodes
from re import _parser as sre_parse

import regex

# Wider than any useful bounded match: treated as "unbounded" (no windowed confirmation).
UNBOUNDED = 1 << 20

# Counted repeats above this are widened to open-ended ones in the prefilter form.
_MAX_COUNTED = 64
OPEN_GROUP_REPEATS = True

# The non-ASCII characters `regex` case-folds to an ASCII letter (a unit test checks the list).
# The prefilter text carries them as that letter, so case-insensitive letters need no non-ASCII
# alternative (which would make every CJK character a candidate for `(?i)s`).
FOLD_MAP = {"\u0130": "i", "\u212a": "k", "\u017f": "s"}
FOLDS_FROM_NON_ASCII = frozenset(FOLD_MAP.values())

_ASCII = [chr(i) for i in range(128)]
# The ASCII members of `regex`'s Unicode categories, so the Hyperscan classes agree byte for byte.
_CATEGORY_ASCII = {
    C.CATEGORY_DIGIT: frozenset(c for c in _ASCII if regex.match(r"\d", c)),
    C.CATEGORY_SPACE: frozenset(c for c in _ASCII if regex.match(r"\s", c)),
    C.CATEGORY_WORD: frozenset(c for c in _ASCII if regex.match(r"\w", c)),
}
_NEGATED = {
    C.CATEGORY_NOT_DIGIT: C.CATEGORY_DIGIT,
    C.CATEGORY_NOT_SPACE: C.CATEGORY_SPACE,
    C.CATEGORY_NOT_WORD: C.CATEGORY_WORD,
}
# Syntax that sre would parse differently from `regex` (POSIX classes, fuzzy constraints).
_SUSPECT = re.compile(r"\[:\^?[a-z]+:\]|(?<!\\)\{[\d\s,+*<=>eidsc]*[eidsc][\d\s,+*<=>eidsc]*\}")


class Unrelaxable(ValueError):
    """The pattern cannot be turned into a Hyperscan prefilter; scan it with `regex` alone."""


def _parse(pattern: str) -> sre_parse.SubPattern:
    if _SUSPECT.search(pattern):
        raise Unrelaxable("syntax the prefilter does not model")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sre_parse.parse(pattern)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise Unrelaxable(str(exc)) from None


def width(pattern: str) -> tuple[int, int]:
    """(min, max) characters a match consumes; max is UNBOUNDED when not bounded."""
    lo, hi = _parse(pattern).getwidth()
    return lo, (hi if hi < UNBOUNDED else UNBOUNDED)


def _byte(c: str) -> str:
    return f"\\x{ord(c):02x}"


def _case_variants(chars: set[str]) -> set[str]:
    out = set(chars)
    for c in chars:
        if c.isalpha():
            out.add(c.lower())
            out.add(c.upper())
    return out


def _class(ascii_chars: set[str], non_ascii: bool) -> str:
    body = "".join(_byte(c) for c in sorted(ascii_chars)) + ("\\x80-\\xff" if non_ascii else "")
    if not body:
        raise Unrelaxable("empty character class")
    return f"[{body}]"


def _literal_set(code: int, icase: bool) -> tuple[set[str], bool]:
    if code >= 128:
        return set(), True
    chars = {chr(code)}
    if icase:
        chars = _case_variants(chars)
    return chars, False


def _in_items(items: list, icase: bool) -> str:
    chars: set[str] = set()
    non_ascii = False
    negate = False
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            c, n = _literal_set(av, icase)
            chars |= c
            non_ascii |= n
        elif op is C.RANGE:
            lo, hi = av
            non_ascii |= hi >= 128
            rng = {chr(i) for i in range(lo, min(hi, 127) + 1)}
            if icase:
                rng = _case_variants(rng)
            chars |= rng
        elif op is C.CATEGORY:
            if av in _CATEGORY_ASCII:
                chars |= _CATEGORY_ASCII[av]
                non_ascii = True
            elif av in _NEGATED:
                chars |= set(_ASCII) - _CATEGORY_ASCII[_NEGATED[av]]
                non_ascii = True
            else:
                raise Unrelaxable(f"category {av}")
        else:
            raise Unrelaxable(f"class item {op}")
    if negate:
        # 0x80-0xFF stand for every non-ASCII character, some of which the class does not list;
        # i, k and s may stand for U+0130, U+212A, U+017F, which the class may not list either.
        return _class((set(_ASCII) - chars) | FOLDS_FROM_NON_ASCII, True)
    return _class(chars, non_ascii)


def _emit(items, flags: int) -> str:  # noqa: C901 - one branch per sre opcode
    icase = bool(flags & re.IGNORECASE)
    out: list[str] = []
    for op, av in items:
        if op is C.LITERAL:
            chars, non_ascii = _literal_set(av, icase)
            out.append(_class(chars, non_ascii) if (len(chars) != 1 or non_ascii) else _byte(next(iter(chars))))
        elif op is C.NOT_LITERAL:
            out.append(_in_items([(C.NEGATE, None), (C.LITERAL, av)], icase))
        elif op is C.ANY:
            out.append("[\\x00-\\xff]" if flags & re.DOTALL else "[^\\n]")
        elif op is C.IN:
            out.append(_in_items(av, icase))
        elif op is C.BRANCH:
            out.append("(?:" + "|".join(_emit(b, flags) for b in av[1]) + ")")
        elif op is C.SUBPATTERN:
            _group, add, drop, sub = av
            out.append("(?:" + _emit(sub, (flags | add) & ~drop) + ")")
        elif op is C.ATOMIC_GROUP:
            out.append("(?:" + _emit(av, flags) + ")")
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            lo, hi, sub = av
            inner = _emit(sub, flags)
            # Long counted repeats make Hyperscan compile slowly; {lo,hi} -> {min(lo,64),} widens.
            # Counted repeats of groups ({2,7}) are also slow to scan: make them open-ended too.
            grouped = not (len(sub) == 1 and sub[0][0] in _SINGLE)
            # Variable counted repeats ({0,16}) are opened too: Hyperscan 5.4 misses matches of
            # `<[\s\x80]{0,16}[iI\x80]MPORTANT` after some prefixes (found by the differential
            # test); `{lo,}` is a superset and scans at least as fast.
            if hi >= C.MAXREPEAT or hi > _MAX_COUNTED or (hi > max(lo, 1)) or (grouped and OPEN_GROUP_REPEATS and hi > max(lo, 1)):
                quant = f"{{{min(lo, _MAX_COUNTED)},}}"
            else:
                quant = f"{{{lo},{hi}}}"
            out.append(f"(?:{inner}){quant}" if inner else "")
        elif op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            continue  # dropping a condition only widens the match set
        elif op is C.GROUPREF:
            out.append("[\\x00-\\xff]*")
        elif op is C.GROUPREF_EXISTS:
            _group, yes, no = av
            alts = [_emit(yes, flags), _emit(no, flags) if no is not None else ""]
            out.append("(?:" + "|".join(alts) + ")")
        else:
            raise Unrelaxable(f"opcode {op}")
    return "".join(out)


_REPEATS = (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT)
_SINGLE = (C.IN, C.ANY, C.LITERAL, C.NOT_LITERAL)


def _trim_leading_runs(items: list) -> list:
    """Drop leading character-class runs and optional items (`[0-9]{8,10}` before `:AA`).

    Any match of the whole pattern ending at offset q leaves a match of its suffix ending at q,
    so the suffix is still a superset for the end offsets the scanner uses. Hyperscan is much
    faster when a pattern starts with a literal instead of a class run.
    """
    i = 0
    while i < len(items) - 1:
        op, av = items[i]
        if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            i += 1
        elif op in _REPEATS and av[1] >= 2 and len(av[2]) == 1 and av[2][0][0] in _SINGLE:
            i += 1
        elif op in (C.IN, C.ANY, C.NOT_LITERAL) or (op in _REPEATS and av[0] == 0):
            i += 1  # a lone class character or an optional item before the literal
        else:
            break
    return items[i:]


def _leading_literal(items) -> int:
    n = 0
    for op, _av in items:
        if op is not C.LITERAL:
            break
        n += 1
    return n


def _close_tail(items: list) -> list:
    """End the pattern with the minimum of its trailing variable repeat: `@[a-z.]{1,253}` -> `@[a-z.]`.

    A match of the original ending at q starts with a match of this prefix ending at some
    e <= q, and the original's start s lies in [e - width, e]: the window the scanner
    confirms. Hyperscan reports every end offset, so a long open tail (a URL host, an e-mail
    domain) would otherwise call back once per character.
    """
    items = list(items)
    while items:
        op, av = items[-1]
        if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            items.pop()  # zero-width, dropped by the relaxation anyway
        elif op in _REPEATS and av[1] > av[0]:
            if av[0] == 0:
                items.pop()
            else:
                items[-1] = (op, (av[0], av[0], av[2]))
                break
        else:
            break
    return items or [(C.ANY, None)]


def _literal_run(items) -> int:
    """Length of the longest literal every match must contain (0 when there is none)."""
    best = run = 0
    for op, av in items:
        if op is C.LITERAL:
            run += 1
            best = max(best, run)
            continue
        if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            continue  # zero-width: the literals on both sides stay adjacent
        if op is C.SUBPATTERN:
            best = max(best, _literal_run(av[3]))
        elif op is C.ATOMIC_GROUP:
            best = max(best, _literal_run(av))
        elif op is C.BRANCH:
            # `gl(?:c_|sa_)`: the shortest leading literal of the alternatives extends the run.
            lead = min(_leading_literal(alt) for alt in av[1])
            best = max(best, run + lead, min(_literal_run(alt) for alt in av[1]))
            run = run + lead if all(_leading_literal(alt) == len(alt) for alt in av[1]) else 0
            continue
        elif op in _REPEATS and av[0] >= 1:
            best = max(best, _literal_run(av[2]))
        run = 0
    return best


def required_literal(pattern: str) -> int:
    """How long a literal the pattern guarantees. Hyperscan scans patterns with a literal of
    three or more bytes an order of magnitude faster than patterns made of classes only, and one
    class-only pattern slows a whole database: the scanner keeps the two kinds apart."""
    return _literal_run(_parse(pattern).data)


def _leading_guard(items: list, kept: int, flags: int) -> str:
    """`(?:^|[^X])` for a one-character negative lookbehind `(?<![X])` right before the kept
    suffix (with only zero-width items between them), else "".

    Consuming the character the lookbehind looks at is a superset: the match's start is
    either the text's start (or a chunk's, where `^` accepts) or follows a character outside
    X, and the negated class accepts 0x80-0xFF and the fold letters. It costs Hyperscan nothing and
    spares the confirm step the candidates inside longer runs: card-number-shaped digit runs
    inside hex digests were ~200 regex windows per MiB of API JSON, and are ~6 with it.
    """
    i = kept - 1
    while i >= 0 and items[i][0] in (C.AT, C.ASSERT, C.ASSERT_NOT):
        op, av = items[i]
        if op is C.ASSERT_NOT and av[0] == -1:
            body = list(av[1].data)
            if len(body) == 1 and body[0][0] in (C.IN, C.LITERAL, C.NOT_LITERAL) and av[1].getwidth() == (1, 1):
                bop, bav = body[0]
                icase = bool(flags & re.IGNORECASE)
                if bop is C.IN:
                    if any(o is C.NEGATE for o, _ in bav):
                        return ""  # (?<![^X]) is a positive condition on X: not modelled
                    return "(?:^|" + _in_items([(C.NEGATE, None), *bav], icase) + ")"
                if bop is C.LITERAL:
                    return "(?:^|" + _in_items([(C.NEGATE, None), (C.LITERAL, bav)], icase) + ")"
            return ""
        i -= 1
    return ""


# Punctuation API traffic is full of (URLs, JSON): a poor literal to anchor a prefilter on.
_COMMON_PUNCTUATION = frozenset(b":/.-_=,\"&? ")
# Characters that are rare in API traffic: a literal holding one is a good anchor.
_RARE = frozenset(b"@~^|`$!;*")


def _rare_anchor(items: list) -> int:
    """Where the prefilter should start: 0, or the top-level literal holding a rare character
    when the pattern's first top-level literal is only common punctuation.

    `https?://user:secret@host`: Hyperscan ran the user-name class after every `://` of every
    URL in a JSON body (0.7 ms per MiB of GitHub-style JSON); from `@` on it costs nothing. Any
    match of the pattern ending at q contains a match of its suffix ending at q, so the suffix is
    still a superset for the end offsets the scanner confirms around.
    """
    runs: list[tuple[int, bytes]] = []
    for i, (op, av) in enumerate(items):
        if op is C.LITERAL and av < 128:
            if runs and runs[-1][0] + len(runs[-1][1]) == i:
                runs[-1] = (runs[-1][0], runs[-1][1] + bytes([av]))
            else:
                runs.append((i, bytes([av])))
    if not runs or not set(runs[0][1]) <= _COMMON_PUNCTUATION:
        return 0
    for start, run in runs[1:]:
        if set(run) & _RARE:
            return start
    return 0


def hyperscan_pattern(pattern: str) -> bytes:
    """The relaxed, pure-ASCII Hyperscan expression for `pattern` (raises Unrelaxable)."""
    parsed = _parse(pattern)
    items = list(parsed.data)
    items = items[_rare_anchor(items):]
    suffix = _trim_leading_runs(items)
    flags = parsed.state.flags
    guard = _leading_guard(items, len(items) - len(suffix), flags)
    text = _emit(_close_tail(suffix), flags)
    if not text:
        raise Unrelaxable("matches the empty string")
    return (guard + text).encode("ascii")


def _lookaround_width(items) -> int:
    """Widest look-around anywhere in the pattern (how far a match may peek past its end)."""
    widest = 0
    for op, av in items:
        if op in (C.ASSERT, C.ASSERT_NOT):
            widest = max(widest, av[1].getwidth()[1], _lookaround_width(av[1].data))
        elif op is C.BRANCH:
            widest = max([widest, *(_lookaround_width(b.data) for b in av[1])])
        elif op is C.SUBPATTERN:
            widest = max(widest, _lookaround_width(av[3].data))
        elif op is C.ATOMIC_GROUP:
            widest = max(widest, _lookaround_width(av.data))
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            widest = max(widest, _lookaround_width(av[2].data))
        elif op is C.GROUPREF_EXISTS:
            widest = max(widest, _lookaround_width(av[1].data), _lookaround_width(av[2].data) if av[2] else 0)
        elif op is C.GROUPREF:
            return UNBOUNDED
    return min(widest, UNBOUNDED)


def context_width(pattern: str) -> int:
    """Characters past a match's end that deciding it may read (look-aheads, `\\b`, `$`)."""
    return _lookaround_width(_parse(pattern).data) + 2
