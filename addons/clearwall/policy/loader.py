"""Loading rule files: one file or a directory of them, validated whole, errors located.

Order of work (each step reports every problem it finds, so one `rules check` run lists them
all): parse YAML with positions -> substitute `${...}` -> validate each file against the model ->
expand `include:` pattern libraries -> merge files (lists concatenate, `settings` once, names
unique) -> check cross-references (clients named by destinations and limits exist, tokens set) ->
compile into a RuleSet.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from clearwall.errors import RuleError, RuleSetError
from clearwall.policy import model
from clearwall.policy.ruleset import RuleSet, compile_ruleset
from clearwall.policy.yamlpos import Located, load_yaml

_SECTIONS = ("clients", "destinations", "deny", "filters", "rate_limits")


def _all_field_names(cls: type[BaseModel], seen: set | None = None) -> set[str]:
    seen = set() if seen is None else seen
    names: set[str] = set()
    for fname, f in cls.model_fields.items():
        names.add(f.alias or fname)
        for sub in _model_classes(f.annotation):
            if sub not in seen:
                seen.add(sub)
                names |= _all_field_names(sub, seen)
    return names


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [c for a in getattr(annotation, "__args__", ()) for c in _model_classes(a)]


_KNOWN_KEYS = sorted(_all_field_names(model.RuleFile) | {"include"})


def _message(err: dict) -> str:
    kind, msg, loc = err["type"], err["msg"], err["loc"]
    if kind == "extra_forbidden":
        key = loc[-1]
        close = difflib.get_close_matches(str(key), _KNOWN_KEYS, n=1)
        return f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        if loc == ("version",):
            return "missing `version: 1` (the first line of every rule file)"
        return f"missing required key {loc[-1]!r}"
    if kind == "literal_error" and loc == ("version",):
        return "unsupported version: this Clearwall reads `version: 1`"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    where = ".".join(str(p) for p in loc if not isinstance(p, int))
    return f"{where}: {msg}" if where else msg


def _is_type_tag(part: Any) -> bool:
    """pydantic puts union branch names (`list[str]`, `str`) into error paths; they are not keys."""
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool", "none"})


def _validate(doc: Located, cls: type[BaseModel], data: Any, prefix: tuple = ()) -> Any | None:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = prefix + tuple(p for p in err["loc"] if not _is_type_tag(p))
            doc.errors.append(doc.error(loc, _message({**err, "loc": loc})))
        return None


def _load_library(path: Path, errors: list[RuleError], environ: dict[str, str]) -> list[tuple[model.Filter, str, tuple[int, int]]]:
    doc = load_yaml(path, environ=environ)
    errors.extend(doc.errors)
    if doc.data is None or doc.errors:
        return []
    lib = _validate(doc, model.PatternLibrary, doc.data)
    errors.extend(doc.errors)
    if lib is None:
        return []
    return [(f, doc.file, doc.where(("filters", i))) for i, f in enumerate(lib.filters)]


def _load_file(path: Path, errors: list[RuleError], environ: dict[str, str],
               included: list[Path]) -> tuple[Located, dict | None]:
    """Validate one rule file; returns its parts with each entry's (file, line) for merging."""
    doc = load_yaml(path, environ=environ)
    if doc.data is None or doc.errors:
        errors.extend(doc.errors)
        return doc, None
    if not isinstance(doc.data, dict):
        errors.append(doc.error((), "a rule file is a mapping that starts with `version: 1`"))
        return doc, None
    data = dict(doc.data)
    raw_filters = data.pop("filters", []) or []
    parsed = _validate(doc, model.RuleFile, data)
    filters: list[tuple[model.Filter, str, tuple[int, int]]] = []
    if not isinstance(raw_filters, list):
        doc.errors.append(doc.error(("filters",), "filters must be a list"))
        raw_filters = []
    for i, item in enumerate(raw_filters):
        is_include = isinstance(item, dict) and "include" in item
        f = _validate(doc, model.Include if is_include else model.Filter, item, ("filters", i))
        if f is None:
            continue
        if is_include:
            lib = (path.parent / f.include).resolve()
            included.append(lib)
            if not lib.is_file():
                doc.errors.append(doc.error(("filters", i, "include"),
                                            f"pattern library {f.include!r} not found (looked for {lib})"))
                continue
            filters.extend(_load_library(lib, errors, environ))
        else:
            filters.append((f, doc.file, doc.where(("filters", i))))
    errors.extend(doc.errors)
    if parsed is None or doc.errors:
        return doc, None
    parts: dict[str, list] = {s: [] for s in _SECTIONS}
    for section in ("clients", "destinations", "deny", "rate_limits"):
        for i, entry in enumerate(getattr(parsed, section)):
            parts[section].append((entry, doc.file, doc.where((section, i))))
    parts["filters"] = filters
    parts["settings"] = parsed.settings
    return doc, parts


def rule_files(path: Path) -> list[Path]:
    """The files `--rules PATH` names: the file itself, or every *.yaml/*.yml in the directory."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise RuleSetError([RuleError(str(path), 1, 1, "the rules directory holds no *.yaml or *.yml file")])
        return files
    if not path.exists():
        raise RuleSetError([RuleError(str(path), 1, 1, "rule file not found (set --rules or CLEARWALL_RULES)")])
    return [path]


def load_rules(path: str | os.PathLike, *, environ: dict[str, str] | None = None) -> RuleSet:
    """Load and compile the rules at `path`; raises RuleSetError listing every problem."""
    environ = dict(os.environ) if environ is None else environ
    root = Path(path)
    errors: list[RuleError] = []
    merged: dict[str, list] = {s: [] for s in _SECTIONS}
    settings, settings_at = None, None
    docs: dict[str, Located] = {}
    files = rule_files(root)
    included: list[Path] = []
    for f in files:
        doc, parts = _load_file(f, errors, environ, included)
        docs[doc.file] = doc
        if parts is None:
            continue
        if parts["settings"] is not None:
            if settings is not None:
                errors.append(doc.error(("settings",), f"`settings` may appear in one file only (already in {settings_at})"))
            settings, settings_at = parts["settings"], f"{doc.file}:{doc.where(('settings',))[0]}"
        for s in _SECTIONS:
            merged[s].extend(parts[s])
    seen: dict[str, str] = {}
    for s in _SECTIONS:
        for entry, file, (line, col) in merged[s]:
            if entry.name in seen:
                errors.append(RuleError(file, line, col, f"rule name {entry.name!r} is already used at {seen[entry.name]}: names must be unique"))
            else:
                seen[entry.name] = f"{file}:{line}"
    if not errors:
        errors.extend(_check_references(merged, environ))
    if errors:
        raise RuleSetError(errors)
    return compile_ruleset(
        settings or model.Settings(),
        {s: [e for e, _, _ in merged[s]] for s in _SECTIONS},
        sources={e.name: f"{file}:{line}" for s in _SECTIONS for e, file, (line, _) in merged[s]},
        files=list(docs),
        environ=environ,
        version=_version(files + included),
    )


def _version(paths: list[Path]) -> str:
    """Hash of the rule text as written (before `${...}` substitution), so the version in logs
    and metrics never depends on, or leaks anything about, the secrets a rule pulls in."""
    h = hashlib.sha256()
    for p in paths:
        data = p.read_bytes()
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()[:12]


def _check_references(merged: dict[str, list], environ: dict[str, str]) -> list[RuleError]:
    errors: list[RuleError] = []
    clients = {c.name for c, _, _ in merged["clients"]}
    destinations = {d.name for d, _, _ in merged["destinations"]}
    for c, file, (line, col) in merged["clients"]:
        m = c.match
        if (m.proxy_user is None) != (m.token_env is None):
            errors.append(RuleError(file, line, col, f"client {c.name!r}: proxy_user and token_env go together"))
        if m.proxy_user is None and m.source is None:
            errors.append(RuleError(file, line, col, f"client {c.name!r}: match needs proxy_user/token_env or source"))
        if m.token_env is not None and not environ.get(m.token_env):
            errors.append(RuleError(file, line, col, f"client {c.name!r}: environment variable {m.token_env} (token_env) is not set or empty"))
    for d, file, (line, col) in merged["destinations"]:
        for name in d.clients or []:
            if name not in clients:
                errors.append(RuleError(file, line, col, f"destination {d.name!r} names unknown client {name!r}"))
        if d.tls == "passthrough":
            extra = [k for k in ("methods", "paths", "content_types", "inject_headers", "mcp", "strip_headers")
                     if getattr(d, k)]
            if extra:
                errors.append(RuleError(file, line, col, f"destination {d.name!r} is tls: passthrough (not decrypted), "
                                                       f"so {', '.join(extra)} cannot be enforced: remove them"))
    for r, file, (line, col) in merged["rate_limits"]:
        for name in r.clients or []:
            if name not in clients:
                errors.append(RuleError(file, line, col, f"rate limit {r.name!r} names unknown client {name!r}"))
        for name in r.destinations or []:
            if name not in destinations:
                errors.append(RuleError(file, line, col, f"rate limit {r.name!r} names unknown destination {name!r}"))
    return errors
