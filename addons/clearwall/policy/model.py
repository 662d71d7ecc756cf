"""The rule-file model (SPEC §3), version 1.

Strict: unknown keys are rejected, `version: 1` is required, and values are parsed here (sizes,
durations, hosts, paths, CIDRs, regexes) so that a rule set that loads is a rule set that can be
enforced. `rules/schema.json` is generated from these classes (`clearwall rules schema`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import regex
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from clearwall.content.errors import PatternError
from clearwall.content.scanner import check_pattern
from clearwall.content.validators import parse_validator
from clearwall.policy import hosts, paths, units
from clearwall.ratelimit.config import parse_backend_setting

DEFAULT_REDACT_HEADERS = ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"]
TARGETS = (
    "request.url", "request.headers", "request.body",
    "response.headers", "response.body", "sse", "websocket", "mcp.arguments",
)
REQUEST_TARGETS = ["request.url", "request.headers", "request.body", "mcp.arguments"]

_SIZE_SCHEMA = {"anyOf": [{"type": "integer", "minimum": 0},
                          {"type": "string", "pattern": r"^(\d+(\.\d+)?\s*([KMG]i?B|B)?|none)$"}]}
_DURATION_SCHEMA = {"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "pattern": r"^\d+(\.\d+)?\s*(ms|s|m|h|d)?$"}]}

Size = Annotated[int | None, BeforeValidator(units.parse_size), WithJsonSchema(_SIZE_SCHEMA)]
Duration = Annotated[float, BeforeValidator(units.parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
Mode = Literal["enforce", "report"]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def _check_cidr(v: str) -> str:
    hosts.parse_network(v)
    return str(v)


def _check_host(v: str) -> str:
    hosts.parse_host_pattern(v)
    return v


def _check_path(v: str) -> str:
    paths.parse_path_pattern(v)
    return v


Cidr = Annotated[str, BeforeValidator(_check_cidr)]
HostEntry = Annotated[str, BeforeValidator(_check_host)]
PathEntry = Annotated[str, BeforeValidator(_check_path)]
Method = Annotated[str, Field(pattern=r"^[A-Z]+$")]
Port = Annotated[int, Field(ge=1, le=65535)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(Strict):
    request_body: Size = 10 * 1024**2
    response_body: Size = 50 * 1024**2


class DestinationLimits(Strict):
    """Per-destination caps; an omitted key falls back to `settings.limits`."""

    request_body: Size = Field(default=None)
    response_body: Size = Field(default=None)
    # Which keys were written is kept, so `none` (cap off) differs from "not set".
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogSettings(Strict):
    max_body_bytes: Size = 1024**2
    redact_headers: list[str] = Field(default_factory=lambda: list(DEFAULT_REDACT_HEADERS))
    rotate: Size = 100 * 1024**2
    retention: Duration = 90 * 86400.0
    fsync: Literal["every", "interval", "never"] = "interval"

    @field_validator("redact_headers")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [h.lower() for h in v]


class SsrfSettings(Strict):
    deny_private_ranges: bool = True
    allow: list[Cidr] = []


class UpstreamSettings(Strict):
    ca_bundle: str | None = None
    resolve: dict[str, str] = {}

    @field_validator("resolve")
    @classmethod
    def _ips(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for name, ip in v.items():
            if hosts.parse_ip(str(ip)) is None:
                raise ValueError(f"resolve: {name!r} must map to an IP address, got {ip!r}")
            out[hosts.normalize_host(name)] = str(hosts.parse_ip(str(ip)))
        return out


class Settings(Strict):
    default: Literal["deny"] = "deny"
    mode: Mode = "enforce"
    require_client_auth: bool = False
    limits: Limits = Limits()
    log: LogSettings = LogSettings()
    ssrf: SsrfSettings = SsrfSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    rate_limit_backend: str = "memory"
    rate_limit_on_backend_error: Literal["local", "deny", "allow"] = "local"
    scan_timeout: Duration = 0.1

    @field_validator("rate_limit_backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        return parse_backend_setting(v)  # the same check the proxy makes when it opens the store


class ClientMatch(Strict):
    proxy_user: str | None = None
    token_env: str | None = None
    source: list[Cidr] | Cidr | None = None

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not regex.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"token_env must name an environment variable, got {v!r}")
        return v


class Client(Strict):
    name: Name
    match: ClientMatch


class RateLimitSpec(Strict):
    requests: Annotated[int, Field(ge=1)]
    per: Duration
    burst: Annotated[int, Field(ge=0)] = 0
    key: Literal["client", "destination", "client+destination", "source_ip"] = "client"


class RateLimitRule(RateLimitSpec):
    name: Name
    mode: Mode | None = None
    clients: list[str] | None = None
    destinations: list[str] | None = None


class McpPolicy(Strict):
    tools: list[str]


class DestinationUpstream(Strict):
    """TLS towards this destination's servers: a private CA and a client certificate (mTLS)."""

    ca_bundle: str | None = None  # trusted instead of the public roots for this destination
    client_cert: str | None = None  # PEM certificate (chain) presented to the server
    client_key: str | None = None  # PEM private key of client_cert

    @model_validator(mode="after")
    def _pair(self) -> "DestinationUpstream":
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("upstream: client_cert and client_key go together")
        return self


class Destination(Strict):
    name: Name
    hosts: Annotated[list[HostEntry], Field(min_length=1)]
    ports: list[Port] | None = None
    methods: list[Method] | None = None
    paths: list[PathEntry] | None = None
    clients: list[str] | None = None
    content_types: list[str] | None = None
    limits: DestinationLimits | None = None
    rate_limit: RateLimitSpec | None = None
    inject_headers: dict[str, str] = {}
    strip_headers: list[str] = []
    mode: Mode | None = None
    tls: Literal["intercept", "passthrough"] = "intercept"
    mcp: McpPolicy | None = None
    # Credentials (docs/CREDENTIALS.md): `require` refuses a request whose injected value came out
    # empty; `placeholders` maps a text a client may send to the secret that replaces it here.
    require: bool = False
    placeholders: dict[Annotated[str, Field(min_length=8)], str] = {}
    upstream: DestinationUpstream | None = None

    @model_validator(mode="after")
    def _passthrough_keys(self) -> "Destination":
        if self.tls == "passthrough":
            extra = [k for k in ("require", "placeholders", "upstream") if getattr(self, k)]
            if extra:
                raise ValueError(f"tls: passthrough is not decrypted, so {', '.join(extra)} cannot apply: remove them")
        return self


class DenyEntry(Strict):
    name: Name
    hosts: Annotated[list[HostEntry], Field(min_length=1)]
    ports: list[Port] | None = None
    mode: Mode | None = None


class Examples(Strict):
    match: list[str] = []
    no_match: list[str] = []


class Filter(Strict):
    name: Name
    pattern: str
    where: Annotated[list[Literal[TARGETS]], Field(min_length=1)] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(REQUEST_TARGETS))
    action: Literal["block", "redact", "alert"] = "block"
    mode: Mode | None = None
    validate_: str | None = Field(default=None, alias="validate")
    description: str | None = None
    examples: Examples | None = None
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("validate_")
    @classmethod
    def _known_validator(cls, v: str | None) -> str | None:
        if v is not None:
            parse_validator(v)  # raises ValueError naming the known validators
        return v

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            check_pattern(v)
        except PatternError as e:
            raise ValueError(str(e).replace("filter 'pattern': ", "")) from None
        return v


class Include(Strict):
    include: str


class RuleFile(Strict):
    version: Literal[1]
    settings: Settings | None = None
    clients: list[Client] = []
    destinations: list[Destination] = []
    deny: list[DenyEntry] = []
    filters: list[Filter | Include] = []
    rate_limits: list[RateLimitRule] = []


class PatternLibrary(Strict):
    """A file named by `filters: [{include: ...}]`: filters only, nothing that widens access."""

    version: Literal[1]
    filters: list[Filter]


def json_schema() -> dict[str, Any]:
    schema = RuleFile.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://clearwall.dev/schema/rules-v1.json"
    schema["title"] = "Clearwall rule file, version 1"
    return schema
