"""Every recipe in docs/CLIENTS.md, run with the real client through the real `clearwall run`.

Each client is configured exactly as the guide says (the same variables, flags and code) in a
clean environment, so a recipe that stops working fails here. One proxy and one upstream serve
the whole module; a runtime that is not installed is skipped, never failed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.helpers import refusal
from tests.support.proxy import Proxy
from tests.support.upstream import RecordedRequest, Reply, Upstream

CLIENTS = Path(__file__).parent / "clients"
TOKEN = "agent-token-1234"

RULES = """
version: 1
settings:
  ssrf: {{allow: [127.0.0.1/32]}}
  upstream:
    ca_bundle: {ca}
    resolve:
      api.example.test: 127.0.0.1
      private.example.test: 127.0.0.1
      other.example.test: 127.0.0.1
      git.example.test: 127.0.0.1
      pypi.example.test: 127.0.0.1
clients:
  - name: agent
    match: {{proxy_user: agent, token_env: CLIENTS_TEST_TOKEN}}
destinations:
  - name: public-api
    hosts: [api.example.test]
    ports: [{port}]
    methods: [GET]
    paths: ["/v1/**"]
  - name: agent-only
    hosts: [private.example.test]
    ports: [{port}]
    clients: [agent]
  - name: git-server
    hosts: [git.example.test]
    ports: [{port}]
    methods: [GET, POST]
    paths: ["/allowed.git/**"]
  - name: package-index
    hosts: [pypi.example.test]
    ports: [{port}]
    methods: [GET]
    paths: ["/simple/**", "/files/*"]
"""


# --- a tiny git smart-HTTP endpoint and a tiny package index, served by the recording upstream ---

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _pkt(line: str) -> bytes:
    data = line.encode()
    return b"%04x" % (len(data) + 4) + data


def git_refs(req: RecordedRequest) -> Reply:
    """The ref advertisement of smart HTTP (protocol v0): enough for `git ls-remote`."""
    body = (_pkt("# service=git-upload-pack\n") + b"0000"
            + _pkt(f"{COMMIT} HEAD\0symref=HEAD:refs/heads/main agent=test\n")
            + _pkt(f"{COMMIT} refs/heads/main\n") + b"0000")
    return Reply(200, body, {"Content-Type": "application/x-git-upload-pack-advertisement", "Cache-Control": "no-cache"})


def make_wheel(name: str, version: str) -> tuple[str, bytes]:
    """A minimal valid wheel: metadata only, no code."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: clearwall-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{p},,\n" for p in files) + f"{dist}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p, data in files.items():
            z.writestr(p, data)
        z.writestr(f"{dist}/RECORD", record)
    return f"{name}-{version}-py3-none-any.whl", buf.getvalue()


WHEEL_NAME, WHEEL = make_wheel("tinypkg", "1.0")


def simple_index(req: RecordedRequest) -> Reply:
    sha = hashlib.sha256(WHEEL).hexdigest()
    page = f'<!DOCTYPE html><html><body><a href="/files/{WHEEL_NAME}#sha256={sha}">{WHEEL_NAME}</a></body></html>'
    return Reply(200, page.encode(), {"Content-Type": "text/html"})


def wheel_file(req: RecordedRequest) -> Reply:
    return Reply(200, WHEEL, {"Content-Type": "application/octet-stream"})


# --- fixtures ---


@pytest.fixture(scope="module")
def upstream(pki):
    routes = {"/allowed.git/info/refs": git_refs, "/denied.git/info/refs": git_refs,
              "/simple/": simple_index, "/files/": wheel_file}
    with Upstream(pki, routes) as up:
        yield up


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, pki, upstream):
    rules = RULES.format(ca=pki.ca_pem, port=upstream.port)
    with Proxy(tmp_path_factory.mktemp("clients"), rules, env={"CLIENTS_TEST_TOKEN": TOKEN}) as p:
        yield p


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home")


@dataclass
class Outcome:
    """What a client saw: a response (status, headers, body) or an error message."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    error: str = ""

    def __post_init__(self) -> None:
        self.headers = {k.lower(): v for k, v in self.headers.items()}


def clean_env(home: Path, **recipe: str) -> dict[str, str]:
    """Only what a container would have, plus the recipe's variables: nothing leaks from this machine."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8", **recipe}


def proxy_url(proxy: Proxy, creds: str | None) -> str:
    return f"http://{creds}@127.0.0.1:{proxy.port}" if creds else proxy.url


def run_json(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Outcome:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and lines, f"{cmd} failed ({out.returncode}): {out.stderr}"
    doc = json.loads(lines[-1])
    return Outcome(doc.get("status"), doc.get("headers") or {}, doc.get("body", ""),
                   f"{doc.get('error', '')}: {doc.get('message', '')}" if "error" in doc else "")


# --- one runner per recipe: (proxy, url, credentials "user:token" or None, home) -> Outcome ---


def _parse_curl(stdout: bytes) -> tuple[int | None, dict[str, str], bytes]:
    """With -i, curl prints every response head it got (a refused CONNECT's too): keep the last one."""
    status, headers, rest = None, {}, stdout
    while rest.startswith(b"HTTP/"):
        head, _, rest = rest.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, rest


def _curl(cmd: list[str], env: dict[str, str]) -> Outcome:
    out = subprocess.run(cmd, capture_output=True, env=env, timeout=60)
    status, headers, body = _parse_curl(out.stdout)
    if out.returncode != 0:  # e.g. 56 "CONNECT tunnel failed, response 403": the head is still printed by -i
        return Outcome(status, headers, body.decode(errors="replace"), out.stderr.decode(errors="replace"))
    return Outcome(status, headers, body.decode(errors="replace"))


def curl_flags(proxy, url, creds, home):
    curl = shutil.which("curl") or pytest.skip("curl is not installed")
    cmd = [curl, "-sS", "-i", "--max-time", "20", "-x", proxy.url, "--cacert", str(proxy.ca_cert)]
    if creds:
        cmd += ["--proxy-user", creds]
    return _curl(cmd + [url], clean_env(home))


def curl_env(proxy, url, creds, home):
    curl = shutil.which("curl") or pytest.skip("curl is not installed")
    env = clean_env(home, HTTPS_PROXY=proxy_url(proxy, creds), CURL_CA_BUNDLE=str(proxy.ca_cert))
    return _curl([curl, "-sS", "-i", "--max-time", "20", url], env)


def _python(lib: str, env_recipe: dict[str, str]):
    def run(proxy, url, creds, home):
        env = clean_env(home, **{k: v.format(proxy=proxy_url(proxy, creds), ca=proxy.ca_cert)
                                 for k, v in env_recipe.items()})
        return run_json([sys.executable, str(CLIENTS / "py_client.py"), lib, url], env)
    return run


python_requests = _python("requests", {"HTTPS_PROXY": "{proxy}", "REQUESTS_CA_BUNDLE": "{ca}"})
python_httpx = _python("httpx", {"HTTPS_PROXY": "{proxy}", "SSL_CERT_FILE": "{ca}"})
python_httpx_explicit = _python("httpx-explicit", {"CLEARWALL_PROXY": "{proxy}", "CLEARWALL_CA": "{ca}"})
python_aiohttp = _python("aiohttp", {"HTTPS_PROXY": "{proxy}", "SSL_CERT_FILE": "{ca}"})
python_aiohttp_explicit = _python("aiohttp-explicit", {"CLEARWALL_PROXY": "{proxy}", "CLEARWALL_CA": "{ca}"})


def _node_major() -> int:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    return int(out.stdout.strip().lstrip("v").split(".")[0])


_UNDICI: dict[str, Path | str] = {}


def undici_dir() -> Path:
    """undici from the npm registry into a scratch directory, once per test session."""
    if "dir" in _UNDICI:
        return _UNDICI["dir"]
    if "skip" in _UNDICI:
        pytest.skip(_UNDICI["skip"])
    npm = shutil.which("npm")
    if npm is None:
        _UNDICI["skip"] = "npm is not installed, so undici cannot be installed"
        pytest.skip(_UNDICI["skip"])
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="clearwall-undici-"))
    out = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save", "--loglevel=error",
                          "--prefix", str(d), "undici@7"], capture_output=True, text=True, timeout=300)
    if out.returncode != 0 or not (d / "node_modules" / "undici").is_dir():
        _UNDICI["skip"] = f"npm could not install undici (registry unreachable?): {out.stderr.strip()[-300:]}"
        pytest.skip(_UNDICI["skip"])
    shutil.copy(CLIENTS / "node_fetch.mjs", d / "node_fetch.mjs")  # resolves `undici` from d/node_modules
    _UNDICI["dir"] = d
    return d


def _node(mode: str):
    def run(proxy, url, creds, home):
        major = _node_major()
        env = clean_env(home, HTTPS_PROXY=proxy_url(proxy, creds), NODE_EXTRA_CA_CERTS=str(proxy.ca_cert))
        if mode == "env":
            if major < 24:
                pytest.skip(f"NODE_USE_ENV_PROXY needs Node.js >= 24; this machine has Node.js {major}")
            env["NODE_USE_ENV_PROXY"] = "1"
            d = CLIENTS
        else:
            d = undici_dir()
        return run_json([shutil.which("node"), str(d / "node_fetch.mjs"), mode, url], env, cwd=d)
    return run


node_undici_agent = _node("undici-agent")
node_undici_global = _node("undici-global")
node_env_proxy = _node("env")


def go_default_transport(proxy, url, creds, home):
    go = shutil.which("go") or pytest.skip("Go is not installed on this machine (the recipe is documented, not run)")
    env = clean_env(home, HTTPS_PROXY=proxy_url(proxy, creds), SSL_CERT_FILE=str(proxy.ca_cert),
                    GOCACHE=str(home / "gocache"), GOPATH=str(home / "go"), GOFLAGS="-mod=mod", GO111MODULE="off")
    return run_json([go, "run", str(CLIENTS / "go_get.go"), url], env)


RUNTIMES = {
    "curl with -x, --cacert and --proxy-user": curl_flags,
    "curl with HTTPS_PROXY and CURL_CA_BUNDLE": curl_env,
    "requests with HTTPS_PROXY and REQUESTS_CA_BUNDLE": python_requests,
    "httpx with HTTPS_PROXY and SSL_CERT_FILE": python_httpx,
    "httpx with proxy= and an SSL context": python_httpx_explicit,
    "aiohttp with trust_env and SSL_CERT_FILE": python_aiohttp,
    "aiohttp with proxy= and an SSL context": python_aiohttp_explicit,
    "Node.js undici fetch with a ProxyAgent": node_undici_agent,
    "Node.js built-in fetch with undici's EnvHttpProxyAgent": node_undici_global,
    "Node.js 24+ with NODE_USE_ENV_PROXY": node_env_proxy,
    "Go net/http with HTTPS_PROXY and SSL_CERT_FILE": go_default_transport,
}


# --- the cases every recipe must get right ---


def expect_upstream_reply(o: Outcome, path: str) -> None:
    assert not o.error and o.status == 200, o
    assert json.loads(o.body)["path"] == path


def expect_refusal_body(o: Outcome, kind: str, rule: str) -> None:
    assert o.status == 403 and not o.error, o
    doc = refusal(o.body.encode())
    assert (doc["error"], doc["rule"]) == (kind, rule)
    assert o.headers["x-clearwall-id"] == doc["id"]


def expect_connect_refused(o: Outcome, status: int) -> None:
    """A refused CONNECT: the client raises a proxy error naming the status (no response object)."""
    assert o.error and str(status) in o.error, o
    assert o.status in (None, status), o
    if o.status is not None:  # curl -i and aiohttp also expose the CONNECT answer's head
        assert o.headers["x-clearwall-rule"] in ("default", "agent-only", "client-auth"), o
        assert o.headers["x-clearwall-id"], o
        if status == 407:
            assert o.headers["proxy-authenticate"].lower().startswith("basic"), o


CASES = [
    # (case, host, path, credentials, check)
    ("an allowed request gets the upstream's reply", "api.example.test", "/v1/hello", None,
     lambda o: expect_upstream_reply(o, "/v1/hello")),
    ("a path its destination does not allow gets the JSON refusal", "api.example.test", "/admin", None,
     lambda o: expect_refusal_body(o, "request_denied", "public-api")),
    ("a host no rule allows is refused at CONNECT", "other.example.test", "/v1/hello", None,
     lambda o: expect_connect_refused(o, 403)),
    ("a proxy_user client with its token reaches its destination", "private.example.test", "/mine", f"agent:{TOKEN}",
     lambda o: expect_upstream_reply(o, "/mine")),
    ("that destination without credentials is refused at CONNECT", "private.example.test", "/mine", None,
     lambda o: expect_connect_refused(o, 403)),
    ("a wrong token is answered 407", "private.example.test", "/mine", "agent:wrong-token",
     lambda o: expect_connect_refused(o, 407)),
]


@pytest.mark.parametrize("case, host, path, creds, check", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_recipe(proxy, upstream, home, runtime, case, host, path, creds, check):
    before = len(upstream.requests)
    outcome = RUNTIMES[runtime](proxy, f"https://{host}:{upstream.port}{path}", creds, home)
    check(outcome)
    reached = [r.path for r in upstream.requests[before:]]
    if outcome.status == 200:
        assert reached == [path]
    else:
        assert reached == [], f"a refused request reached the upstream: {reached}"
