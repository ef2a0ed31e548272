"""SM0015 SidecarListenerNotServed: each Sidecar listener the control plane does not serve as
asked is named, with the generator's own reason; a Sidecar it serves is silent; an invalid one
is IST0106 as any stored object."""

from __future__ import annotations

from typing import Any

from sidemesh.analyze.traffic import TrafficConfig, traffic_findings


def sidecar(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}  # fmt: skip


def port(number: int, protocol: str = "HTTP") -> dict[str, Any]:
    return {"number": number, "protocol": protocol, "name": f"p{number}"}


SERVED = sidecar("shop", "served", {
    "ingress": [{"port": port(9080), "defaultEndpoint": "127.0.0.1:8080"},
                {"port": port(9090), "defaultEndpoint": "unix:///var/run/app.sock",
                 "captureMode": "NONE"}],
    "egress": [{"port": port(8000), "bind": "127.0.0.1", "captureMode": "NONE",
                "hosts": ["./*"]}, {"hosts": ["*/*"]}],
})  # fmt: skip
NOT_SERVED = sidecar("shop", "asks-too-much", {
    "ingress": [{"port": port(9443, "HTTPS"), "tls": {
        "mode": "SIMPLE", "serverCertificate": "/c.pem", "privateKey": "/k.pem"}},
                {"port": port(15090), "defaultEndpoint": "127.0.0.1:1"}],
    "egress": [{"port": port(9000), "bind": "unix:///var/run/out.sock", "captureMode": "NONE",
                "hosts": ["./*"]},
               {"hosts": ["*/*"], "captureMode": "NONE"}],
})  # fmt: skip
INVALID = sidecar("web", "bad", {"egress": [{"bind": "127.0.0.1", "hosts": ["./*"]}]})


def findings(
    *sidecars: dict[str, Any], scope: set[str] | None = None
) -> list[tuple[str, str, str]]:
    config = TrafficConfig(sidecars=sidecars)
    found = traffic_findings(config, namespaces=scope, pods=(), pod_namespaces=None)
    return [(f.code.code, f.object, f.message) for f in found]


def test_a_sidecar_served_as_asked_is_silent() -> None:
    assert findings(SERVED) == []


def test_each_listener_not_served_is_a_finding_with_its_reason() -> None:
    found = findings(NOT_SERVED)
    assert [(code, obj) for code, obj, _ in found] == [
        ("SM0015", "Sidecar shop/asks-too-much")] * 4  # fmt: skip
    messages = [message for _, _, message in found]
    assert messages[0].startswith("spec.ingress[0]: port 9443: ingress tls")
    assert messages[1].startswith("spec.ingress[1]: port 15090 is one of the proxy's own ports")
    assert any(m.startswith("spec.egress[0]: a unix domain socket bind") for m in messages)
    assert any(m.startswith("spec.egress[1]: captureMode NONE without a port") for m in messages)


def test_scope_and_invalid_sidecars() -> None:
    assert findings(NOT_SERVED, scope={"web"}) == []
    [(code, obj, message)] = findings(INVALID)
    assert code == "IST0106" and "spec.egress[0].port" in message, (obj, message)
