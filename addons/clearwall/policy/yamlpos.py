"""YAML to plain Python, remembering where every value was written.

pydantic reports an error at a path like ('destinations', 0, 'hosts', 1); the position table
maps such a path back to `line:column` of the file so every error can name its place.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clearwall.errors import RuleError

Loc = tuple[Any, ...]
_VAR = re.compile(r"\$(\$)|\$\{([^}]*)\}")


@dataclass
class Located:
    """A parsed document and the position of each value (1-based line and column)."""

    file: str
    data: Any
    positions: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    errors: list[RuleError] = field(default_factory=list)

    def where(self, loc: Loc) -> tuple[int, int]:
        """Position of the deepest written part of `loc` (a missing key points at its parent)."""
        loc = tuple(loc)
        while loc and loc not in self.positions:
            loc = loc[:-1]
        return self.positions.get(loc, (1, 1))

    def error(self, loc: Loc, message: str) -> RuleError:
        line, col = self.where(loc)
        return RuleError(self.file, line, col, message)


def substitute(text: str, environ: dict[str, str], base_dir: Path) -> str:
    """`${VAR}` from the environment, `${file:PATH}` from a file, `$$` for a literal `$`."""

    def repl(m: re.Match) -> str:
        if m.group(1):
            return "$"
        ref = m.group(2).strip()
        if ref.startswith("file:"):
            path = Path(os.path.expanduser(ref[5:].strip()))
            path = path if path.is_absolute() else base_dir / path
            try:
                return path.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise ValueError(f"${{{ref}}}: cannot read {path}: {e.strerror}") from None
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ref):
            raise ValueError(f"${{{ref}}} is not a valid variable reference (use ${{NAME}} or ${{file:PATH}})")
        if ref not in environ:
            raise ValueError(f"environment variable {ref} is not set (referenced as ${{{ref}}})")
        return environ[ref]

    return _VAR.sub(repl, text)


def load_yaml(path: Path, *, environ: dict[str, str] | None = None, substitute_vars: bool = True) -> Located:
    """Parse one file. YAML syntax errors and bad `${...}` references land in `.errors`."""
    environ = dict(os.environ) if environ is None else environ
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return Located(name, None, errors=[RuleError(name, 1, 1, f"cannot read rule file: {e}")])
    doc = Located(name, None)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        doc.errors.append(RuleError(name, line, col, f"invalid YAML: {e.problem or e.context}"))
        return doc
    if node is None:
        doc.errors.append(RuleError(name, 1, 1, "the file is empty: a rule file starts with `version: 1`"))
        return doc
    constructor = yaml.SafeLoader("")

    def build(n: yaml.Node, loc: Loc) -> Any:
        doc.positions.setdefault(loc, (n.start_mark.line + 1, n.start_mark.column + 1))
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for k, v in n.value:
                key = constructor.construct_object(k, deep=True)
                if key in out:
                    doc.errors.append(RuleError(name, k.start_mark.line + 1, k.start_mark.column + 1,
                                                f"duplicate key {key!r}"))
                doc.positions[loc + (key,)] = (k.start_mark.line + 1, k.start_mark.column + 1)
                out[key] = build(v, loc + (key,))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(v, loc + (i,)) for i, v in enumerate(n.value)]
        value = constructor.construct_object(n, deep=True)
        # Patterns and their examples are regular expressions and test strings, not templates.
        literal = "pattern" in loc or "examples" in loc
        if substitute_vars and not literal and isinstance(value, str) and "$" in value:
            try:
                value = substitute(value, environ, path.parent)
            except ValueError as e:
                doc.errors.append(RuleError(name, n.start_mark.line + 1, n.start_mark.column + 1, str(e)))
        return value

    doc.data = build(node, ())
    return doc
