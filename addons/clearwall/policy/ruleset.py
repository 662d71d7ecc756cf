"""A loaded rule set, compiled for matching: what the engine and the adapters read.

Immutable: a reload builds a new RuleSet and swaps the reference, so a flow keeps the rules it
started with.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from clearwall.policy import model
from clearwall.policy.hosts import HostPattern, IPNetwork, parse_host_pattern, parse_network
from clearwall.policy.paths import PathPattern, parse_path_pattern

DEFAULT_PORTS = {"https": 443, "http": 80}


def _glob(patterns: list[str]) -> re.Pattern:
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or r"(?!)")


@dataclass(frozen=True)
class HostRule:
    """Host and port part shared by destinations and deny entries."""

    name: str
    hosts: tuple[HostPattern, ...]
    ports: frozenset[int] | None
    mode: str  # effective mode: the rule's own, else settings.mode
    # Omitted `ports`: a destination allows the scheme's default port only, while a deny entry
    # denies every port (a deny list that only covered 443 would be a trap).
    any_port: bool = False

    def matches_host(self, host: str, port: int, scheme: str) -> bool:
        if self.ports is not None:
            port_ok = port in self.ports
        else:
            port_ok = self.any_port or port == DEFAULT_PORTS.get(scheme, 443)
        return port_ok and any(h.matches(host) for h in self.hosts)


@dataclass(frozen=True)
class CompiledDestination(HostRule):
    spec: model.Destination = field(repr=False, default=None)  # type: ignore[assignment]
    methods: frozenset[str] | None = None
    paths: tuple[PathPattern, ...] | None = None
    clients: frozenset[str] | None = None
    content_types: tuple[str, ...] | None = None
    request_cap: int | None = None
    response_cap: int | None = None
    mcp_tools: re.Pattern | None = None

    def allows_client(self, client: str | None) -> bool:
        return self.clients is None or client in self.clients

    def allows_method(self, method: str) -> bool:
        return self.methods is None or method.upper() in self.methods

    def allows_path(self, normalized_path: str) -> bool:
        return self.paths is None or any(p.matches(normalized_path) for p in self.paths)

    def allows_content_type(self, content_type: str | None) -> bool:
        if self.content_types is None or content_type is None:
            return True
        mime = content_type.split(";", 1)[0].strip().lower()
        return any(fnmatch.fnmatchcase(mime, ct.lower()) for ct in self.content_types)

    def allows_tool(self, tool: str) -> bool:
        return self.mcp_tools is None or self.mcp_tools.fullmatch(tool) is not None


@dataclass(frozen=True)
class CompiledClient:
    name: str
    proxy_user: str | None
    token: str | None = field(repr=False)
    sources: tuple[IPNetwork, ...]


@dataclass(frozen=True)
class RuleSet:
    version: str
    settings: model.Settings
    clients: tuple[CompiledClient, ...]
    destinations: tuple[CompiledDestination, ...]
    deny: tuple[HostRule, ...]
    filters: tuple[model.Filter, ...]
    rate_limits: tuple[model.RateLimitRule, ...]
    sources: dict[str, str]  # rule name -> "file:line", for explain and errors
    files: tuple[str, ...]
    ssrf_allow: tuple[IPNetwork, ...]
    by_name: dict[str, CompiledDestination] = field(default_factory=dict, repr=False, compare=False)
    # `version` hashes the rule text as written (public: logs, metrics, /rules). `fingerprint`
    # hashes the rules after `${...}` substitution: internal only (caches, reload detection),
    # since it changes when a secret rotates.
    fingerprint: str = field(default="", repr=False, compare=False)
    # (host, port, scheme) -> matching deny entries and destinations. A pure memo of an
    # immutable rule set: clients ask for the same few hosts on every request.
    _host_memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def host_rules(self, host: str, port: int, scheme: str) -> tuple[tuple[HostRule, ...], tuple[CompiledDestination, ...]]:
        """The deny entries and the destinations matching a normalised host, each in file order."""
        key = (host, port, scheme)
        found = self._host_memo.get(key)
        if found is None:
            found = (tuple(e for e in self.deny if e.matches_host(host, port, scheme)),
                     tuple(d for d in self.destinations if d.matches_host(host, port, scheme)))
            if len(self._host_memo) >= 4096:  # bounded: a client walking many hosts gets no memo growth
                self._host_memo.clear()
            self._host_memo[key] = found
        return found

    def destination(self, name: str) -> CompiledDestination | None:
        return self.by_name.get(name)

    def body_size_backstop(self) -> int | None:
        """mitmproxy's own buffer limit: the largest cap in force (None when any cap is off)."""
        caps = [self.settings.limits.request_body, self.settings.limits.response_body]
        caps += [c for d in self.destinations for c in (d.request_cap, d.response_cap)]
        return None if any(c is None for c in caps) else max(caps)

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "files": list(self.files),
            "mode": self.settings.mode,
            "clients": len(self.clients),
            "destinations": [d.name for d in self.destinations],
            "deny": [d.name for d in self.deny],
            "filters": len(self.filters),
            "rate_limits": [r.name for r in self.rate_limits],
        }


def _mode(own: str | None, settings: model.Settings) -> str:
    return own or settings.mode


def _compile_destination(d: model.Destination, s: model.Settings) -> CompiledDestination:
    lim = d.limits
    req_cap = lim.request_body if lim and "request_body" in lim.model_fields_set else s.limits.request_body
    resp_cap = lim.response_body if lim and "response_body" in lim.model_fields_set else s.limits.response_body
    return CompiledDestination(
        name=d.name,
        hosts=tuple(parse_host_pattern(h) for h in d.hosts),
        ports=frozenset(d.ports) if d.ports else None,
        mode=_mode(d.mode, s),
        spec=d,
        methods=frozenset(m.upper() for m in d.methods) if d.methods else None,
        paths=tuple(parse_path_pattern(p) for p in d.paths) if d.paths else None,
        clients=frozenset(d.clients) if d.clients is not None else None,
        content_types=tuple(d.content_types) if d.content_types else None,
        request_cap=req_cap,
        response_cap=resp_cap,
        mcp_tools=_glob(d.mcp.tools) if d.mcp else None,
    )


def compile_ruleset(settings: model.Settings, sections: dict[str, list], *, sources: dict[str, str],
                    files: list[str], environ: dict[str, str], version: str) -> RuleSet:
    clients = []
    for c in sections["clients"]:
        src = c.match.source
        src_list = [src] if isinstance(src, str) else (src or [])
        clients.append(CompiledClient(
            name=c.name,
            proxy_user=c.match.proxy_user,
            token=environ.get(c.match.token_env) if c.match.token_env else None,
            sources=tuple(parse_network(x) for x in src_list),
        ))
    deny = tuple(
        HostRule(e.name, tuple(parse_host_pattern(h) for h in e.hosts),
                 frozenset(e.ports) if e.ports else None, _mode(e.mode, settings), any_port=True)
        for e in sections["deny"]
    )
    destinations = tuple(_compile_destination(d, settings) for d in sections["destinations"])
    substituted = {"settings": settings.model_dump(mode="json")}
    substituted.update({k: [e.model_dump(mode="json", by_alias=True) for e in v] for k, v in sections.items()})
    return RuleSet(
        fingerprint=hashlib.sha256(json.dumps(substituted, sort_keys=True).encode()).hexdigest(),
        version=version,
        settings=settings,
        clients=tuple(clients),
        destinations=destinations,
        by_name={d.name: d for d in destinations},
        deny=deny,
        filters=tuple(sections["filters"]),
        rate_limits=tuple(sections["rate_limits"]),
        sources=sources,
        files=tuple(files),
        ssrf_allow=tuple(parse_network(a) for a in settings.ssrf.allow),
    )
