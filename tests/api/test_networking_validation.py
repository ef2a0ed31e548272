"""Parse + validate of Istio's traffic API (`sidemesh.api.networking.validate`): bookinfo-like
objects in every served version are accepted as typed, frozen models; each of Istio's rules
refuses its invalid case with the document and the field path named."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pydantic
import pytest

from sidemesh.api.networking import (
    VERSIONS,
    DestinationRule,
    Gateway,
    ServiceEntry,
    Sidecar,
    ValidationError,
    VirtualService,
    parse_duration,
    validate,
)


def _doc(kind: str, spec: dict[str, Any], version: str = "v1", name: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": f"networking.istio.io/{version}",
        "kind": kind,
        "metadata": {"name": name, "namespace": "bookinfo"},
        "spec": spec,
    }


REVIEWS_VS: dict[str, Any] = {
    "hosts": ["reviews"],
    "http": [
        {
            "name": "jason",
            "match": [
                {
                    "headers": {"end-user": {"exact": "jason"}},
                    "uri": {"prefix": "/reviews"},
                    "method": {"exact": "GET"},
                    "queryParams": {"debug": {"regex": "^(on|1)$"}},
                    "sourceLabels": {"app": "productpage"},
                    "port": 9080,
                }
            ],
            "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
            "fault": {
                "delay": {"fixedDelay": "7s", "percentage": {"value": 100}},
                "abort": {"httpStatus": 500, "percentage": {"value": 0.1}},
            },
        },
        {
            "route": [
                {"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}},
                 "weight": 75},
                {"destination": {"host": "reviews", "subset": "v3"}, "weight": 25,
                 "headers": {"response": {"remove": ["foo"]}}},
            ],
            "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,connect-failure"},
            "timeout": "10s",
            "mirror": {"host": "reviews", "subset": "v4"},
            "mirrorPercentage": {"value": 50.0},
            "headers": {"request": {"set": {"x-test": "true"}, "add": {"x-b3": "1"}}},
            "rewrite": {"uri": "/v1/reviews", "authority": "reviews.internal"},
        },
    ],
    "exportTo": ["."],
}  # fmt: skip

VALID: list[tuple[str, dict[str, Any]]] = [
    ("VirtualService", REVIEWS_VS),
    ("VirtualService", {
        "hosts": ["bookinfo.example.com"], "gateways": ["istio-system/bookinfo-gateway", "mesh"],
        "http": [
            {"match": [{"uri": {"exact": "/login"}}],
             "redirect": {"uri": "/signin", "redirectCode": 301}},
            {"match": [{"uri": {"regex": "/api/v[0-9]+/.*"}}],
             "directResponse": {"status": 503, "body": {"string": "down"}}},
            {"route": [{"destination": {"host": "productpage"}}]},
        ],
    }),
    ("VirtualService", {
        "hosts": ["*.example.com"],
        "tls": [{"match": [{"sniHosts": ["login.example.com"], "port": 443}],
                 "route": [{"destination": {"host": "login.default.svc.cluster.local"}}]}],
        "tcp": [{"match": [{"port": 27017, "destinationSubnets": ["10.0.0.0/8"]}],
                 "route": [{"destination": {"host": "mongo", "port": {"number": 5555}}}]}],
    }),
    ("DestinationRule", {
        "host": "reviews.bookinfo.svc.cluster.local",
        "trafficPolicy": {
            "loadBalancer": {"simple": "LEAST_REQUEST",
                             "warmup": {"duration": "30s", "minimumPercent": 10}},
            "connectionPool": {
                "tcp": {"maxConnections": 100, "connectTimeout": "30ms"},
                "http": {"http1MaxPendingRequests": 10, "http2MaxRequests": 1000,
                         "maxRequestsPerConnection": 1, "maxRetries": 3},
            },
            "outlierDetection": {"consecutive5xxErrors": 7, "consecutiveGatewayErrors": 3,
                                 "interval": "5m", "baseEjectionTime": "15m",
                                 "maxEjectionPercent": 100},
            "tls": {"mode": "ISTIO_MUTUAL"},
            "portLevelSettings": [{"port": {"number": 80},
                                   "loadBalancer": {"simple": "ROUND_ROBIN"}}],
        },
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"},
             "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}},
        ],
        "exportTo": ["*"],
    }),
    ("DestinationRule", {"host": "api.example.com",
                         "trafficPolicy": {"tls": {"mode": "MUTUAL",
                                                   "credentialName": "client-cert"}}}),
    ("ServiceEntry", {
        "hosts": ["api.example.com"], "location": "MESH_EXTERNAL", "resolution": "DNS",
        "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
    }),
    ("ServiceEntry", {
        "hosts": ["mydb.internal"], "addresses": ["192.168.0.10"], "location": "MESH_INTERNAL",
        "resolution": "STATIC", "ports": [{"number": 5432, "name": "tcp-pg", "protocol": "TCP"}],
        "endpoints": [{"address": "10.1.0.5", "labels": {"app": "db"}, "ports": {"tcp-pg": 5433}}],
        "exportTo": ["bookinfo", "istio-system"],
    }),
    ("ServiceEntry", {
        "hosts": ["vm.internal"], "resolution": "NONE",
        "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
        "workloadSelector": {"labels": {"app": "vm"}},
    }),
    ("Sidecar", {"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}),
    ("Sidecar", {
        "workloadSelector": {"labels": {"app": "ratings"}},
        "ingress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                     "defaultEndpoint": "127.0.0.1:8080"}],
        "egress": [
            {"port": {"number": 3306, "protocol": "MYSQL", "name": "mysql"},
             "hosts": ["*/mysql.example.com"]},
            {"hosts": ["./*", "istio-system/*", "~/*.internal"]},
        ],
        "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
    }),
    ("Gateway", {
        "selector": {"istio": "ingressgateway"},
        "servers": [
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"},
             "hosts": ["bookinfo.example.com"], "tls": {"httpsRedirect": True}},
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
             "hosts": ["bookinfo/bookinfo.example.com"],
             "tls": {"mode": "SIMPLE", "credentialName": "bookinfo-cert"}},
            {"port": {"number": 15443, "name": "tls", "protocol": "TLS"}, "hosts": ["*"],
             "tls": {"mode": "AUTO_PASSTHROUGH"}},
        ],
    }),
]  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("kind", "spec"), VALID, ids=[f"{k}-{i}" for i, (k, _) in enumerate(VALID)]
)
def test_valid_objects_parse_in_every_served_version(
    kind: str, spec: dict[str, Any], version: str
) -> None:
    resource = validate(_doc(kind, spec, version, name="reviews-route"))
    assert (resource.kind, resource.namespace, resource.name) == (kind, "bookinfo", "reviews-route")
    assert resource.api_version == f"networking.istio.io/{version}"
    # the model reads back what the file said, with Istio's spelling
    assert (
        resource.spec.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude_defaults=True
        )
        == spec
    )


def test_models_are_typed_and_frozen() -> None:
    resource = validate(_doc("VirtualService", REVIEWS_VS))
    spec = resource.spec
    assert isinstance(spec, VirtualService)
    assert spec.http[1].route[0].destination.port is not None
    assert spec.http[1].route[0].destination.port.number == 9080
    assert spec.http[1].retries is not None and spec.http[1].retries.per_try_timeout == "2s"
    with pytest.raises(pydantic.ValidationError):
        spec.hosts = ("other",)  # type: ignore[misc]
    assert isinstance(spec.hosts, tuple)
    kinds = {k: type(validate(_doc(k, s)).spec) for k, s in VALID}
    assert kinds == {
        "VirtualService": VirtualService,
        "DestinationRule": DestinationRule,
        "ServiceEntry": ServiceEntry,
        "Sidecar": Sidecar,
        "Gateway": Gateway,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1s", timedelta(seconds=1)), ("500ms", timedelta(milliseconds=500)),
     ("1m", timedelta(minutes=1)), ("1h30m", timedelta(hours=1, minutes=30)),
     ("1.5s", timedelta(seconds=1.5)), ("0s", timedelta(0))],
)  # fmt: skip
def test_durations_read_as_istio_writes_them(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "1", "s", "1 s", "1d", "-1s", "1s2"])
def test_durations_that_are_not(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def _with(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`spec` with the value at `a.b[0].c` replaced (a `None` value deletes the key)."""
    changed = copy.deepcopy(spec)
    parts = path.replace("[", ".").replace("]", "").split(".")
    node: Any = changed
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last: Any = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return changed


VS, DR, SE, SC, GW = (VALID[0][1], VALID[3][1], VALID[5][1], VALID[9][1], VALID[10][1])
STATIC_SE, SELECTOR_SE = VALID[6][1], VALID[7][1]
REDIRECTS = VALID[1][1]
TCP_TLS = VALID[2][1]

# (kind, spec, field path the error names, words it uses)
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # --- schema: types, ranges, enums, unknown fields
    ("VirtualService", _with(VS, "http[1].route[0].weight", -1), "spec.http[1].route[0].weight",
     ">= 0"),
    ("VirtualService", _with(VS, "http[1].route[0].wieght", 3), "spec.http[1].route[0].wieght",
     "unknown field"),
    ("VirtualService", _with(VS, "http[1].timeout", "10"), "spec.http[1].timeout",
     "not a duration"),
    ("VirtualService", _with(VS, "http[1].retries.perTryTimeout", "0.5ms"),
     "spec.http[1].retries.perTryTimeout", "at least 1ms"),
    ("VirtualService", _with(VS, "http[1].mirrorPercentage.value", 101),
     "spec.http[1].mirrorPercentage.value", "100"),
    ("VirtualService", _with(VS, "http[0].fault.abort.percentage.value", -1),
     "spec.http[0].fault.abort.percentage.value", "0"),
    ("VirtualService", _with(VS, "http[0].match[0].port", 70000), "spec.http[0].match[0].port",
     "65535"),
    ("VirtualService", _with(VS, "http[1].route[0].destination.host", None),
     "spec.http[1].route[0].destination.host", "required"),
    # --- Istio's rules
    ("VirtualService", _with(_with(VS, "http[1].route[0].weight", 0), "http[1].route[1].weight", 0),
     "spec.http[1].route", "total destination weight = 0"),
    ("VirtualService", _with(VS, "hosts", ["reviews", "reviews"]), "spec.hosts[1]", "duplicate"),
    ("VirtualService", _with(VS, "hosts", ["*"]), "spec.hosts[0]", "wildcard host *"),
    ("VirtualService", _with(VS, "hosts", ["bad_host!"]), "spec.hosts[0]", "not a valid DNS"),
    ("VirtualService", _with(VS, "http", []), "spec", "http, tcp or tls must be provided"),
    ("VirtualService", _with(VS, "http[1].route", []), "spec.http[1]",
     "one of route, redirect or directResponse is required"),
    ("VirtualService", _with(REDIRECTS, "http[0].route", [{"destination": {"host": "a"}}]),
     "spec.http[0]", "only one of route, redirect or directResponse"),
    ("VirtualService", _with(REDIRECTS, "http[1].redirect", {"uri": "/x"}), "spec.http[1]",
     "only one of route, redirect or directResponse"),
    ("VirtualService", _with(REDIRECTS, "http[0].redirect.redirectCode", 200),
     "spec.http[0].redirect.redirectCode", "must be 3xx"),
    ("VirtualService", _with(REDIRECTS, "http[0].redirect", {"redirectCode": 302}),
     "spec.http[0].redirect", "must specify"),
    ("VirtualService", _with(REDIRECTS, "http[1].directResponse.status", 700),
     "spec.http[1].directResponse.status", "200-599"),
    ("VirtualService", _with(REDIRECTS, "http[0].rewrite", {"uri": "/a"}), "spec.http[0].rewrite",
     "cannot be used with redirect"),
    ("VirtualService", _with(REDIRECTS, "http[1].fault", VS["http"][0]["fault"]),
     "spec.http[1].fault", "cannot be used with directResponse"),
    ("VirtualService", _with(REDIRECTS, "gateways[0]", "istio-system/Bad_Name"),
     "spec.gateways[0]", "gateway name"),
    ("VirtualService", _with(VS, "http[0].match[0].queryParams.debug.regex", "(unclosed"),
     "spec.http[0].match[0].queryParams.debug.regex", "invalid regex"),
    ("VirtualService", _with(VS, "http[0].match[0].uri", {"exact": "/a", "prefix": "/b"}),
     "spec.http[0].match[0].uri", "only one of exact, prefix or regex"),
    ("VirtualService", _with(VS, "http[0].match[0].uri", {"prefix": ""}),
     "spec.http[0].match[0].uri.prefix", "must not be empty"),
    ("VirtualService", _with(VS, "http[0].match[0].uri", {}), "spec.http[0].match[0].uri",
     "one of exact, prefix or regex is required"),
    ("VirtualService", _with(VS, "http[0].match[0].headers", {"bad header": {"exact": "x"}}),
     "spec.http[0].match[0].headers.bad header", "invalid header name"),
    ("VirtualService", _with(VS, "http[0].route[0].destination.subset", "V_2"),
     "spec.http[0].route[0].destination.subset", "DNS-1123"),
    ("VirtualService", _with(VS, "http[0].route[0].destination.host", "*"),
     "spec.http[0].route[0].destination.host", "invalid destination host"),
    ("VirtualService", _with(VS, "http[1].retries.retryOn", "5xx,sometimes"),
     "spec.http[1].retries.retryOn", "not a valid retryOn policy"),
    ("VirtualService", _with(VS, "http[1].retries", {"attempts": 0, "perTryTimeout": "1s"}),
     "spec.http[1].retries", "attempts are set to 0"),
    ("VirtualService", _with(VS, "http[0].fault", {}), "spec.http[0].fault",
     "abort and/or a delay"),
    ("VirtualService", _with(VS, "http[0].fault.abort.httpStatus", 99),
     "spec.http[0].fault.abort.httpStatus", "200-599"),
    ("VirtualService", _with(VS, "http[0].fault.abort.grpcStatus", "UNAVAILABLE"),
     "spec.http[0].fault.abort", "exactly one of httpStatus or grpcStatus"),
    ("VirtualService", _with(VS, "http[1].mirror", None), "spec.http[1].mirrorPercentage",
     "requires mirror"),
    ("VirtualService", _with(VS, "http[1].rewrite", {}), "spec.http[1].rewrite",
     "at least one of"),
    ("VirtualService", _with(VS, "exportTo", ["*", "bookinfo"]), "spec.exportTo",
     "cannot be combined"),
    ("VirtualService", _with(VS, "exportTo", ["Not_A_Namespace"]), "spec.exportTo[0]",
     "namespace name"),
    ("VirtualService", _with(TCP_TLS, "tls[0].match[0].sniHosts", ["other.org"]),
     "spec.tls[0].match[0].sniHosts[0]", "not a subset"),
    ("VirtualService", _with(TCP_TLS, "tls[0].match", []), "spec.tls[0].match",
     "at least one match"),
    ("VirtualService", _with(TCP_TLS, "tcp[0].route", []), "spec.tcp[0].route",
     "TCP route is required"),
    ("VirtualService", _with(TCP_TLS, "tcp[0].match[0].destinationSubnets", ["10.0.0.0/33"]),
     "spec.tcp[0].match[0].destinationSubnets[0]", "not an IP or CIDR"),
    # --- DestinationRule
    ("DestinationRule", _with(DR, "trafficPolicy.loadBalancer.simple", "FASTEST"),
     "spec.trafficPolicy.loadBalancer.simple", "ROUND_ROBIN"),
    ("DestinationRule", _with(DR, "trafficPolicy.tls.mode", "STRICT"),
     "spec.trafficPolicy.tls.mode", "ISTIO_MUTUAL"),
    ("DestinationRule", _with(DR, "trafficPolicy.loadBalancer.warmup.minimumPercent", 101),
     "spec.trafficPolicy.loadBalancer.warmup.minimumPercent", "100"),
    ("DestinationRule", _with(DR, "trafficPolicy.connectionPool.tcp.maxConnections", -1),
     "spec.trafficPolicy.connectionPool.tcp.maxConnections", ">= 0"),
    ("DestinationRule", _with(DR, "trafficPolicy.connectionPool.tcp.connectTimeout", "0s"),
     "spec.trafficPolicy.connectionPool.tcp.connectTimeout", "at least 1ms"),
    ("DestinationRule", _with(DR, "trafficPolicy.outlierDetection.maxEjectionPercent", 150),
     "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "100"),
    ("DestinationRule", _with(DR, "trafficPolicy.outlierDetection.interval", "5 minutes"),
     "spec.trafficPolicy.outlierDetection.interval", "not a duration"),
    ("DestinationRule", _with(DR, "subsets[1].name", "v1"), "spec.subsets[1].name",
     "duplicate subset name"),
    ("DestinationRule", _with(DR, "subsets[1].name", "V2"), "spec.subsets[1].name", "DNS-1123"),
    ("DestinationRule", _with(DR, "host", "*"), "spec.host", "not allowed"),
    ("DestinationRule", _with(DR, "subsets[0].trafficPolicy", {}),
     "spec.subsets[0].trafficPolicy", "at least one field"),
    ("DestinationRule", _with(DR, "trafficPolicy.connectionPool", {}),
     "spec.trafficPolicy.connectionPool", "at least one field"),
    ("DestinationRule", _with(DR, "trafficPolicy.loadBalancer.consistentHash",
                              {"httpHeaderName": "x"}),
     "spec.trafficPolicy.loadBalancer", "only one of simple or consistentHash"),
    ("DestinationRule", _with(DR, "subsets[1].trafficPolicy.loadBalancer.consistentHash", {}),
     "spec.subsets[1].trafficPolicy.loadBalancer.consistentHash", "exactly one of"),
    ("DestinationRule", _with(DR, "trafficPolicy.tls", {"mode": "MUTUAL"}),
     "spec.trafficPolicy.tls.clientCertificate", "required for mutual tls"),
    ("DestinationRule", _with(DR, "trafficPolicy.tls.caCertificates", "/etc/ca.pem"),
     "spec.trafficPolicy.tls", "ISTIO_MUTUAL"),
    ("DestinationRule", _with(DR, "trafficPolicy.portLevelSettings[0].port.number", 0),
     "spec.trafficPolicy.portLevelSettings[0].port.number", ">= 1"),
    ("DestinationRule", _with(DR, "trafficPolicy.portLevelSettings",
                              [{"port": {"number": 80}, "tls": {"mode": "DISABLE"}},
                               {"port": {"number": 80}, "tls": {"mode": "SIMPLE"}}]),
     "spec.trafficPolicy.portLevelSettings[1].port.number", "duplicate port"),
    # --- ServiceEntry
    ("ServiceEntry", _with(SE, "hosts", []), "spec.hosts", "at least one host"),
    ("ServiceEntry", _with(SE, "hosts", ["*"]), "spec.hosts[0]", "not allowed"),
    ("ServiceEntry", _with(SE, "location", "OUTSIDE"), "spec.location", "MESH_EXTERNAL"),
    ("ServiceEntry", _with(SE, "resolution", "LOOKUP"), "spec.resolution", "DNS_ROUND_ROBIN"),
    ("ServiceEntry", _with(SE, "addresses", ["10.0.0.0/8"]), "spec.addresses[0]",
     "only for NONE/STATIC"),
    ("ServiceEntry", _with(SE, "addresses", ["not-an-ip"]), "spec.addresses[0]",
     "not an IP address"),
    ("ServiceEntry", _with(SE, "ports[0].name", None), "spec.ports[0].name", "required"),
    ("ServiceEntry", _with(SE, "ports[0].protocol", "QUIC"), "spec.ports[0].protocol",
     "unrecognized protocol"),
    ("ServiceEntry", _with(SE, "ports", [{"number": 443, "name": "a"},
                                         {"number": 443, "name": "b"}]),
     "spec.ports[1].number", "already used"),
    ("ServiceEntry", _with(SE, "hosts", ["*.example.com"]), "spec.hosts[0]",
     "DNS resolution without endpoints"),
    ("ServiceEntry", _with(STATIC_SE, "endpoints[0].address", "db.internal"),
     "spec.endpoints[0].address", "resolution STATIC"),
    ("ServiceEntry", _with(STATIC_SE, "endpoints[0].ports", {"grpc": 5000}),
     "spec.endpoints[0].ports.grpc", "not defined by the service entry"),
    ("ServiceEntry", _with(SELECTOR_SE, "endpoints", [{"address": "10.0.0.1"}]), "spec",
     "only one of workloadSelector or endpoints"),
    ("ServiceEntry", _with(STATIC_SE, "resolution", "NONE"), "spec.endpoints",
     "resolution type NONE"),
    # --- Sidecar
    ("Sidecar", _with(SC, "egress[1].hosts", ["mysql.example.com"]), "spec.egress[1].hosts[0]",
     "namespace/dnsName"),
    ("Sidecar", _with(SC, "egress[1].hosts", ["Bad_NS/*"]), "spec.egress[1].hosts[0]",
     "invalid namespace"),
    ("Sidecar", _with(SC, "egress[1].hosts", []), "spec.egress[1].hosts", "at least one host"),
    ("Sidecar", _with(SC, "egress", list(reversed(SC["egress"]))), "spec.egress[0]",
     "should be the last listener"),
    ("Sidecar", {"workloadSelector": {"labels": {"app": "x"}}}, "spec",
     "empty configuration provided"),
    ("Sidecar", _with(SC, "ingress[0].defaultEndpoint", "10.0.0.1:8080"),
     "spec.ingress[0].defaultEndpoint", "must be of form"),
    ("Sidecar", _with(SC, "outboundTrafficPolicy.mode", "DENY"),
     "spec.outboundTrafficPolicy.mode", "REGISTRY_ONLY"),
    ("Sidecar", _with(SC, "ingress", [SC["ingress"][0], SC["ingress"][0]]),
     "spec.ingress[1].port.number", "must be unique"),
    # --- Gateway
    ("Gateway", _with(GW, "servers", []), "spec.servers", "at least one server"),
    ("Gateway", _with(GW, "servers[0].hosts", []), "spec.servers[0].hosts", "at least one host"),
    ("Gateway", _with(GW, "servers[0].hosts", ["bad host"]), "spec.servers[0].hosts[0]",
     "not a valid DNS"),
    ("Gateway", _with(GW, "servers[1].tls", None), "spec.servers[1].tls",
     "must have TLS settings"),
    ("Gateway", _with(GW, "servers[1].tls", {"mode": "SIMPLE"}),
     "spec.servers[1].tls.serverCertificate", "requires a serverCertificate"),
    ("Gateway", _with(GW, "servers[1].tls.mode", "STRICT"), "spec.servers[1].tls.mode",
     "SIMPLE"),
    ("Gateway", _with(GW, "servers[0].tls", {"mode": "SIMPLE", "credentialName": "c"}),
     "spec.servers[0].tls", "plain text HTTP ports"),
    ("Gateway", _with(GW, "servers[0].port.name", None), "spec.servers[0].port.name", "required"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "spec", "path", "words"), INVALID, ids=[f"{c[2]}:{c[3]}" for c in INVALID]
)
def test_invalid_objects_name_the_field(
    kind: str, spec: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        validate(_doc(kind, spec, name="reviews-route"))
    error = caught.value
    assert error.document == f"{kind} bookinfo/reviews-route"
    assert [i for i in error.issues if i.path == path and words in i.message], error.issues
    assert f"{kind} bookinfo/reviews-route: {path}: " in str(error)


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"apiVersion": "networking.istio.io/v2", "kind": "Gateway",
          "metadata": {"name": "g"}, "spec": {}}, "apiVersion"),
        ({"apiVersion": "networking.istio.io/v1", "kind": "Telemetry",
          "metadata": {"name": "g"}, "spec": {}}, "kind"),
        ({"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "spec": {}}, "metadata"),
        ({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
          "metadata": {"namespace": "a"}, "spec": {}}, "metadata.name"),
        ({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
          "metadata": {"name": "UPPER"}, "spec": {}}, "metadata.name"),
        ({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
          "metadata": {"name": "g"}, "spec": "servers"}, "spec"),
    ],
)  # fmt: skip
def test_invalid_headers_name_the_field(document: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate(document)
    assert path in [i.path for i in caught.value.issues], caught.value.issues


def test_namespace_defaults_to_default() -> None:
    document = _doc("Gateway", GW)
    del document["metadata"]["namespace"]
    assert validate(document).namespace == "default"
