"""The demo's golden signals from the sidecars' scrapes: per edge and reporter, exact counts,
success (non-5xx) and mTLS; and the demo's own requests on its edge counted exactly."""

from __future__ import annotations

import pytest

from sidemesh.demo import demo_signals as signals


def series(reporter: str, source: str, destination: str, code: str, mtls: str, value: int) -> str:
    labels = (
        f'reporter="{reporter}",source_workload="{source}",source_workload_namespace='
        f'"{"unknown" if source == "unknown" else "demo"}",destination_workload="{destination}",'
        f'destination_workload_namespace="{"unknown" if destination == "unknown" else "demo"}",'
        f'destination_service="{destination}.demo.svc.cluster.local",response_code="{code}",'
        f'response_flags="-",connection_security_policy="{mtls}"'
    )
    return f"istio_requests_total{{{labels}}} {value}"


HEADER = "# HELP istio_requests_total requests\n# TYPE istio_requests_total counter\n"
CLIENT = HEADER + "\n".join([
    series("source", "client", "backend", "200", "mutual_tls", 2),
    series("source", "client", "frontend", "200", "mutual_tls", 11),
    series("source", "client", "unknown", "200", "", 1),  # an answer without peer metadata
    'istio_requests_total_other{reporter="source",source_workload="client"} 99',
    'istio_request_bytes_count{reporter="source",source_workload="client"} 7',
]) + "\n"  # fmt: skip
BACKEND_A = HEADER + "\n".join([
    series("destination", "client", "backend", "200", "mutual_tls", 1),
    series("destination", "frontend", "backend", "200", "mutual_tls", 4),
    series("destination", "frontend", "backend", "503", "mutual_tls", 1),
    series("destination", "guest", "backend", "403", "mutual_tls", 2),
    series("destination", "unknown", "backend", "200", "none", 3),  # a plaintext caller
]) + "\n"  # fmt: skip
BACKEND_B = HEADER + series("destination", "client", "backend", "200", "mutual_tls", 1) + "\n"


def test_edges_per_reporter_with_success_and_mtls() -> None:
    found = {(e.source, e.destination): e for e in signals.edges([CLIENT, BACKEND_A, BACKEND_B])}
    assert sorted(found) == [
        ("demo/client", "demo/backend"),
        ("demo/client", "demo/frontend"),
        ("demo/client", "unknown"),
        ("demo/frontend", "demo/backend"),
        ("demo/guest", "demo/backend"),
        ("unknown", "demo/backend"),
    ]
    client_backend = found[("demo/client", "demo/backend")]
    assert client_backend == signals.EdgeSignals(
        "demo/client", "demo/backend", requests_source=2, requests_destination=2,
        success_ratio=1.0, mutual_tls=True,
    )  # fmt: skip
    frontend = found[("demo/frontend", "demo/backend")]
    assert (frontend.requests_source, frontend.requests_destination) == (0, 5)
    assert frontend.success_ratio == pytest.approx(0.8)  # one 503 of five
    assert found[("demo/guest", "demo/backend")].success_ratio == 1.0  # 403 is not a 5xx
    assert found[("unknown", "demo/backend")].mutual_tls is False
    # only the source reported it: success from the source side, mTLS unknown (so no)
    assert found[("demo/client", "demo/frontend")].success_ratio == 1.0
    assert found[("demo/client", "demo/frontend")].mutual_tls is False


def test_the_table_row_and_json_agree() -> None:
    [edge] = [e for e in signals.edges([CLIENT, BACKEND_A]) if e.source == "demo/guest"]
    assert edge.as_dict() == {
        "source": "demo/guest", "destination": "demo/backend", "requests_source": 0,
        "requests_destination": 2, "success_rate": 1.0, "mutual_tls": True,
    }  # fmt: skip
    assert signals.table_row(edge.as_dict()) == (
        "demo/guest",
        "demo/backend",
        "0",
        "2",
        "100.0%",
        "yes",
    )


@pytest.mark.parametrize(
    ("url", "calls"),
    [
        ("http://backend/", True),
        ("http://backend.demo/", True),
        ("http://backend.demo.svc/x", True),
        ("http://backend.demo.svc.cluster.local:80/", True),
        ("http://backend.other/", False),
        ("http://frontend/backend", False),
        ("http://backend.demo.example.com/", False),
    ],
)
def test_which_urls_call_the_backend(url: str, calls: bool) -> None:
    assert signals.calls_service(url, "backend", "demo") is calls


def test_the_demo_counts_only_its_requests_from_that_pod_to_that_service() -> None:
    sent = {
        ("demo", "client-2", "http://backend.demo/"): 2,
        ("demo", "client-2", "http://backend/"): 1,
        ("demo", "client-1", "http://backend.demo/"): 5,  # the pod before the restart
        ("demo", "client-2", "http://frontend/backend"): 4,  # to the frontend
        ("demo", "guest", "http://backend.demo/"): 3,
        ("outside", "client-2", "http://backend.demo/"): 1,
    }
    assert signals.requests_sent(sent, namespace="demo", pod="client-2", service="backend") == 3


EDGE = signals.EdgeSignals("demo/client", "demo/backend", 2, 2, 1.0, True)


@pytest.mark.parametrize(
    ("edge", "sent", "counted", "problem"),
    [
        (EDGE, 2, True, None),
        (EDGE, 1, True, "reporter=source 2, reporter=destination 2; the demo sent 1"),
        (EDGE, 3, False, "the demo sent 3"),
        (None, 2, False, "no istio_requests_total series"),
        (signals.EdgeSignals("a", "b", 2, 1, 1.0, True), 2, False, "reporter=destination 1"),
        (signals.EdgeSignals("a", "b", 2, 2, 0.5, True), 2, True, "success 50.0%"),
        (signals.EdgeSignals("a", "b", 2, 2, 1.0, False), 2, True, "mutual TLS"),
    ],
)
def test_the_exact_check_and_when_waiting_ends(
    edge: signals.EdgeSignals | None, sent: int, counted: bool, problem: str | None
) -> None:
    assert signals.counted_at_least(edge, sent) is counted
    found = signals.edge_problem(edge, sent)
    assert (found is None) if problem is None else (found is not None and problem in found)
