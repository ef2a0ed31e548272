"""The agent's share of the standard metrics: Envoy's series under Istio's names and values,
the request totals read back, and the workload metadata Envoy runs with."""

from __future__ import annotations

import pytest

from sidemesh.agent.metrics import merge_metrics
from sidemesh.agent.telemetry import RequestTotals, istio_names, request_totals, samples
from sidemesh.api.telemetry.peer import envoy_environment, workload_metadata

ENVOY = """\
# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="x"} 3
# TYPE envoy_istio_requests_total counter
envoy_istio_requests_total{reporter="source",source_workload="client",destination_workload="-",\
response_code="503",grpc_response_status="-",response_flags="FI"} 7
envoy_istio_requests_total{reporter="destination",source_workload="client",\
destination_workload="backend",response_code="200",grpc_response_status="-",response_flags="-"} 5
"""


def test_envoy_series_get_istio_names_and_values() -> None:
    text = istio_names(ENVOY)
    assert "# TYPE istio_requests_total counter" in text
    assert "envoy_istio_" not in text
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="x"} 3' in text  # untouched
    found = {(labels["reporter"], labels["destination_workload"]): (labels, value)
             for labels, value in samples(text, "istio_requests_total")}  # fmt: skip
    source, count = found[("source", "unknown")]  # Envoy's "no value" is Istio's unknown
    assert count == 7
    assert source["grpc_response_status"] == ""  # not gRPC: empty, as Istio
    assert source["response_flags"] == "FI"
    destination, _ = found[("destination", "backend")]
    assert destination["response_flags"] == "-"  # no flags stays "-", as Istio


def test_request_totals_by_reporter() -> None:
    assert request_totals(istio_names(ENVOY)) == RequestTotals(source=7, destination=5)
    assert request_totals("") == RequestTotals(0, 0)


def test_merged_scrape_serves_istio_names() -> None:
    merged = merge_metrics([ENVOY, "app_hits_total 1\n"])
    assert "istio_requests_total{" in merged and "envoy_istio_" not in merged
    assert merged.endswith("app_hits_total 1\n")


def test_samples_parse_escaped_label_values() -> None:
    text = 'istio_requests_total{a="x\\"y",b="z"} 2\nistio_requests_total_other 9\n'
    assert list(samples(text, "istio_requests_total")) == [({"a": 'x"y', "b": "z"}, 2.0)]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({}, ("unknown", "unknown", "web", "latest")),
        ({"app": "reviews", "version": "v2"}, ("reviews", "v2", "reviews", "v2")),
        ({"app.kubernetes.io/name": "ratings", "app.kubernetes.io/version": "1.0"},
         ("ratings", "1.0", "ratings", "1.0")),
        ({"app": "a", "service.istio.io/canonical-name": "canon",
          "service.istio.io/canonical-revision": "r7", "version": "v1"},
         ("a", "v1", "canon", "r7")),
        ({"app": "bad value\r\nx-evil: 1"}, ("badvaluex-evil:1", "unknown", "badvaluex-evil:1",
                                             "latest")),
    ],
)  # fmt: skip
def test_workload_metadata_follows_istio_labels(
    labels: dict[str, str], expected: tuple[str, str, str, str]
) -> None:
    found = workload_metadata(workload="web", namespace="demo", labels=labels)
    assert (found.app, found.version, found.canonical_service, found.canonical_revision) == (
        expected
    )


def test_envoy_environment_names_every_exchanged_key() -> None:
    environment = envoy_environment(
        workload_metadata(workload="web", namespace="demo", labels={"app": "web"})
    )
    assert environment == {
        "SIDEMESH_PEER_WORKLOAD": "web",
        "SIDEMESH_PEER_NAMESPACE": "demo",
        "SIDEMESH_PEER_APP": "web",
        "SIDEMESH_PEER_VERSION": "unknown",
        "SIDEMESH_PEER_CANONICAL_SERVICE": "web",
        "SIDEMESH_PEER_CANONICAL_REVISION": "latest",
    }
