"""Regexes in VirtualServices are checked as Envoy compiles them (`api.networking.re2_syntax`):
RE2 syntax, which refuses constructs Python's `re` accepts, and Envoy's RE2 program-size limit.
A table of verdicts (Istio's where Istio's Go RE2 has a say), and the real Envoy agreeing with
every verdict, so a pattern validation lets through is never a NACK."""

from __future__ import annotations

import importlib.resources
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sidemesh.api.envoy_runtime import layered_runtime
from sidemesh.api.networking import ValidationError, validate
from sidemesh.api.networking.re2_syntax import ENVOY_MAX_PROGRAM_SIZE, regex_problem

ENVOY = str(importlib.resources.files("envoy") / "_bin" / "envoy")

# pattern, accepted, what the refusal says. Istio (Go's regexp, RE2 syntax) gives the same
# verdict for each, except the program size, which Istio approximates by length (1024).
CASES: list[tuple[str, bool, str]] = [
    ("/api/v[0-9]+/users/[^/]+", True, ""),
    ("(?i)^/Reviews/.*$", True, ""),  # flags
    ("(?P<version>v[12])", True, ""),  # named group, Python style
    (r"\d{3}-\pL+", True, ""),  # Perl and Unicode classes
    ("[[:alpha:]]+", True, ""),  # POSIX class
    ("[a-z]{3,20}", True, ""),  # program size 41
    (r"\pL+-\pN+", True, ""),  # Unicode classes: small in Envoy's RE2 (the binding: 1400+)
    ("[^/]+/.*/[^/]+/.*/[^/]+/.*/[^/]+", True, ""),
    ("[a-z0-9]{1,63}", True, ""),  # program size 192: above Envoy's default 100, as Istio raises it
    (r"(a)\1", False, "invalid escape sequence"),  # backreference: `re` accepts it
    ("foo(?=bar)", False, "invalid perl operator: (?="),  # lookahead
    ("foo(?!bar)", False, "invalid perl operator: (?!"),  # negative lookahead
    ("(?<=foo)bar", False, "invalid perl operator: (?<"),  # lookbehind
    ("(?<!foo)bar", False, "invalid perl operator: (?<"),  # negative lookbehind
    ("(?>foo)", False, "invalid perl operator: (?>"),  # atomic group
    ("a++", False, "bad repetition operator"),  # possessive repeat
    ("a{1001}", False, "invalid repetition size"),  # RE2 caps a repeat at 1000
    (r"\Z", False, "invalid escape sequence"),
    ("(unclosed", False, "missing )"),
    ("*", False, "no argument for repetition operator"),
    ("a{2,1000}", True, ""),  # program size 2002
    ("[a-z0-9]{1000}" * 17, False, "RE2 program size 34004 > 32768"),  # our bootstrap's limit
]


def _virtual_service(regex: str) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {"hosts": ["web"], "http": [{
                "match": [{"uri": {"regex": regex}}],
                "route": [{"destination": {"host": "web"}}]}]}}  # fmt: skip


@pytest.mark.parametrize(("pattern", "accepted", "says"), CASES)
def test_regex_verdicts(pattern: str, accepted: bool, says: str) -> None:
    document = _virtual_service(pattern)
    if accepted:
        validate(document)
        return
    with pytest.raises(ValidationError) as raised:
        validate(document)
    assert [issue.path for issue in raised.value.issues] == ["spec.http[0].match[0].uri.regex"]
    assert says in str(raised.value)


def test_python_re_accepts_what_re2_refuses() -> None:
    """Why `re` was not enough: each of these compiles in Python and is refused here."""
    for pattern in (r"(a)\1", "foo(?=bar)", "(?<=foo)bar", "(?>foo)", "a++", r"\Z"):
        re.compile(pattern)
        assert regex_problem(pattern) is not None


def test_the_program_size_limit_is_the_one_our_bootstrap_sets() -> None:
    """Validation checks the limit every sidemesh Envoy runs with (the agent's bootstrap takes
    its `layered_runtime` from the same place: tests/agent/golden/bootstrap.json shows it)."""
    layers = layered_runtime()["layers"]
    static = next(layer["static_layer"] for layer in layers if "static_layer" in layer)
    assert static["re2.max_program_size.error_level"] == ENVOY_MAX_PROGRAM_SIZE == 32768
    assert regex_problem("a{2,1000}", max_program_size=100) is not None


def test_uri_regex_rewrite_match_is_checked_too() -> None:
    document = _virtual_service("/a")
    document["spec"]["http"][0]["rewrite"] = {"uriRegexRewrite": {"match": "(?=x)", "rewrite": "y"}}
    with pytest.raises(ValidationError, match="invalid perl operator"):
        validate(document)


def _envoy_accepts(directory: Path, regex: str) -> tuple[bool, str]:
    """`envoy --mode validate` on a route whose path matches `regex`: Envoy's own compile."""
    route_config = {
        "virtual_hosts": [
            {
                "name": "v",
                "domains": ["*"],
                "routes": [
                    {"match": {"safe_regex": {"regex": regex}}, "direct_response": {"status": 200}}
                ],
            }
        ]
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "check", "route_config": route_config,
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }  # fmt: skip
    config = {"layered_runtime": layered_runtime(), "static_resources": {"listeners": [{
        "name": "check",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": manager}]}],
    }]}}  # fmt: skip
    path = directory / "envoy.json"
    path.write_text(json.dumps(config))
    done = subprocess.run([ENVOY, "--mode", "validate", "-c", str(path), "-l", "critical"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    return done.returncode == 0, done.stdout + done.stderr


def test_envoy_agrees_with_every_verdict(tmp_path: Path) -> None:
    """The real Envoy compiles each pattern of the table: what validation accepts, Envoy
    accepts; what it refuses, Envoy refuses (the same RE2, the same program-size limit)."""
    disagreements = []
    for pattern, accepted, _ in CASES:
        envoy_accepts, output = _envoy_accepts(tmp_path, pattern)
        if envoy_accepts != accepted:
            disagreements.append((pattern, accepted, output[-300:]))
    assert disagreements == []
