"""The one writer of the Prometheus text exposition format (version 0.0.4) in sidemesh.

Every component (webhook, Kubernetes duties, xDS, CA, agent) keeps its own counters as plain
numbers and describes them here as families of samples; only this module writes `# HELP`,
`# TYPE` and sample lines, and it escapes label values as the format requires.

Why not prometheus_client (0.26.0, measured for issue #13): importing it costs ~80 ms and
3.3 MB of private memory on top of the agent's 14 MB, and it cannot keep today's exposition
byte for byte: it renders every counter as `<name>_total` (Istio's `citadel_server_csr_count`
and `pilot_xds_pushes` have no such suffix), adds `_created` series, always writes `# HELP`
and writes integers as floats. This module is standard library only, so the agent may use it.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

MetricType = Literal["counter", "gauge", "histogram"]
# Label pairs in the order they are written.
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    value: int | float
    labels: Labels = ()
    suffix: str = ""  # "_bucket", "_sum", "_count" for a histogram's series


@dataclass(frozen=True)
class Family:
    """One metric family: `# HELP` (when there is help text), `# TYPE`, then its samples."""

    name: str
    type: MetricType
    help: str | None
    samples: Sequence[Sample] = ()
    # A format spec for the values (".3f"); by default integers as integers, floats in full.
    number_format: str = ""


def escape_label_value(value: str) -> str:
    """A label value as the text format quotes it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text escapes only backslash and newline."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_number(value: int | float, spec: str = "") -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if spec:
        return format(value, spec)
    if isinstance(value, int):
        return str(int(value))  # bool renders as 0/1
    return repr(value)


def render_lines(families: Iterable[Family]) -> list[str]:
    lines: list[str] = []
    for family in families:
        if family.help is not None:
            lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            name = family.name + sample.suffix
            value = format_number(sample.value, family.number_format)
            if sample.labels:
                pairs = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sample.labels)
                lines.append(f"{name}{{{pairs}}} {value}")
            else:
                lines.append(f"{name} {value}")
    return lines


def render(families: Iterable[Family]) -> str:
    """The exposition document: one line per entry, ending with a newline."""
    return "\n".join(render_lines(families)) + "\n"


def labelled(label: str, counts: Mapping[str, int | float]) -> list[Sample]:
    """One sample per value of a single label, sorted by that value."""
    return [Sample(counts[value], ((label, value),)) for value in sorted(counts)]


@dataclass
class Histogram:
    """Observations counted into fixed upper bounds (`le`), plus their sum and count."""

    buckets: tuple[float, ...]
    # per-bucket (not cumulative) counts; the last slot is +Inf
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def family(self, name: str, help_text: str | None) -> Family:
        samples: list[Sample] = []
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            cumulative += count
            samples.append(Sample(cumulative, (("le", format_number(float(bound))),), "_bucket"))
        samples.append(Sample(self.count, (("le", "+Inf"),), "_bucket"))
        samples += [Sample(self.total, suffix="_sum"), Sample(self.count, suffix="_count")]
        return Family(name, "histogram", help_text, samples)
