"""AuthorizationPolicy on a proxyless gRPC server's listener (gRFC A41): the RBAC filters are
the sidecar's translation laid out for gRPC (DENY then ALLOW, distinct names, no AUDIT), and
what gRPC cannot evaluate fails closed with a reason."""

from __future__ import annotations

from typing import Any

import pytest
from grpc_server_kit import NAME, mesh, server
from xds_testkit import to_dict

from sidemesh.xds import grpc_gen_authz, rbac
from sidemesh.xds.grpc_gen_inbound import server_listener
from sidemesh.xds.model import MeshSnapshot

CLIENT = "cluster.local/ns/demo/sa/client"
ANY = {"any": True}


def policy(name: str, action: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {"selector": {"matchLabels": {"app": "who"}}, "action": action,
                     "rules": list(rules)}}  # fmt: skip


def http_filters(snapshot: MeshSnapshot) -> list[dict[str, Any]]:
    listener = to_dict(server_listener(NAME, snapshot, server()))
    found: list[dict[str, Any]] = listener["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"
    ]
    return found


FROM_CLIENT = {"from": [{"source": {"principals": [CLIENT]}}]}
TO_METHOD = {"to": [{"operation": {"paths": ["/sidemesh.test.Who/Am"], "methods": ["POST"]}}]}


def test_no_policy_no_rbac() -> None:
    assert [f["name"] for f in http_filters(mesh())] == ["envoy.filters.http.router"]


def test_deny_comes_before_allow_and_every_filter_has_its_own_name() -> None:
    snapshot = mesh(policy("allow", "ALLOW", FROM_CLIENT), policy("deny", "DENY", TO_METHOD),
                    policy("audit", "AUDIT", TO_METHOD))  # fmt: skip
    filters = http_filters(snapshot)
    assert [f["name"] for f in filters] == [
        "envoy.filters.http.rbac.DENY", "envoy.filters.http.rbac.ALLOW",
        "envoy.filters.http.router",
    ]  # fmt: skip
    deny, allow = (f["typed_config"]["rules"] for f in filters[:2])
    assert deny["action"] == "DENY" and list(deny["policies"]) == ["ns[demo]-policy[deny]-rule[0]"]
    assert allow["policies"]["ns[demo]-policy[allow]-rule[0]"]["principals"] == [
        {"authenticated": {"principal_name": {"exact": f"spiffe://{CLIENT}"}}}
    ]
    # The same Envoy policies a sidecar gets: one translation, not a fork.
    sidecar = rbac.translate(snapshot.authorization_policies, tcp=False)
    assert {r.name: r.envoy for r in sidecar if r.action == "ALLOW"} == {
        "ns[demo]-policy[allow]-rule[0]": allow["policies"]["ns[demo]-policy[allow]-rule[0]"]
    }
    authz = grpc_gen_authz.grpc_authz(snapshot, "demo", {"app": "who"})
    assert any("AUDIT policies are left out" in note for note in authz.notes)


def test_an_allow_policy_without_usable_rules_allows_nothing() -> None:
    filters = http_filters(mesh(policy("nothing", "ALLOW")))
    assert filters[0]["name"] == "envoy.filters.http.rbac.ALLOW"
    assert filters[0]["typed_config"]["rules"] == {}  # ALLOW (the default) with no policy


JWT_SOURCE = {"from": [{"source": {"requestPrincipals": ["https://issuer/alice"]}}]}
NOT_JWT_SOURCE = {"from": [{"source": {"notRequestPrincipals": ["*"]}}]}
JWT_WHEN = {"when": [{"key": "request.auth.claims[groups]", "values": ["admin"]}]}
SNI_WHEN = {"when": [{"key": "connection.sni", "values": ["who.example"]}]}
GRPC_HEADER = {"when": [{"key": "request.headers[grpc-timeout]", "values": ["1S"]}]}
TE_HEADER = {"when": [{"key": "request.headers[te]", "notValues": ["trailers"]}]}
SCHEME_HEADER = {"when": [{"key": "request.headers[:scheme]", "values": ["https"]}]}
PLAIN_HEADER = {"when": [{"key": "request.headers[x-team]", "values": ["blue"]}]}


@pytest.mark.parametrize("rule", [JWT_SOURCE, NOT_JWT_SOURCE, JWT_WHEN, SNI_WHEN, GRPC_HEADER,
                                  TE_HEADER, SCHEME_HEADER])  # fmt: skip
def test_what_grpc_cannot_evaluate_fails_closed_with_a_reason(rule: dict[str, Any]) -> None:
    allow = mesh(policy("allow", "ALLOW", rule))
    filters = http_filters(allow)
    assert filters[0]["typed_config"]["rules"] == {}  # the rule is dropped: allows nothing
    notes = grpc_gen_authz.grpc_authz(allow, "demo", {"app": "who"}).notes
    assert len(notes) == 1 and "proxyless gRPC server" in notes[0] and "allows nothing" in notes[0]
    deny = http_filters(mesh(policy("deny", "DENY", rule)))
    envoy = deny[0]["typed_config"]["rules"]["policies"]["ns[demo]-policy[deny]-rule[0]"]
    assert envoy == {"permissions": [ANY], "principals": [ANY]}  # denies every call


def test_a_sidecar_still_gets_jwt_and_sni_rules() -> None:
    for rule in (JWT_SOURCE, JWT_WHEN, SNI_WHEN, TE_HEADER):
        snapshot = mesh(policy("allow", "ALLOW", rule))
        (translated,) = rbac.translate(snapshot.authorization_policies, tcp=False)
        assert translated.envoy is not None and not translated.note


def test_plain_headers_paths_methods_and_ips_pass_through() -> None:
    rule = {**PLAIN_HEADER, **TO_METHOD,
            "from": [{"source": {"ipBlocks": ["10.0.0.0/8"], "namespaces": ["demo"]}}]}  # fmt: skip
    filters = http_filters(mesh(policy("allow", "ALLOW", rule)))
    assert list(filters[0]["typed_config"]["rules"]["policies"]) == [
        "ns[demo]-policy[allow]-rule[0]"
    ]
    assert not grpc_gen_authz.grpc_authz(mesh(policy("allow", "ALLOW", rule)), "demo",
                                         {"app": "who"}).notes  # fmt: skip


def test_custom_denies_what_it_matches() -> None:
    custom = policy("ext", "CUSTOM", TO_METHOD)
    custom["spec"]["provider"] = {"name": "opa"}
    filters = http_filters(mesh(custom))
    assert filters[0]["name"] == "envoy.filters.http.rbac.DENY"
    assert list(filters[0]["typed_config"]["rules"]["policies"]) == ["ns[demo]-policy[ext]-rule[0]"]


def test_a_request_authentication_refuses_every_call() -> None:
    authentication = {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
                      "metadata": {"name": "jwt", "namespace": "demo"},
                      "spec": {"selector": {"matchLabels": {"app": "who"}},
                               "jwtRules": [{"issuer": "https://issuer",
                                             "jwksUri": "https://issuer/jwks"}]}}  # fmt: skip
    snapshot = mesh(authentication, policy("allow", "ALLOW", FROM_CLIENT))
    filters = http_filters(snapshot)
    assert [f["name"] for f in filters] == ["envoy.filters.http.rbac.DENY_ALL",
                                            "envoy.filters.http.router"]  # fmt: skip
    assert filters[0]["typed_config"]["rules"] == {}
    notes = grpc_gen_authz.grpc_authz(snapshot, "demo", {"app": "who"}).notes
    assert notes == ("RequestAuthentication demo/jwt: a proxyless gRPC server cannot verify "
                     "JWTs (gRPC has no jwt_authn filter): every call is refused",)  # fmt: skip


def test_policies_of_other_workloads_change_nothing() -> None:
    other = policy("other", "ALLOW", FROM_CLIENT)
    other["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    assert [f["name"] for f in http_filters(mesh(other))] == ["envoy.filters.http.router"]
