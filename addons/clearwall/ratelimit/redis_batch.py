"""Coalesce concurrent script calls into Redis pipelines, one pipeline in flight at a time.

Under load, one EVALSHA per request on its own pooled connection means a connection per
concurrent request (a connect storm at start-up, which a short timeout turns into a false
outage) and one round trip each. Instead, calls queue here and a single drain task sends
whatever has queued as one non-transactional pipeline, then the next batch: batches grow with
load, a quiet proxy still gets one round trip per request, and one connection suffices. Each
EVALSHA in a pipeline is still atomic on its own, which is all the limiter needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence


class StoreFailure(Exception):
    """Redis failed a call; `on_failure` has already been told (raised to every caller affected)."""


class ScriptBatcher:
    """`await call(keys, args)` runs EVALSHA(sha, keys, args) and returns its reply.

    Failures (connection, timeout of the pipeline, an error reply) are reported once per
    pipeline to `on_failure` — even when the callers waiting for it have already given up — and
    raised to the callers still waiting as `StoreFailure`.
    """

    def __init__(
        self,
        client,
        script: str,
        sha: str,
        *,
        timeout: float,
        max_batch: int = 256,
        on_failure: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a whole number of at least 1, not {max_batch!r}")
        self._client = client
        self._script, self._sha = script, sha
        self._timeout = timeout
        self._max_batch = max_batch
        self._on_failure = on_failure
        self._pending: list[tuple[Sequence[str], Sequence[str], asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self.pipelines = 0  # round trips that carried calls (a lone call is a plain EVALSHA)

    async def call(self, keys: Sequence[str], args: Sequence[str]):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((keys, args, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return await future

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for _, _, future in self._pending:
            future.cancel()
        self._pending.clear()

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            live = [item for item in batch if not item[2].done()]  # callers that timed out left
            if not live:
                continue
            try:
                results = await asyncio.wait_for(self._send(live), self._timeout)
            except asyncio.CancelledError:
                for _, _, future in live:
                    future.cancel()
                raise
            except Exception as exc:  # the whole pipeline failed: every caller in it learns why
                self._fail(live, exc)
                continue
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                self._on_failure(errors[0])
            for (_, _, future), result in zip(live, results):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(StoreFailure(f"{type(result).__name__}: {result}"))
                else:
                    future.set_result(result)

    def _fail(self, live, exc: Exception) -> None:
        self._on_failure(exc)
        failure = StoreFailure(f"{type(exc).__name__}: {exc}")
        # Calls queued meanwhile would wait on the same dead connection: fail them now too.
        live = live + self._pending
        self._pending = []
        for _, _, future in live:
            if not future.done():
                future.set_exception(failure)

    async def _send(self, batch) -> list:
        from redis.exceptions import NoScriptError

        results = await self._pipeline(batch)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:  # Redis restarted or SCRIPT FLUSH: load once, resend those calls
            await self._client.script_load(self._script)
            again = await self._pipeline([batch[i] for i in missing])
            for i, result in zip(missing, again):
                results[i] = result
        return results

    async def _pipeline(self, batch) -> list:
        from redis.exceptions import ResponseError

        self.pipelines += 1
        if len(batch) == 1:  # a quiet proxy: a plain EVALSHA costs a third less than a pipeline
            keys, args, _ = batch[0]
            try:
                return [await self._client.evalsha(self._sha, len(keys), *keys, *args)]
            except ResponseError as exc:  # an error reply, returned the way a pipeline returns it
                return [exc]
        pipe = self._client.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.evalsha(self._sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))
