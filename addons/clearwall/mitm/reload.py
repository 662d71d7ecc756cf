"""Hot reload of the rules: on change of any watched file (polled every second) and on SIGHUP.

The whole new set is validated (`load_rules`) in a thread; only a set that loads replaces the
reference in `runtime.rules` — a single assignment on the event loop, so every flow sees either
the old or the new set, and flows already under way keep the set they started with
(`flow_state(flow).rules`, tunnels). A set that fails keeps the rules in force: the error is
logged with file:line:column, kept for `/rules` and counted as `rules_reloads_total{result="error"}`.

Polling mtimes and sizes (not inotify) needs no dependency and works on bind mounts and
Kubernetes ConfigMap volumes, whose atomic symlink swap inotify watchers often miss.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import tempfile
import threading
from pathlib import Path

from mitmproxy import ctx

from clearwall.errors import ClearwallError, RuleSetError
from clearwall.mitm import content
from clearwall.mitm.core import upstream_trust_bundle
from clearwall.mitm.runtime import Runtime
from clearwall.policy.loader import load_rules
from clearwall.policy.ruleset import RuleSet

log = logging.getLogger("clearwall")
POLL_SECONDS = 1.0
SETTLE_SECONDS = 0.1
MAX_WATCHED = 500  # a rules tree is a handful of files; a mistaken --rules / must not stat the disk


def watched_files(rules_path: Path, rules: RuleSet | None) -> list[Path]:
    """Rule files, pattern libraries and the upstream CA bundle whose change triggers a reload."""
    root = rules_path if rules_path.is_dir() else rules_path.parent
    files = {rules_path} if not rules_path.is_dir() else set()
    try:
        for depth, pattern in ((0, "*.y*ml"), (1, "*/*.y*ml")):
            for p in sorted(root.glob(pattern)):
                files.add(p)
                if len(files) >= MAX_WATCHED:
                    break
    except OSError:
        pass
    if rules is not None:
        files.update(Path(f) for f in rules.files)
        bundle = rules.settings.upstream.ca_bundle
        if bundle:
            b = Path(bundle)
            files.add(b if b.is_absolute() or not rules.files else Path(rules.files[0]).parent / b)
    return sorted(files)


def snapshot(files: list[Path], rules_path: Path) -> tuple:
    """What a change looks like: (name, mtime_ns, size) of each file, plus the directory listing."""
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append((str(f), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(f), None, None))
    if rules_path.is_dir():
        try:
            out.append(("<dir>", tuple(sorted(p.name for p in rules_path.iterdir()))))
        except OSError:
            out.append(("<dir>", None))
    return tuple(out)


def first_error(e: ClearwallError) -> str:
    if isinstance(e, RuleSetError) and e.errors:
        more = len(e.errors) - 1
        return str(e.errors[0]) + (f" (and {more} more error{'s' if more > 1 else ''})" if more else "")
    return str(e)


class Reload:
    name = "clearwall-reload"

    def __init__(self, runtime: Runtime, poll_seconds: float = POLL_SECONDS) -> None:
        self.runtime = runtime
        self.poll_seconds = poll_seconds
        self._task: asyncio.Task | None = None
        self._lock: asyncio.Lock | None = None
        self._snap: tuple | None = None
        self._signal = False
        self._state_dir: Path | None = None
        self._pending: set[asyncio.Task] = set()

    def _path(self) -> Path:
        return Path(ctx.options.clearwall_rules)

    def running(self) -> None:
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        path = self._path()
        self._snap = snapshot(watched_files(path, self.runtime.rules), path)
        self._task = loop.create_task(self._poll())
        if threading.current_thread() is threading.main_thread():
            try:
                loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
                self._signal = True
            except (NotImplementedError, RuntimeError, ValueError):
                log.warning("SIGHUP reload unavailable on this platform; rule files are still watched")

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload("SIGHUP"))
        self._pending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._pending.discard)

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._signal:
            try:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            except RuntimeError:
                pass
            self._signal = False

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                path = self._path()
                snap = await asyncio.to_thread(lambda: snapshot(watched_files(path, self.runtime.rules), path))
                if snap != self._snap:
                    snap = await self._settled(path, snap)
                    self._snap = snap
                    await self._reload("file change")
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("rule file watcher error; the rules in force stay")

    async def _settled(self, path: Path, snap: tuple) -> tuple:
        """Wait until the files stop changing (an editor or `cp` may still be writing)."""
        for _ in range(20):
            await asyncio.sleep(SETTLE_SECONDS)
            again = await asyncio.to_thread(lambda: snapshot(watched_files(path, self.runtime.rules), path))
            if again == snap:
                break
            snap = again
        return snap

    async def _reload(self, why: str) -> bool:
        """Load, validate and swap in the rules; True when a new set is in force."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # SIGHUP during a file-change reload: one after the other
            path = self._path()
            if self._state_dir is None:
                self._state_dir = Path(tempfile.mkdtemp(prefix="clearwall-reload-"))
            try:
                rules = await asyncio.to_thread(load_rules, path)
                bundle = await asyncio.to_thread(self._trust_bundle, rules) \
                    if rules.settings.upstream.ca_bundle else None
                if rules.filters:  # compiled before the swap, off the event loop
                    content.remember(rules, await asyncio.to_thread(content.scanner_for, rules))
            except ClearwallError as e:
                return self._failed(why, e)
            except Exception as e:  # an unexpected loader bug is still a failed reload, not a crash
                log.exception("rules reload (%s) failed unexpectedly", why)
                return self._failed(why, ClearwallError(f"{path}: unexpected error: {e}"))
            old = self.runtime.rules
            self.runtime.rules = rules
            self.runtime.last_reload_error = None
            if bundle and getattr(ctx.options, "ssl_verify_upstream_trusted_ca", None) != bundle:
                ctx.options.update(ssl_verify_upstream_trusted_ca=bundle)
            self._count("ok")
            if old is not None and old.fingerprint == rules.fingerprint:
                log.info("rules reloaded (%s): unchanged, version %s", why, rules.version)
            else:
                log.info("rules reloaded (%s): version %s -> %s from %s", why, old.version if old else None,
                         rules.version, ", ".join(rules.files))
            return True

    def _trust_bundle(self, rules: RuleSet) -> str:
        """The combined trust file, named by its content: a changed CA file with unchanged rules
        gets a new name, so mitmproxy (which caches TLS contexts by path) picks it up."""
        built = Path(upstream_trust_bundle(rules, self._state_dir))
        data = built.read_bytes()
        named = self._state_dir / f"upstream-trust-{hashlib.sha256(data).hexdigest()[:16]}.pem"
        if not named.exists():
            named.write_bytes(data)
        return str(named)

    def _failed(self, why: str, e: ClearwallError) -> bool:
        detail = str(e)
        self.runtime.last_reload_error = first_error(e)
        log.error("rules reload (%s) failed; the rules in force (version %s) stay:\n%s", why,
                  self.runtime.rules.version if self.runtime.rules else None, detail)
        self._count("error")
        return False

    def _count(self, result: str) -> None:
        m = self.runtime.metrics
        if m is not None:
            m.reload(result)
