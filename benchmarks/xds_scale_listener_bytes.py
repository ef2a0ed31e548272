"""Where the bytes of one outbound service listener go (the resource a VirtualService change
sends every proxy over Delta ADS). Prints ONE JSON line: the whole listener (HTTP and TCP), its
HTTP connection manager's parts, the stats access logger, and per stat the tag names and the
formatter strings apart (tag names are Prometheus label names: fixed; formatters are ours).

    .venv/bin/python benchmarks/xds_scale_listener_bytes.py
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import sys
from typing import Any

import orjson
from envoy.extensions.access_loggers.stats.v3 import stats_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from sidemesh.xds import outbound
from sidemesh.xds.model import Service, ServicePort


def measure() -> dict[str, Any]:
    http = Service("ns0", "svc0", "10.96.0.1", (ServicePort(80, "http", "HTTP", 8080),))
    tcp = Service("ns0", "db", "10.96.0.2", (ServicePort(5432, "tcp", "TCP", 5432),))
    listener = outbound.service_listener(http, 80)
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[-1].typed_config.Unpack(manager)
    stats = stats_pb2.Config()
    manager.access_log[0].typed_config.Unpack(stats)
    stat = stats.counters[0].stat
    return {
        "benchmark": "xds_scale_listener_bytes",
        "http_listener": listener.ByteSize(),
        "tcp_listener": outbound.service_listener(tcp, 5432).ByteSize(),
        "http_connection_manager": manager.ByteSize(),
        "access_log": sum(log.ByteSize() for log in manager.access_log),
        "route_config": manager.route_config.ByteSize(),
        "http_filters": sum(f.ByteSize() for f in manager.http_filters),
        "stats": len(stats.counters) + len(stats.histograms),
        "tags_per_stat": len(stat.tags),
        "stat_bytes": stat.ByteSize(),
        "tag_name_chars": sum(len(tag.name) for tag in stat.tags),
        "tag_value_chars": sum(len(tag.value_format) for tag in stat.tags),
    }


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(measure()).decode() + "\n")
