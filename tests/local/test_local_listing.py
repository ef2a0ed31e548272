"""`get` as a pure function of the state: what goes to stdout, what to stderr."""

from __future__ import annotations

import json

import yaml
from local_testkit import empty_state

from sidemesh.local.apiserver import apply_objects, ensure_system_namespaces, store_admitted_pod
from sidemesh.local.controllers import reconcile_deployments, record_create_failure
from sidemesh.local.listing import GetRequest, get
from sidemesh.local.model import ContainerStatus, State

NOW = 1_800_000_000.0


def _state() -> State:
    state = empty_state()
    ensure_system_namespaces(state, NOW - 60)
    apply_objects(
        state,
        [
            {"kind": "Namespace", "metadata": {"name": "demo", "labels": {"team": "a"}}},
            {
                "kind": "Service",
                "metadata": {"name": "web", "namespace": "demo"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]},
            },
            {
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "demo"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "command": ["x"]}]},
                    },
                },
            },
        ],
        now=NOW - 30,
        default_namespace="default",
    )
    pod = {
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": "demo", "labels": {"app": "client"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    record = store_admitted_pod(state, pod, owner=None, now=NOW - 20)
    record.statuses = [ContainerStatus(name="c", state="running", ready=True, started=True)]
    record.phase, record.initialized, record.ready, record.pod_ip = (
        "Running",
        True,
        True,
        "10.244.0.2",
    )
    return state


def test_pods_table_and_selectors() -> None:
    state = _state()
    result = get(state, GetRequest(kind="Pod", namespace="demo"), now=NOW)
    assert result.out == (
        "NAME     READY   STATUS    RESTARTS   AGE\nclient   1/1     Running   0          20s\n"
    )
    assert result.err == "" and result.code == 0
    none = get(state, GetRequest(kind="Pod", namespace="demo", selector="app=web"), now=NOW)
    assert (none.out, none.err) == ("", "No resources found in demo namespace.\n")
    missing = get(state, GetRequest(kind="Pod", namespace="demo", names=("nope",)), now=NOW)
    assert (
        missing.code == 1 and missing.err == 'Error from server (NotFound): pods "nope" not found\n'
    )
    bad = get(state, GetRequest(kind="Pod", selector="a in ("), now=NOW)
    assert bad.code == 1 and bad.err.startswith("error: unable to parse requirement")


def test_a_replicaset_that_admission_refuses_is_shown_on_stderr() -> None:
    state = _state()
    reconcile_deployments(state, NOW)
    rs_key = next(iter(state.replicasets))
    message = (
        'Internal error occurred: failed calling webhook "rev.namespace.sidecar-injector.'
        'istio.io": failed to call webhook: connect: connection refused'
    )
    record_create_failure(state, rs_key, message, NOW)
    result = get(state, GetRequest(kind="Pod", namespace="demo"), now=NOW)
    name = state.replicasets[rs_key].name
    assert result.err == f"Warning  FailedCreate  replicaset/{name}  Error creating: {message}\n"
    assert "client" in result.out
    other = get(state, GetRequest(kind="Pod", namespace="default"), now=NOW)
    assert "FailedCreate" not in other.err


def test_yaml_and_json_objects() -> None:
    state = _state()
    single = get(
        state, GetRequest(kind="Pod", namespace="demo", names=("client",), output="json"), now=NOW
    )
    pod = json.loads(single.out)
    assert pod["metadata"]["name"] == "client" and pod["status"]["podIP"] == "10.244.0.2"
    assert pod["status"]["containerStatuses"][0]["state"] == {"running": {"startedAt": None}}
    listing = yaml.safe_load(
        get(state, GetRequest(kind="Pod", namespace="demo", output="yaml"), now=NOW).out
    )
    assert listing["kind"] == "List" and len(listing["items"]) == 1


def test_other_kinds() -> None:
    state = _state()
    services = get(state, GetRequest(kind="Service", namespace="demo"), now=NOW).out
    assert services == (
        "NAME   TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE\n"
        "web    ClusterIP   10.96.0.10   <none>        80/TCP    30s\n"
    )
    deployments = get(state, GetRequest(kind="Deployment", namespace="demo"), now=NOW).out
    assert deployments.splitlines()[1].split() == ["web", "0/1", "0", "0", "30s"]
    spaces = get(
        state, GetRequest(kind="Namespace", show_labels=True, selector="team=a"), now=NOW
    ).out
    assert spaces.splitlines() == [
        "NAME   STATUS   AGE   LABELS",
        "demo   Active   30s   kubernetes.io/metadata.name=demo,team=a",
    ]
    assert get(None, GetRequest(kind="Pod", all_namespaces=True), now=NOW).err == (
        "No resources found.\n"
    )
