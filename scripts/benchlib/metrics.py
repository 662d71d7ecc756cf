"""`scripts/bench metrics`: what metrics and the admin endpoint cost, as a proxy-bench ratio.

    scripts/bench metrics [--rules R] [--scrape-interval 1] [any `scripts/bench proxy` option]
    scripts/bench metrics --micro [--flows 20000]

Runs `scripts/bench proxy` with two clearwall targets on the same rules, interleaved per round:
`clearwall[metrics-off]` (`--admin off`: no admin server, the metrics addon does nothing) and
`clearwall[metrics-on]` (the default: admin endpoint on, every flow counted), while a scraper
reads /metrics every `--scrape-interval` seconds (Prometheus usually scrapes every 15-60 s, so
this is the harsher case). The `vs clearwall[metrics-off]` column is the ratio; the target is
>= 0.97.

On a shared, busy machine the proxy ratio swings by ±20 % between runs whatever is measured;
`--micro` measures the cost itself, independent of machine load: CPU time (process time, not
wall time) per flow counted by the `Metrics` addon, and per /metrics rendering, in-process.
"""

from __future__ import annotations

import sys
import threading
import urllib.request
from pathlib import Path

from benchlib import proxy

OFF, ON = "metrics-off", "metrics-on"


class Scraper:
    """Reads /metrics of each metrics-on proxy while it runs; counts scrapes and failures."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.scrapes = self.failures = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def watch(self, port: int) -> None:
        t = threading.Thread(target=self._run, args=(port,), daemon=True)
        t.start()
        self._threads.append(t)

    def _run(self, port: int) -> None:
        url = f"http://127.0.0.1:{port}/metrics"
        while not self._stop.wait(self.interval):
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    r.read()
                self.scrapes += 1
            except OSError:
                self.failures += 1  # the proxy is starting or stopping between runs

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def micro(n: int) -> int:
    """CPU cost of counting one finished flow and of rendering /metrics, in this process."""
    import time

    from mitmproxy.test import tflow

    from clearwall.mitm.metrics import Metrics
    from clearwall.mitm.runtime import Runtime
    from clearwall.mitm.state import flow_state
    from clearwall.policy.clients import Identity
    from clearwall.policy.decision import Decision

    runtime = Runtime(admin=("127.0.0.1", 0))
    addon = Metrics(runtime)
    flows = []
    for i in range(n):
        f = tflow.tflow(resp=True)
        st = flow_state(f)
        st.identity, st.decision = Identity(f"client-{i % 20}"), Decision(None, f"destination-{i % 50}")
        st.matches = [{"rule": "email", "where": "request.body", "action": "redact"}] if i % 10 == 0 else []
        flows.append(f)
    t0 = time.process_time()
    for f in flows:
        addon._count(f, False)
    per_flow = (time.process_time() - t0) / n
    t0 = time.process_time()
    for _ in range(50):
        runtime.metrics.text()
    per_scrape = (time.process_time() - t0) / 50
    series = runtime.metrics.text().count(b"\nclearwall_")
    print(f"counting: {per_flow * 1e6:.1f} us CPU per flow ({n} flows, 20 clients x 50 destinations)")
    print(f"/metrics: {per_scrape * 1e3:.2f} ms CPU per rendering ({series} series), in a worker thread")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--micro" in argv:
        n = int(argv[argv.index("--flows") + 1]) if "--flows" in argv else 20000
        return micro(n)
    rules, interval = str(proxy.DEFAULT_RULES), 1.0
    for flag in ("--rules", "--scrape-interval"):
        if flag in argv:
            i = argv.index(flag)
            value = argv[i + 1] if i + 1 < len(argv) else ""
            del argv[i:i + 2]
            if flag == "--rules":
                rules = value
            else:
                interval = float(value)
    if "--variant" in argv or "--targets" in argv:
        print("scripts/bench metrics chooses its own targets and variants", file=sys.stderr)
        return 2
    scraper = Scraper(interval)
    original = proxy.proxy_command

    def command(target, workdir: Path, port: int, admin_port: int, *rest):
        cmd = original(target, workdir, port, admin_port, *rest)
        if target.name.endswith(f"[{OFF}]"):
            i = cmd.index("--admin")
            cmd[i + 1] = "off"
        elif target.name.endswith(f"[{ON}]"):
            scraper.watch(admin_port)
        return cmd

    proxy.proxy_command = command
    try:
        code = proxy.main(["--targets", "clearwall", "--variant", f"{OFF}={rules}", "--variant", f"{ON}={rules}",
                           *argv])
    finally:
        proxy.proxy_command = original
        scraper.stop()
    print(f"scrapes of /metrics during the runs: {scraper.scrapes} (every {interval:g} s), "
          f"{scraper.failures} refused between runs")
    return code


if __name__ == "__main__":
    sys.exit(main())
