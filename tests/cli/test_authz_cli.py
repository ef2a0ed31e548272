"""`sidemesh authz check POD -f FILES` (like `istioctl x authz check`) and `sidemesh validate`
on the security kinds: the policies that apply to a pod, the rules they became, what was made
stricter and why, and invalid policies skipped with the field named."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sidemesh.cli.main import cli

OBJECTS = """\
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec: {serviceAccountName: web, containers: [{name: app, image: app}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules: [{to: [{operation: {methods: [GET], paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: frontend-only, namespace: shop}
spec:
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-only, namespace: shop}
spec: {selector: {matchLabels: {app: db}}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: istio-system}
spec: {jwtRules: [{issuer: https://issuer.example, jwksUri: https://issuer.example/jwks}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: shop}
spec: {rules: [{from: []}]}
"""


def _run(tmp_path: Path, *args: str) -> tuple[int, str]:
    (tmp_path / "objects.yaml").write_text(OBJECTS)
    result = CliRunner().invoke(cli, ["authz", "check", *args, "-f", str(tmp_path)])
    return result.exit_code, result.output


def test_the_policies_of_a_pod_and_their_rules(tmp_path: Path) -> None:
    code, output = _run(tmp_path, "web-0.shop", "-o", "json")
    assert code == 0, output
    report = json.loads(output)
    assert report["pod"] == "shop/web-0"
    assert report["policies"] == [
        "AuthorizationPolicy shop/broken (INVALID: DENY all)",  # fails closed
        "AuthorizationPolicy shop/deny-admin (DENY)",
        "AuthorizationPolicy shop/frontend-only (ALLOW)",
        "RequestAuthentication istio-system/jwt",
    ]
    assert [(r["action"], r["name"]) for r in report["rules"]] == [
        ("DENY", "ns[shop]-policy[broken]-rule[0]"),
        ("DENY", "ns[shop]-policy[deny-admin]-rule[0]"),
        ("ALLOW", "ns[shop]-policy[frontend-only]-rule[0]"),
    ]
    assert report["rules"][0]["envoy"] == {"permissions": [{"any": True}],
                                           "principals": [{"any": True}]}  # fmt: skip
    principal = report["rules"][2]["envoy"]["principals"][0]
    assert principal == {"authenticated": {"principal_name": {
        "exact": "spiffe://cluster.local/ns/shop/sa/frontend"}}}  # fmt: skip
    assert any("deny-admin]-rule[0] on TCP ports" in n for n in report["notes"]), report["notes"]
    assert any("JWKS of 'https://issuer.example/jwks' is not available" in n
               for n in report["notes"]), report["notes"]  # fmt: skip
    assert len(report["skipped"]) == 1
    assert "shop/broken: spec.rules[0].from: must not be empty" in report["skipped"][0]
    assert "denies every request" in report["skipped"][0]
    assert any("shop/broken is invalid: it denies every request" in n for n in report["notes"])


def test_the_table(tmp_path: Path) -> None:
    code, output = _run(tmp_path, "web-0", "-n", "shop")
    assert code == 0, output
    assert "Applied policies:\n  AuthorizationPolicy shop/broken (INVALID: DENY all)\n" in output
    assert "DENY  ns[shop]-policy[deny-admin]-rule[0]: {" in output
    assert "Skipped (invalid):" in output


def test_a_pod_without_policies(tmp_path: Path) -> None:
    (tmp_path / "objects.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lone, namespace: other}\n"
    )
    result = CliRunner().invoke(cli, ["authz", "check", "lone.other", "-f", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "every request is allowed" in result.output


def test_an_unknown_pod_fails(tmp_path: Path) -> None:
    code, output = _run(tmp_path, "nope.shop")
    assert code == 1
    assert "pod shop/nope is not in the given objects" in output


def test_validate_names_the_field_of_a_malformed_policy(tmp_path: Path) -> None:
    (tmp_path / "objects.yaml").write_text(OBJECTS)
    result = CliRunner().invoke(cli, ["validate", "-f", str(tmp_path / "objects.yaml")])
    assert result.exit_code == 1
    assert "AuthorizationPolicy shop/deny-admin: validation succeed" in result.output
    assert "RequestAuthentication istio-system/jwt: validation succeed" in result.output
    assert "AuthorizationPolicy shop/broken: spec.rules[0].from: must not be empty" in (
        result.output)  # fmt: skip


GRPC_SERVER = """\
---
apiVersion: v1
kind: Pod
metadata:
  name: greeter-0
  namespace: shop
  labels: {app: web}
  annotations: {inject.istio.io/templates: grpc-agent}
spec: {serviceAccountName: web, containers: [{name: app, image: app}]}
"""


def test_a_proxyless_grpc_server_shows_the_filters_the_server_applies(tmp_path: Path) -> None:
    """No Envoy: the gRPC server's own RBAC filters (DENY then ALLOW, one name each), and the
    RequestAuthentication that selects it refuses every call (gRPC cannot verify JWTs)."""
    (tmp_path / "objects.yaml").write_text(OBJECTS + GRPC_SERVER)
    runner = CliRunner()
    result = runner.invoke(cli, ["authz", "check", "greeter-0.shop", "-o", "json",
                                 "-f", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["proxy"] == "proxyless gRPC"
    # the mesh-wide RequestAuthentication selects it: one filter that allows nothing
    assert [r["name"] for r in report["rules"]] == ["envoy.filters.http.rbac.DENY_ALL"]
    assert report["rules"][0]["rbac"] == {"action": "ALLOW", "policies": {}}
    assert any("cannot verify JWTs" in note for note in report["notes"])
    text = runner.invoke(cli, ["authz", "check", "greeter-0.shop", "-f", str(tmp_path)]).output
    assert "Pod shop/greeter-0 (proxyless gRPC)" in text
    assert "Proxyless gRPC server: no Envoy" in text


def test_without_a_request_authentication_the_grpc_server_gets_deny_then_allow(
    tmp_path: Path,
) -> None:
    documents = OBJECTS.split("\n---\n")
    objects = "\n---\n".join(d for d in documents if "RequestAuthentication" not in d)
    (tmp_path / "objects.yaml").write_text(objects + GRPC_SERVER)
    result = CliRunner().invoke(cli, ["authz", "check", "greeter-0.shop", "-o", "json",
                                      "-f", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [r["name"] for r in report["rules"]] == [
        "envoy.filters.http.rbac.DENY", "envoy.filters.http.rbac.ALLOW"]  # fmt: skip
    assert [r["rbac"]["action"] for r in report["rules"]] == ["DENY", "ALLOW"]
    sidecar = CliRunner().invoke(cli, ["authz", "check", "web-0.shop", "-o", "json",
                                       "-f", str(tmp_path)])  # fmt: skip
    assert json.loads(sidecar.output)["proxy"] == "sidecar"
