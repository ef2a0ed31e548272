"""The hand-written Prometheus exposition."""

from __future__ import annotations

from sidemesh.webhook.metrics import TIME_BUCKETS, InjectionMetrics


def samples(metrics: InjectionMetrics) -> dict[str, float]:
    text = metrics.render().decode()
    assert text.endswith("\n")
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def test_empty_metrics_render_zeroes() -> None:
    found = samples(InjectionMetrics())
    assert found["sidecar_injection_requests_total"] == 0
    assert found["sidecar_injection_success_total"] == 0
    assert found["sidecar_injection_time_seconds_count"] == 0
    assert found['sidecar_injection_time_seconds_bucket{le="+Inf"}'] == 0


def test_buckets_cover_100_microseconds_to_10_seconds() -> None:
    assert TIME_BUCKETS[0] == 0.0001 and TIME_BUCKETS[-1] == 10.0
    assert list(TIME_BUCKETS) == sorted(TIME_BUCKETS)


def test_histogram_is_cumulative_and_inclusive() -> None:
    metrics = InjectionMetrics()
    for seconds in (0.00005, 0.0001, 0.003, 0.003, 42.0):
        metrics.record("success", "injected", seconds)
    found = samples(metrics)
    bucket = 'sidecar_injection_time_seconds_bucket{{le="{}"}}'.format
    assert found[bucket("0.0001")] == 2  # le is inclusive
    assert found[bucket("0.0025")] == 2
    assert found[bucket("0.005")] == 4
    assert found[bucket("10.0")] == 4
    assert found[bucket("+Inf")] == 5
    assert found["sidecar_injection_time_seconds_count"] == 5
    assert abs(found["sidecar_injection_time_seconds_sum"] - 42.00615) < 1e-9


def test_skips_and_failures_are_labelled_by_reason() -> None:
    metrics = InjectionMetrics()
    metrics.record("skip", "host-network", 0.001)
    metrics.record("skip", "host-network", 0.001)
    metrics.record("failure", 'odd "reason"\\\n', 0.001)
    found = samples(metrics)
    assert found["sidecar_injection_requests_total"] == 3
    assert found['sidecar_injection_skip_total{reason="host-network"}'] == 2
    assert found['sidecar_injection_failure_total{reason="odd \\"reason\\"\\\\\\n"}'] == 1


def test_every_family_has_help_and_type() -> None:
    text = InjectionMetrics().render().decode()
    for name, kind in [
        ("sidecar_injection_requests_total", "counter"),
        ("sidecar_injection_success_total", "counter"),
        ("sidecar_injection_skip_total", "counter"),
        ("sidecar_injection_failure_total", "counter"),
        ("sidecar_injection_time_seconds", "histogram"),
    ]:
        assert f"# TYPE {name} {kind}\n" in text
        assert f"# HELP {name} " in text
