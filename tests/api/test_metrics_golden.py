"""Every component's /metrics text is byte-for-byte what scrapers saw before the metrics
layer was unified (issue #13): names, label names, types, HELP texts, buckets, number formats.

The golden files under tests/data/metrics/ were written by the hand-rolled writers, with the
sample observations below; regenerate one only for a deliberate, announced change.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import pytest

from sidemesh.agent.metrics import AgentMetrics
from sidemesh.kube.metrics import KubeMetrics
from sidemesh.security.server import CaMetrics
from sidemesh.webhook.metrics import InjectionMetrics
from sidemesh.xds.metrics import XdsMetrics

GOLDEN = Path(__file__).parent.parent / "data" / "metrics"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def webhook() -> str:
    metrics = InjectionMetrics()
    metrics.record("success", "", 0.003)
    metrics.record("success", "", 0.00005)
    metrics.record("skip", "namespace-disabled", 0.0007)
    metrics.record("skip", "annotation-false", 12.0)
    metrics.record("failure", 'bad "request"\\\n', 0.2)
    return metrics.render().decode()


def webhook_empty() -> str:
    return InjectionMetrics().render().decode()


def kube() -> str:
    metrics = KubeMetrics()
    metrics.inc("sidemesh_kube_api_failures_total", operation="patch")
    metrics.inc("sidemesh_kube_api_failures_total", 2, operation="get")
    metrics.inc("sidemesh_kube_api_retries_total", 3)
    metrics.inc("sidemesh_webhook_cert_rotations_total")
    metrics.set("sidemesh_leader", 1)
    return metrics.render().decode()


def kube_empty() -> str:
    return KubeMetrics().render().decode()


def xds() -> str:
    metrics = XdsMetrics(connected=2, snapshots=5)
    metrics.pushed(LISTENER)
    metrics.pushed(LISTENER)
    metrics.pushed(CLUSTER)
    metrics.pushed("type.googleapis.com/something.Else")
    metrics.nacked(CLUSTER)
    metrics.refused("16")
    for seconds in (0.003, 0.01, 0.3, 45.0):
        metrics.push_time.observe(seconds)
    return "\n".join(metrics.render()) + "\n"


def xds_empty() -> str:
    return "\n".join(XdsMetrics().render()) + "\n"


def ca() -> str:
    metrics = CaMetrics(csr_requests=4, signed=2)
    metrics.refuse("16")
    metrics.refuse("3")
    metrics.refuse("16")
    metrics.root_expiry = datetime.datetime(2036, 1, 2, 3, 4, 5, 600000, tzinfo=datetime.UTC)
    return "\n".join(metrics.render()) + "\n"


def ca_empty() -> str:
    return "\n".join(CaMetrics().render()) + "\n"


def agent() -> str:
    metrics = AgentMetrics(cert_renewals=3, cert_renewal_failures=1)
    metrics.record_probe("/healthz", success=True)
    metrics.record_probe("/healthz", success=False)
    metrics.record_probe('/odd"path\\\nx', success=True)
    metrics.cert_expiry_timestamp = 1_000_100.25
    return metrics.render(now=1_000_000.0)


def agent_expired() -> str:
    metrics = AgentMetrics()
    metrics.cert_expiry_timestamp = 10.0
    return metrics.render(now=20.0)


def agent_empty() -> str:
    return AgentMetrics().render(now=0.0)


EXPOSITIONS: dict[str, Callable[[], str]] = {
    "webhook": webhook,
    "webhook_empty": webhook_empty,
    "kube": kube,
    "kube_empty": kube_empty,
    "xds": xds,
    "xds_empty": xds_empty,
    "ca": ca,
    "ca_empty": ca_empty,
    "agent": agent,
    "agent_expired": agent_expired,
    "agent_empty": agent_empty,
}


@pytest.mark.parametrize("name", sorted(EXPOSITIONS))
def test_exposition_is_unchanged(name: str) -> None:
    expected = (GOLDEN / f"{name}.prom").read_text()
    assert EXPOSITIONS[name]() == expected


def write_goldens() -> None:
    """Only for a deliberate change: `python -c 'import ...; write_goldens()'`."""
    for name, exposition in EXPOSITIONS.items():
        (GOLDEN / f"{name}.prom").write_text(exposition())
