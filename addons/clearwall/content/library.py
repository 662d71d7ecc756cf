"""Pattern libraries (`rules/patterns/*.yaml`): reading them and checking their examples.

The rule-file loader in policy/ owns validation with line numbers; this module is the small,
dependency-free reader the tests, the benchmark and `rules check` share to prove that every
shipped pattern catches its `match` examples and spares its `no_match` ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .spec import REQUEST_TARGETS, FilterSpec

ENTRY_KEYS = frozenset({"name", "pattern", "where", "action", "mode", "validate", "description", "examples"})
# rules/patterns next to the package in a source checkout.
SHIPPED_DIR = Path(__file__).resolve().parents[3] / "rules" / "patterns"
SHIPPED_FILES = ("secrets.yaml", "pii.yaml", "injection.yaml")


@dataclass(frozen=True)
class LibraryEntry:
    spec: FilterSpec
    description: str
    match: tuple[str, ...]
    no_match: tuple[str, ...]


def parse_entry(raw: object, source: str) -> LibraryEntry:
    """One `filters:` item; raises ValueError naming the source and the filter."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: each filter must be a mapping")
    name = raw.get("name")
    unknown = set(raw) - ENTRY_KEYS
    if unknown:
        raise ValueError(f"{source}: filter {name!r}: unknown key {sorted(unknown)[0]!r}")
    if not isinstance(name, str) or not isinstance(raw.get("pattern"), str):
        raise ValueError(f"{source}: every filter needs a string name and pattern")
    examples = raw.get("examples") or {}
    spec = FilterSpec(
        name=name,
        pattern=raw["pattern"],
        where=frozenset(raw.get("where") or REQUEST_TARGETS),
        action=raw.get("action", "block"),
        mode=raw.get("mode", "enforce"),
        validate=raw.get("validate"),
    )
    return LibraryEntry(
        spec,
        str(raw.get("description", "")),
        tuple(examples.get("match") or ()),
        tuple(examples.get("no_match") or ()),
    )


def load_library(path: str | Path) -> list[LibraryEntry]:
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("filters"), list):
        raise ValueError(f"{path}: a pattern library is a mapping with version: 1 and a filters list")
    return [parse_entry(raw, str(path)) for raw in data["filters"]]


def shipped_entries() -> list[LibraryEntry]:
    return [e for name in SHIPPED_FILES for e in load_library(SHIPPED_DIR / name)]


def shipped_specs() -> list[FilterSpec]:
    return [e.spec for e in shipped_entries()]


def example_failures(scanner, entries: list[LibraryEntry]) -> list[str]:
    """Examples the scanner gets wrong, as sentences (empty when every example behaves)."""
    failures = []
    for entry in entries:
        for target in sorted(entry.spec.where):
            for text in entry.match:
                if not any(m.filter == entry.spec.name for m in scanner.scan(text, target)):
                    failures.append(f"{entry.spec.name}: misses its match example {text!r} in {target}")
            for text in entry.no_match:
                if any(m.filter == entry.spec.name for m in scanner.scan(text, target)):
                    failures.append(f"{entry.spec.name}: catches its no_match example {text!r} in {target}")
            break  # one target is enough: where does not change what a pattern matches
    return failures
