"""A real Prometheus (Debian's `prometheus` binary) for the local runtime.

It runs where a cluster's Prometheus would: on the node, i.e. inside the node's network
namespace (`ip netns exec <prefix>-node`), where pod addresses are routed; the host refuses the
pod range on purpose (`network.py`). It listens on the node's loopback only, so nothing outside
this machine, and nothing on the host's own loopback, reaches it; `sidemesh dashboard --local`
dials it inside the namespace.

Discovery is file based: the daemon writes `prometheus/targets/pods.json` on every reconcile from
the pods' `prometheus.io/scrape|port|path` annotations, read as Kubernetes' documented
`kubernetes-pods` job reads them (the injector already points them at the sidecar's merged
`:15020/stats/prometheus`). Prometheus rereads the file when it changes.

State under `<state dir>/prometheus/`: prometheus.yml, targets/, data/ (the TSDB), pid, log.
It runs as the runtime's own user (root, as the daemon does): the state directory is 0700, so
the Debian package's `prometheus` user could not read its config there; what limits it is that
it listens on the node's loopback only and is asked only fixed queries by the dashboard.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from sidemesh.dashboard.promql import PrometheusClient
from sidemesh.local.model import PodRecord
from sidemesh.local.naming import node_netns, runtime_prefix
from sidemesh.local.netns import connect_in_netns
from sidemesh.local.paths import RuntimePaths, state_dir_from
from sidemesh.security.files import write_atomically

LISTEN_HOST: Final = "127.0.0.1"
LISTEN_PORT: Final = 9090
SCRAPE_INTERVAL: Final = "5s"
RETENTION: Final = "1d"
READY_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 30.0

SCRAPE: Final = "prometheus.io/scrape"
PORT: Final = "prometheus.io/port"
PATH: Final = "prometheus.io/path"
SCHEME: Final = "prometheus.io/scheme"
DEFAULT_METRICS_PATH: Final = "/metrics"
_METRICS_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,255}$")


class PrometheusUnavailable(RuntimeError):
    """Prometheus cannot be started or reached; the message says why."""


@dataclass(frozen=True)
class PrometheusPaths:
    root: Path

    @classmethod
    def of(cls, runtime: RuntimePaths) -> PrometheusPaths:
        return cls(runtime.root / "prometheus")

    @property
    def config(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def targets_dir(self) -> Path:
        return self.root / "targets"

    @property
    def pod_targets(self) -> Path:
        return self.targets_dir / "pods.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pid(self) -> Path:
        return self.root / "prometheus.pid"

    @property
    def log(self) -> Path:
        return self.root / "prometheus.log"


# --- pure: what to scrape ---------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    pod: str
    reason: str


@dataclass(frozen=True)
class ScrapeTargets:
    groups: tuple[dict[str, Any], ...]  # file_sd target groups
    skipped: tuple[Skipped, ...]

    def file_sd_json(self) -> bytes:
        return json.dumps(list(self.groups), indent=1, sort_keys=True).encode() + b"\n"


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def pod_target(pod: PodRecord) -> dict[str, Any] | Skipped:
    """The target group for one pod, or why it is not scraped."""
    name = f"{pod.namespace}/{pod.name}"
    annotations = pod.annotations
    if annotations.get(SCRAPE) != "true":
        return Skipped(name, f'no annotation {SCRAPE}: "true"')
    if pod.terminating or pod.phase != "Running" or not pod.pod_ip:
        return Skipped(name, "not running with a pod IP")
    port = _port(annotations.get(PORT, ""))
    if port is None:
        return Skipped(name, f"annotation {PORT} is missing or not a port number")
    path = annotations.get(PATH, DEFAULT_METRICS_PATH)
    if not _METRICS_PATH.fullmatch(path):
        return Skipped(name, f"annotation {PATH} is not an absolute URL path")
    scheme = annotations.get(SCHEME, "http")
    if scheme not in ("http", "https"):
        return Skipped(name, f"annotation {SCHEME} is neither http nor https")
    labels = {
        "__metrics_path__": path,
        "__scheme__": scheme,
        "namespace": pod.namespace,
        "pod": pod.name,
    }
    if "app" in pod.labels:
        labels["app"] = pod.labels["app"]
    return {"targets": [f"{pod.pod_ip}:{port}"], "labels": labels}


def scrape_targets(pods: Iterable[PodRecord]) -> ScrapeTargets:
    groups: list[dict[str, Any]] = []
    skipped: list[Skipped] = []
    for pod in sorted(pods, key=lambda p: (p.namespace, p.name)):
        target = pod_target(pod)
        if isinstance(target, Skipped):
            skipped.append(target)
        else:
            groups.append(target)
    return ScrapeTargets(tuple(groups), tuple(skipped))


def render_config(targets_dir: Path, *, scrape_interval: str = SCRAPE_INTERVAL) -> str:
    """prometheus.yml: one job reading every `*.json` file under `targets_dir`."""
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "honor_labels": True,  # the sidecar's merged endpoint carries the app's labels
                "file_sd_configs": [
                    {"files": [str(targets_dir / "*.json")], "refresh_interval": scrape_interval}
                ],
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def prometheus_argv(
    paths: PrometheusPaths,
    *,
    binary: str,
    listen: str,
    netns: str | None,
) -> list[str]:
    argv = [
        binary,
        f"--config.file={paths.config}",
        f"--storage.tsdb.path={paths.data}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address={listen}",
        "--log.level=warn",
    ]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    return argv


# --- I/O: files and the process ----------------------------------------------------------------


def write_targets(runtime: RuntimePaths, pods: Iterable[PodRecord]) -> bool:
    """The daemon's hook: the file_sd targets for the pods now; True if the file changed."""
    paths = PrometheusPaths.of(runtime)
    return write_atomically(paths.pod_targets, scrape_targets(pods).file_sd_json(), 0o644)


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def _running_pid(paths: PrometheusPaths) -> int | None:
    try:
        pid = int(paths.pid.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    # A reused pid is some other program: never signal it.
    return pid if any(part.endswith(b"prometheus") for part in command[:1]) else None


@dataclass(frozen=True)
class LocalPrometheus:
    """Prometheus for one runtime; `netns` None runs it in the caller's namespace (tests)."""

    paths: PrometheusPaths
    netns: str | None
    host: str = LISTEN_HOST
    port: int = LISTEN_PORT

    @classmethod
    def for_runtime(cls, state_dir: Path) -> LocalPrometheus:
        runtime = RuntimePaths(state_dir)
        return cls(PrometheusPaths.of(runtime), node_netns(runtime_prefix(state_dir)))

    def client(self) -> PrometheusClient:
        if self.netns is None:
            return PrometheusClient(self.host, self.port)
        dialer = functools.partial(connect_in_netns, self.netns)
        return PrometheusClient(self.host, self.port, dialer=dialer)

    def pid(self) -> int | None:
        return _running_pid(self.paths)

    def start(self, *, scrape_interval: str = SCRAPE_INTERVAL) -> int:
        """Start it (if not running) and wait until it is ready; returns its pid."""
        running = self.pid()
        if running is not None:
            return running
        binary = prometheus_binary()
        if binary is None:
            raise PrometheusUnavailable(
                "the prometheus binary is not installed (Debian: apt-get install prometheus)"
            )
        self.paths.targets_dir.mkdir(parents=True, exist_ok=True)
        self.paths.data.mkdir(mode=0o750, parents=True, exist_ok=True)
        if not self.paths.pod_targets.exists():
            write_atomically(self.paths.pod_targets, b"[]\n", 0o644)
        config = render_config(self.paths.targets_dir, scrape_interval=scrape_interval)
        write_atomically(self.paths.config, config.encode(), 0o644)
        argv = prometheus_argv(
            self.paths,
            binary=binary,
            listen=f"{self.host}:{self.port}",
            netns=self.netns,
        )
        with open(self.paths.log, "ab") as log_file:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,  # outlives this command, like the daemon
            )
        write_atomically(self.paths.pid, f"{process.pid}\n".encode(), 0o644)
        self._wait_ready(process)
        return process.pid

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        client = self.client()
        deadline = time.monotonic() + READY_TIMEOUT
        while not client.ready():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = _tail(self.paths.log)
                self.stop()
                raise PrometheusUnavailable(f"Prometheus did not become ready:\n{tail}")
            time.sleep(0.2)

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            self.paths.pid.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.paths.pid.unlink(missing_ok=True)
        return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":  # our own child, exited: reap it
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def local_prometheus_client(state_dir: Path | None) -> PrometheusClient:
    """`sidemesh dashboard --local`: the runtime's Prometheus, dialled in the node namespace."""
    local = LocalPrometheus.for_runtime(state_dir_from(state_dir))
    if local.pid() is None:
        raise PrometheusUnavailable(
            "the local runtime's Prometheus is not running: sidemesh local prometheus start"
        )
    return local.client()


def describe(targets: ScrapeTargets) -> Sequence[str]:
    """Lines for `sidemesh local prometheus status`."""
    lines = [
        f"scraping {t} ({g['labels']['namespace']}/{g['labels']['pod']})"
        for g in targets.groups
        for t in g["targets"]
    ]
    lines += [f"not scraping {s.pod}: {s.reason}" for s in targets.skipped]
    return lines
