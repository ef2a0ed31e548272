"""Running the local runtime from tests, through its command line as a user would: a
runtime per test module, the shared demo manifest, and predicates over `get -o json`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sidemesh.local.naming import runtime_prefix
from sidemesh.local.preflight import missing_requirements

MISSING = missing_requirements()
needs_root = pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING) or "ok")

SIDEMESH = [sys.executable, "-c", "from sidemesh.cli.main import main; main()", "local"]
PYTHON = sys.executable
WAIT_SECONDS = 90.0
HOST_MOUNT_POINTS = [
    "/etc/istio",
    "/var/lib/istio",
    "/var/run/secrets/tokens",
    "/var/run/secrets/istio",
    "/var/lib/sidemesh",
    "/etc/cacerts",
    "/mnt/sidemesh-test",
]


def manifest(namespace: str, served: Path) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": "web",
                                "image": "python:3.11",
                                "command": [
                                    PYTHON,
                                    "-m",
                                    "http.server",
                                    "8080",
                                    "--directory",
                                    str(served),
                                ],
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/", "port": "http"},
                                    "periodSeconds": 1,
                                },
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "client", "namespace": namespace},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "client",
                        "image": "busybox",
                        "command": [PYTHON, "-c", "import time; time.sleep(3600)"],
                    }
                ],
            },
        },
    ]


class Local:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.prefix = runtime_prefix(state_dir)

    def run(
        self, *args: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*SIDEMESH, "--state-dir", str(self.state_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
        return result

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", "pods", "-n", namespace, "-o", "json"]
        items: list[dict[str, Any]] = json.loads(
            self.run(*args, *(["-l", selector] if selector else [])).stdout
        )["items"]
        return items

    def wait(self, what: str, done: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                events = self.run("get", "events", "-A", check=False).stdout
                pytest.fail(f"timed out waiting for {what}\n{events}\n{self.daemon_log()}")
            time.sleep(0.3)

    def daemon_log(self) -> str:
        log = self.state_dir / "daemon.log"
        return log.read_text()[-3000:] if log.exists() else ""

    def netns(self, pod: dict[str, Any]) -> str:
        return f"{self.prefix}-pod-{pod['metadata']['uid'].replace('-', '')[:12]}"

    def our_netns(self) -> list[str]:
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in listing.splitlines() if line.startswith(self.prefix)]


def ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    return conditions["Ready"] == "True" and "deletionTimestamp" not in pod["metadata"]


def owned(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pods if p["metadata"].get("ownerReferences")]


def names(pods: list[dict[str, Any]]) -> set[str]:
    return {p["metadata"]["name"] for p in pods}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def served_directory(directory: Path) -> Path:
    (directory / "index.html").write_text("hello from web\n")
    directory.chmod(0o755)
    return directory


@contextmanager
def fresh_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    """A runtime with nothing applied yet; `down` afterwards, no network namespace left."""
    runtime = Local(tmp_path_factory.mktemp("sm") / "state")
    try:
        yield runtime
    finally:
        runtime.run("down", check=False)
        assert runtime.our_netns() == []


@contextmanager
def running_app(tmp_path_factory: pytest.TempPathFactory, namespace: str) -> Iterator[Local]:
    """A runtime with `manifest(namespace)` applied; `down` afterwards, checked."""
    existed = {p: Path(p).exists() for p in HOST_MOUNT_POINTS}
    served = served_directory(tmp_path_factory.mktemp("www"))
    local = Local(tmp_path_factory.mktemp("sm") / "state")
    path = tmp_path_factory.mktemp("manifests") / "app.yaml"
    path.write_text("\n---\n".join(json.dumps(d) for d in manifest(namespace, served)))
    applied = local.run("apply", "-f", str(path))
    assert applied.stdout.splitlines() == [
        f"namespace/{namespace} created",
        "deployment.apps/web created",
        "service/web created",
        "pod/client created",
    ]
    try:
        yield local
    finally:
        local.run("down", check=False)
        assert local.our_netns() == []
        for mount_point, was_there in existed.items():
            assert Path(mount_point).exists() == was_there, f"{mount_point} left behind"
