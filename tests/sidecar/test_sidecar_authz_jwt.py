"""RequestAuthentication + AuthorizationPolicy enforced by the backend's real Envoy: a request
without a token passes where no rule requires one and is refused (403) where
`requestPrincipals: ["*"]` is; a forged or expired token is refused (401) everywhere; a
claims-based rule lets only the `admin` group in; an issuer given by `jwksUri` has its keys
fetched by the control plane and inlined. The caller is the node (plaintext, PERMISSIVE), so no
client pod is needed."""

from __future__ import annotations

import base64
import http.client
import json
import os
import sys
import time
from typing import Any

import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from mesh_kit import BACKEND, NODE_IP, MeshKit, start_pods
from sidecar_kubelet import HTTP_PORT, NAMESPACE
from sidecar_netns import http_request, in_netns, wait_until

ISSUER = "https://issuer.example"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FORGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
# The second issuer publishes its keys over HTTP on the node, where the control plane runs.
FETCHED_ISSUER = "https://fetched.example"
FETCHED_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS_PORT = 18080


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _number(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _jwks(key: rsa.RSAPrivateKey = KEY) -> str:
    numbers = key.public_key().public_numbers()
    return json.dumps({"keys": [{"kty": "RSA", "kid": "test", "alg": "RS256", "use": "sig",
                                 "n": _number(numbers.n), "e": _number(numbers.e)}]})  # fmt: skip


def _token(claims: dict[str, Any], *, key: rsa.RSAPrivateKey = KEY, issuer: str = ISSUER) -> str:
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "test"}).encode())
    payload = _b64(json.dumps({"iss": issuer, "sub": "alice", "exp": int(time.time()) + 3600,
                               **claims}).encode())  # fmt: skip
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64(signature)}"


def _write(kit: MeshKit, documents: list[dict[str, Any]]) -> None:
    path = kit.registry_dir / "jwt-policies.yaml"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(yaml.safe_dump_all(documents))
    os.replace(temporary, path)


def _get(kit: MeshKit, ip: str, path: str, token: str | None = None) -> tuple[int, str]:
    """One request from the node straight to the backend pod: (status, body)."""

    def request() -> tuple[int, str]:
        connection = http.client.HTTPConnection(ip, HTTP_PORT, timeout=5)
        headers = {"Connection": "close"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            connection.close()

    return in_netns(kit.node, request, timeout=15)


def _policies() -> list[dict[str, Any]]:
    selector = {"matchLabels": {"app": "backend"}}
    return [
        {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
         "metadata": {"name": "issuer", "namespace": NAMESPACE},
         "spec": {"selector": selector, "jwtRules": [{
             "issuer": ISSUER, "jwks": _jwks(),
             "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]}]}},
        {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
         "metadata": {"name": "fetched", "namespace": NAMESPACE},
         "spec": {"selector": selector, "jwtRules": [{
             "issuer": FETCHED_ISSUER,
             "jwksUri": f"http://{NODE_IP}:{JWKS_PORT}/jwks.json"}]}},
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "by-token", "namespace": NAMESPACE},
         "spec": {"selector": selector, "rules": [
             {"to": [{"operation": {"paths": ["/public*"]}}]},
             {"from": [{"source": {"requestPrincipals": ["*"]}}],
              "to": [{"operation": {"paths": ["/private*"]}}]},
             {"from": [{"source": {"requestPrincipals": [f"{ISSUER}/alice"]}}],
              "to": [{"operation": {"paths": ["/alice*"]}}]},
             {"to": [{"operation": {"paths": ["/admin*"]}}],
              "when": [{"key": "request.auth.claims[groups]", "values": ["admin"]}]},
         ]}},
    ]  # fmt: skip


def test_tokens_and_claims(kit: MeshKit) -> None:
    kit.add_service(BACKEND)
    backend = kit.add_pod("backend-0", app="backend", service_account="backend")
    kit.start_control_plane()
    start_pods(backend)
    assert _get(kit, backend.ip, "/private")[0] == 200  # no policy yet
    issuer = kit.workdir / "issuer"
    issuer.mkdir()
    (issuer / "jwks.json").write_text(_jwks(FETCHED_KEY))
    kit.spawn("issuer", kit.node, [sys.executable, "-m", "http.server", str(JWKS_PORT),
                                   "--bind", NODE_IP, "--directory", str(issuer)])  # fmt: skip
    wait_until(lambda: http_request(kit.node, NODE_IP, JWKS_PORT, "/jwks.json").status == 200,
               timeout=30, what="the issuer serving its JWKS")  # fmt: skip

    _write(kit, _policies())
    wait_until(lambda: _get(kit, backend.ip, "/private")[0] == 403, timeout=30,
               what="the policy requiring a token on /private")  # fmt: skip
    valid = _token({})
    assert _get(kit, backend.ip, "/public")[0] == 200  # no token, no rule needs one
    assert _get(kit, backend.ip, "/private", valid)[0] == 200
    assert _get(kit, backend.ip, "/alice", valid)[0] == 200
    assert _get(kit, backend.ip, "/alice", _token({"sub": "bob"}))[0] == 403
    # Invalid tokens are refused by jwt_authn before any rule, even on the open path.
    forged = _token({}, key=FORGER)
    expired = _token({"exp": int(time.time()) - 600})
    for token in (forged, expired, "not.a.jwt"):
        assert _get(kit, backend.ip, "/public", token)[0] == 401
        assert _get(kit, backend.ip, "/private", token)[0] == 401
    # Claims: a string or a list containing the value.
    assert _get(kit, backend.ip, "/admin", valid)[0] == 403
    assert _get(kit, backend.ip, "/admin", _token({"groups": ["dev", "admin"]}))[0] == 200
    assert _get(kit, backend.ip, "/admin", _token({"groups": "admin"}))[0] == 200
    assert _get(kit, backend.ip, "/admin", _token({"groups": ["dev"]}))[0] == 403

    # jwksUri: fetched by the control plane (until then its tokens are refused, 401).
    fetched = _token({}, key=FETCHED_KEY, issuer=FETCHED_ISSUER)
    wait_until(lambda: _get(kit, backend.ip, "/private", fetched)[0] == 200, timeout=30,
               what="the fetched JWKS verifying its issuer's token")  # fmt: skip
    forged = _token({}, key=FORGER, issuer=FETCHED_ISSUER)
    assert _get(kit, backend.ip, "/private", forged)[0] == 401
