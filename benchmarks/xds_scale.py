"""xDS scale: N services, M simulated sidecars (grpc.aio ADS clients in separate processes,
`xds_scale_clients.py`), one service changing at a time, over SotW and over Delta ADS. Prints
ONE JSON line.

Proxies connect in waves (`--wave-size`, default 250): a wave's proxies have all ACKed their
first CDS, EDS and LDS before the next wave connects, as a fleet rolls out rather than 2,000
sidecars dialling in the same instant. Reported: the initial sync time in all, the number of
waves and the p50/max time of one wave.

Reported per protocol (`sotw`, `delta`) and kind of change:
* `endpoints` — one service gains an endpoint (EDS for that cluster, to every proxy);
* `service` — one service's VIP moves (its listener `<VIP>_<port>` is replaced: Delta sends
  that one listener and one removal; SotW must resend every listener, as the protocol says);
* `virtual_service` — one VirtualService changes (its routes live in that service's listener,
  so Delta sends that one listener; no RDS: see `route_config_bytes`);
convergence per proxy (p50/p99/max of "snapshot set → that proxy received it"), full
convergence per round (time until the last affected proxy had it), the server's own view
(`server_all_written_*`: snapshot set → the last connection's response written, from
`pilot_proxy_convergence_time`'s observations), server CPU seconds per push round, the size of
the response that carried the change, whether every proxy got it and ends SYNCED, and memory:
the server's RSS (after the initial sync, at the end, and the peak of that protocol's run) and
the client processes' peak RSS together. Initial sync time too, and how many client streams
had to be reopened (with the first reasons).

Memory is watched (every 0.25 s): past `--memory-limit-mb` (server and clients together) the
run prints what it has, with `aborted`, and ends (the machine is shared). With 1,000 services
one proxy's LDS is ~7.6 MB, so SotW's listener rounds (every proxy gets its whole set again)
can be limited on their own with `--sotw-listener-rounds`.

The server runs in this process with the gRPC options the control plane ships
(`sidemesh.xds.server.GRPC_OPTIONS`) on plaintext (authentication costs per stream, not per
push).

Also, computed from the generator without clients: the route configuration bytes one proxy
receives (`route_config_bytes_per_proxy`), with every service visible and with a root-namespace
Sidecar scoping each proxy to its own namespace (`egress.hosts: ["./*"]`). Routes travel inline
in each service's listener, not over RDS: every VIP has a listener of its own, so a
VirtualService change already replaces exactly one resource, which is what RDS buys Istio.

Targets to report against: p99 ≤ 1 s, RSS ≤ 1.5 GB on 2 cores. Localhost only; every wait is
bounded by --timeout.

    .venv/bin/python benchmarks/xds_scale.py [--services 1000] [--proxies 2000]
        [--protocols sotw,delta] [--wave-size 250] [--memory-limit-mb 8000]
        [--sotw-listener-rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import socket
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

import orjson
from xds_scale_clients import SERVICE_PORT, client_allocator_environment, client_main, proxy_ip
from xds_scale_memory import MemoryWatchdog, reset_peak_rss, rss_mb

from sidemesh.api.prometheus_text import Histogram
from sidemesh.xds.metrics import PUSH_BUCKETS

TARGET_PORT = 8080


def build_snapshot(services: int, proxies: int) -> Any:
    from sidemesh.xds.model import Endpoint, MeshSnapshot, Service, ServicePort

    all_services = []
    endpoints = {}
    per_service = max(1, proxies // services)
    for index in range(services):
        service = Service(f"ns{index % 50}", f"svc{index}", vip(index),
                          (ServicePort(SERVICE_PORT, "http", "HTTP", TARGET_PORT),))  # fmt: skip
        all_services.append(service)
        endpoints[service.hostname] = tuple(
            Endpoint(proxy_ip(index * per_service + k), TARGET_PORT, SERVICE_PORT, True,
                     f"sa{index}", service.namespace, f"svc{index}-{k}", True)
            for k in range(per_service)
        )  # fmt: skip
    return MeshSnapshot(1, tuple(all_services), endpoints)


def vip(index: int) -> str:
    return f"10.96.{index // 250}.{index % 250 + 1}"


# --- the control plane (this process) --------------------------------------------------------


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def route_config_bytes(snapshot: Any) -> dict[str, int]:
    """Bytes of route configuration (every HTTP connection manager's `route_config`) one proxy
    receives, without and with a root-namespace Sidecar keeping each proxy to its namespace."""
    from envoy.config.listener.v3 import listener_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    from sidemesh.api import networking
    from sidemesh.xds.cache import ResourceCache
    from sidemesh.xds.proxy import parse_node
    from sidemesh.xds.resource_names import TYPE_LISTENER

    proxy = parse_node(f"sidecar~{proxy_ip(0)}~p0.ns0~x", {"NAMESPACE": "ns0"})
    sidecar = networking.validate({
        "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "istio-system"},
        "spec": {"egress": [{"hosts": ["./*"]}]},
    })  # fmt: skip
    found = {}
    scoped = replace(snapshot, sidecars=(sidecar,))
    for label, mesh in (("all_services", snapshot), ("sidecar_own_namespace", scoped)):
        total = 0
        listeners = ResourceCache(mesh).resources_for(proxy)[TYPE_LISTENER]
        for encoded in listeners.resources.values():
            listener = listener_pb2.Listener.FromString(encoded.body)
            for chain in listener.filter_chains:
                for network_filter in chain.filters:
                    manager = hcm_pb2.HttpConnectionManager()
                    if network_filter.typed_config.Unpack(manager):
                        total += manager.route_config.ByteSize()
        found[label] = total
        found[f"{label}_listeners"] = len(listeners.resources)
    return found


def next_change(kind: str, current: Any, round_number: int, services: int) -> tuple[Any, bytes]:
    """The snapshot after one change, and bytes that appear only in responses carrying it."""
    from sidemesh.xds.model import Endpoint

    target = round_number % services
    if kind == "virtual_service":
        from sidemesh.api import networking

        host = current.services[target].hostname
        marker = f"vs-round-{round_number}-end"
        changed = networking.validate({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": current.services[target].name,
                         "namespace": current.services[target].namespace},
            "spec": {"hosts": [host], "http": [{"name": marker, "timeout": "5s",
                                                "route": [{"destination": {"host": host}}]}]},
        })  # fmt: skip
        kept = [v for v in current.virtual_services
                if (v.namespace, v.name) != (changed.namespace, changed.name)]  # fmt: skip
        routes = tuple(sorted((*kept, changed), key=lambda v: (v.namespace, v.name)))
        return replace(current, version=current.version + 1, virtual_services=routes), (
            marker.encode())  # fmt: skip
    if kind == "endpoints":
        address = f"10.250.{round_number // 250}.{round_number % 250 + 1}"
        host = current.services[target].hostname
        endpoints = dict(current.endpoints)
        endpoints[host] = (*endpoints[host], Endpoint(address, TARGET_PORT, SERVICE_PORT))
        return replace(current, version=current.version + 1, endpoints=endpoints), address.encode()
    new_vip = f"10.251.{round_number // 250}.{round_number % 250 + 1}"
    moved = list(current.services)
    moved[target] = replace(moved[target], vip=new_vip)
    return replace(current, version=current.version + 1, services=tuple(moved)), new_vip.encode()


class RecordingHistogram(Histogram):
    """`pilot_proxy_convergence_time` that also keeps its observations: the server observes,
    per connection, "snapshot set → that connection's last response written" (a write ends
    when gRPC handed the bytes to the socket, so it includes waiting on the proxy reading)."""

    def __init__(self) -> None:
        super().__init__(PUSH_BUCKETS)
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        super().observe(value)
        self.values.append(value)


async def run(
    options: argparse.Namespace, protocol: str, watchdog: MemoryWatchdog
) -> dict[str, Any]:
    from grpc import aio

    from sidemesh.xds.ads import AdsServer
    from sidemesh.xds.metrics import XdsMetrics
    from sidemesh.xds.server import GRPC_OPTIONS

    reset_peak_rss()
    watchdog.reset()
    snapshot = build_snapshot(options.services, options.proxies)
    push_time = RecordingHistogram()
    ads = AdsServer(snapshot, instance_id="bench", metrics=XdsMetrics(push_time=push_time))
    server = aio.server(options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((ads.handler(),))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()

    context = mp.get_context("spawn")
    t0 = context.Value("d", 0.0, lock=False)
    results = context.Queue()
    workers = []
    processes = min(options.client_processes, options.proxies)
    for _ in range(processes):
        commands = context.Queue()
        process = context.Process(target=client_main, daemon=True, args=(
            {"address": f"127.0.0.1:{port}", "services": options.services,
             "proxies": options.proxies, "protocol": protocol, "timeout": options.timeout},
            t0, results, commands))  # fmt: skip
        with client_allocator_environment():
            process.start()
        watchdog.pids.append(process.pid)
        workers.append((process, commands))
    loop = asyncio.get_running_loop()

    async def replies(count: int) -> list[Any]:
        return [await loop.run_in_executor(None, results.get, True, options.timeout)
                for _ in range(count)]  # fmt: skip

    figures: dict[str, Any] = {"wave_size": options.wave_size}
    watchdog.partial = {"benchmark": "xds_scale", "protocol": protocol, **figures}
    # Waves: each wave's proxies have ACKed their first CDS, EDS and LDS before the next wave
    # connects. Proxy i runs in process i % processes, so each wave is spread over all of them.
    started = time.monotonic()
    waves: list[float] = []
    synced = retries = 0
    retry_reasons: list[str] = []
    for first in range(0, options.proxies, options.wave_size):
        wave = range(first, min(first + options.wave_size, options.proxies))
        wave_started = time.monotonic()
        busy = 0
        for number, (_, commands) in enumerate(workers):
            indices = [i for i in wave if i % processes == number]
            if indices:
                commands.put(("connect", indices))
                busy += 1
        for message in await replies(busy):
            synced += message[1]
            retry_reasons += message[3]
            retries += message[4]
        waves.append(time.monotonic() - wave_started)
        watchdog.partial.update(proxies_synced=synced, waves_done=len(waves),
                                server_rss_mb=round(rss_mb()[0], 1),
                                clients_rss_mb_peak=round(watchdog.peak_clients_mb, 1))  # fmt: skip
    figures.update({
        "initial_sync_s": round(time.monotonic() - started, 2),
        "waves": len(waves),
        "wave_sync_p50_s": round(percentile(waves, 0.5), 3),
        "wave_sync_max_s": round(max(waves), 3),
        "proxies_synced": synced,
        "server_rss_mb_connected": round(rss_mb()[0], 1),
    })  # fmt: skip
    current = snapshot
    for kind, rounds in rounds_of(options, protocol):
        per_proxy: list[float] = []
        full: list[float] = []
        written: list[float] = []
        cpu: list[float] = []
        sizes: list[int] = []
        missing = 0
        for round_number in range(rounds):
            current, marker = next_change(kind, current, round_number, options.services)
            for _, commands in workers:
                commands.put(("round", marker, options.timeout))
            await replies(len(workers))  # every process has armed its marker
            cpu_before = cpu_seconds()
            push_time.values.clear()
            t0.value = time.monotonic()
            ads.set_snapshot(current)
            latencies: list[float] = []
            for message in await replies(len(workers)):
                latencies += message[1].values()
                sizes += message[2]
            cpu.append(cpu_seconds() - cpu_before)
            written.append(max(push_time.values, default=float("nan")))
            missing += options.proxies - len(latencies)
            per_proxy += latencies
            full.append(max(latencies) if latencies else float("nan"))
        figures[kind] = {
            "rounds": rounds,
            "proxy_p50_s": round(percentile(per_proxy, 0.5), 4),
            "proxy_p99_s": round(percentile(per_proxy, 0.99), 4),
            "proxy_max_s": round(max(per_proxy), 4) if per_proxy else None,
            "full_convergence_p50_s": round(percentile(full, 0.5), 4),
            "full_convergence_max_s": round(max(full), 4) if full else None,
            "server_all_written_p50_s": round(percentile(written, 0.5), 4),
            "server_all_written_max_s": round(max(written), 4) if written else None,
            "server_cpu_s_per_push": round(statistics.mean(cpu), 4) if cpu else None,
            "response_bytes_p50": int(percentile([float(n) for n in sizes], 0.5))
            if sizes
            else None,
            "proxies_missed": missing,
        }
        watchdog.partial[kind] = figures[kind]
    figures["proxies_synced_at_end"] = await count_synced(ads, options.proxies, options.timeout)
    for _, commands in workers:
        commands.put(("stop",))
    for process, _ in workers:
        await loop.run_in_executor(None, process.join, 10)
        if process.is_alive():
            process.terminate()
    watchdog.pids.clear()
    rss_now, rss_peak = rss_mb()
    await server.stop(0)
    return {
        **figures,
        "client_stream_retries": retries,
        "client_retry_reasons": sorted(set(retry_reasons))[:2],
        "server_rss_mb_end": round(rss_now, 1),
        "server_rss_mb_peak": round(rss_peak, 1),
        "clients_rss_mb_peak": round(watchdog.peak_clients_mb, 1),
        "server_response_memo_mb": round(ads.response_memo_bytes / 2**20, 1),
    }


def rounds_of(options: argparse.Namespace, protocol: str) -> list[tuple[str, int]]:
    """Rounds per kind of change; SotW's listener changes can be limited on their own (each
    resends every proxy its whole listener set: megabytes per proxy at 1,000 services)."""
    service, virtual_service = options.service_rounds, options.virtual_service_rounds
    if protocol == "sotw" and options.sotw_listener_rounds is not None:
        service = min(service, options.sotw_listener_rounds)
        virtual_service = min(virtual_service, options.sotw_listener_rounds)
    return [("endpoints", options.rounds), ("service", service),
            ("virtual_service", virtual_service)]  # fmt: skip


async def count_synced(ads: Any, proxies: int, timeout: float) -> int:
    """Proxies whose every type is SYNCED (ACKed the latest response), waiting for the last
    ACKs to arrive (bounded by `timeout`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = ads.status()
        synced = sum(all(t["status"] == "SYNCED" for t in row["types"].values()) for row in rows)
        if synced >= proxies or loop.time() > deadline:
            return int(synced)
        await asyncio.sleep(0.2)


async def run_all(options: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "xds_scale",
        "services": options.services,
        "proxies": options.proxies,
        "client_processes": options.client_processes,
        "cpus": os.cpu_count(),
    }
    with MemoryWatchdog(options.memory_limit_mb) as watchdog:
        for protocol in options.protocols.split(","):
            result[protocol] = await run(options, protocol, watchdog)
    result["route_config_bytes_per_proxy"] = route_config_bytes(
        build_snapshot(options.services, options.proxies)
    )
    result["targets"] = {"p99_s": 1.0, "rss_mb": 1536}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--proxies", type=int, default=2000)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--service-rounds", type=int, default=3)
    parser.add_argument("--virtual-service-rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--protocols", default="sotw,delta", help="comma-separated: sotw, delta")
    parser.add_argument(
        "--wave-size",
        type=int,
        default=250,
        help="proxies that connect together; the next wave waits for their sync",
    )
    parser.add_argument(
        "--sotw-listener-rounds",
        type=int,
        default=None,
        help="at most this many service and VirtualService rounds over SotW",
    )
    parser.add_argument(
        "--memory-limit-mb",
        type=float,
        default=8000,
        help="abort when server and clients together use more (RSS)",
    )
    options = parser.parse_args()
    if options.wave_size < 1 or options.proxies < 1 or options.services < 1:
        parser.error("--wave-size, --proxies and --services must be at least 1")
    result = asyncio.run(run_all(options))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
