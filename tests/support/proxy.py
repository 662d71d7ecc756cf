"""Starting the real `clearwall run` as a separate process on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class Proxy:
    """One `clearwall run` process. Rules are given as text (written to rules.yaml) or a path."""

    def __init__(self, workdir: Path, rules: str | Path, *, env: dict[str, str] | None = None,
                 args: list[str] | None = None, mitm_args: list[str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        if isinstance(rules, Path):
            self.rules_path = rules
        else:
            self.rules_path = workdir / "rules.yaml"
            self.rules_path.write_text(rules)
        self.port, self.admin_port = free_port(), free_port()
        self.ca_dir, self.log_dir = workdir / "ca", workdir / "logs"
        self.env = {**os.environ, **(env or {})}
        self.args, self.mitm_args = args or [], mitm_args or []
        self.proc: subprocess.Popen | None = None
        self._stderr = workdir / "stderr.txt"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "mitmproxy-ca-cert.pem"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "clearwall", "run", "--rules", str(self.rules_path),
               "--listen", f"127.0.0.1:{self.port}", "--ca-dir", str(self.ca_dir),
               "--log-dir", str(self.log_dir), "--admin", f"127.0.0.1:{self.admin_port}", *self.args]
        return cmd + (["--", *self.mitm_args] if self.mitm_args else [])

    def start(self, timeout: float = 20.0) -> Proxy:
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=open(self._stderr, "wb"))
        try:
            wait_port(self.port, self.proc, timeout)
        except Exception as e:
            self.stop()
            raise RuntimeError(f"clearwall run did not start: {e}\n{self.stderr}") from None
        return self

    @property
    def stderr(self) -> str:
        return self._stderr.read_text(errors="replace") if self._stderr.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def records(self) -> list[dict]:
        f = self.log_dir / "flows.jsonl"
        if not f.exists():
            return []
        # The writer may be half-way through the last line: only complete lines are records.
        complete = f.read_text().split("\n")[:-1]
        return [json.loads(line) for line in complete if line.strip()]

    def wait_record(self, predicate, timeout: float = 10.0) -> dict:
        """The newest record for which `predicate(record)` holds, waiting for the writer."""
        deadline = time.monotonic() + timeout
        while True:
            for r in reversed(self.records()):
                if predicate(r):
                    return r
            if time.monotonic() > deadline:
                raise AssertionError("no matching log record")
            time.sleep(0.05)

    def record_for_url(self, suffix: str, timeout: float = 10.0) -> dict:
        return self.wait_record(lambda r: r.get("url", {}).get("full", "").endswith(suffix), timeout)

    def wait_records(self, n: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            recs = self.records()
            if len(recs) >= n or time.monotonic() > deadline:
                return recs

    def record_for(self, flow_id: str, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.records():
                if r.get("event", {}).get("id") == flow_id:
                    return r
            time.sleep(0.05)
        raise AssertionError(f"no log record for flow {flow_id}")
