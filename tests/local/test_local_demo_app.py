"""The demo app (examples/demo): valid Kubernetes, and on the local runtime the client reaches
the frontend, which reaches both backends through the backend Service."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from sidemesh.local.preflight import missing_requirements

DEMO = Path(__file__).parents[2] / "examples" / "demo" / "demo.yaml"
SIDEMESH = [sys.executable, "-c", "from sidemesh.cli.main import main; main()", "local"]
_MISSING = missing_requirements()


def test_demo_manifests_are_valid_kubernetes() -> None:
    documents = list(yaml.safe_load_all(DEMO.read_text()))
    assert [d["kind"] for d in documents] == [
        "Namespace",
        "ServiceAccount",  # one identity per workload: the backend reports its caller's
        "ServiceAccount",
        "ServiceAccount",
        "Deployment",
        "Service",
        "Deployment",
        "Service",
        "Deployment",
    ]
    for document in documents:
        kubernetes_validate.validate(document, "1.30", strict=True)
        assert document["metadata"].get("namespace", "demo") == "demo"


@pytest.mark.skipif(bool(_MISSING), reason="; ".join(_MISSING) or "ok")
@pytest.mark.skipif(
    subprocess.run(["which", "python3"], capture_output=True).returncode != 0,
    reason="the demo's containers run python3 from PATH",
)
def test_demo_runs_locally(tmp_path_factory: pytest.TempPathFactory) -> None:
    state = tmp_path_factory.mktemp("sm") / "state"

    def local(*args: str) -> str:
        result = subprocess.run(
            [*SIDEMESH, "--state-dir", str(state), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        return result.stdout

    try:
        local("apply", "-f", str(DEMO))
        deadline = time.monotonic() + 90
        while True:
            rows = [line.split() for line in local("get", "pods", "-n", "demo").splitlines()[1:]]
            if len(rows) == 4 and all(row[1] == "1/1" for row in rows):
                break
            assert time.monotonic() < deadline, f"demo not ready: {rows}"
            time.sleep(0.5)
        client = next(row[0] for row in rows if row[0].startswith("client-"))
        script = (
            "import urllib.request\n"
            "for _ in range(30):\n"
            "    reply = urllib.request.urlopen('http://frontend/', timeout=5)\n"
            "    print(reply.read().decode())"
        )
        answers = local("exec", client, "-n", "demo", "--", "python3", "-c", script).split("\n")
        lines = [
            re.fullmatch(r"frontend (frontend-\S+) -> backend (backend-\S+)", a)
            for a in answers
            if a
        ]
        assert len(lines) == 30 and all(lines), answers
        backends = {match.group(2) for match in lines if match}
        assert len(backends) == 2  # both replicas answer through the Service's cluster IP
        logs = local("logs", client, "-n", "demo")
        assert "-> backend backend-" in logs
    finally:
        subprocess.run(
            [*SIDEMESH, "--state-dir", str(state), "down"], capture_output=True, timeout=120
        )
