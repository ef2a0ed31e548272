"""What Envoy itself costs on this machine: the yardstick for benchmarks/sidecar.py's figures.

Two bare Envoys from the same wheel, with hand-written static configs and nothing of sidemesh's
(no capture, no network namespaces, no xDS, no agent): `front` (HTTP on 127.0.0.1) proxies to
`back` over mTLS (one self-signed certificate, trusted by both ends), and `back` proxies to the
same test app the sidecar benchmark uses. The same open-loop client at the same rate measures
`direct` (client to app) and `pair` (client to front to back to app), alternating rounds.
`pair` minus `direct` is the least two proxies in a row can add here; the sidecar pair's
added latency beyond it is what capture, namespaces and our configuration cost.

    python benchmarks/envoy_reference.py [--rate 1000] [--duration 10]   (prints one JSON line)
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from webhook_server import free_port, write_self_signed

from proc_support import cpu_seconds
from sidemesh.agent.envoy import find_envoy_binary

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "sidecar" / "sidecar_app.py"
LOCALHOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": LOCALHOST, "port_value": port}}


def _tls(cert: Path, key: Path, *, downstream: bool) -> dict[str, Any]:
    kind = "DownstreamTlsContext" if downstream else "UpstreamTlsContext"
    context: dict[str, Any] = {
        "@type": f"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}",
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": str(cert)},
                                  "private_key": {"filename": str(key)}}],
            "validation_context": {"trusted_ca": {"filename": str(cert)}},
        },
    }  # fmt: skip
    if downstream:
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def envoy_config(
    listen: int, upstream: int, admin: int, *, tls_in: dict[str, Any] | None,
    tls_out: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """A one-route HTTP proxy from 127.0.0.1:`listen` to 127.0.0.1:`upstream`."""
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "reference",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "0s"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }  # fmt: skip
    chain: dict[str, Any] = {
        "filters": [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
        ]
    }
    if tls_in is not None:
        chain["transport_socket"] = tls_in
    cluster: dict[str, Any] = {
        "name": "upstream", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "upstream", "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": _address(upstream)}}]}]},
    }  # fmt: skip
    if tls_out is not None:
        cluster["transport_socket"] = tls_out
    return {
        "admin": {"address": _address(admin)},
        "static_resources": {
            "listeners": [{"name": "in", "address": _address(listen), "filter_chains": [chain]}],
            "clusters": [cluster],
        },
    }


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with socket.create_connection((LOCALHOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {START_TIMEOUT_SECONDS} s")


@contextmanager
def _process(argv: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for_port(port, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def load(port: int, *, rate: float, duration: float, warmup: float, connections: int) -> Any:
    argv = [sys.executable, str(APP), "load", "--host", LOCALHOST, "--port", str(port),
            "--rate", str(rate), "--duration", str(duration), "--warmup", str(warmup),
            "--connections", str(connections), "--raw"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, check=True, timeout=duration + warmup + 120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank value at `fraction` (0..1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(
    *, rate: float, duration: float, rounds: int, warmup: float, connections: int,
    concurrency: int,
) -> dict[str, Any]:  # fmt: skip
    """`direct` and `pair` latencies (alternating rounds) and each Envoy's CPU per request."""
    envoy = str(find_envoy_binary())
    app, front, back = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        cert, key = write_self_signed(Path(scratch))
        configs = {
            "back": envoy_config(back, app, free_port(),
                                 tls_in=_tls(cert, key, downstream=True), tls_out=None),
            "front": envoy_config(front, back, free_port(), tls_in=None,
                                  tls_out=_tls(cert, key, downstream=False)),
        }  # fmt: skip
        stack.enter_context(_process([sys.executable, str(APP), "serve", "--name", "reference",
                                      "--port", str(app)], app))  # fmt: skip
        pids = {}
        for name, port in (("back", back), ("front", front)):
            path = Path(scratch, f"{name}.json")
            path.write_text(json.dumps(configs[name]))
            argv = [envoy, "-c", str(path), "--concurrency", str(concurrency),
                    "--disable-hot-restart", "--log-level", "warning"]  # fmt: skip
            pids[name] = stack.enter_context(_process(argv, port)).pid
        targets = {"direct": app, "pair": front}
        shape = {"rate": rate, "warmup": warmup, "connections": connections}
        for port in targets.values():
            load(port, duration=2.0, **shape)  # warm both paths
        latencies: dict[str, list[float]] = {"direct": [], "pair": []}
        cpu = dict.fromkeys(pids, 0.0)
        for _ in range(rounds):
            for mode, port in targets.items():
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                latencies[mode] += load(port, duration=duration / rounds, **shape)["latencies_ms"]
                if mode == "pair":
                    for name, pid in pids.items():
                        cpu[name] += cpu_seconds(pid) - before[name]
    requests = len(latencies["pair"]) + rounds * warmup * rate
    figures: dict[str, Any] = {"envoy_concurrency": concurrency}
    for mode, values in latencies.items():
        figures[mode] = {f"p{q}_ms": round(percentile(values, q / 100), 3) for q in (50, 90, 99)}
    for q in (50, 90, 99):
        figures[f"added_p{q}_ms"] = round(
            figures["pair"][f"p{q}_ms"] - figures["direct"][f"p{q}_ms"], 3
        )
    figures["envoy_cpu_us_per_request"] = {n: round(s / requests * 1e6, 1) for n, s in cpu.items()}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per mode")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps({"benchmark": "envoy_reference", **measure(**vars(args))}))


if __name__ == "__main__":
    main()
