"""The demo's pure core: the commands it shows and the outcomes it checks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidemesh.demo import script
from sidemesh.local.model import (
    ContainerStatus,
    DeploymentRecord,
    NetworkRecord,
    PodRecord,
    State,
)

NETWORK = NetworkRecord(prefix="sm-test", node_netns="sm-test-node")


def pod(
    name: str,
    *,
    revision: str | None = None,
    ready: bool = True,
    terminating: bool = False,
    namespace: str = "demo",
) -> PodRecord:
    containers: list[dict[str, Any]] = [{"name": "app"}]
    annotations = {}
    statuses = [ContainerStatus(name="app", state="running", ready=ready)]
    if revision is not None:
        containers.append({"name": "istio-proxy"})
        statuses.append(ContainerStatus(name="istio-proxy", state="running", ready=ready))
        annotations["sidecar.istio.io/status"] = json.dumps(
            {"containers": ["istio-proxy"], "revision": revision}
        )
    return PodRecord(
        namespace=namespace,
        name=name,
        uid=f"uid-{name}",
        created=1.0,
        manifest={
            "metadata": {"name": name, "labels": {"app": "web"}, "annotations": annotations},
            "spec": {"containers": containers},
        },
        phase="Running",
        ready=ready,
        statuses=statuses,
        deletion_requested=1.0 if terminating else None,
    )


def state(*pods: PodRecord, replicas: int = 2) -> State:
    deployment = DeploymentRecord(
        namespace="demo",
        name="web",
        uid="d",
        created=1.0,
        manifest={"spec": {"replicas": replicas}},
    )
    return State(
        network=NETWORK,
        deployments={"demo/web": deployment},
        pods={f"{p.namespace}/{p.name}": p for p in pods},
    )


def test_commands_show_the_guides_kubectl_form_and_the_local_one() -> None:
    command = script.same_command("label", "namespace", "demo", "istio.io/rev=asm-173-3")
    assert command.kubectl == "kubectl label namespace demo istio.io/rev=asm-173-3"
    assert command.local == "sidemesh local label namespace demo istio.io/rev=asm-173-3"
    assert script.Command(("down",)).kubectl is None


def test_fetch_is_curl_in_the_guide_and_python_here() -> None:
    command = script.fetch_command("demo", "client-1", "http://frontend/backend")
    assert command.kubectl == (
        "kubectl exec -n demo client-1 -c client -- curl -s http://frontend/backend"
    )
    assert command.local_args[-4:] == ("python3", "-c", script.FETCH, "http://frontend/backend")


@pytest.mark.parametrize(
    ("pods", "revision", "done"),
    [
        ((pod("a"), pod("b")), None, True),
        ((pod("a", revision="r1"), pod("b", revision="r1")), "r1", True),
        ((pod("a", revision="r1"), pod("b", revision="r1")), None, False),  # injected
        ((pod("a", revision="r1"), pod("b", revision="r2")), "r2", False),  # one is old
        ((pod("a", revision="r1"), pod("b", revision="r1", ready=False)), "r1", False),
        ((pod("a", revision="r1"),), "r1", False),  # one missing
        (  # an old pod still terminating
            (pod("a", revision="r2"), pod("b", revision="r2"), pod("c", terminating=True)),
            "r2",
            False,
        ),
    ],
)
def test_rollout_done_truth_table(
    pods: tuple[PodRecord, ...], revision: str | None, done: bool
) -> None:
    assert script.rollout_done(state(*pods), "demo", revision=revision) is done


def test_rollout_status_says_what_holds_a_rollout_up() -> None:
    seen = script.rollout_status(
        state(pod("a", revision="r2"), pod("b", revision="r2", ready=False),
              pod("c", terminating=True)),
        "demo",
        now=61.0,
    )  # fmt: skip
    assert seen.startswith("3 pods, 2 wanted: ")
    assert "a 2/2 Running sidecar=r2" in seen
    assert "b 0/2 Running sidecar=r2" in seen
    assert "c 1/1 terminating for 60 s sidecar=None" in seen


def test_ready_column_and_sidecar_revision() -> None:
    injected = pod("a", revision="asm-173-3")
    assert script.ready_column(injected) == "2/2"
    assert script.has_sidecar(injected)
    assert script.sidecar_revision(injected) == "asm-173-3"
    plain = pod("b")
    assert script.ready_column(plain) == "1/1"
    assert not script.has_sidecar(plain)
    assert script.sidecar_revision(plain) is None


@pytest.mark.parametrize(
    ("reply", "caller"),
    [
        ('{"backend": "b", "caller": "spiffe://cluster.local/ns/demo/sa/frontend"}\n',
         "spiffe://cluster.local/ns/demo/sa/frontend"),
        ('{"backend": "b", "caller": null}\n', None),
        ("not json\n", None),
        ("", None),
    ],
)  # fmt: skip
def test_caller_in_the_backends_answer(reply: str, caller: str | None) -> None:
    assert script.caller_in(reply) == caller


@pytest.mark.parametrize(
    ("stderr", "refused"),
    [
        ("Traceback ...\nConnectionResetError: [Errno 104] Connection reset by peer\n", True),
        ("Traceback ...\nhttp.client.RemoteDisconnected: Remote end closed connection\n", True),
        ("Traceback ...\nValueError: unknown url type\n", False),
        ("", False),
    ],
)
def test_refusal_is_the_tracebacks_last_line(stderr: str, refused: bool) -> None:
    found = script.refusal_in(stderr)
    assert (found is not None) is refused
    if refused:
        assert found == stderr.strip().splitlines()[-1]


def test_control_plane_pods_by_revision_label() -> None:
    cp = pod("istiod-asm-173-3-x", namespace="istio-system")
    cp.manifest["metadata"]["labels"] = {"app": "istiod", "istio.io/rev": "asm-173-3"}
    other = pod("istiod-asm-174-1-y", namespace="istio-system")
    other.manifest["metadata"]["labels"] = {"app": "istiod", "istio.io/rev": "asm-174-1"}
    found = script.control_plane_pods(state(cp, other), "asm-173-3")
    assert [p.name for p in found] == ["istiod-asm-173-3-x"]


def test_the_outside_client_and_the_strict_policy() -> None:
    namespace, client = script.outside_objects()
    assert namespace["metadata"] == {"name": "outside"}  # no injection label
    assert client["metadata"]["namespace"] == "outside"
    policy = script.strict_policy("demo")
    assert policy["apiVersion"] == "security.istio.io/v1"
    assert policy["spec"] == {"mtls": {"mode": "STRICT"}}


def test_the_summary_has_a_line_per_check_that_passed() -> None:
    pods = [{"name": f"p{i}"} for i in range(4)]
    facts: dict[int, dict[str, Any]] = {
        1: {"pods": pods[:1]},
        2: {"pods": pods},
        3: {"pods": pods, "restart_to_ready_s": 12.4, "sidecar_rss_bytes": 60 * 2**20},
        4: {
            "caller": "spiffe://cluster.local/ns/demo/sa/frontend",
            "plaintext_refusal": "ConnectionResetError: [Errno 104] reset",
        },
        5: {"pods": pods, "restart_to_ready_s": 9.6, "connected": {"old": 0, "new": 4}},
        6: {
            "denied_from": "spiffe://cluster.local/ns/demo/sa/guest",
            "denied_status": 403,
            "denied_body": "RBAC: access denied",
            "allowed_from": "spiffe://cluster.local/ns/demo/sa/client",
            "allowed_status": 200,
        },
        7: {
            "edge": "demo/client -> demo/backend",
            "requests_sent": 2,
            "requests_total_source": 2,
            "requests_total_destination": 2,
        },
        8: {"leftovers": []},
    }
    lines = script.proven(facts, first="old", second="new")
    assert lines == [
        "control plane old runs in istio-system, labelled app=istiod, istio.io/rev=old",
        "without a label, the 4 demo pods ran alone (1/1)",
        "istio.io/rev=old and a restart gave all 4 pods the old sidecar (2/2) in 12 s"
        " (one sidecar: 60 MiB)",
        "the backend saw its caller as spiffe://cluster.local/ns/demo/sa/frontend: mutual TLS",
        "STRICT refused plaintext from outside the mesh (ConnectionResetError: [Errno 104] reset);"
        " mesh traffic still flowed",
        "upgrade: all 4 sidecars moved to new in 10 s; old served none, was stopped, and traffic"
        " still flowed",
        "AuthorizationPolicy by identity: spiffe://cluster.local/ns/demo/sa/guest refused"
        " (HTTP 403, RBAC: access denied), spiffe://cluster.local/ns/demo/sa/client allowed"
        " (HTTP 200)",
        "golden signals: the demo's 2 requests demo/client -> demo/backend counted exactly by"
        " both sidecars (reporter=source 2, reporter=destination 2), all over mTLS",
        "cleaned up: no network namespace, process or state left behind",
    ]
    # a run kept running (--keep) has no clean-up step, and says nothing about it
    assert len(script.proven({n: facts[n] for n in range(1, 8)}, first="old", second="new")) == 8
