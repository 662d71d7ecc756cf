"""Structural guarantees: real hook names, guarded hooks, a pure core, a fresh schema."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from mitmproxy import addonmanager, addons, hooks  # noqa: F401 (importing registers every hook)

from clearwall.mitm.addons import make_addons
from clearwall.mitm.guard import GUARDED, LIFECYCLE, hook_names

PKG = Path(__file__).resolve().parents[2] / "addons" / "clearwall"
ADAPTERS = {"mitm", "script.py"}  # the only places allowed to import mitmproxy (plus cli/run's lazy import)


def test_every_public_addon_method_is_a_real_mitmproxy_hook():
    for addon in make_addons():
        unknown = hook_names(addon) - set(hooks.all_hooks)
        assert not unknown, f"{type(addon).__name__} has methods mitmproxy would never call: {unknown}"


def test_every_flow_hook_is_wrapped_by_the_fail_closed_guard():
    for addon in make_addons():
        for name in hook_names(addon) - LIFECYCLE:
            assert getattr(getattr(type(addon), name), GUARDED, False), f"{type(addon).__name__}.{name} is not guarded"


def test_addon_names_are_unique_and_prefixed():
    names = [a.name for a in make_addons()]
    assert len(set(names)) == len(names)
    assert all(n.startswith("clearwall-") for n in names)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("path", sorted(p for p in PKG.rglob("*.py")
                                        if p.relative_to(PKG).parts[0] not in ADAPTERS
                                        and p.relative_to(PKG).as_posix() != "cli/run.py"),
                         ids=lambda p: p.relative_to(PKG).as_posix())
def test_the_policy_core_does_not_import_mitmproxy(path):
    if path.parent.name == "cli":  # CLI modules may import lazily (e.g. for --version), not at the top
        tree = ast.parse(path.read_text())
        top = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        top |= {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(m.split(".")[0] == "mitmproxy" or m.startswith("clearwall.mitm") for m in top)
    else:
        assert "mitmproxy" not in _imports(path)


def test_cli_run_imports_mitmproxy_only_when_the_proxy_starts():
    tree = ast.parse((PKG / "cli" / "run.py").read_text())
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)} | {
        a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and (m.startswith("mitmproxy") or m.startswith("clearwall.mitm")) for m in top)


def test_schema_json_is_generated_from_the_model():
    from clearwall.cli.rules import schema_text

    shipped = PKG.parents[1] / "rules" / "schema.json"
    assert shipped.read_text() == schema_text(), "rules/schema.json is stale: run `clearwall rules schema --out rules/schema.json`"
    doc = json.loads(shipped.read_text())
    assert doc["additionalProperties"] is False and "version" in doc["required"]


def test_schema_accepts_the_shipped_rules_and_rejects_unknown_keys():
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json.loads((PKG.parents[1] / "rules" / "schema.json").read_text())
    jsonschema.validate(yaml.safe_load((PKG.parents[1] / "rules" / "default.yaml").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "destinatons": []}, schema)


def test_the_chain_dispatches_every_child_hook_in_order_and_nothing_else():
    import asyncio

    from clearwall.mitm.addons import ClearwallChain

    chain = ClearwallChain()
    children = chain.children
    assert not hasattr(chain, "addons")  # mitmproxy must not walk the children a second time
    expected = {n for c in children for n in hook_names(c)}
    assert {n for n in expected if callable(getattr(chain, n, None))} == expected
    calls: list[str] = []

    class Sync:
        name = "t-sync"

        def requestheaders(self, flow):
            calls.append("sync")

    class Async:
        name = "t-async"

        async def requestheaders(self, flow):
            calls.append("async")

    from clearwall.mitm.addons import _dispatcher

    children = [Async(), Sync(), Async()]
    asyncio.run(_dispatcher("requestheaders", [c.requestheaders for c in children])(object()))
    assert calls == ["async", "sync", "async"]
    sync_only = _dispatcher("configure", [Sync().requestheaders])
    assert not asyncio.iscoroutinefunction(sync_only)  # mitmproxy calls configure/load synchronously
