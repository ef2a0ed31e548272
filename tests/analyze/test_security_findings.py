"""`sidemesh analyze` on AuthorizationPolicies and RequestAuthentications: a policy whose
selector matches no pod (IST0127), a principal outside the mesh's trust domain (SM0014), a
stored policy the validator refuses (IST0106); healthy configuration is silent."""

from __future__ import annotations

from typing import Any

from sidemesh.analyze import findings as codes
from sidemesh.analyze.security_policies import SecurityConfig, security_findings


def _pod(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels}}  # fmt: skip


def _policy(name: str, namespace: str, spec: dict[str, Any],
            kind: str = "AuthorizationPolicy") -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": "security.istio.io/v1", "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


PODS = [_pod("web-0", "shop", app="web"), _pod("db-0", "data", app="db")]


def _codes(config: SecurityConfig, **options: Any) -> list[tuple[str, str]]:
    found = security_findings(config, pods=PODS, **options)
    return sorted((f.code.code, f.object) for f in found)


def test_healthy_configuration_is_silent() -> None:
    config = SecurityConfig(
        authorization_policies=(
            _policy("web", "shop", {"selector": {"matchLabels": {"app": "web"}}, "rules": [
                {"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/frontend",
                                                     "*/sa/admin", "*"]}}]}]}),
            _policy("mesh-db", "istio-system", {"selector": {"matchLabels": {"app": "db"}}}),
            _policy("namespace-wide", "empty", {}),
        ),
        request_authentications=(
            _policy("jwt", "shop", {"selector": {"matchLabels": {"app": "web"}},
                                    "jwtRules": [{"issuer": "https://issuer"}]},
                    kind="RequestAuthentication"),
        ),
    )  # fmt: skip
    assert _codes(config) == []


def test_each_problem_fires_its_code() -> None:
    config = SecurityConfig(
        authorization_policies=(
            _policy("gone", "shop", {"selector": {"matchLabels": {"app": "gone"}}}),
            _policy("mesh-gone", "istio-system", {"selector": {"matchLabels": {"app": "x"}}}),
            _policy("foreign", "shop", {"rules": [
                {"from": [{"source": {"notPrincipals": ["other.domain/ns/shop/sa/a"]}}]},
                {"when": [{"key": "source.principal", "values": ["td2/ns/x/*"]}]}]}),
            _policy("broken", "shop", {"rules": [{"to": []}]}),
        ),
        request_authentications=(
            _policy("jwt-gone", "shop", {"selector": {"matchLabels": {"app": "api"}}},
                    kind="RequestAuthentication"),
        ),
    )  # fmt: skip
    assert _codes(config) == [
        ("IST0106", "AuthorizationPolicy shop/broken"),
        ("IST0127", "AuthorizationPolicy istio-system/mesh-gone"),
        ("IST0127", "AuthorizationPolicy shop/gone"),
        ("IST0127", "RequestAuthentication shop/jwt-gone"),
        ("SM0014", "AuthorizationPolicy shop/foreign"),
        ("SM0014", "AuthorizationPolicy shop/foreign"),
    ]
    (invalid,) = [f for f in security_findings(config, pods=PODS)
                  if f.code == codes.SCHEMA_VALIDATION_ERROR]  # fmt: skip
    assert invalid.fix.endswith("meanwhile the control plane denies every request to the "
                                "workloads it selects")  # fmt: skip
    messages = [f.message for f in security_findings(config, pods=PODS)
                if f.code == codes.PRINCIPAL_OUTSIDE_TRUST_DOMAIN]  # fmt: skip
    assert messages[0].startswith("spec.rules[0].from[0].source.notPrincipals "
                                  "'other.domain/ns/shop/sa/a' is in trust domain "
                                  "'other.domain'")  # fmt: skip


def test_no_workload_is_only_said_where_pods_were_loaded() -> None:
    config = SecurityConfig(authorization_policies=(
        _policy("gone", "shop", {"selector": {"matchLabels": {"app": "gone"}}}),
        _policy("mesh-gone", "istio-system", {"selector": {"matchLabels": {"app": "x"}}}),
    ))  # fmt: skip
    assert _codes(config, namespaces={"shop"}, pod_namespaces={"shop"}) == [
        ("IST0127", "AuthorizationPolicy shop/gone"),
    ]
    assert _codes(config, namespaces={"data"}, pod_namespaces={"data"}) == []


def test_another_trust_domain_is_the_mesh() -> None:
    config = SecurityConfig(authorization_policies=(
        _policy("p", "shop", {"rules": [{"from": [{"source": {
            "principals": ["example.org/ns/shop/sa/a"]}}]}]}),
    ))  # fmt: skip
    assert _codes(config, trust_domain="example.org") == []


def test_analyze_reports_security_next_to_injection() -> None:
    from cluster_fixtures import SYSTEM, cluster, namespace, pod, revision

    from sidemesh.analyze.analyzers import analyze

    snapshot = cluster(*SYSTEM, revision("asm-1"), namespace("shop", rev="asm-1"),
                       pod("shop", "web-0", labels={"app": "web"}))  # fmt: skip
    gone = _policy("gone", "shop", {"selector": {"matchLabels": {"app": "gone"}}})
    config = SecurityConfig(authorization_policies=(gone,))
    found = analyze(snapshot, namespaces={"shop"}, security=config)
    found_codes = [(f.code.code, f.object) for f in found]
    assert ("IST0127", "AuthorizationPolicy shop/gone") in found_codes
