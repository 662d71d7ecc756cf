"""Host, path and SSRF tables for the pure policy core."""

from __future__ import annotations

import ipaddress

import pytest

from clearwall.policy.hosts import normalize_host, parse_host_pattern
from clearwall.policy.paths import PathRefused, normalize_path, parse_path_pattern
from clearwall.policy.ssrf import classify, embedded_ipv4, refusal_reason
from clearwall.policy.units import parse_duration, parse_size


@pytest.mark.parametrize("raw, canonical", [
    ("api.github.com", "api.github.com"),
    ("API.GitHub.COM", "api.github.com"),
    ("api.github.com.", "api.github.com"),
    ("bücher.de", "xn--bcher-kva.de"),
    ("[::1]", "::1"),
    ("10.0.0.1", "10.0.0.1"),
])
def test_host_names_are_normalised(raw, canonical):
    assert normalize_host(raw) == canonical


@pytest.mark.parametrize("raw", ["", "a..b", "exa mple.com", "a/b", "x" * 64 + ".com"])
def test_invalid_host_names_are_rejected(raw):
    with pytest.raises(ValueError):
        normalize_host(raw)


@pytest.mark.parametrize("pattern, host, expected", [
    ("api.github.com", "api.github.com", True),
    ("api.github.com", "evil-api.github.com", False),
    ("API.github.com.", "api.github.com", True),
    ("*.githubusercontent.com", "raw.githubusercontent.com", True),
    ("*.githubusercontent.com", "a.b.c.githubusercontent.com", True),
    ("*.githubusercontent.com", "githubusercontent.com", False),
    ("*.githubusercontent.com", "evilgithubusercontent.com", False),
    ("xn--bcher-kva.de", normalize_host("BÜCHER.de"), True),
    ("10.0.0.0/8", "10.1.2.3", True),
    ("10.0.0.0/8", "11.0.0.1", False),
    ("10.0.0.5", "10.0.0.5", True),
    ("10.0.0.0/8", "10.example.com", False),
    ("2001:db8::/32", "2001:db8::1", True),
    ("2001:db8::/32", "10.0.0.1", False),
])
def test_host_patterns(pattern, host, expected):
    assert parse_host_pattern(pattern).matches(host) is expected


@pytest.mark.parametrize("pattern, message", [
    ("bücher.de", 'use "xn--bcher-kva.de"'),
    ("*.bücher.de", 'use "*.xn--bcher-kva.de"'),
    ("api.*.com", "only a leading"),
    ("api.github.com:443", "put ports under"),
    ("10.0.0.0/33", "neither a host name"),
])
def test_bad_host_patterns_say_how_to_fix_them(pattern, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace(".", r"\.")):
        parse_host_pattern(pattern)


@pytest.mark.parametrize("raw, normalized", [
    ("/repos/a/b", "/repos/a/b"),
    ("/repos/a/../b", "/repos/b"),
    ("/repos/./a", "/repos/a"),
    ("/repos/%2e%2e/admin", "/admin"),
    ("/repos/%2E%2E/admin", "/admin"),
    ("/%7Euser", "/~user"),
    ("/a%20b", "/a%20b"),
    ("/a%3fb", "/a%3Fb"),
    ("/search?q=../../x", "/search"),
    ("/a/b/..", "/a/"),
    ("/", "/"),
])
def test_paths_are_normalised_before_matching(raw, normalized):
    assert normalize_path(raw) == normalized


@pytest.mark.parametrize("raw", [
    "/repos/..%2fadmin", "/repos/%2F", "/a%5cb", "/a\\b", "/..", "/a/../../b", "/%2e%2e/x", "/a%00b", "/a%zz", "*", "",
])
def test_ambiguous_or_climbing_paths_are_refused(raw):
    with pytest.raises(PathRefused):
        normalize_path(raw)


@pytest.mark.parametrize("pattern, path, expected", [
    ("/repos/**", "/repos", True),
    ("/repos/**", "/repos/", True),
    ("/repos/**", "/repos/a/b/c", True),
    ("/repos/**", "/reposx", False),
    ("/repos/**", "/other/repos/a", False),
    ("/search/*", "/search/code", True),
    ("/search/*", "/search/code/x", False),
    ("/search/*", "/search", False),
    ("/user", "/user", True),
    ("/user", "/user/", False),
    ("/a/**/z", "/a/z", True),
    ("/a/**/z", "/a/b/c/z", True),
    ("/v1/*.json", "/v1/list.json", True),
    ("/v1/*.json", "/v1/list.xml", False),
    ("/**", "/", True),
])
def test_path_patterns(pattern, path, expected):
    assert parse_path_pattern(pattern).matches(path) is expected


@pytest.mark.parametrize("pattern", ["repos/**", "/a/**x", "/a?b"])
def test_bad_path_patterns_are_rejected(pattern):
    with pytest.raises(ValueError):
        parse_path_pattern(pattern)


@pytest.mark.parametrize("address, category", [
    ("169.254.169.254", "metadata"),
    ("100.100.100.200", "metadata"),
    ("fd00:ec2::254", "metadata"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("127.0.0.1", "loopback"),
    ("127.255.0.1", "loopback"),
    ("::1", "loopback"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("100.64.0.1", "cgnat"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("255.255.255.255", "reserved"),
    ("fc00::1", "private"),
    ("::ffff:10.0.0.1", "private (embedded in IPv6)"),
    ("::ffff:169.254.169.254", "metadata (embedded in IPv6)"),
    ("64:ff9b::a9fe:a9fe", "metadata (embedded in IPv6)"),
    ("64:ff9b:1::a00:1", "private (embedded in IPv6)"),
    ("2002:7f00:1::1", "loopback (embedded in IPv6)"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private (embedded in IPv6)"),  # Teredo client 10.0.0.1
    ("::127.0.0.1", "loopback (embedded in IPv6)"),
    ("8.8.8.8", None),
    ("172.32.0.1", None),
    ("2606:4700::1111", None),
    ("::ffff:8.8.8.8", None),
])
def test_ssrf_classification(address, category):
    assert classify(ipaddress.ip_address(address)) == category


def test_teredo_client_address_is_deobfuscated():
    assert str(embedded_ipv4(ipaddress.ip_address("2001:0:4136:e378:8000:63bf:f5ff:fffe"))) == "10.0.0.1"


@pytest.mark.parametrize("address, allow, refused", [
    ("10.20.0.7", ["10.20.0.0/16"], False),
    ("10.21.0.7", ["10.20.0.0/16"], True),
    ("::ffff:10.20.0.7", ["10.20.0.0/16"], False),
    ("169.254.169.254", [], True),
    ("8.8.8.8", [], False),
])
def test_ssrf_allow_exceptions(address, allow, refused):
    nets = [ipaddress.ip_network(a) for a in allow]
    assert (refusal_reason(ipaddress.ip_address(address), deny_private=True, allow=nets) is not None) is refused


def test_ssrf_check_can_be_switched_off():
    assert refusal_reason(ipaddress.ip_address("10.0.0.1"), deny_private=False, allow=[]) is None


@pytest.mark.parametrize("text, size", [
    ("10MiB", 10 * 1024**2), ("512KB", 512_000), ("1GiB", 1024**3), ("100", 100), (2048, 2048),
    ("1.5MiB", int(1.5 * 1024**2)), ("none", None), ("10 MiB", 10 * 1024**2), ("5B", 5),
])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["10XB", "-1", "MiB", True, -5])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("text, seconds", [
    ("100ms", 0.1), ("30s", 30.0), ("1m", 60.0), ("2h", 7200.0), ("90d", 90 * 86400.0), (5, 5.0), ("1.5s", 1.5),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["0s", "1w", "soon", -1, False])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)
