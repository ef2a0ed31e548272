"""Injection webhook benchmark: prints one JSON line.

In process (one run, same machine, medians):
* handler_us — full admission handling (`webhook.admission.review`: decode, decide, render,
  patch, encode) of a typical Deployment pod (2 containers, probes, 20 env vars) by the real
  Injector, in the steady state of a rollout (replicas repeat the same pod: the admission memo
  answers); handler_uncached_us — the same with the memo off (template text still cached);
  handler_cold_us — every pod different (nothing cached: render + YAML parse + diff each time).
* codec_floor_us — orjson decode + encode of that same request and response.
* env2000_* — the same figures for a pod with 2,000 env vars, and the ratio to the typical pod.
Over real HTTPS (one server process, 16 keep-alive connections from a separate process):
* https_rps, p99_ms for `sidemesh discovery` with the real engine, in a rollout's steady state
  (one pod template; every request has its own uid, as from the API server, and the answer
  must echo it); floor_rps for the same stack returning a canned response. Alternating rounds,
  best of each (the machine is noisy). https_distinct_pods_*: every request a different pod.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from webhook_server import run_load, start_floor, start_webhook

from proc_support import cpu_seconds
from sidemesh.inject.engine import Injector
from sidemesh.webhook.admission import review

POD_TEMPLATE_HASH = "7d4f8b9c6"  # in the typical pod's names and labels


def typical_review(env_vars: int = 20, variant: int = 0) -> bytes:
    env = [{"name": f"VAR_{i}", "value": f"value-{i}"} for i in range(env_vars)]
    hash_ = POD_TEMPLATE_HASH
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"web-{variant}-{hash_}-",
            "namespace": "shop",
            "labels": {"app": f"web-{variant}", "version": "v1", "pod-template-hash": hash_},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"web-{variant}-{hash_}",
                 "uid": "5f1c", "controller": True, "blockOwnerDeletion": True}
            ],
        },
        "spec": {
            "serviceAccountName": "web",
            "containers": [
                {
                    "name": "web",
                    "image": "shop/web:1.2",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "env": env,
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 10},
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                },
                {"name": "cache", "image": "redis:7", "ports": [{"containerPort": 6379}]},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }  # fmt: skip
    return orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "object": pod,
            },
        }
    )


def median_us(action: Callable[[], Any], rounds: int) -> float:
    for _ in range(min(50, rounds)):
        action()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def in_process(env_vars: int, rounds: int) -> dict[str, float]:
    body = typical_review(env_vars)
    memo, plain = Injector(), Injector(memo_size=0)
    result = review(body, memo)
    assert result.status == 200 and b'"patch"' in result.body, result.body[:300]
    response = result.body
    cold_bodies = [typical_review(env_vars, variant=i) for i in range(1, rounds + 60)]
    cold_iter = iter(cold_bodies)
    figures = {
        "handler_us": median_us(lambda: review(body, memo), rounds),
        "handler_uncached_us": median_us(lambda: review(body, plain), rounds),
        "handler_cold_us": median_us(lambda: review(next(cold_iter), plain), rounds),
        "codec_floor_us": median_us(
            lambda: (orjson.dumps(orjson.loads(body)), orjson.dumps(orjson.loads(response))),
            rounds,
        ),
    }
    return {k: round(v, 1) for k, v in figures.items()}


def over_https(duration: float, rounds: int) -> dict[str, Any]:
    body = typical_review()
    best: dict[str, dict[str, Any]] = {}
    cpu: dict[str, list[float]] = {"floor": [], "webhook": []}
    with tempfile.TemporaryDirectory() as directory:
        engine_dir, floor_dir = Path(directory, "engine"), Path(directory, "floor")
        engine_dir.mkdir()
        floor_dir.mkdir()
        with start_floor(floor_dir) as floor, start_webhook(engine_dir) as webhook:
            for _ in range(rounds):
                for name, server in (("floor", floor), ("webhook", webhook)):
                    before = cpu_seconds(server.process.pid)
                    result = run_load(
                        server.port, body, ca_file=server.ca_file, duration=duration,
                        echo_uid=name != "floor",
                    )  # fmt: skip
                    used = cpu_seconds(server.process.pid) - before
                    if result["requests"]:
                        cpu[name].append(used / result["requests"] * 1e6)
                    if name not in best or result["rps"] > best[name]["rps"]:
                        best[name] = result
            # Every request a different pod (nothing cached anywhere): what a burst of distinct
            # workloads costs. One round; no target, reported so the cached figure is not all.
            distinct = run_load(
                webhook.port, body, ca_file=webhook.ca_file, duration=duration,
                vary=POD_TEMPLATE_HASH,
            )  # fmt: skip
    return {
        "https_distinct_pods_rps": distinct["rps"],
        "https_distinct_pods_p99_ms": distinct["p99_ms"],
        "https_distinct_pods_errors": distinct["errors"],
        "https_rps": best["webhook"]["rps"],
        "p99_ms": best["webhook"]["p99_ms"],
        "errors": best["webhook"]["errors"],
        "floor_rps": best["floor"]["rps"],
        "floor_p99_ms": best["floor"]["p99_ms"],
        "https_vs_floor": round(best["webhook"]["rps"] / best["floor"]["rps"], 3)
        if best["floor"]["rps"]
        else None,
        # Server CPU per request (median over rounds): what each request costs the server
        # process, whatever else the machine is doing; floor/webhook is the same ratio as
        # rps would be for a CPU-bound server with a client that is never the bottleneck.
        "server_cpu_us_per_request": round(statistics.median(cpu["webhook"]), 1),
        "floor_cpu_us_per_request": round(statistics.median(cpu["floor"]), 1),
        "cpu_floor_vs_webhook": round(
            statistics.median(cpu["floor"]) / statistics.median(cpu["webhook"]), 3
        ),
    }


def main() -> None:
    rounds = int(os.environ.get("SIDEMESH_BENCH_ITERATIONS", "1000"))
    typical = in_process(20, rounds)
    big = in_process(2000, max(100, rounds // 10))
    figures: dict[str, Any] = {"benchmark": "webhook", **typical}
    figures["handler_vs_codec_floor"] = round(typical["handler_us"] / typical["codec_floor_us"], 2)
    figures["uncached_vs_codec_floor"] = round(
        typical["handler_uncached_us"] / typical["codec_floor_us"], 2
    )
    figures["cold_vs_codec_floor"] = round(
        typical["handler_cold_us"] / typical["codec_floor_us"], 2
    )
    for key, value in big.items():
        figures[f"env2000_{key}"] = value
    figures["env2000_vs_typical_uncached"] = round(
        big["handler_uncached_us"] / typical["handler_uncached_us"], 2
    )
    figures["env2000_input_size_ratio"] = round(
        len(typical_review(2000)) / len(typical_review(20)), 2
    )
    figures.update(
        over_https(
            float(os.environ.get("SIDEMESH_BENCH_SECONDS", "3")),
            int(os.environ.get("SIDEMESH_BENCH_ROUNDS", "3")),
        )
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
