"""Every recipe in docs/CLIENTS.md, run with the real client through the real `clearwall run`.

Each client is configured exactly as the guide says (the same variables, flags and code) in a
clean environment, so a recipe that stops working fails here. One proxy and one upstream serve
the whole module; a runtime that is not installed is skipped, never failed.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.clients.runners import (
    CLIENTS, Outcome, clean_env, curl_env, curl_flags, go_default_transport, go_explicit_transport, node_env_proxy,
    node_major, node_undici_agent, node_undici_global, proxy_url, python_aiohttp, python_aiohttp_explicit,
    python_httpx, python_httpx_explicit, python_requests, python_requests_explicit, python_runner, run_json,
    undici_dir,
)
from tests.e2e.clients.servers import COMMIT, WHEEL, WHEEL_NAME, git_refs, simple_index, wheel_file
from tests.e2e.helpers import refusal
from tests.support.proxy import Proxy
from tests.support.upstream import Upstream

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
  - name: plain-api
    hosts: [api.example.test]
    ports: [{plain_port}]
    methods: [GET]
    paths: ["/v1/**"]
  - name: package-index
    hosts: [pypi.example.test]
    ports: [{port}]
    methods: [GET]
    paths: ["/simple/**", "/files/*"]
"""


# --- fixtures ---


@pytest.fixture(scope="module")
def upstream(pki):
    routes = {"/allowed.git/info/refs": git_refs, "/denied.git/info/refs": git_refs,
              "/simple/": simple_index, "/files/": wheel_file}
    with Upstream(pki, routes) as up:
        yield up


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, pki, upstream, plain_upstream):
    rules = RULES.format(ca=pki.ca_pem, port=upstream.port, plain_port=plain_upstream.port)
    with Proxy(tmp_path_factory.mktemp("clients"), rules, env={"CLIENTS_TEST_TOKEN": TOKEN}) as p:
        yield p


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home")


RUNTIMES = {
    "curl with -x, --cacert and --proxy-user": curl_flags,
    "curl with HTTPS_PROXY and CURL_CA_BUNDLE": curl_env,
    "requests with HTTPS_PROXY and REQUESTS_CA_BUNDLE": python_requests,
    "requests with proxies= and verify=": python_requests_explicit,
    "httpx with HTTPS_PROXY and SSL_CERT_FILE": python_httpx,
    "httpx with proxy= and an SSL context": python_httpx_explicit,
    "aiohttp with trust_env and SSL_CERT_FILE": python_aiohttp,
    "aiohttp with proxy= and an SSL context": python_aiohttp_explicit,
    "Node.js undici fetch with a ProxyAgent": node_undici_agent,
    "Node.js built-in fetch with undici's EnvHttpProxyAgent": node_undici_global,
    "Node.js 24+ with NODE_USE_ENV_PROXY": node_env_proxy,
    "Go net/http with HTTPS_PROXY and SSL_CERT_FILE": go_default_transport,
    "Go net/http with its own Transport": go_explicit_transport,
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


REASONS = {403: "Forbidden", 407: "Proxy Authentication Required"}


def expect_connect_refused(o: Outcome, status: int) -> None:
    """A refused CONNECT: the client raises a proxy error naming the status (no response object)."""
    assert o.error and (str(status) in o.error or REASONS[status] in o.error), o  # Go names only the reason
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
    ("that destination without credentials is challenged with 407", "private.example.test", "/mine", None,
     lambda o: expect_connect_refused(o, 407)),
    ("a wrong token is answered 407", "private.example.test", "/mine", "agent:wrong-token",
     lambda o: expect_connect_refused(o, 407)),
]


@pytest.mark.parametrize("case, host, path, creds, check", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_recipe(proxy, upstream, home, runtime, case, host, path, creds, check):
    before = len(upstream.requests)
    outcome = RUNTIMES[runtime](proxy, f"https://{host}:{upstream.port}{path}", creds, home)
    check(outcome)
    if creds:  # a client's error message must not repeat its proxy token, and upstream never sees it
        assert creds.partition(":")[2] not in outcome.error + outcome.body, outcome
        assert not upstream.received(creds.partition(":")[2])
    reached = [r.path for r in upstream.requests[before:]]
    if outcome.status == 200:
        assert reached == [path]
    else:
        assert reached == [], f"a refused request reached the upstream: {reached}"


# --- the lines the guide insists on: leave one out and the request fails ---


def git_without_proxy_auth_method(proxy, url, creds, home):
    git = shutil.which("git") or pytest.skip("git is not installed")
    env = git_env(home, HTTPS_PROXY=proxy_url(proxy, creds), GIT_SSL_CAINFO=str(proxy.ca_cert))
    out = subprocess.run([git, "ls-remote", url.rsplit("/", 1)[0] + "/allowed.git"],
                         capture_output=True, text=True, env=env, timeout=60)
    return Outcome(None if out.returncode else 200, body=out.stdout, error=out.stderr)


def node_fetch_without_dispatcher(proxy, url, creds, home):
    if node_major() >= 24:
        pytest.skip("Node.js >= 24 may honour HTTPS_PROXY by other means; this checks older Node.js")
    env = clean_env(home, HTTPS_PROXY=proxy_url(proxy, creds), NODE_EXTRA_CA_CERTS=str(proxy.ca_cert))
    return run_json([shutil.which("node"), str(CLIENTS / "node_fetch.mjs"), "env", url], env, cwd=CLIENTS)


MISSING_LINE = [
    # (what is left out, runner, host, credentials, text of the failure)
    ("requests without REQUESTS_CA_BUNDLE (SSL_CERT_FILE is not read)",
     python_runner("requests", {"HTTPS_PROXY": "{proxy}", "SSL_CERT_FILE": "{ca}"}), "api.example.test", None,
     "CERTIFICATE_VERIFY_FAILED"),
    ("httpx without SSL_CERT_FILE (REQUESTS_CA_BUNDLE is not read)",
     python_runner("httpx", {"HTTPS_PROXY": "{proxy}", "REQUESTS_CA_BUNDLE": "{ca}"}), "api.example.test", None,
     "CERTIFICATE_VERIFY_FAILED"),
    ("aiohttp without trust_env (HTTPS_PROXY is not read)",
     python_runner("aiohttp-without-trust-env", {"HTTPS_PROXY": "{proxy}", "SSL_CERT_FILE": "{ca}"}), "api.example.test",
     None, "api.example.test"),
    ("Node.js fetch without a dispatcher before Node.js 24 (HTTPS_PROXY is not read)",
     node_fetch_without_dispatcher, "api.example.test", None, "ENOTFOUND"),
]


@pytest.mark.parametrize("missing, runner, host, creds, text", MISSING_LINE, ids=[m[0] for m in MISSING_LINE])
def test_leaving_out_a_line_of_the_recipe_fails(proxy, upstream, home, missing, runner, host, creds, text):
    before = len(upstream.requests)
    outcome = runner(proxy, f"https://{host}:{upstream.port}/v1/hello", creds, home)
    assert outcome.status is None and text in outcome.error, outcome
    assert len(upstream.requests) == before


def test_git_without_proxy_auth_method_answers_the_407_challenge(proxy, upstream, home):
    """libcurl's anyauth sends credentials only after a challenge; Clearwall challenges (407) an
    unidentified client at a destination that admits only proxy-authenticated clients."""
    outcome = git_without_proxy_auth_method(proxy, f"https://private.example.test:{upstream.port}/v1/hello",
                                            f"agent:{TOKEN}", home)
    assert outcome.status == 200, outcome


# --- git: `git ls-remote` against the smart-HTTP endpoint ---


def git_env(home: Path, **recipe: str) -> dict[str, str]:
    # No system or user configuration may supply a proxy or CA behind the recipe's back.
    return clean_env(home, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0", **recipe)


# git sends proxy credentials only after a 407 unless told `basic`: without it, a client that is
# refused as unidentified (403, `require_client_auth: false`) never gets to present its token.
def git_config_recipe(proxy, creds, home):
    return (["-c", f"http.proxy={proxy_url(proxy, creds)}", "-c", "http.proxyAuthMethod=basic"],
            git_env(home, GIT_SSL_CAINFO=str(proxy.ca_cert)))


def git_env_recipe(proxy, creds, home):
    return [], git_env(home, HTTPS_PROXY=proxy_url(proxy, creds), GIT_HTTP_PROXY_AUTHMETHOD="basic",
                       GIT_SSL_CAINFO=str(proxy.ca_cert))


GIT_RECIPES = {"git with http.proxy and GIT_SSL_CAINFO": git_config_recipe,
               "git with HTTPS_PROXY and GIT_SSL_CAINFO": git_env_recipe}

GIT_CASES = [
    # (case, host, repo, credentials, expected exit code, text git prints)
    ("an allowed repository lists its refs", "git.example.test", "allowed.git", None, 0, f"{COMMIT}\trefs/heads/main"),
    ("a repository path the rules do not allow fails with 403", "git.example.test", "denied.git", None, 128,
     "The requested URL returned error: 403"),
    ("a host no rule allows fails at CONNECT", "other.example.test", "allowed.git", None, 128,
     "CONNECT tunnel failed, response 403"),
    ("a proxy_user client with its token reaches its destination", "private.example.test", "allowed.git",
     f"agent:{TOKEN}", 0, f"{COMMIT}\tHEAD"),
    ("a wrong token fails with 407", "private.example.test", "allowed.git", "agent:wrong-token", 128,
     "CONNECT tunnel failed, response 407"),
]


@pytest.mark.parametrize("case, host, repo, creds, code, text", GIT_CASES, ids=[c[0] for c in GIT_CASES])
@pytest.mark.parametrize("recipe", list(GIT_RECIPES))
def test_git(proxy, upstream, home, recipe, case, host, repo, creds, code, text):
    git = shutil.which("git") or pytest.skip("git is not installed")
    args, env = GIT_RECIPES[recipe](proxy, creds, home)
    before = len(upstream.requests)
    out = subprocess.run([git, *args, "ls-remote", f"https://{host}:{upstream.port}/{repo}"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == code, out
    assert text in (out.stdout if code == 0 else out.stderr), out
    reached = [r.path for r in upstream.requests[before:]]
    assert reached == ([f"/{repo}/info/refs?service=git-upload-pack"] if code == 0 else []), reached


@pytest.mark.parametrize("host, repo, rule", [
    ("git.example.test", "denied.git", "git-server"),
    ("other.example.test", "allowed.git", "default"),
], ids=["refused inside the tunnel", "refused at CONNECT"])
def test_git_trace_shows_the_refusal_headers(proxy, upstream, home, host, repo, rule):
    """The guide's way to see which rule refused git: GIT_TRACE_CURL prints the refusal's headers."""
    git = shutil.which("git") or pytest.skip("git is not installed")
    args, env = git_config_recipe(proxy, None, home)
    out = subprocess.run([git, *args, "ls-remote", f"https://{host}:{upstream.port}/{repo}"],
                         capture_output=True, text=True, env={**env, "GIT_TRACE_CURL": "1"}, timeout=60)
    assert out.returncode == 128
    assert f"x-clearwall-rule: {rule}" in out.stderr.lower(), out.stderr


# --- pip: `pip download` from a simple index ---


def pip_flags_recipe(proxy, creds, home, index):
    return ["--index-url", index, "--proxy", proxy_url(proxy, creds), "--cert", str(proxy.ca_cert)], {}


def pip_env_recipe(proxy, creds, home, index):
    return [], {"PIP_INDEX_URL": index, "HTTPS_PROXY": proxy_url(proxy, creds), "PIP_CERT": str(proxy.ca_cert)}


PIP_RECIPES = {"pip with --proxy and --cert": pip_flags_recipe,
               "pip with HTTPS_PROXY and PIP_CERT": pip_env_recipe}

PIP_CASES = [
    # (case, host, index path, credentials, downloaded?, text pip prints on failure)
    ("an allowed index serves the package", "pypi.example.test", "/simple/", None, True, ""),
    ("an index path the rules do not allow fails with 403", "pypi.example.test", "/mirror/simple/", None, False,
     "403 Client Error: Forbidden"),
    ("a host no rule allows fails at CONNECT", "other.example.test", "/simple/", None, False,
     "Tunnel connection failed: 403"),
    ("a proxy_user client with its token reaches its destination", "private.example.test", "/simple/",
     f"agent:{TOKEN}", True, ""),
    ("a wrong token fails with 407", "private.example.test", "/simple/", "agent:wrong-token", False,
     "Tunnel connection failed: 407"),
]


@pytest.mark.parametrize("case, host, index, creds, ok, text", PIP_CASES, ids=[c[0] for c in PIP_CASES])
@pytest.mark.parametrize("recipe", list(PIP_RECIPES))
def test_pip(proxy, upstream, home, tmp_path, recipe, case, host, index, creds, ok, text):
    args, recipe_env = PIP_RECIPES[recipe](proxy, creds, home, f"https://{host}:{upstream.port}{index}")
    # Isolated from this machine's pip configuration; no retries so a refusal fails at once.
    env = clean_env(home, PIP_CONFIG_FILE=os.devnull, **recipe_env)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
           "--retries", "0", "--timeout", "20", "-vv", "-d", str(tmp_path), *args, "tinypkg"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if ok:
        assert out.returncode == 0, out
        assert (tmp_path / WHEEL_NAME).read_bytes() == WHEEL
    else:
        assert out.returncode != 0, out
        assert text in out.stdout + out.stderr, out
        assert not (tmp_path / WHEEL_NAME).exists()


# --- reading a refusal the client only reports as a proxy error ---


def test_refused_connect_reason_is_found_with_logs_search(proxy, upstream, home):
    """requests and httpx drop the refused CONNECT's body: the guide sends the reader to `clearwall logs search`."""
    host = "other.example.test"
    outcome = python_requests(proxy, f"https://{host}:{upstream.port}/v1/reason", None, home)
    expect_connect_refused(outcome, 403)
    cmd = [sys.executable, "-m", "clearwall", "logs", "search", "--log-dir", str(proxy.log_dir),
           "--host", host, "--action", "blocked", "--json"]
    records: list[dict] = []
    for _ in range(50):  # the writer flushes off the proxy's event loop: poll, do not time
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        if records:
            break
        time.sleep(0.1)
    assert records, "no blocked record for the refused CONNECT"
    last = records[-1]
    assert last["event"]["reason"] == "destination_denied" and last["rule"]["name"] == ["default"]
    assert last["http"]["request"]["method"] == "CONNECT" and last["destination"]["domain"] == host


# --- plain-HTTP requests take the other variable ---

PLAIN_RECIPES = {
    # curl ignores upper-case HTTP_PROXY (a CGI `Proxy:` header could set it): only http_proxy works
    "curl with http_proxy": lambda proxy, home: (
        [shutil.which("curl") or pytest.skip("curl is not installed"), "-sS", "--max-time", "20"],
        clean_env(home, http_proxy=proxy.url)),
    "requests with HTTP_PROXY": lambda proxy, home: (
        [sys.executable, str(CLIENTS / "py_client.py"), "requests"], clean_env(home, HTTP_PROXY=proxy.url)),
}


@pytest.mark.parametrize("path, status", [("/v1/plain", 200), ("/admin", 403)], ids=["allowed", "refused"])
@pytest.mark.parametrize("recipe", list(PLAIN_RECIPES))
def test_plain_http_goes_through_the_proxy_with_http_proxy(proxy, plain_upstream, home, recipe, path, status):
    cmd, env = PLAIN_RECIPES[recipe](proxy, home)
    before = len(plain_upstream.requests)
    out = subprocess.run([*cmd, f"http://api.example.test:{plain_upstream.port}{path}"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    if "status" in doc and "body" in doc:  # the Python helper's envelope; curl prints the body itself
        assert doc["status"] == status
        doc = json.loads(doc["body"])
    # api.example.test resolves only inside the proxy: an answer at all proves the request went through it
    if status == 200:
        assert doc["path"] == path and [r.path for r in plain_upstream.requests[before:]] == [path]
    else:
        assert (doc["error"], doc["rule"]) == ("request_denied", "plain-api")
        assert len(plain_upstream.requests) == before


def test_curl_ignores_upper_case_http_proxy(proxy, plain_upstream, home):
    """Why the guide says `http_proxy` for curl: with only HTTP_PROXY it goes direct (and cannot resolve the name)."""
    curl = shutil.which("curl") or pytest.skip("curl is not installed")
    before = len(plain_upstream.requests)
    out = subprocess.run([curl, "-sS", "--max-time", "20", f"http://api.example.test:{plain_upstream.port}/v1/plain"],
                         capture_output=True, text=True, env=clean_env(home, HTTP_PROXY=proxy.url), timeout=60)
    assert out.returncode != 0, out  # went direct: "Could not resolve host", the proxy was not used
    assert len(plain_upstream.requests) == before


# --- the guide's whole environment block, for a container whose runtimes are unknown ---


def whole_environment(proxy: Proxy, home: Path, creds: str) -> dict[str, str]:
    url, ca = proxy_url(proxy, creds), str(proxy.ca_cert)
    return clean_env(home, HTTPS_PROXY=url, https_proxy=url, HTTP_PROXY=url, http_proxy=url,
                     SSL_CERT_FILE=ca, REQUESTS_CA_BUNDLE=ca, CURL_CA_BUNDLE=ca, NODE_EXTRA_CA_CERTS=ca,
                     PIP_CERT=ca, GIT_SSL_CAINFO=ca, GIT_HTTP_PROXY_AUTHMETHOD="basic", NODE_USE_ENV_PROXY="1",
                     GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0")


def _tool(name: str) -> str:
    return shutil.which(name) or pytest.skip(f"{name} is not installed")


WHOLE_ENV_CLIENTS = {
    # name: (command before the URL, marker of the upstream's answer in stdout)
    "curl": (lambda home: [_tool("curl"), "-sS", "--max-time", "20"], f"{COMMIT} refs/heads/main"),
    "requests": (lambda home: [sys.executable, str(CLIENTS / "py_client.py"), "requests"], '"status": 200'),
    "httpx": (lambda home: [sys.executable, str(CLIENTS / "py_client.py"), "httpx"], '"status": 200'),
    "aiohttp": (lambda home: [sys.executable, str(CLIENTS / "py_client.py"), "aiohttp"], '"status": 200'),
    "Node.js with undici's EnvHttpProxyAgent": (
        lambda home: [_tool("node"), str(undici_dir(home) / "node_fetch.mjs"), "undici-global"], '"status":200'),
    "git": (lambda home: [_tool("git"), "ls-remote"], f"{COMMIT}\tHEAD"),
}


@pytest.mark.parametrize("client", list(WHOLE_ENV_CLIENTS))
def test_the_whole_environment_block_works_for_each_runtime_with_credentials(proxy, upstream, home, client):
    if client in ("aiohttp", "httpx") and importlib.util.find_spec(client) is None:
        pytest.skip(f"{client} is not installed in this Python")
    make_cmd, marker = WHOLE_ENV_CLIENTS[client]
    cmd = make_cmd(home)
    url = f"https://private.example.test:{upstream.port}/allowed.git" + ("" if client == "git" else "/info/refs")
    before = len(upstream.requests)
    out = subprocess.run([*cmd, url], capture_output=True, text=True, env=whole_environment(proxy, home, f"agent:{TOKEN}"),
                         timeout=60)
    assert out.returncode == 0 and marker in out.stdout, out
    assert len(upstream.requests) == before + 1


def test_the_proxy_token_never_reaches_the_body_log(proxy, upstream, home):
    outcome = python_requests(proxy, f"https://private.example.test:{upstream.port}/token-log-check", f"agent:{TOKEN}", home)
    expect_upstream_reply(outcome, "/token-log-check")
    log = proxy.log_dir / "flows.jsonl"
    for _ in range(100):  # the writer flushes off the event loop: wait for this exchange's record
        if log.exists() and "/token-log-check" in log.read_text():
            break
        time.sleep(0.1)
    text = log.read_text()
    assert "/token-log-check" in text
    assert TOKEN not in text
    assert base64.b64encode(f"agent:{TOKEN}".encode()).decode() not in text  # nor the Proxy-Authorization value
