"""The merged /stats/prometheus body is valid Prometheus text format."""

from __future__ import annotations

from agent_testkit import assert_valid_text_format
from hypothesis import given
from hypothesis import strategies as st

from sidemesh.agent.metrics import AgentMetrics, merge_metrics

ENVOY = "# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n"
APP_OPENMETRICS = "# TYPE app_requests counter\napp_requests_total 3\n# EOF\n"
APP_NO_NEWLINE = "# TYPE app_up gauge\napp_up 1"


def test_agent_metrics_render() -> None:
    metrics = AgentMetrics(cert_renewals=2, cert_expiry_timestamp=1100.0)
    metrics.record_probe('/app-health/we"b/readyz', success=True)
    metrics.record_probe('/app-health/we"b/readyz', success=False)
    body = metrics.render(now=1000.0)
    assert_valid_text_format(body)
    assert "sidemesh_agent_cert_renewals_total 2\n" in body
    assert "istio_agent_cert_expiry_seconds 100.000\n" in body
    assert 'path="/app-health/we\\"b/readyz",result="failure"} 1' in body


def test_merge_keeps_each_part_whole_and_valid() -> None:
    ours = AgentMetrics().render(now=0)
    merged = merge_metrics([ENVOY, APP_OPENMETRICS, "", APP_NO_NEWLINE, ours])
    assert_valid_text_format(merged)
    assert "# EOF" not in merged
    assert "app_up 1\n# HELP sidemesh_agent" in merged
    assert merged.startswith(ENVOY)


@given(
    st.lists(
        st.sampled_from([ENVOY, APP_OPENMETRICS, APP_NO_NEWLINE, "", "\n\n"]),
        max_size=3,
        unique=True,
    )
)
def test_merge_of_any_parts_is_valid(parts: list[str]) -> None:
    assert_valid_text_format(merge_metrics([*parts, AgentMetrics().render(now=0)]))
