"""`sidemesh demo --kube`'s last two steps: authorization by identity, then the golden signals
of the demo's traffic, on the real API server (the pure parts are `demo_authz` and
`demo_signals`, shared with the local demo).

The AuthorizationPolicy goes in with `kubectl apply -f -` and reaches the backend's sidecars
through the control plane's watch of the API server; the step waits until its rule is in both
backends' Envoy configuration (their admin `/config_dump`), then shows the guest refused (403
`RBAC: access denied`) and the client let through (200, the backend seeing its identity).
Requests are made from the pod's own network namespace, where `kubectl exec` would run them:
the node runs no exec endpoint, so the demo shows the kubectl command and makes the same
request there, through the pod's sidecar.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import yaml
from rich.table import Table
from rich.text import Text

from sidemesh.api import names
from sidemesh.demo import demo_authz as authz
from sidemesh.demo import demo_signals as signals
from sidemesh.demo import script
from sidemesh.demo.kube_step import (
    KubeStepFailed,
    envoy_config,
    fully_ready,
    live,
    node_namespace,
    pod_namespace,
    request,
    sidecar_revision,
)

if TYPE_CHECKING:
    from sidemesh.demo.kube_runner import KubeDemo

BACKEND_HOST: Final = f"{authz.BACKEND}.{script.NAMESPACE}"
BACKEND_URL: Final = f"http://{BACKEND_HOST}/"


def apply_objects(demo: KubeDemo, objects: list[dict[str, Any]]) -> None:
    """`kubectl apply -f -`, the manifest shown as the user would pipe it in."""
    manifest = yaml.safe_dump_all(objects, sort_keys=False)
    demo.run(["kubectl", "apply", "-f", "-"], input=manifest, shown_input=manifest)


def app_pods(demo: KubeDemo, app: str) -> list[dict[str, Any]]:
    return [p for p in demo.pods(script.NAMESPACE, f"app={app}") if live(p)]


def in_mesh(pod: dict[str, Any]) -> bool:
    return fully_ready(pod) and sidecar_revision(pod) is not None


def fetch_backend(demo: KubeDemo, pod: dict[str, Any]) -> tuple[int | None, str]:
    """GET the backend Service from inside `pod` (through its sidecar)."""
    service = demo.get_json("service", authz.BACKEND, "-n", script.NAMESPACE)
    address = str(service["spec"]["clusterIP"])
    answer = request(pod_namespace(demo.settings.state_dir, pod), address, 80, BACKEND_HOST, "/")
    if answer[0] is not None and pod["metadata"]["labels"].get("app") == "client":
        demo.client_backend_requests += 1  # answered: both sidecars counted it
    return answer


def show_exec(demo: KubeDemo, pod: dict[str, Any], container: str) -> None:
    command = authz.status_command(script.NAMESPACE, pod["metadata"]["name"], BACKEND_URL,
                                   container=container)  # fmt: skip
    demo.console.print(Text(f"$ {command.kubectl}", style="bold cyan"), soft_wrap=True)
    demo.console.print(Text("  (here: from the pod's network namespace, through its sidecar)",
                            style="dim"))  # fmt: skip


def fetch_until(
    demo: KubeDemo, pod: dict[str, Any], container: str, wanted: int
) -> tuple[int | None, str]:
    """Retry quietly until the answer has status `wanted` (bounded), then show it."""
    show_exec(demo, pod, container)
    answers: list[tuple[int | None, str]] = []

    def answered() -> bool:
        answers.append(fetch_backend(demo, pod))
        return answers[-1][0] == wanted

    demo.wait(
        f"HTTP {wanted} from {pod['metadata']['name']}",
        answered,
        lambda: f"HTTP {answers[-1][0]}: {answers[-1][1][:200]!r}" if answers else "nothing",
    )
    status, body = answers[-1]
    demo.console.print(Text(f"{body.strip()}\nHTTP {status}"), soft_wrap=True)
    return status, body.strip()


def step_authz(demo: KubeDemo, facts: dict[str, Any]) -> str:
    namespace = script.NAMESPACE
    demo.console.print(
        f"One more workload in {namespace}, with a service account of its own "
        f"({authz.GUEST}): in the mesh, but not one the backend will trust."
    )
    apply_objects(demo, authz.guest_objects(namespace))
    guests = demo.wait(
        f"the {authz.GUEST} pod 2/2, with the sidecar",
        lambda: [p for p in app_pods(demo, authz.GUEST) if in_mesh(p)],
        lambda: demo.pod_lines(namespace),
    )
    accounts = " and ".join(authz.principal(a) for a in authz.ALLOWED_ACCOUNTS)
    demo.console.print(f"Allow only {accounts} to call the backend (ALLOW, selector app=backend):")
    apply_objects(demo, [authz.backend_policy(namespace)])
    facts["policy"] = f"{namespace}/{authz.POLICY_NAME}"
    backends = [p for p in app_pods(demo, authz.BACKEND) if in_mesh(p)]
    if not backends:
        raise KubeStepFailed(f"no backend pod 2/2: {demo.pod_lines(namespace)}")
    rule = authz.rule_name(namespace)
    state_dir = demo.settings.state_dir
    demo.wait(
        f"the policy ({rule}) in the Envoy configuration of all {len(backends)} backends",
        lambda: all(rule in envoy_config(state_dir, p) for p in backends),
        lambda: f"{len(backends)} backend pods; the rule not in every config_dump yet",
    )
    facts["policy_in_backends"] = len(backends)

    guest_identity = f"spiffe://{authz.principal(authz.GUEST, namespace)}"
    demo.console.print(f"From {authz.GUEST} ({guest_identity}):")
    denied_status, denied_body = fetch_until(demo, guests[0], authz.GUEST, authz.DENIED)
    facts["denied_from"] = guest_identity
    facts["denied_status"], facts["denied_body"] = denied_status, denied_body
    problem = authz.denial_problem(denied_status, denied_body)
    if problem:
        raise KubeStepFailed(problem)

    client_identity = f"spiffe://{authz.principal('client', namespace)}"
    demo.console.print(f"Refused by the backend's sidecar. From the client ({client_identity}):")
    clients = [p for p in app_pods(demo, "client") if in_mesh(p)]
    if not clients:
        raise KubeStepFailed(f"no client pod 2/2: {demo.pod_lines(namespace)}")
    allowed_status, allowed_body = fetch_until(demo, clients[0], "client", authz.ALLOWED)
    facts["allowed_from"] = client_identity
    facts["allowed_status"] = allowed_status
    facts["allowed_caller"] = script.caller_in(allowed_body)
    if facts["allowed_caller"] != client_identity:
        raise KubeStepFailed(f"the backend saw {facts['allowed_caller']}, not {client_identity}")
    return (
        f"{authz.GUEST} refused with {denied_status} {denied_body!r}; the client let through "
        f"({allowed_status}), the backend saw {client_identity}"
    )


def scrape(demo: KubeDemo, pod: dict[str, Any]) -> str:
    """The pod's sidecar's merged Prometheus endpoint (`:15020/stats/prometheus`), read from
    the node's network namespace (where pod addresses are routed)."""
    address = str((pod.get("status") or {}).get("podIP") or "")
    name = pod["metadata"]["name"]
    if not address:
        raise KubeStepFailed(f"{name} has no address to scrape")
    status, body = request(
        node_namespace(demo.settings.state_dir), address, names.PORT_AGENT_STATUS, address,
        "/stats/prometheus",
    )  # fmt: skip
    if status != 200:
        raise KubeStepFailed(f"{name}'s sidecar answered /stats/prometheus with {status}: {body}")
    return body


def step_signals(demo: KubeDemo, facts: dict[str, Any]) -> str:
    namespace = script.NAMESPACE
    source = signals.edge_id(namespace, "client")
    destination = signals.edge_id(namespace, authz.BACKEND)
    sent = demo.client_backend_requests
    facts["edge"] = f"{source} -> {destination}"
    facts["requests_sent"] = sent
    demo.console.print(
        f"Each sidecar counts what it sends (reporter=source) and serves "
        f"(reporter=destination) in istio_requests_total. The demo sent {sent} requests "
        f"{source} -> {destination} (the client's own loop calls the frontend):"
    )
    clients = app_pods(demo, "client")
    client_name = clients[0]["metadata"]["name"] if clients else "CLIENT_POD"
    demo.console.print(
        Text(
            f"$ kubectl exec -n {namespace} {client_name} -c {names.CONTAINER_PROXY} -- "
            f"curl -s localhost:{names.PORT_AGENT_STATUS}/stats/prometheus",
            style="bold cyan",
        ),
        soft_wrap=True,
    )
    demo.console.print(
        Text("  (here: read from the node; every sidecar of the namespace)", style="dim")
    )
    found: list[signals.EdgeSignals] = []

    def counted() -> bool:
        pods = [p for p in demo.pods(namespace) if live(p) and in_mesh(p)]
        found[:] = signals.edges(scrape(demo, p) for p in pods)
        return signals.counted_at_least(signals.find_edge(found, source, destination), sent)

    try:
        demo.wait(f"both sidecars counting the demo's {sent} requests", counted,
                  lambda: f"{[e.as_dict() for e in found]}")  # fmt: skip
    finally:
        edge = signals.find_edge(found, source, destination)
        facts["requests_total_source"] = edge.requests_source if edge else None
        facts["requests_total_destination"] = edge.requests_destination if edge else None
        facts["edges"] = [e.as_dict() for e in found]
    problem = signals.edge_problem(edge, sent)
    if problem:
        raise KubeStepFailed(problem)
    table = Table(title="Golden signals (istio_requests_total, since the pods started)")
    for header in signals.TABLE_HEADERS:
        table.add_column(header)
    for row in facts["edges"]:
        table.add_row(*signals.table_row(row))
    demo.console.print(table)
    return (
        f"{source} -> {destination}: reporter=source {facts['requests_total_source']}, "
        f"reporter=destination {facts['requests_total_destination']}, exactly the demo's {sent}"
    )
