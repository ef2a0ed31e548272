"""`sidemesh local node`: this host as a Node of a real API server (the guide, literally).

The design, in the simplest honest form we found:

* **One node, its own network.** Pods run exactly as in the local runtime: the kubelet part
  (`kubelet.PodWorker`, with `containers`, `volumes`, `launch`) is reused as is; only its
  source of pod specs differs (the API server instead of the state file). The node's network
  namespace, bridge and kube-proxy-style rules are the runtime's (`network`, `services`); the
  agent moves itself into the node namespace (probes reach pod addresses, as a kubelet's do).
* **The API server is on the host's loopback.** Nothing routes between the host and the node
  namespace (we add no routes to your host), so user-space relays (`node_ports`) join them:
  the agent's own client dials 127.0.0.1:<api port> inside the node namespace and is relayed
  to the host; pods reach it through the `kubernetes` Service (its ClusterIP, as in any
  cluster). `--host-service NS/NAME:PORT=HOST:PORT` does the same for a Service served by a
  process on the host (a control plane run there); `--expose HOST:PORT=NS/NAME:PORT` is the
  reverse, a host port reaching a Service inside (how the API server reaches a webhook whose
  istiod runs as a pod here: `istiodRemote.injectionURL=https://HOST:PORT/inject`).
* **The kubelet's duties against the server:** register the Node (Ready, a Lease in
  kube-node-lease renewed every 10 s), bind pending pods to itself (there is no scheduler:
  the pods/binding subresource, as a scheduler would, for pods of the default scheduler whose
  nodeSelector matches), run pods bound here, report their status (phase, podIP, container
  statuses, conditions) and their events, and on graceful deletion stop the pod and then
  delete it with grace 0. Containers find the API server as `kubernetes.default.svc:443`
  (KUBERNETES_SERVICE_HOST; the name every API server certificate carries, mapped to the
  Service's ClusterIP in each pod's hosts file). ConfigMaps and Secrets come from the
  server; a projected service-account token is a TokenRequest for the pod's ServiceAccount
  with the API server's audiences plus `istio-ca` (one token serves both volumes; it is not
  bound to the pod and is requested for a day, not refreshed).
* **The control plane as pods:** the install's istiod Deployment is scheduled here like any
  other; its pods run `sidemesh discovery --kube` (the sidemesh image's entrypoint is this
  installation's `sidemesh`), with the pod's service-account token, reaching the API server
  through the `kubernetes` Service. Sidecars reach them at istiod-REV.istio-system.svc:15012
  (Service → EndpointSlice → the pod IPs this node reported); the API server reaches their
  webhook through `--expose`. Running discovery on the host instead works too
  (`--host-service`; scale the install's istiod Deployment to 0, or its pods run here too).
* **Polling, not watches:** one list per kind per second keeps the agent small; the real
  controllers (endpoints, ReplicaSets) do the rest from the status the node reports.
* **Stopping** (SIGTERM/SIGINT) stops every pod and removes the node's namespaces; the Node
  and Pod objects stay on the server (as when a kubelet stops), and a new agent restarts the
  pods bound here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from urllib.parse import urlparse

from sidemesh.local import network
from sidemesh.local.netns import enter_netns
from sidemesh.local.node_agent import NodeAgent, NodeSettings, node_network
from sidemesh.local.node_api import NodeApi
from sidemesh.local.node_ports import Namespace

__all__ = ["NodeSettings", "clear_leftover_pods", "run_node"]


def clear_leftover_pods(prefix: str) -> None:
    """Kill what an agent that died without cleaning up left running in its pods' namespaces,
    and remove them; the pods bound here start afresh."""
    for name in network.list_netns():
        if name.startswith(f"{prefix}-pod-"):
            for pid in network.netns_pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            network.run(["ip", "netns", "del", name], check=False)
            network.remove_netns_etc(name)


def _api_address(kubeconfig: Path) -> tuple[str, int]:
    from sidemesh.kube.client import load_kube_config

    config = load_kube_config(kubeconfig).get()
    server = urlparse(str(config.cluster.server))
    return str(server.hostname), int(server.port or 443)


def run_node(settings: NodeSettings) -> None:
    """Register, run pods until SIGTERM/SIGINT, clean up. Runs in the calling process, which
    it moves into the node's network namespace (it must not have started threads)."""
    api_host, api_port = _api_address(settings.kubeconfig)
    agent_network = node_network(settings)
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    clear_leftover_pods(agent_network.prefix)
    network.ensure_node(agent_network)
    host = Namespace.current()
    node = Namespace.named(agent_network.node_netns)
    enter_netns(agent_network.node_netns)

    async def main() -> None:
        api = NodeApi(settings.kubeconfig)
        agent = NodeAgent(settings, api, host, node)
        await agent.start_relays(api_host, api_port)
        await agent.run()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        host.close()
        node.close()
