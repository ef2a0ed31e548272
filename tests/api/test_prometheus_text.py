"""The shared text-format writer: escaping, number formats, histograms."""

from __future__ import annotations

import math

from sidemesh.api.prometheus_text import (
    Family,
    Histogram,
    Sample,
    escape_label_value,
    format_number,
    labelled,
    render,
)
from sidemesh.kube.metrics import KubeMetrics

HOSTILE = 'a\\b"c\nd} 1\n# TYPE evil counter'


def test_a_hostile_label_value_stays_inside_its_quotes() -> None:
    text = render([Family("x_total", "counter", "X.", [Sample(1, (("path", HOSTILE),))])])
    assert text == (
        "# HELP x_total X.\n"
        "# TYPE x_total counter\n"
        'x_total{path="a\\\\b\\"c\\nd} 1\\n# TYPE evil counter"} 1\n'
    )
    # one sample line: the injected newline did not start a line of its own
    assert len(text.splitlines()) == 3


def test_escaping_order_does_not_double_escape() -> None:
    assert escape_label_value("\\") == "\\\\"
    assert escape_label_value('"') == '\\"'
    assert escape_label_value("\n") == "\\n"
    assert escape_label_value('\\n"') == '\\\\n\\"'


def test_help_text_escapes_backslash_and_newline_only() -> None:
    text = render([Family("g", "gauge", 'a "b" \\ c\nd', [Sample(0)])])
    assert text.splitlines()[0] == '# HELP g a "b" \\\\ c\\nd'


def test_a_family_without_help_has_only_its_type_line() -> None:
    assert render([Family("c", "counter", None, [Sample(3)])]) == "# TYPE c counter\nc 3\n"


def test_numbers() -> None:
    assert format_number(3) == "3"
    assert format_number(True) == "1"
    assert format_number(0.25) == "0.25"
    assert format_number(1.0) == "1.0"
    assert format_number(math.inf) == "+Inf"
    assert format_number(-math.inf) == "-Inf"
    assert format_number(math.nan) == "NaN"
    assert format_number(1.23456, ".3f") == "1.235"


def test_labelled_samples_are_sorted_by_value() -> None:
    samples = labelled("reason", {"b": 2, "a": 1})
    assert [s.labels for s in samples] == [(("reason", "a"),), (("reason", "b"),)]


def test_histogram_buckets_are_cumulative_and_end_with_inf() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 7.0):
        histogram.observe(value)
    assert render([histogram.family("h", None)]).splitlines() == [
        "# TYPE h histogram",
        'h_bucket{le="0.1"} 2',
        'h_bucket{le="1.0"} 3',
        'h_bucket{le="+Inf"} 4',
        "h_sum 7.65",
        "h_count 4",
    ]


def test_kube_metric_labels_are_escaped_too() -> None:
    metrics = KubeMetrics()
    metrics.inc("sidemesh_kube_api_failures_total", operation=HOSTILE)
    lines = metrics.render().decode().splitlines()
    assert (
        'sidemesh_kube_api_failures_total{operation="a\\\\b\\"c\\nd} 1\\n# TYPE evil counter"} 1'
        in lines
    )
    assert "# TYPE evil counter" not in lines
