"""`sidemesh kube-inject -f LIST` at 1k, 10k and 50k pods: prints one JSON line.

The input is a `kubectl get pods -o yaml`-style List (keys sorted, so `items` comes before
`kind`): one Deployment per 20 pods, each Deployment its own app name and labels (the
webhook benchmark's typical pod, `webhook.typical_review`), and every replica its own name,
uid, pod IP and node, so each pod is a distinct object while the rendered sidecars repeat
per Deployment, as in a real cluster.

Each size runs in its own child process (the command in-process, timed from the invocation,
after imports), so `peak_rss_mb_<size>` is that run's peak (ru_maxrss) alone:

* pods_per_s_<size> — pods injected and written per second of wall time;
  pods_per_cpu_s_<size> — per second of the child's CPU time (steadier on a busy machine);
* peak_rss_mb_<size> — the child's peak resident memory; rss_50k_vs_1k is their ratio (flat
  memory means close to 1).

    .venv/bin/python benchmarks/kube_inject.py [--sizes 1000,10000,50000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sidemesh.api.block_yaml import BlockWriter
from webhook import typical_review

REPLICAS = 20  # pods per Deployment
SIZES = (1_000, 10_000, 50_000)


def deployment_pod(deployment: int) -> dict[str, Any]:
    review = orjson.loads(typical_review(env_vars=5 + deployment % 4, variant=deployment))
    pod: dict[str, Any] = review["request"]["object"]
    return pod


def replica(template: dict[str, Any], number: int) -> dict[str, Any]:
    metadata = template["metadata"]
    name = f"{metadata['generateName']}{number:05x}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **{k: v for k, v in metadata.items() if k != "generateName"},
            "name": name,
            "uid": f"6b1f0c2e-{number:04x}-4d3a-9b7e-{number:012x}",
            "creationTimestamp": "2026-12-04T10:00:00Z",
        },
        "spec": {**template["spec"], "nodeName": f"node-{number % 7}"},
        "status": {
            "phase": "Running",
            "podIP": f"10.{number >> 16}.{number >> 8 & 255}.{number & 255}",
        },
    }


def write_list(path: Path, pods: int) -> None:
    """The List, written an item at a time (as kubectl prints it: keys sorted)."""
    writer = BlockWriter()
    with path.open("w", encoding="utf-8") as out:
        out.write("apiVersion: v1\nitems:\n")
        template: dict[str, Any] = {}
        for number in range(pods):
            if number % REPLICAS == 0:
                template = deployment_pod(number // REPLICAS)
            out.write(writer.dump([replica(template, number)]))
        out.write("kind: List\nmetadata:\n  resourceVersion: ''\n")


def child(source: Path) -> None:
    from sidemesh.cli.kube_inject import kube_inject

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    kube_inject.main(["-f", str(source), "-o", os.devnull], standalone_mode=False)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(
        json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "peak_rss_mb": after.ru_maxrss / 1024})
    )


def measure(pods: int, directory: Path) -> dict[str, float]:
    source = directory / f"pods-{pods}.yaml"
    write_list(source, pods)
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    source.unlink()
    return {
        "pods_per_s": round(pods / figures["seconds"], 1),
        "pods_per_cpu_s": round(pods / figures["cpu_seconds"], 1),
        "peak_rss_mb": round(figures["peak_rss_mb"], 1),
    }


def label(pods: int) -> str:
    return f"{pods // 1000}k" if pods % 1000 == 0 else str(pods)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    figures: dict[str, Any] = {"benchmark": "kube_inject"}
    with tempfile.TemporaryDirectory() as directory:
        for pods in sizes:
            measured = measure(pods, Path(directory))
            figures[f"pods_per_s_{label(pods)}"] = measured["pods_per_s"]
            figures[f"pods_per_cpu_s_{label(pods)}"] = measured["pods_per_cpu_s"]
            figures[f"peak_rss_mb_{label(pods)}"] = measured["peak_rss_mb"]
    first, last = label(sizes[0]), label(sizes[-1])
    figures[f"rss_{last}_vs_{first}"] = round(
        figures[f"peak_rss_mb_{last}"] / figures[f"peak_rss_mb_{first}"], 3
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
