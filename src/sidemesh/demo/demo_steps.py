"""The demo's last two steps, before the clean-up: authorization by identity, and the golden
signals of the demo's traffic read from the sidecars (the pure parts are `demo_authz` and
`demo_signals`; the walk is `runner.Demo`'s).

Each fills in the step's facts as it goes, so a failed step still reports what it saw.
"""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table
from rich.text import Text

from sidemesh.api import names
from sidemesh.demo import demo_authz as authz
from sidemesh.demo import demo_signals as signals
from sidemesh.demo import script
from sidemesh.demo.script import same_command
from sidemesh.demo.session import Session, StepFailed, http_get
from sidemesh.local.model import PodRecord
from sidemesh.local.netns import connect_in_netns

BACKEND_URL = f"http://{authz.BACKEND}.{script.NAMESPACE}/"


class LaterSteps(Session):
    # --- authorization ----------------------------------------------------------------------

    def authorize(self, facts: dict[str, Any]) -> None:
        namespace = script.NAMESPACE
        self.say(
            f"One more workload in {namespace}, with a service account of its own "
            f"({authz.GUEST}): in the mesh, but not one the backend will trust."
        )
        self.run(
            same_command(
                "apply", "-f", str(self.manifest_file("guest.yaml", authz.guest_objects()))
            )
        )
        self.wait_for(
            f"the {authz.GUEST} pod 2/2",
            lambda s: any(
                p.name == authz.GUEST and script.fully_ready(p) and script.has_sidecar(p)
                for p in script.live_pods(s, namespace)
            ),
        )
        accounts = " and ".join(authz.principal(a) for a in authz.ALLOWED_ACCOUNTS)
        self.say(f"Allow only {accounts} to call the backend (ALLOW, selector app=backend):")
        policy = self.manifest_file("authz.yaml", [authz.backend_policy()])
        self.run(same_command("apply", "-f", str(policy)))
        facts["policy"] = f"{namespace}/{authz.POLICY_NAME}"
        backends = [p for p in script.live_pods(self.state(), namespace)
                    if p.labels.get("app") == authz.BACKEND]  # fmt: skip
        rule = f"ns[{namespace}]-policy[{authz.POLICY_NAME}]-rule[0]"  # Istio's RBAC name
        self.wait_for(
            f"the policy ({rule}) in the Envoy configuration of all {len(backends)} backends",
            lambda _s: all(rule in self.envoy_config(p) for p in backends),
        )
        guest_identity = f"spiffe://{authz.principal(authz.GUEST)}"
        self.say(f"From {authz.GUEST} ({guest_identity}):")
        denied = self.fetch_until(
            namespace,
            authz.GUEST,
            BACKEND_URL,
            lambda r: authz.status_in(r.stdout) == authz.DENIED,
            container=authz.GUEST,
            command=authz.status_command,
        )
        facts["denied_from"] = guest_identity
        facts["denied_status"] = authz.status_in(denied.stdout)
        facts["denied_body"] = authz.body_in(denied.stdout)
        problem = authz.denial_problem(facts["denied_status"], facts["denied_body"])
        if problem:
            raise StepFailed(f"{problem} {denied.stderr}".strip())
        client = self.pod_named(namespace, "client").name
        client_identity = f"spiffe://{authz.principal('client')}"
        self.say(f"Refused by the backend's sidecar. From the client ({client_identity}):")
        allowed = self.fetch_until(
            namespace,
            client,
            BACKEND_URL,
            lambda r: authz.status_in(r.stdout) == authz.ALLOWED,
            command=authz.status_command,
        )
        facts["allowed_from"] = client_identity
        facts["allowed_status"] = authz.status_in(allowed.stdout)
        facts["allowed_caller"] = script.caller_in(authz.body_in(allowed.stdout))
        if facts["allowed_status"] != authz.ALLOWED:
            raise StepFailed(f"the client was not let through: {allowed.stdout}{allowed.stderr}")
        if facts["allowed_caller"] != client_identity:
            raise StepFailed(f"the backend saw {facts['allowed_caller']}, not {client_identity}")
        self.say("Allowed: the backend answered, and saw the client's identity.")

    def envoy_config(self, pod: PodRecord) -> str:
        """The pod's Envoy configuration (its admin `/config_dump`, on the pod's loopback)."""
        if not pod.netns:
            return ""
        try:
            sock = connect_in_netns(pod.netns, "127.0.0.1", names.PORT_ENVOY_ADMIN, 5.0)
            status, body = http_get(sock, "127.0.0.1", "/config_dump")
        except OSError:
            return ""
        return body.decode("utf-8", errors="replace") if status == 200 else ""

    # --- golden signals ---------------------------------------------------------------------

    def measure_signals(self, facts: dict[str, Any]) -> None:
        namespace = script.NAMESPACE
        client = self.pod_named(namespace, "client")
        source = signals.edge_id(namespace, "client")
        destination = signals.edge_id(namespace, authz.BACKEND)
        sent = signals.requests_sent(
            self.sent, namespace=namespace, pod=client.name, service=authz.BACKEND
        )
        facts["edge"] = f"{source} -> {destination}"
        facts["requests_sent"] = sent
        self.say(
            f"Each sidecar counts what it sends (reporter=source) and serves "
            f"(reporter=destination) in istio_requests_total. The demo sent {sent} requests "
            f"{source} -> {destination} (the client's own loop calls the frontend):"
        )
        self.console.print(
            Text(
                f"$ kubectl exec -n {namespace} {client.name} -c {names.CONTAINER_PROXY} -- "
                f"curl -s localhost:{names.PORT_AGENT_STATUS}/stats/prometheus",
                style="bold cyan",
            ),
            soft_wrap=True,
        )
        self.console.print(
            Text("  (here: read from the node; every sidecar of the namespace)", style="dim")
        )
        found: list[signals.EdgeSignals] = []

        def counted(_state: Any) -> bool:
            pods = [p for p in script.live_pods(self.state(), namespace) if script.has_sidecar(p)]
            found[:] = signals.edges(self.scrape(p) for p in pods)
            return signals.counted_at_least(signals.find_edge(found, source, destination), sent)

        started = time.monotonic()
        try:
            self.wait_for(f"both sidecars counting the demo's {sent} requests", counted)
        finally:
            edge = signals.find_edge(found, source, destination)
            facts["requests_total_source"] = edge.requests_source if edge else None
            facts["requests_total_destination"] = edge.requests_destination if edge else None
            facts["edges"] = [e.as_dict() for e in found]
        facts["counted_after_s"] = time.monotonic() - started
        problem = signals.edge_problem(edge, sent)
        if problem:
            raise StepFailed(problem)
        self.say(
            f"reporter=source {edge.requests_source if edge else 0}, reporter=destination "
            f"{edge.requests_destination if edge else 0}: exactly the demo's {sent}."
        )
        self.say("The table of every edge ends the demo.")

    def show_signals(self, edges: list[dict[str, Any]]) -> None:
        table = Table(title="Golden signals (istio_requests_total, since the upgrade's restart)")
        for header in ("source", "destination", "reporter=source", "reporter=destination",
                       "success (non-5xx)", "mTLS"):  # fmt: skip
            table.add_column(header)
        for edge in edges:
            table.add_row(*signals.table_row(edge))
        self.console.print(table)
