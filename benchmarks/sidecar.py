"""The sidecar, for real: start-to-ready time and the latency, CPU and memory a pair of
sidecars adds. Prints ONE JSON line. Needs root (it builds the network-namespace "cluster" of
tests/sidecar/mesh_kit.py: real `sidemesh discovery`, real capture, real agents and Envoys).

* `start_to_ready_s`: the client pod's agent is killed (its Envoy goes with it) and started
  again, N times; each sample is from spawning the agent process to the first 200 from
  `/healthz/ready` on the pod IP's 15021 (polled every 10 ms from the node), so it includes
  Python's start. `agent_reported_ready_s` is what the agent logs (from its own start).
* `latency`: an open-loop client (tests/sidecar/sidecar_app.py `load`, asyncio + uvloop,
  keep-alive connections, every latency counted from the moment the request was due) in the
  client pod, as the app uid, at --rate requests/s for --duration s per mode, after a warm-up:
  - `mesh`: to the service VIP:80: captured to the client's 15001, mTLS to the server's 15006,
    then the app on 8080;
  - `direct`: to the server pod's IP:8081, a port both pods exclude from capture by
    annotation (`traffic.sidecar.istio.io/excludeOutboundPorts` on the client,
    `excludeInboundPorts` on the server), so the same client, server and uid go straight.
  `added_*_ms` are mesh minus direct, per percentile. Modes alternate for --rounds rounds;
  each mode's percentiles are over all its rounds' samples.
* `sidecar_cpu_seconds_per_1000_requests`: utime+stime of agent + Envoy (from /proc) during
  the mesh runs, per 1,000 requests, per sidecar; `sidecar_rss_mib`: their RSS afterwards;
  `sidecar_private_mib`: the anonymous (unshared) part of it.
* `telemetry_cpu_seconds_per_1000_requests` (`on`, `off`): the server sidecar's CPU with
  Istio's standard metrics on and off (a mesh-wide Telemetry disabling ALL_METRICS, which
  today reaches inbound listeners only), alternating in the same run;
  `telemetry_cost_fraction` is (on - off) / on (target: at most 0.15).
* `bare_envoy_pair` (benchmarks/envoy_reference.py): the same load through two bare Envoys from
  the same wheel with mTLS between them and nothing of ours, on the node's loopback: what any
  Envoy pair adds on this machine. `added_beyond_bare_pair_ms` is the sidecars' excess over it.

Every wait is bounded. Nothing is tuned to flatter a figure: Envoy runs with the concurrency
the injected pod gets (ISTIO_CPU_LIMIT from the default 2-CPU limit), on however many CPUs
this host has (`cpus`), sharing them with the load generator and the app.

* with `--memory`, also benchmarks/sidecar_memory.py's figures (the agent's and Envoy's
  Private_Dirty idle and under load, start-to-ready), from its own cluster, same session:
  `agent_private_mb_idle`, `agent_private_mb_load`, `envoy_private_mb_idle`,
  `envoy_private_mb_load`, `start_to_ready_median_s`, … under `memory`.

    sudo .venv/bin/python benchmarks/sidecar.py [--starts 7] [--rate 1000] [--duration 10]
                                                [--memory]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "sidecar"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import envoy_reference
from mesh_kit import BACKEND, MeshKit, missing_requirement, start_pods
from sidecar_kubelet import HTTP_PORT, TCP_PORT
from sidecar_netns import (
    children,
    cpu_seconds,
    http_request,
    rss_bytes,
    run,
    wait_until,
)
from sidecar_pod import Pod

from sidemesh.api import names

DIRECT_PORT = 8081
_AGENT_READY = re.compile(r"sidecar ready ([0-9.]+)s after agent start")


def sidecar_pids(pod: Pod) -> dict[str, int]:
    """The sidecar's processes: the agent and its Envoy."""
    assert pod.agent is not None
    envoy = pod.envoy_pid()
    assert envoy is not None and children(pod.agent.pid) == [envoy]
    return {"agent": pod.agent.pid, "envoy": envoy}


def sidecar_cpu(pod: Pod) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in sidecar_pids(pod).items()}


def per_component(values: dict[str, float], digits: int) -> dict[str, float]:
    return {**{k: round(v, digits) for k, v in values.items()},
            "total": round(sum(values.values()), digits)}  # fmt: skip


def measure_starts(kit: MeshKit, pod: Pod, count: int) -> dict[str, Any]:
    spawn_to_ready: list[float] = []
    reported: list[float] = []
    for _ in range(count):
        assert pod.agent is not None
        envoy = pod.envoy_pid()
        pod.agent.signal(signal.SIGKILL)  # no drain: only the start is measured
        pod.agent.wait(30)
        wait_until(lambda e=envoy: e is None or not Path(f"/proc/{e}").exists(),
                   timeout=30, what="the old Envoy gone")  # fmt: skip
        started = time.monotonic()
        agent = pod.start_agent()

        def ready() -> bool:
            try:
                return pod.ready().status == 200
            except OSError:
                return False

        wait_until(ready, timeout=60, every=0.01, what="agent ready")
        spawn_to_ready.append(time.monotonic() - started)
        logged = wait_until(lambda a=agent: _AGENT_READY.search(a.output()),
                            timeout=10, what="the agent's ready log line")  # fmt: skip
        reported.append(float(logged[1]))
    return {
        "start_to_ready_s": {
            "median": round(statistics.median(spawn_to_ready), 3),
            "p90": round(envoy_reference.percentile(spawn_to_ready, 0.9), 3),
            "samples": [round(s, 3) for s in spawn_to_ready],
        },
        "agent_reported_ready_s": {
            "median": round(statistics.median(reported), 3),
            "p90": round(envoy_reference.percentile(reported, 0.9), 3),
        },
    }


def load(pod: Pod, host: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    argv = pod.app_command(
        "load", "--host", host, "--port", str(port), "--rate", str(args.rate),
        "--duration", str(args.duration / args.rounds), "--warmup", str(args.warmup),
        "--connections", str(args.connections), "--raw",
    )  # fmt: skip
    bound = args.duration + args.warmup + 120
    result = run(["ip", "netns", "exec", pod.netns, *argv], timeout=bound)
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [value for one in runs for value in one["latencies_ms"]]
    return {
        "requests": len(latencies),
        "failures": sum(one["failures"] for one in runs),
        "late_dispatches": sum(one["late_dispatches"] for one in runs),
        "p50_ms": round(envoy_reference.percentile(latencies, 0.50), 3),
        "p90_ms": round(envoy_reference.percentile(latencies, 0.90), 3),
        "p99_ms": round(envoy_reference.percentile(latencies, 0.99), 3),
    }


def requests_seen(client: Pod, backend: Pod) -> int:
    """Requests the two Envoys handled for the app: the client's outbound plus the server's
    inbound (to check that `direct` really bypasses both and `mesh` crosses both)."""
    outbound = client.stats().get(f"cluster.outbound|80||{BACKEND.hostname}.upstream_rq_total", 0)
    inbound = backend.stats().get(f"cluster.inbound|{HTTP_PORT}||.upstream_rq_total", 0)
    return outbound + inbound


def measure_latency(client: Pod, backend: Pod, args: argparse.Namespace) -> dict[str, Any]:
    targets = {"direct": (backend.ip, DIRECT_PORT), "mesh": (BACKEND.vip, 80)}
    for mode in ("direct", "mesh"):  # warm both paths (connections, pools, caches)
        warm = argparse.Namespace(**{**vars(args), "duration": 2.0, "rounds": 1})
        load(client, *targets[mode], warm)
    runs: dict[str, list[dict[str, Any]]] = {"direct": [], "mesh": []}
    pods = {"client": client, "server": backend}
    cpu = {name: {"agent": 0.0, "envoy": 0.0} for name in pods}
    through_sidecars = {"direct": 0, "mesh": 0}
    for _ in range(args.rounds):
        for mode in ("direct", "mesh"):
            before = {name: sidecar_cpu(pod) for name, pod in pods.items()}
            seen = requests_seen(client, backend)
            runs[mode].append(load(client, *targets[mode], args))
            through_sidecars[mode] += requests_seen(client, backend) - seen
            if mode == "mesh":
                for name, pod in pods.items():
                    for part, seconds in sidecar_cpu(pod).items():
                        cpu[name][part] += seconds - before[name][part]
    direct, mesh = combine(runs["direct"]), combine(runs["mesh"])
    thousands = sum(len(one["latencies_ms"]) for one in runs["mesh"]) / 1000
    # The warm-up requests of each mesh run also cost CPU: count them in.
    thousands += args.rounds * args.warmup * args.rate / 1000
    return {
        "latency": {
            "rate_rps": args.rate,
            "seconds_per_mode": args.duration,
            "connections": args.connections,
            "direct": direct,
            "mesh": mesh,
            "added_p50_ms": round(mesh["p50_ms"] - direct["p50_ms"], 3),
            "added_p90_ms": round(mesh["p90_ms"] - direct["p90_ms"], 3),
            "added_p99_ms": round(mesh["p99_ms"] - direct["p99_ms"], 3),
            # each mesh request counts twice (client outbound + server inbound), direct never
            "requests_through_sidecars": through_sidecars,
        },
        "sidecar_cpu_seconds_per_1000_requests": {
            name: per_component({k: v / thousands for k, v in parts.items()}, 4)
            for name, parts in cpu.items()
        },
        "sidecar_rss_mib": {
            name: per_component(
                {k: rss_bytes(pid) / 2**20 for k, pid in sidecar_pids(pod).items()}, 1
            )
            for name, pod in pods.items()
        },
        # RssAnon: the private memory each sidecar adds (libraries and the Envoy binary are
        # file pages shared by every sidecar on the node)
        "sidecar_private_mib": {
            name: per_component(
                {k: rss_bytes(pid, "RssAnon") / 2**20 for k, pid in sidecar_pids(pod).items()}, 1
            )
            for name, pod in pods.items()
        },
    }


METRICS_OFF = {
    "apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
    "metadata": {"name": "mesh-default", "namespace": "istio-system"},
    "spec": {"metrics": [{"overrides": [{"match": {"metric": "ALL_METRICS"}, "disabled": True}]}]},
}  # fmt: skip


def _set_metrics(kit: MeshKit, pods: dict[str, Pod], on: bool) -> None:
    """Istio's standard metrics on (no Telemetry) or off (a mesh-wide Telemetry disabling
    ALL_METRICS), then wait until every sidecar's Envoy holds that configuration."""
    path = kit.registry_dir / "telemetry.yaml"
    temporary = path.with_name(".telemetry.yaml.tmp")
    temporary.write_text(yaml.safe_dump_all([] if on else [METRICS_OFF]))
    os.replace(temporary, path)

    def counting(pod: Pod) -> bool:  # the active inbound listener (the dump lists extensions)
        dump = json.loads(pod.admin("/config_dump").body)
        listeners = [listener.get("active_state", {}) for config in dump["configs"]
                     for listener in config.get("dynamic_listeners", [])
                     if listener.get("name") == "virtualInbound"]  # fmt: skip
        return "envoy.access_loggers.stats" in json.dumps(listeners)

    def applied() -> bool:
        return all(counting(pod) == on for pod in pods.values())

    wait_until(applied, timeout=60, what=f"standard metrics {'on' if on else 'off'}")


def measure_telemetry_cost(
    kit: MeshKit, client: Pod, backend: Pod, args: argparse.Namespace
) -> dict[str, Any]:
    """The server sidecar's CPU (agent + Envoy) per 1,000 mesh requests with Istio's standard
    metrics on and off, alternating in the same run. "Off" (a Telemetry disabling ALL_METRICS)
    removes the stats access loggers of the inbound listener; the client side's outbound
    listeners keep theirs (they are shared per view and take no per-workload telemetry yet),
    and the peer-metadata headers are exchanged either way: the figure is the cost of counting
    on one side. Each switch is waited for; connections the client pooled before a switch
    may finish on the previous configuration while it drains."""
    pods = {"server": backend}
    cpu = {"on": 0.0, "off": 0.0}
    requests = {"on": 0, "off": 0}
    for _ in range(args.rounds):
        for mode in ("off", "on"):
            _set_metrics(kit, pods, mode == "on")
            before = {name: sum(sidecar_cpu(pod).values()) for name, pod in pods.items()}
            run_result = load(client, BACKEND.vip, 80, args)
            requests[mode] += len(run_result["latencies_ms"]) + int(args.warmup * args.rate)
            cpu[mode] += sum(sum(sidecar_cpu(pod).values()) - before[name]
                             for name, pod in pods.items())  # fmt: skip
    per_1000 = {mode: cpu[mode] / (requests[mode] / 1000) for mode in cpu}
    return {
        "telemetry_cpu_seconds_per_1000_requests": {
            mode: round(value, 4) for mode, value in per_1000.items()
        },
        "telemetry_cost_fraction": round((per_1000["on"] - per_1000["off"]) / per_1000["on"], 3),
        "telemetry_cost_target_fraction": 0.15,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=7)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per mode")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two modes")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="Envoy worker threads per sidecar (proxy.istio.io/config); default: the injector's",
    )
    parser.add_argument("--memory", action="store_true",
                        help="also run benchmarks/sidecar_memory.py (its defaults)")  # fmt: skip
    args = parser.parse_args()
    extra: dict[str, str] = {}
    if args.concurrency is not None:
        extra[names.ANNOTATION_PROXY_CONFIG] = json.dumps({"concurrency": args.concurrency})
    reason = missing_requirement()
    if reason is not None:
        print(json.dumps({"benchmark": "sidecar", "error": reason}))
        return 1
    result: dict[str, Any] = {"benchmark": "sidecar", "cpus": os.cpu_count()}
    with MeshKit() as kit:
        kit.add_service(BACKEND)
        client = kit.add_pod("client-0", app="client", service_account="client",
                             annotations={names.ANNOTATION_EXCLUDE_OUTBOUND_PORTS:
                                          str(DIRECT_PORT), **extra})  # fmt: skip
        backend = kit.add_pod("backend-0", app="backend", service_account="backend",
                              annotations={names.ANNOTATION_EXCLUDE_INBOUND_PORTS:
                                           str(DIRECT_PORT), **extra})  # fmt: skip
        backend.app_ports = (HTTP_PORT, TCP_PORT, DIRECT_PORT)
        kit.start_control_plane()
        start_pods(backend, client)
        result["envoy_concurrency"] = (
            args.concurrency
            if args.concurrency is not None
            else int(client.agent_env.get("ISTIO_CPU_LIMIT", "0"))
        )
        result.update(measure_starts(kit, client, args.starts))
        result.update(measure_latency(client, backend, args))
        result.update(measure_telemetry_cost(kit, client, backend, args))
        status = http_request(kit.node, client.ip, names.PORT_AGENT_STATUS, "/healthz/ready")
        result["client_ready_after"] = status.status == 200
    # The yardstick, same run and load: two bare Envoys with mTLS between them, nothing else.
    reference = envoy_reference.measure(
        rate=args.rate, duration=args.duration, rounds=args.rounds, warmup=args.warmup,
        connections=args.connections, concurrency=result["envoy_concurrency"],
    )  # fmt: skip
    result["bare_envoy_pair"] = reference
    latency = result["latency"]
    result["added_beyond_bare_pair_ms"] = {
        q: round(latency[f"added_{q}_ms"] - reference[f"added_{q}_ms"], 3)
        for q in ("p50", "p90", "p99")
    }
    if args.memory:
        import sidecar_memory

        memory_args = argparse.ArgumentParser()
        sidecar_memory.add_arguments(memory_args)
        result["memory"] = sidecar_memory.measure(memory_args.parse_args([]))
    result["targets"] = {"start_to_ready_median_s": 1.0, "added_p90_ms": 0.25,
                         "istio_published_added_p90_ms": 0.228}  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
