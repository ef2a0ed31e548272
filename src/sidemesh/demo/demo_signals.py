"""The golden signals the demo ends with (pure): per edge (source workload -> destination
workload), `istio_requests_total` as each side's sidecar reported it, the success ratio and
whether every request came over mutual TLS, from the sidecars' merged Prometheus endpoints.

The scrape is parsed by the agent's own reader (`agent.telemetry.samples`) and summed per edge
by the dashboard's (`dashboard.graph.build_graph`), fed counters instead of rates: its `rate`
is then a request count, its error share that of 5xx answers, as Istio's dashboards count.

The exact check is on the one edge only the demo uses, client -> backend (the client's own
loop calls the frontend): both reporters' counts must equal the requests the demo sent there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from sidemesh.agent.telemetry import REQUESTS_TOTAL, samples
from sidemesh.dashboard.graph import Sample, Signals, Workload, build_graph, format_ratio

REPORTERS: Final = ("source", "destination")


@dataclass(frozen=True)
class EdgeSignals:
    source: str  # namespace/workload
    destination: str
    requests_source: int  # reporter="source": what the caller's sidecar counted
    requests_destination: int  # reporter="destination": what the callee's sidecar counted
    success_ratio: float | None  # non-5xx share, as the destination reported it (else source)
    mutual_tls: bool  # every request the destination reported arrived over mutual TLS

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "requests_source": self.requests_source,
            "requests_destination": self.requests_destination,
            "success_rate": self.success_ratio,
            "mutual_tls": self.mutual_tls,
        }


def reported(scrapes: Iterable[str], reporter: str) -> list[Sample]:
    """The `istio_requests_total` samples one side reported, over several sidecars' scrapes."""
    return [
        Sample(labels, value)
        for text in scrapes
        for labels, value in samples(text, REQUESTS_TOTAL)
        if labels.get("reporter") == reporter
    ]


def _per_edge(found: list[Sample]) -> dict[tuple[str, str], Signals]:
    graph = build_graph(traffic=found, edge_latency={}, workload_latency={})
    return {(e.source.id, e.destination.id): e.signals for e in graph.edges}


def edges(scrapes: Iterable[str]) -> list[EdgeSignals]:
    """Every edge any of the scrapes mentions, sorted by (source, destination)."""
    texts = list(scrapes)
    sides = {reporter: _per_edge(reported(texts, reporter)) for reporter in REPORTERS}
    found = []
    for key in sorted(set(sides["source"]) | set(sides["destination"])):
        sent, served = sides["source"].get(key), sides["destination"].get(key)
        judged = served or sent
        found.append(
            EdgeSignals(
                source=key[0],
                destination=key[1],
                requests_source=round(sent.rate) if sent else 0,
                requests_destination=round(served.rate) if served else 0,
                success_ratio=judged.success_ratio if judged else None,
                mutual_tls=served.mutual_tls if served else False,
            )
        )
    return found


TABLE_HEADERS: Final = (
    "source",
    "destination",
    "reporter=source",
    "reporter=destination",
    "success (non-5xx)",
    "mTLS",
)  # the columns of `table_row`


def table_row(edge: Mapping[str, Any]) -> tuple[str, ...]:
    """An edge (as `EdgeSignals.as_dict` gives it) as the demo's table shows it."""
    return (
        str(edge["source"]),
        str(edge["destination"]),
        str(edge["requests_source"]),
        str(edge["requests_destination"]),
        format_ratio(edge["success_rate"]),
        "yes" if edge["mutual_tls"] else "no",
    )


def edge_id(namespace: str, workload: str) -> str:
    return Workload(namespace, workload).id


def find_edge(found: Iterable[EdgeSignals], source: str, destination: str) -> EdgeSignals | None:
    return next((e for e in found if (e.source, e.destination) == (source, destination)), None)


def calls_service(url: str, service: str, namespace: str) -> bool:
    """Whether `url` names `service` of `namespace` (short, namespaced or full name)."""
    parts = (urlsplit(url).hostname or "").split(".")
    suffixes: tuple[list[str], ...] = (
        [],
        [namespace],
        [namespace, "svc"],
        [namespace, "svc", "cluster", "local"],
    )
    return parts[0] == service and parts[1:] in suffixes


def requests_sent(
    sent: Mapping[tuple[str, str, str], int], *, namespace: str, pod: str, service: str
) -> int:
    """How many requests the demo made from `pod` (namespace/pod/url -> count) to `service`
    of the same namespace."""
    return sum(
        count
        for (where, name, url), count in sent.items()
        if where == namespace and name == pod and calls_service(url, service, namespace)
    )


def edge_problem(edge: EdgeSignals | None, sent: int) -> str | None:
    """Why the demo's own edge does not show exactly its requests (None: it does)."""
    if edge is None:
        return f"no istio_requests_total series for the edge; the demo sent {sent} requests"
    if (edge.requests_source, edge.requests_destination) != (sent, sent):
        return (
            f"{edge.source} -> {edge.destination}: reporter=source {edge.requests_source}, "
            f"reporter=destination {edge.requests_destination}; the demo sent {sent}"
        )
    if edge.success_ratio != 1.0:
        return f"{edge.source} -> {edge.destination}: success {format_ratio(edge.success_ratio)}"
    if not edge.mutual_tls:
        return f"{edge.source} -> {edge.destination}: not every request came over mutual TLS"
    return None


def counted_at_least(edge: EdgeSignals | None, sent: int) -> bool:
    """Both sides have counted (at least) the demo's requests: counters only grow, so waiting
    for this ends the wait, and equality is then checked."""
    return edge is not None and edge.requests_source >= sent and edge.requests_destination >= sent
