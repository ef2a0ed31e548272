"""The sidecar's own memory: Private_Dirty (/proc/PID/smaps_rollup) of the agent and of Envoy,
idle and under load, and start-to-ready. Prints ONE JSON line. Needs root (the network-namespace
"cluster" of tests/sidecar/mesh_kit.py: real discovery, capture, agents and Envoys).

* `*_private_mb_idle`: the backend pod's sidecar, --settle seconds after it became ready.
* `*_private_mb_load`: the peak over samples every 0.5 s while, for --duration seconds,
  - the agent's status port serves --rate requests/s from inside the pod (keep-alive
    connections, open loop): half app probes (`/app-health/app/readyz`), four in ten
    readiness checks through Envoy (15021 `/healthz/ready`, Envoy asks the agent), one in
    ten merged metrics (15020 `/stats/prometheus`: Envoy's, the app's and the agent's);
  - the client pod's app sends --rate requests/s through both sidecars (mTLS);
  - both pods hold 20-second certificates renewed at half their life, so SDS pushes a new
    certificate to Envoy about every 10 s (the run counts the renewals it saw).
  `agent_*` is the agent process itself. A helper it runs for a moment (the certificate
  request child, about 0.3 s per renewal) is reported apart as `agent_helpers_private_mb_peak`,
  and `agent_with_helpers_private_mb_peak` is the largest sum seen at one instant.
* `start_to_ready_median_s`: benchmarks/sidecar.py's measurement (agent killed and started
  again --starts times; spawn to the first 200 from 15021 `/healthz/ready`).

    sudo .venv/bin/python benchmarks/sidecar_memory.py [--starts 7] [--rate 1000] [--duration 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "sidecar"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mesh_kit import BACKEND, MeshKit, missing_requirement, start_pods
from sidecar_netns import children, http_request, process_name, run
from sidecar_pod import Pod

from sidecar import load, measure_starts
from sidemesh.api import names

SHORT_LIVED_CERTIFICATES = json.dumps(
    {"proxyMetadata": {"SECRET_TTL": "20s", "SIDEMESH_CERT_RENEW_FRACTION": "0.5"}}
)

# An open-loop HTTP/1.1 keep-alive load generator, run as root inside the pod's namespace
# (root's traffic to 127.0.0.1 is not captured). Prints one JSON line.
_STATUS_LOAD = r"""
import asyncio, json, sys, time
rate, duration, connections = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
targets = [(int(p), path) for p, path in (t.split(":", 1) for t in sys.argv[4:])]
counts = {"ok": 0, "failed": 0, "by_status": {}}

async def connection(index):
    streams = {}
    interval = connections / rate
    due = time.monotonic() + index * interval / connections
    end = time.monotonic() + duration
    n = index
    while due < end:
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        port, path = targets[n % len(targets)]
        n += connections
        due += interval
        try:
            if port not in streams:
                streams[port] = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = streams[port]
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await asyncio.wait_for(reader.readexactly(length), 5)
            counts["by_status"][str(status)] = counts["by_status"].get(str(status), 0) + 1
            counts["ok" if status == 200 else "failed"] += 1
        except Exception:
            counts["failed"] += 1
            streams.pop(port, None)

async def main():
    await asyncio.gather(*(connection(i) for i in range(connections)))
    print(json.dumps(counts))

asyncio.run(main())
"""


def private_dirty_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1]) / 1024
    return 0.0


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def sidecar_memory(pod: Pod) -> dict[str, float]:
    """Private_Dirty of the agent, of its other helpers (summed) and of Envoy, in MB."""
    assert pod.agent is not None
    agent_pid = pod.agent.pid
    # `ip netns exec` and setpriv exec into the agent, so the spawned pid is the agent's.
    figures = {"agent": private_dirty_mb(agent_pid), "helpers": 0.0, "envoy": 0.0}
    for pid in descendants(agent_pid):
        try:
            part = "envoy" if process_name(pid) == "envoy" else "helpers"
            figures[part] += private_dirty_mb(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass  # a helper that ended meanwhile
    return figures


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def measure_load(client: Pod, backend: Pod, args: argparse.Namespace) -> dict[str, Any]:
    targets = (
        [f"{names.PORT_AGENT_STATUS}:/app-health/app/readyz"] * 5
        + [f"{names.PORT_HEALTH}:/healthz/ready"] * 4
        + [f"{names.PORT_AGENT_STATUS}:/stats/prometheus"]
    )
    status_argv = ["ip", "netns", "exec", backend.netns, sys.executable, "-c", _STATUS_LOAD,
                   str(args.rate), str(args.duration), "8", *targets]  # fmt: skip
    results: dict[str, Any] = {}

    def status_load() -> None:
        done = run(status_argv, timeout=args.duration + 60)
        results["status_port"] = json.loads(done.stdout.strip().splitlines()[-1])

    def mesh_load() -> None:
        mesh = argparse.Namespace(rate=args.rate, duration=args.duration, rounds=1, warmup=0.0,
                                  connections=16)  # fmt: skip
        summary = load(client, BACKEND.vip, 80, mesh)
        results["mesh"] = {"requests": len(summary["latencies_ms"]),
                           "failures": summary["failures"]}  # fmt: skip

    workers = [threading.Thread(target=status_load), threading.Thread(target=mesh_load)]
    renewals_before = _renewals(backend)
    for worker in workers:
        worker.start()
    peak = {"agent": 0.0, "helpers": 0.0, "envoy": 0.0, "agent_with_helpers": 0.0}
    while any(worker.is_alive() for worker in workers):
        sample = sidecar_memory(backend)
        sample["agent_with_helpers"] = sample["agent"] + sample["helpers"]
        peak = {k: max(peak[k], sample[k]) for k in peak}
        time.sleep(0.1)
    for worker in workers:
        worker.join()
    results["certificate_renewals_during_load"] = _renewals(backend) - renewals_before
    results["peak"] = peak
    return results


def _renewals(pod: Pod) -> int:
    """The agent's own counter, from the merged metrics."""
    reply = http_request(pod.netns, "127.0.0.1", names.PORT_AGENT_STATUS, "/stats/prometheus")
    for line in reply.body.splitlines():
        if line.startswith("sidemesh_agent_cert_renewals_total "):
            return int(float(line.split()[1]))
    return -1


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The figures (see the module doc); `args` as main's parser makes them."""
    result: dict[str, Any] = {}
    proxy_config = json.loads(SHORT_LIVED_CERTIFICATES)
    if args.concurrency is not None:
        proxy_config["concurrency"] = args.concurrency  # Envoy's worker threads
    annotations = {names.ANNOTATION_PROXY_CONFIG: json.dumps(proxy_config)}
    with MeshKit() as kit:
        kit.add_service(BACKEND)
        client = kit.add_pod("client-0", app="client", service_account="client",
                             annotations=annotations)  # fmt: skip
        backend = kit.add_pod("backend-0", app="backend", service_account="backend",
                              annotations=annotations)  # fmt: skip
        kit.start_control_plane()
        start_pods(backend, client)
        starts = measure_starts(kit, backend, args.starts)
        backend.wait_ready()
        time.sleep(args.settle)
        idle = sidecar_memory(backend)
        assert backend.agent is not None
        result["agent_threads_idle"] = threads(backend.agent.pid)
        result["envoy_concurrency"] = (
            args.concurrency
            if args.concurrency is not None
            else int(backend.agent_env.get("ISTIO_CPU_LIMIT", "0"))
        )
        loaded = measure_load(client, backend, args)
        result.update({
            "agent_private_mb_idle": round(idle["agent"], 1),
            "agent_private_mb_load": round(loaded["peak"]["agent"], 1),
            "agent_helpers_private_mb_peak": round(loaded["peak"]["helpers"], 1),
            "agent_with_helpers_private_mb_peak": round(loaded["peak"]["agent_with_helpers"], 1),
            "envoy_private_mb_idle": round(idle["envoy"], 1),
            "envoy_private_mb_load": round(loaded["peak"]["envoy"], 1),
            "start_to_ready_median_s": starts["start_to_ready_s"]["median"],
            "start_to_ready_s": starts["start_to_ready_s"],
            "agent_reported_ready_s": starts["agent_reported_ready_s"],
            "load": {"rate_rps": args.rate, "seconds": args.duration,
                     **{k: v for k, v in loaded.items() if k != "peak"}},
        })  # fmt: skip
    result["targets"] = {"agent_private_mb_idle": 15, "agent_private_mb_load": 20,
                         "start_to_ready_median_s": 0.5}  # fmt: skip
    return result


def add_arguments(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    parser.add_argument(f"--{prefix}starts", dest="starts", type=int, default=7)
    parser.add_argument(f"--{prefix}rate", dest="rate", type=float, default=1000.0)
    parser.add_argument(f"--{prefix}duration", dest="duration", type=float, default=20.0)
    parser.add_argument(f"--{prefix}settle", dest="settle", type=float, default=5.0)
    parser.add_argument(
        f"--{prefix}concurrency", dest="concurrency", type=int, default=None,
        help="Envoy worker threads (proxy.istio.io/config); default: the injector's",
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args()
    reason = missing_requirement()
    if reason is not None:
        print(json.dumps({"benchmark": "sidecar_memory", "error": reason}))
        return 1
    print(json.dumps({"benchmark": "sidecar_memory", "cpus": os.cpu_count(), **measure(args)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
