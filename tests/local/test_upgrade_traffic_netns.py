"""Requests keep being answered through an in-place sidecar upgrade on the local runtime (issue
#15's proof): real Envoy, iptables capture and STRICT mTLS, a client calling a two-replica
`web` every 50 ms while `upgrade-sidecars --local` restarts every istio-proxy, one pod at a
time. A request may be delayed; none may fail, but for the one residual named below.

Why requests do not fail, by design rather than by luck:
* the capture rules hold (drop, not refuse) a SYN to the proxy's ports while nothing listens
  there, so a connection made while a proxy restarts waits for the new proxy (`capture.rules`);
* the old proxy drains inbound connections, then stops listening and lets the requests in
  flight finish before it exits (`agent.envoy`);
* while a web pod's proxy restarts, the pod is not ready and leaves the Service's endpoints:
  the other replica answers. (With a single replica there is no endpoint left to send to while
  the only one is not ready — Kubernetes' readiness, which the mesh honours.)

The client's timeout is 30 s: a delayed connect is not a failure, and the test says so by
printing the slowest request.

What the design cannot rule out, so the test allows it and counts it: a connection the kernel
completed into the old proxy's listen backlog in the instant before that listener closed is
reset by the kernel (the app sees ConnectionResetError). It needs a new connection within
microseconds of the close; observed about once in ten runs on a loaded 2-core machine. Every
other failure — refused, timed out, a 503 — fails the test. Needs root, `ip` and `iptables`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_kit import PYTHON, Local, needs_root, owned
from upgrade_kit import container_status, exec_command, two_revisions, upgrade_sidecars

pytestmark = needs_root

NAMESPACE = "trade"
# GET http://web every 50 ms until the stop file appears; print "answered failed slowest",
# and each failure on stderr.
CLIENT_LOOP = """
import os, sys, time, urllib.request
ok = failed = 0
slowest = 0.0
while not os.path.exists({stop!r}):
    started = time.monotonic()
    try:
        urllib.request.urlopen('http://web.trade/', timeout=30).read()
        ok += 1
    except Exception as exc:
        failed += 1
        print('failed at', time.time(), repr(exc)[:300], file=sys.stderr, flush=True)
    slowest = max(slowest, time.monotonic() - started)
    time.sleep(0.05)
print(ok, failed, round(slowest, 2))
"""


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    # the grace covers the proxy's drain (terminationDrainDuration 5 s) and quiesce
    with two_revisions(
        tmp_path_factory, namespace=NAMESPACE, tag="1.1-traffic", web_replicas=2, grace_seconds=10
    ) as local:
        yield local


def _proxy(pod: dict[str, Any]) -> dict[str, Any]:
    return container_status(pod, "istio-proxy")


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])


def test_no_request_fails_while_every_sidecar_is_upgraded_in_place(local: Local) -> None:
    def all_ready() -> bool:
        pods = owned(local.pods(NAMESPACE))
        return len(pods) == 3 and all(_ready(p) for p in pods)

    local.wait("two web pods and the client ready with 1-0 sidecars", all_ready)
    client = owned(local.pods(NAMESPACE, "app=client"))[0]["metadata"]["name"]
    stop = f"/tmp/sidemesh-traffic-stop-{os.getpid()}"
    script = CLIENT_LOOP.format(stop=stop)
    loop = subprocess.Popen(
        exec_command(local, NAMESPACE, client, "client", PYTHON, "-c", script),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        local.run("label", "namespace", NAMESPACE, "istio.io/rev=1-1", "--overwrite")
        done = upgrade_sidecars(local, NAMESPACE, "-o", "json")
        assert done.returncode == 0, done.stdout + done.stderr
        outcomes = sorted((r["workload"], r["outcome"]) for r in json.loads(done.stdout))
        assert outcomes == [("Deployment/client", "patched")] + [("Deployment/web", "patched")] * 2

        def upgraded() -> bool:
            pods = owned(local.pods(NAMESPACE))
            return len(pods) == 3 and all(
                _ready(p)
                and _proxy(p)["restartCount"] == 1
                and _proxy(p)["image"].endswith(":1.1-traffic")
                for p in pods
            )

        local.wait("every istio-proxy restarted with the 1-1 image, pods ready", upgraded)
    finally:
        subprocess.run(
            exec_command(local, NAMESPACE, client, "client", "touch", stop),
            capture_output=True,
            timeout=60,
        )
        out, err = loop.communicate(timeout=90)
        Path(stop).unlink(missing_ok=True)
    answered, failed, slowest = out.split()
    print(f"requests during the upgrade: {answered} answered, {failed} failed, "
          f"slowest {slowest}s")  # fmt: skip
    assert int(answered) > 0, err
    failures = [line for line in err.splitlines() if line.startswith("failed at")]
    assert len(failures) == int(failed), err
    # the listen-backlog reset (see the module's docstring) is the only failure allowed; at
    # most one per proxy whose listener closed with a connection arriving
    assert all("ConnectionResetError" in line for line in failures), err
    assert int(failed) <= 3, err
