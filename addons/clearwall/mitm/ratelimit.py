"""Rate limits (SPEC §3-§4) on every request inside or outside a tunnel.

Runs after access and upstream have decided, so the client's identity and the allowing
destination are known. Which limits apply comes from `policy.limits`; the decision from
`clearwall.ratelimit`. A refusal is 429 `rate_limited` with `Retry-After` and the RateLimit
headers; a limiter that cannot decide (store failure, or Redis down under policy `deny`) refuses
with 502 `inspection_error` — a request is never forwarded because the limiter broke. Report-mode
limits that would have refused are recorded on the flow as `would_block`.

The limiter follows the rules in force (`runtime.rules`), not the rules a tunnel started with:
buckets live in one limiter, and a reload keeps the buckets of unchanged limits (`rebuild`).
CONNECTs are not counted; passthrough tunnels carry no request to count.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import http

from clearwall.mitm import respond
from clearwall.mitm.guard import guarded
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import flow_state
from clearwall.policy.decision import Refusal
from clearwall.policy.limits import LimitIndex, client_key, destination_key, source_key
from clearwall.ratelimit import RateDecision, RateLimiter, make_backend
from clearwall.ratelimit.headers import delay_seconds

log = logging.getLogger("clearwall")
# Headers of an admitted request's enforced limits, added to its response (see RATE-LIMITS.md).
HEADERS_KEY = "clearwall-rate-limit-headers"


def _would_block(decision: RateDecision) -> list[Refusal]:
    out = []
    for spec in decision.would_block:
        state = next((s for s in decision.states if s.spec is spec), None)
        wait = f"; it would have asked to retry in {max(1, delay_seconds(state.retry_after))} s" if state else ""
        out.append(Refusal("rate_limited", spec.name,
                           f"Rate limit {spec.name!r} ({spec.requests} requests per {spec.per:g} s per {spec.key}) "
                           f"would have refused this request (report mode){wait}."))
    return out


class RateLimits:
    name = "clearwall-rate-limits"

    def __init__(self, runtime: Runtime, backend_factory=make_backend) -> None:
        self.runtime = runtime
        self._backend_factory = backend_factory
        self._index: LimitIndex | None = None
        self._store: tuple[str, str] | None = None  # (backend setting, on-error policy) in use
        self._closing: set[asyncio.Task] = set()

    def _current(self) -> tuple[RateLimiter | None, LimitIndex]:
        """The limiter and limit index for the rules in force, rebuilt when they change."""
        rules = self.runtime.require_rules()
        index = self._index
        if index is not None and index.version == rules.fingerprint:
            return self.runtime.limiter, index
        index = LimitIndex(rules)
        store = (rules.settings.rate_limit_backend, rules.settings.rate_limit_on_backend_error)
        old: RateLimiter | None = self.runtime.limiter
        if old is not None and store == self._store:
            limiter = old.rebuild(index.specs)  # unchanged limits keep their buckets
        elif index.specs:
            limiter = RateLimiter(index.specs, self._backend_factory(store[0], on_error=store[1]))
            if old is not None:  # the store itself changed: budgets start again in the new one
                log.info("rate-limit store changed to %s", limiter.backend.name)
                self._close(old)
        else:
            limiter = None  # no limits, no store: nothing to connect to or keep
            if old is not None:
                self._close(old)
        self.runtime.limiter, self._index, self._store = limiter, index, store
        return limiter, index

    def running(self) -> None:
        # Open the store now rather than on the first request: a rate_limit_backend that cannot be
        # used is an error logged during start-up, which stops the proxy (mitmproxy's error check)
        # instead of refusing every limited request later.
        try:
            self._current()
        except ValueError as e:
            log.error("rate limits cannot start: %s", e)

    @guarded
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        limiter, index = self._current()
        if limiter is None or not index.specs:
            return
        st = flow_state(flow)
        client = st.identity.client if st.identity is not None else None
        destination = st.decision.destination if st.decision is not None else None
        matching = index.matching(client, destination)
        if not matching:
            return
        decision = await limiter.check(
            matching,
            client=client_key(client),
            destination=destination_key(destination, flow.request.host),
            source_ip=source_key(flow.client_conn.peername[0]),
        )
        st.would_block.extend(_would_block(decision))
        if decision.allowed:
            headers = decision.headers()
            if headers:
                flow.metadata[HEADERS_KEY] = headers
            return
        rule = decision.refused_by.name if decision.refused_by is not None else matching[0].name
        # No log line per refusal: the body log records each one, and the store logs an outage once;
        # a warning per request during an outage would flood Clearwall's own log.
        respond.refuse(flow, Refusal(decision.kind, rule, decision.message()), extra_headers=decision.headers())

    @guarded
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        headers = flow.metadata.pop(HEADERS_KEY, None)
        if headers and flow.response is not None and flow_state(flow).refusal is None:
            for name, value in headers.items():
                # Added as another field line: an upstream's own RateLimit items are kept (RFC 9651 lists).
                flow.response.headers.add(name, value)

    def _close(self, limiter: RateLimiter) -> asyncio.Task | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None  # no loop left: a memory store holds nothing to release
        task = loop.create_task(self._aclose(limiter))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    @staticmethod
    async def _aclose(limiter: RateLimiter) -> None:
        try:
            await limiter.backend.aclose()
        except Exception as exc:  # closing must not fail shutdown
            log.warning("closing the rate-limit store failed: %s: %s", type(exc).__name__, exc)

    def done(self):
        # Sync on purpose: mitmproxy calls `done` synchronously when a `-s` script is unloaded,
        # and refuses async handlers there. On shutdown it awaits whatever a hook returns, so
        # returning the closing task makes the store close fully before the loop ends.
        limiter, self.runtime.limiter, self._index = self.runtime.limiter, None, None
        return self._close(limiter) if limiter is not None else None
