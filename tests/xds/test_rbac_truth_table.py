"""AuthorizationPolicy semantics as Envoy would apply the generated RBAC: one row per
(policies, request) → allow/deny, for HTTP and TCP chains (Istio's rules: DENY before ALLOW,
any ALLOW policy denies what no rule allows, an ALLOW without rules allows nothing, HTTP-only
conditions on TCP make ALLOW rules allow nothing and DENY rules deny more)."""

from __future__ import annotations

from typing import Any

import pytest
from rbac_eval import Request, decide

from sidemesh.api import security
from sidemesh.api.networking import Resource
from sidemesh.xds.inbound_policy import inbound_policy
from sidemesh.xds.model import MeshSnapshot

FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"
CLIENT = "spiffe://cluster.local/ns/shop/sa/client"
OTHER_NS = "spiffe://cluster.local/ns/shopping/sa/frontend"


def policy(spec: dict[str, Any], *, name: str = "p", namespace: str = "shop") -> Resource[Any]:
    return security.validate({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                              "metadata": {"name": name, "namespace": namespace},
                              "spec": spec})  # fmt: skip


def allow(*rules: dict[str, Any]) -> Resource[Any]:
    return policy({"rules": list(rules)}, name="allow")


def deny(*rules: dict[str, Any]) -> Resource[Any]:
    return policy({"action": "DENY", "rules": list(rules)}, name="deny")


def to(**operation: list[str]) -> dict[str, Any]:
    return {"to": [{"operation": operation}]}


def source(**fields: list[str]) -> dict[str, Any]:
    return {"from": [{"source": fields}]}


def when(key: str, values: list[str] | None = None,
         not_values: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    condition: dict[str, Any] = {"key": key}
    if values:
        condition["values"] = values
    if not_values:
        condition["notValues"] = not_values
    return {"when": [condition]}


def decision(policies: list[Resource[Any]], request: Request, *, tcp: bool = False) -> str:
    snapshot = MeshSnapshot(version=1, authorization_policies=tuple(policies))
    found = inbound_policy(snapshot, "shop", {"app": "web"})
    return decide(found.network() if tcp else found.http(), request)


JWT = {"iss": "https://issuer.example/realm", "sub": "alice", "groups": ["dev", "admin"],
       "aud": "shop"}  # fmt: skip

ROWS: list[tuple[str, list[Resource[Any]], Request, str]] = [
    ("no policy allows", [], Request(), "allow"),
    ("ALLOW without rules allows nothing", [policy({})], Request(principal=FRONTEND), "deny"),
    ("ALLOW with an empty rule allows all", [allow({})], Request(), "allow"),
    ("DENY GET /admin", [deny(to(methods=["GET"], paths=["/admin"]))],
     Request(path="/admin"), "deny"),
    ("DENY GET /admin leaves /", [deny(to(methods=["GET"], paths=["/admin"]))],
     Request(path="/"), "allow"),
    ("DENY GET /admin leaves POST", [deny(to(methods=["GET"], paths=["/admin"]))],
     Request(path="/admin", method="POST"), "allow"),
    ("path prefix form", [deny(to(paths=["/admin/*"]))], Request(path="/admin/x"), "deny"),
    ("path suffix form", [deny(to(paths=["*.php"]))], Request(path="/a/b.php"), "deny"),
    ("path template {*}", [deny(to(paths=["/api/{*}/keys"]))], Request(path="/api/v1/keys"),
     "deny"),
    ("path template {*} is one segment", [deny(to(paths=["/api/{*}/keys"]))],
     Request(path="/api/v1/x/keys"), "allow"),
    ("path template {**}", [deny(to(paths=["/api/{**}"]))], Request(path="/api/a/b"), "deny"),
    ("notPaths", [allow(to(notPaths=["/private*"]))], Request(path="/private/x"), "deny"),
    ("notPaths other path", [allow(to(notPaths=["/private*"]))], Request(path="/pub"), "allow"),
    ("principal allowed", [allow(source(principals=["cluster.local/ns/shop/sa/frontend"]))],
     Request(principal=FRONTEND), "allow"),
    ("principal refused", [allow(source(principals=["cluster.local/ns/shop/sa/frontend"]))],
     Request(principal=CLIENT), "deny"),
    ("principal needs mTLS", [allow(source(principals=["*"]))], Request(), "deny"),
    ("any principal over mTLS", [allow(source(principals=["*"]))], Request(principal=CLIENT),
     "allow"),
    ("principal suffix form", [allow(source(principals=["*/sa/frontend"]))],
     Request(principal=OTHER_NS), "allow"),
    ("notPrincipals", [allow(source(notPrincipals=["cluster.local/ns/shop/sa/client"]))],
     Request(principal=CLIENT), "deny"),
    ("namespaces", [allow(source(namespaces=["shop"]))], Request(principal=FRONTEND), "allow"),
    ("namespaces exact segment", [allow(source(namespaces=["shop"]))],
     Request(principal=OTHER_NS), "deny"),
    ("namespaces prefix form", [allow(source(namespaces=["shop*"]))],
     Request(principal=OTHER_NS), "allow"),
    ("serviceAccounts ns/sa", [allow(source(serviceAccounts=["shop/frontend"]))],
     Request(principal=FRONTEND), "allow"),
    ("serviceAccounts bare name is the policy's namespace",
     [allow(source(serviceAccounts=["frontend"]))], Request(principal=OTHER_NS), "deny"),
    ("ipBlocks", [allow(source(ipBlocks=["10.0.0.0/24"]))], Request(source_ip="10.0.0.7"),
     "allow"),
    ("ipBlocks outside", [allow(source(ipBlocks=["10.0.0.0/24"]))],
     Request(source_ip="10.0.1.7"), "deny"),
    ("remoteIpBlocks", [deny(source(remoteIpBlocks=["192.0.2.1"]))],
     Request(remote_ip="192.0.2.1"), "deny"),
    ("DENY wins over ALLOW", [allow({}), deny(to(paths=["/admin"]))], Request(path="/admin"),
     "deny"),
    ("two ALLOW policies: union", [allow(to(paths=["/a"])), policy({"rules": [to(paths=["/b"])]},
                                                                 name="b")],
     Request(path="/b"), "allow"),
    ("ports", [allow(to(ports=["9090"]))], Request(port=8080), "deny"),
    ("methods", [allow(to(methods=["GET", "HEAD"]))], Request(method="HEAD"), "allow"),
    ("hosts exact with a port", [allow(to(hosts=["web.shop"]))], Request(host="web.shop:80"),
     "allow"),
    ("hosts case-insensitive", [allow(to(hosts=["WEB.shop"]))], Request(host="web.SHOP"),
     "allow"),
    ("hosts other", [allow(to(hosts=["web.shop"]))], Request(host="web.shopping"), "deny"),
    ("from AND to", [allow({**source(principals=["cluster.local/ns/shop/sa/frontend"]),
                            **to(paths=["/x"])})], Request(principal=FRONTEND, path="/y"), "deny"),
    ("from: any of several sources", [allow({"from": [
        {"source": {"principals": ["cluster.local/ns/shop/sa/client"]}},
        {"source": {"ipBlocks": ["10.0.0.0/24"]}}]})], Request(source_ip="10.0.0.3"), "allow"),
    ("from: none of several sources", [allow({"from": [
        {"source": {"principals": ["cluster.local/ns/shop/sa/client"]}},
        {"source": {"ipBlocks": ["10.0.0.0/24"]}}]})], Request(source_ip="10.0.1.3"), "deny"),
    ("to: any of several operations", [allow({"to": [{"operation": {"paths": ["/a"]}},
                                                     {"operation": {"methods": ["POST"]}}]})],
     Request(method="POST", path="/b"), "allow"),
    ("to: none of several operations", [allow({"to": [{"operation": {"paths": ["/a"]}},
                                                      {"operation": {"methods": ["POST"]}}]})],
     Request(path="/b"), "deny"),
    ("requestPrincipals any token", [allow(source(requestPrincipals=["*"]))], Request(), "deny"),
    ("requestPrincipals with token", [allow(source(requestPrincipals=["*"]))],
     Request(jwt=JWT), "allow"),
    ("requestPrincipal exact, issuer with slashes",
     [allow(source(requestPrincipals=["https://issuer.example/realm/alice"]))],
     Request(jwt=JWT), "allow"),
    ("requestPrincipal exact, other subject",
     [allow(source(requestPrincipals=["https://issuer.example/realm/alice"]))],
     Request(jwt={**JWT, "sub": "bob"}), "deny"),
    ("requestPrincipal prefix over the issuer",
     [allow(source(requestPrincipals=["https://issuer.example/*"]))], Request(jwt=JWT), "allow"),
    ("requestPrincipal prefix into the subject",
     [allow(source(requestPrincipals=["https://issuer.example/realm/al*"]))],
     Request(jwt=JWT), "allow"),
    ("requestPrincipal suffix", [allow(source(requestPrincipals=["*/alice"]))],
     Request(jwt=JWT), "allow"),
    ("requestPrincipal suffix into the issuer",
     [allow(source(requestPrincipals=["*realm/alice"]))], Request(jwt=JWT), "allow"),
    ("requestPrincipal suffix, other subject", [allow(source(requestPrincipals=["*/alice"]))],
     Request(jwt={**JWT, "sub": "bob"}), "deny"),
    ("claims list contains", [allow(when("request.auth.claims[groups]", ["admin"]))],
     Request(jwt=JWT), "allow"),
    ("claims string equals", [allow(when("request.auth.claims[aud]", ["shop"]))],
     Request(jwt=JWT), "allow"),
    ("claims absent", [allow(when("request.auth.claims[groups]", ["admin"]))], Request(),
     "deny"),
    ("claims notValues", [deny(when("request.auth.claims[groups]", not_values=["admin"]))],
     Request(jwt={**JWT, "groups": ["dev"]}), "deny"),
    ("nested claims", [allow(when("request.auth.claims[realm][role]", ["ops"]))],
     Request(jwt={**JWT, "realm": {"role": "ops"}}), "allow"),
    ("audiences", [allow(when("request.auth.audiences", ["shop"]))], Request(jwt=JWT), "allow"),
    ("request header", [allow(when("request.headers[x-tenant]", ["a*"]))],
     Request(headers={"x-tenant": "acme"}), "allow"),
    ("request header absent", [allow(when("request.headers[x-tenant]", ["*"]))], Request(),
     "deny"),
    ("source.ip notValues", [allow(when("source.ip", not_values=["10.0.0.1"]))], Request(),
     "deny"),
    ("destination.port", [deny(when("destination.port", ["8080"]))], Request(port=8080), "deny"),
    ("source.namespace", [allow(when("source.namespace", ["shop"]))],
     Request(principal=FRONTEND), "allow"),
    ("source.principal", [allow(when("source.principal", ["cluster.local/ns/shop/sa/client"]))],
     Request(principal=FRONTEND), "deny"),
    ("connection.sni", [allow(when("connection.sni", ["*.shop"]))], Request(sni="web.shop"),
     "allow"),
    ("CUSTOM (no provider here) denies what it matches",
     [policy({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [to(paths=["/x"])]})],
     Request(path="/x"), "deny"),
    ("CUSTOM leaves the rest", [policy({"action": "CUSTOM", "provider": {"name": "ext"},
                                        "rules": [to(paths=["/x"])]})],
     Request(path="/y"), "allow"),
    ("AUDIT never refuses", [policy({"action": "AUDIT", "rules": [{}]})], Request(), "allow"),
    ("untranslatable ALLOW rule allows nothing",
     [allow(when("experimental.envoy.filters.a.b[c]", ["x"]))], Request(), "deny"),
    ("untranslatable DENY rule denies everything",
     [deny(when("experimental.envoy.filters.a.b[c]", ["x"]))], Request(), "deny"),
]  # fmt: skip


@pytest.mark.parametrize(("policies", "request_", "expected"), [row[1:] for row in ROWS],
                         ids=[row[0] for row in ROWS])  # fmt: skip
def test_http(policies: list[Resource[Any]], request_: Request, expected: str) -> None:
    assert decision(policies, request_) == expected


TCP_ROWS: list[tuple[str, list[Resource[Any]], Request, str]] = [
    ("principal ALLOW works on TCP",
     [allow(source(principals=["cluster.local/ns/shop/sa/frontend"]))],
     Request(principal=FRONTEND), "allow"),
    ("principal ALLOW refuses others on TCP",
     [allow(source(principals=["cluster.local/ns/shop/sa/frontend"]))],
     Request(principal=CLIENT), "deny"),
    ("ALLOW with an HTTP-only field allows nothing on TCP", [allow(to(paths=["/x"]))],
     Request(path="/x"), "deny"),
    ("ALLOW mixing ports and paths allows nothing on TCP",
     [allow(to(ports=["9090"], paths=["/x"]))], Request(port=9090), "deny"),
    ("DENY with only HTTP fields denies every connection", [deny(to(paths=["/admin"]))],
     Request(port=9090), "deny"),
    ("DENY narrowed by a port leaves other ports", [deny(to(ports=["8080"], paths=["/admin"]))],
     Request(port=9090), "allow"),
    ("DENY narrowed by a port denies that port", [deny(to(ports=["8080"], paths=["/admin"]))],
     Request(port=8080, path="/"), "deny"),
    ("requestPrincipals on TCP allow nothing", [allow(source(requestPrincipals=["*"]))],
     Request(jwt=JWT), "deny"),
    ("ports ALLOW on TCP", [allow(to(ports=["9090"]))], Request(port=9090), "allow"),
]  # fmt: skip


@pytest.mark.parametrize(("policies", "request_", "expected"), [row[1:] for row in TCP_ROWS],
                         ids=[row[0] for row in TCP_ROWS])  # fmt: skip
def test_tcp(policies: list[Resource[Any]], request_: Request, expected: str) -> None:
    assert decision(policies, request_, tcp=True) == expected


def test_which_policies_apply() -> None:
    def names(namespace: str, labels: dict[str, str]) -> tuple[str, ...]:
        snapshot = MeshSnapshot(version=1, authorization_policies=(
            policy({}, name="namespace-wide"),
            policy({"selector": {"matchLabels": {"app": "web"}}}, name="web-only"),
            policy({"selector": {"matchLabels": {"app": "db"}}}, name="db-only"),
            policy({}, name="mesh-wide", namespace="istio-system"),
            policy({"selector": {"matchLabels": {"app": "web"}}}, name="mesh-web",
                   namespace="istio-system"),
            policy({"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io",
                                    "name": "gw"}]}, name="gateway-only"),
            policy({}, name="elsewhere", namespace="other"),
        ))  # fmt: skip
        return inbound_policy(snapshot, namespace, labels).policies

    assert names("shop", {"app": "web"}) == (
        "AuthorizationPolicy istio-system/mesh-web (ALLOW)",
        "AuthorizationPolicy istio-system/mesh-wide (ALLOW)",
        "AuthorizationPolicy shop/namespace-wide (ALLOW)",
        "AuthorizationPolicy shop/web-only (ALLOW)",
    )
    assert names("third", {"app": "db"}) == ("AuthorizationPolicy istio-system/mesh-wide (ALLOW)",)


def test_notes_say_what_was_made_stricter() -> None:
    snapshot = MeshSnapshot(version=1, authorization_policies=(
        allow(to(paths=["/x"])), deny(when("experimental.envoy.filters.a.b[c]", ["x"])),
    ))  # fmt: skip
    notes = inbound_policy(snapshot, "shop", {}).notes
    assert any("ns[shop]-policy[allow]-rule[0] on TCP ports" in n and "allows nothing" in n
               for n in notes), notes  # fmt: skip
    assert any("ns[shop]-policy[deny]-rule[0]" in n and "denies every request" in n
               for n in notes), notes  # fmt: skip


def test_an_invalid_policy_that_got_in_denies_instead_of_vanishing() -> None:
    """Skipping an invalid ALLOW (or DENY) policy would open what it closed: the registry
    keeps it as a DENY of everything for the workloads it selects, its reason logged."""
    from sidemesh.api.config import MeshConfig
    from sidemesh.xds.builder import build_snapshot

    broken = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "broken", "namespace": "shop"},
              "spec": {"selector": {"matchLabels": {"app": "web"}},
                       "rules": [{"from": [{"source": {"principals": [""]}}]}]}}  # fmt: skip
    errors: list[str] = []
    snapshot = build_snapshot({("AuthorizationPolicy", "shop", "broken"): broken},
                              mesh=MeshConfig(), version=1, errors=errors)  # fmt: skip
    assert "until fixed it denies every request" in errors[0]
    web = inbound_policy(snapshot, "shop", {"app": "web"})
    assert decide(web.http(), Request(principal=FRONTEND)) == "deny"
    assert decide(web.network(), Request(principal=FRONTEND)) == "deny"
    assert inbound_policy(snapshot, "shop", {"app": "db"}).http() == []  # not selected
