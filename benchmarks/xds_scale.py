"""xDS scale: N services, M simulated sidecars (grpc.aio ADS clients in separate processes),
one service changing at a time, over SotW and over Delta ADS. Prints ONE JSON line.

Reported per protocol (`sotw`, `delta`) and kind of change:
* `endpoints` — one service gains an endpoint (EDS for that cluster, to every proxy);
* `service` — one service's VIP moves (its listener `<VIP>_<port>` is replaced: Delta sends
  that one listener and one removal; SotW must resend every listener, as the protocol says);
* `virtual_service` — one VirtualService changes (its routes live in that service's listener,
  so Delta sends that one listener; no RDS: see `route_config_bytes`);
convergence per proxy (p50/p99/max of "snapshot set → that proxy received it"), full
convergence per round (time until the last affected proxy had it), server CPU seconds per push
round, the size of the response that carried the change, and the server's RSS (after the
initial sync, at the end, and the peak of that protocol's run). Initial sync time too, and how
many client streams had to be reopened (with the first reasons).

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
                                             [--protocols sotw,delta]
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

SERVICE_PORT = 80
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


def proxy_ip(index: int) -> str:
    return f"10.{1 + index // 62500}.{(index // 250) % 250}.{index % 250 + 1}"


def cluster_name(index: int) -> str:
    return f"outbound|{SERVICE_PORT}||svc{index}.ns{index % 50}.svc.cluster.local"


# --- simulated sidecars (client processes) ---------------------------------------------------


def client_main(args: dict[str, Any], first: int, count: int, t0: Any, queue: Any,
                commands: Any) -> None:  # fmt: skip
    asyncio.run(_clients(args, first, count, t0, queue, commands))


async def _clients(args: dict[str, Any], first: int, count: int, t0: Any, queue: Any,
                   commands: Any) -> None:  # fmt: skip
    from envoy.service.discovery.v3 import discovery_pb2
    from google.protobuf import struct_pb2
    from grpc import aio

    lds = "type.googleapis.com/envoy.config.listener.v3.Listener"
    cds = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    eds = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    delta = args["protocol"] == "delta"
    services, per_service = args["services"], max(1, args["proxies"] // args["services"])
    eds_names = [cluster_name(i) for i in range(services)]
    # One TCP connection per 50 streams (a local subchannel pool stops gRPC from funnelling
    # every channel into one shared connection, which caps concurrent streams).
    options = [("grpc.max_receive_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]
    channels = [
        aio.insecure_channel(args["address"], options=options) for _ in range(max(1, count // 20))
    ]
    marker = {"value": b""}  # bytes that identify the change of the current round
    latencies: list[float] = []
    sizes: list[int] = []
    synced: set[int] = set()
    all_synced = asyncio.Event()

    async def one(index: int) -> None:
        channel = channels[index % len(channels)]
        request_type = (discovery_pb2.DeltaDiscoveryRequest if delta
                        else discovery_pb2.DiscoveryRequest)  # fmt: skip
        response_type = (discovery_pb2.DeltaDiscoveryResponse if delta
                         else discovery_pb2.DiscoveryResponse)  # fmt: skip
        method = "DeltaAggregatedResources" if delta else "StreamAggregatedResources"
        call = channel.stream_stream(
            f"/envoy.service.discovery.v3.AggregatedDiscoveryService/{method}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=lambda raw: raw,
        )()
        service = min(index // per_service, services - 1)
        metadata = struct_pb2.Struct()
        metadata.update({"NAMESPACE": f"ns{service % 50}", "SERVICE_ACCOUNT": f"sa{service}"})
        first_request = request_type(type_url=cds)
        first_request.node.id = f"sidecar~{proxy_ip(index)}~p{index}.ns{service % 50}~x"
        first_request.node.metadata.CopyFrom(metadata)
        await call.write(first_request)
        if delta:  # like Envoy: explicit EDS names, wildcard LDS/CDS
            await call.write(request_type(type_url=eds, resource_names_subscribe=eds_names))
        else:
            await call.write(request_type(type_url=eds, resource_names=eds_names))
        await call.write(request_type(type_url=lds))
        seen_types: set[str] = set()
        while True:
            raw = await call.read()
            if raw is aio.EOF:
                return
            received = time.monotonic()
            response = response_type.FromString(raw)
            if delta:
                ack = request_type(type_url=response.type_url, response_nonce=response.nonce)
            else:  # SotW ACKs repeat the subscription, as Envoy's do
                ack = request_type(
                    type_url=response.type_url, response_nonce=response.nonce,
                    version_info=response.version_info,
                    resource_names=eds_names if response.type_url == eds else [],
                )  # fmt: skip
            await call.write(ack)
            if len(seen_types) < 3:
                seen_types.add(response.type_url)
                if len(seen_types) == 3:
                    synced.add(index)
                    if len(synced) == count:
                        all_synced.set()
            elif marker["value"] and marker["value"] in raw:
                latencies.append(received - t0.value)
                sizes.append(len(raw))

    failures: list[str] = []

    async def guarded(index: int) -> None:
        for _ in range(20):  # like Envoy: a failed stream is opened again after a backoff
            try:
                await one(index)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # counted and reported in the result line
                failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[:3]}"[:200])
                await asyncio.sleep(0.5)

    tasks = []
    for offset in range(count):
        tasks.append(asyncio.create_task(guarded(first + offset)))
        if offset % 100 == 99:
            await asyncio.sleep(0.05)  # do not open every stream in the same instant
    await all_synced.wait()
    queue.put(("synced", first, count, failures[:3], len(failures)))
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, commands.get)
        if command[0] == "stop":
            break
        _, marker_bytes, wait = command
        latencies.clear()
        sizes.clear()
        marker["value"] = marker_bytes
        deadline = loop.time() + wait
        while len(latencies) < count and loop.time() < deadline:
            await asyncio.sleep(0.01)
        queue.put(("round", first, list(latencies), list(sizes)))
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close()


# --- the control plane (this process) --------------------------------------------------------


def rss_mb() -> tuple[float, float]:
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak_rss() -> None:
    """Start a new peak (Linux: `5` to clear_refs resets VmHWM); best effort."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


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


async def run(options: argparse.Namespace, protocol: str) -> dict[str, Any]:
    from grpc import aio

    from sidemesh.xds.ads import AdsServer
    from sidemesh.xds.server import GRPC_OPTIONS

    reset_peak_rss()
    snapshot = build_snapshot(options.services, options.proxies)
    ads = AdsServer(snapshot, instance_id="bench")
    server = aio.server(options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((ads.handler(),))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()

    context = mp.get_context("spawn")
    t0 = context.Value("d", 0.0, lock=False)
    queue = context.Queue()
    per_process = -(-options.proxies // options.client_processes)
    workers = []
    started = time.monotonic()
    for number in range(options.client_processes):
        first = number * per_process
        count = min(per_process, options.proxies - first)
        commands = context.Queue()
        process = context.Process(target=client_main, daemon=True, args=(
            {"address": f"127.0.0.1:{port}", "services": options.services,
             "proxies": options.proxies, "protocol": protocol},
            first, count, t0, queue, commands))  # fmt: skip
        process.start()
        workers.append((process, commands))
    loop = asyncio.get_running_loop()

    async def next_message() -> Any:
        return await loop.run_in_executor(None, queue.get, True, options.timeout)

    reconnects = 0
    reconnect_reasons: list[str] = []
    for _ in workers:
        message = await next_message()  # "synced"
        reconnects += message[4]
        reconnect_reasons += message[3]
    initial_sync = time.monotonic() - started
    rss_connected, _ = rss_mb()
    results: dict[str, Any] = {}
    current = snapshot
    for kind, rounds in (("endpoints", options.rounds), ("service", options.service_rounds),
                         ("virtual_service", options.virtual_service_rounds)):  # fmt: skip
        per_proxy: list[float] = []
        full: list[float] = []
        cpu: list[float] = []
        sizes: list[int] = []
        missing = 0
        for round_number in range(rounds):
            current, marker = next_change(kind, current, round_number, options.services)
            for _, commands in workers:
                commands.put(("round", marker, options.timeout))
            await asyncio.sleep(0.2)  # let every client arm its marker
            cpu_before = cpu_seconds()
            t0.value = time.monotonic()
            ads.set_snapshot(current)
            latencies: list[float] = []
            for _ in workers:
                message = await next_message()
                latencies += message[2]
                sizes += message[3]
            cpu.append(cpu_seconds() - cpu_before)
            missing += options.proxies - len(latencies)
            per_proxy += latencies
            full.append(max(latencies) if latencies else float("nan"))
        results[kind] = {
            "rounds": rounds,
            "proxy_p50_s": round(percentile(per_proxy, 0.5), 4),
            "proxy_p99_s": round(percentile(per_proxy, 0.99), 4),
            "proxy_max_s": round(max(per_proxy), 4) if per_proxy else None,
            "full_convergence_p50_s": round(percentile(full, 0.5), 4),
            "full_convergence_p99_s": round(percentile(full, 0.99), 4),
            "server_cpu_s_per_push": round(statistics.mean(cpu), 4) if cpu else None,
            "response_bytes_p50": int(percentile([float(n) for n in sizes], 0.5))
            if sizes
            else None,
            "proxies_missed": missing,
        }
    for _, commands in workers:
        commands.put(("stop",))
    for process, _ in workers:
        process.join(10)
        if process.is_alive():
            process.terminate()
    rss_now, rss_peak = rss_mb()
    await server.stop(0)
    return {
        "initial_sync_s": round(initial_sync, 2),
        "client_stream_retries": reconnects,
        "client_retry_reasons": sorted(set(reconnect_reasons))[:2],
        **results,
        "server_rss_mb_connected": round(rss_connected, 1),
        "server_rss_mb_end": round(rss_now, 1),
        "server_rss_mb_peak": round(rss_peak, 1),
    }


async def run_all(options: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "xds_scale",
        "services": options.services,
        "proxies": options.proxies,
        "client_processes": options.client_processes,
        "cpus": os.cpu_count(),
    }
    for protocol in options.protocols.split(","):
        result[protocol] = await run(options, protocol)
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
    options = parser.parse_args()
    result = asyncio.run(run_all(options))
    import orjson

    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
