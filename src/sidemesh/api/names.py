"""Istio's user-facing names: labels, annotations, container names, ports.

Kept identical to Istio on purpose so that guides, dashboards and habits carry over.
"""

from __future__ import annotations

from typing import Final

# Namespace / pod labels that select a webhook.
LABEL_REVISION: Final = "istio.io/rev"
LABEL_INJECTION: Final = "istio-injection"
LABEL_TAG: Final = "istio.io/tag"
LABEL_INJECT: Final = "sidecar.istio.io/inject"  # also the (deprecated) annotation name
LABEL_TLS_MODE: Final = "security.istio.io/tlsMode"
LABEL_CANONICAL_NAME: Final = "service.istio.io/canonical-name"
LABEL_CANONICAL_REVISION: Final = "service.istio.io/canonical-revision"

# Pod annotations.
ANNOTATION_INJECT: Final = "sidecar.istio.io/inject"
ANNOTATION_STATUS: Final = "sidecar.istio.io/status"
ANNOTATION_TEMPLATES: Final = "inject.istio.io/templates"
ANNOTATION_NATIVE_SIDECAR: Final = "sidecar.istio.io/nativeSidecar"
ANNOTATION_PROXY_IMAGE: Final = "sidecar.istio.io/proxyImage"
ANNOTATION_PROXY_CPU: Final = "sidecar.istio.io/proxyCPU"
ANNOTATION_PROXY_MEMORY: Final = "sidecar.istio.io/proxyMemory"
ANNOTATION_PROXY_CPU_LIMIT: Final = "sidecar.istio.io/proxyCPULimit"
ANNOTATION_PROXY_MEMORY_LIMIT: Final = "sidecar.istio.io/proxyMemoryLimit"
ANNOTATION_LOG_LEVEL: Final = "sidecar.istio.io/logLevel"
ANNOTATION_COMPONENT_LOG_LEVEL: Final = "sidecar.istio.io/componentLogLevel"
ANNOTATION_AGENT_LOG_LEVEL: Final = "sidecar.istio.io/agentLogLevel"
ANNOTATION_INTERCEPTION_MODE: Final = "sidecar.istio.io/interceptionMode"
ANNOTATION_INCLUDE_OUTBOUND_IP_RANGES: Final = "traffic.sidecar.istio.io/includeOutboundIPRanges"
ANNOTATION_EXCLUDE_OUTBOUND_IP_RANGES: Final = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
ANNOTATION_INCLUDE_INBOUND_PORTS: Final = "traffic.sidecar.istio.io/includeInboundPorts"
ANNOTATION_EXCLUDE_INBOUND_PORTS: Final = "traffic.sidecar.istio.io/excludeInboundPorts"
ANNOTATION_INCLUDE_OUTBOUND_PORTS: Final = "traffic.sidecar.istio.io/includeOutboundPorts"
ANNOTATION_EXCLUDE_OUTBOUND_PORTS: Final = "traffic.sidecar.istio.io/excludeOutboundPorts"
ANNOTATION_EXCLUDE_INTERFACES: Final = "traffic.sidecar.istio.io/excludeInterfaces"
ANNOTATION_REROUTE_VIRTUAL_INTERFACES: Final = "istio.io/reroute-virtual-interfaces"
# Deprecated spelling of the above; the newer annotation wins when both are set.
ANNOTATION_KUBEVIRT_INTERFACES: Final = "traffic.sidecar.istio.io/kubevirtInterfaces"
ANNOTATION_STATUS_PORT: Final = "status.sidecar.istio.io/port"
ANNOTATION_READINESS_INITIAL_DELAY: Final = "readiness.status.sidecar.istio.io/initialDelaySeconds"
ANNOTATION_READINESS_PERIOD: Final = "readiness.status.sidecar.istio.io/periodSeconds"
ANNOTATION_READINESS_FAILURE_THRESHOLD: Final = "readiness.status.sidecar.istio.io/failureThreshold"
ANNOTATION_REWRITE_PROBES: Final = "sidecar.istio.io/rewriteAppHTTPProbers"
ANNOTATION_MERGE_METRICS: Final = "prometheus.istio.io/merge-metrics"
ANNOTATION_PROXY_CONFIG: Final = "proxy.istio.io/config"
ANNOTATION_PROXY_OVERRIDES: Final = "proxy.istio.io/overrides"
ANNOTATION_USER_VOLUME: Final = "sidecar.istio.io/userVolume"
ANNOTATION_USER_VOLUME_MOUNT: Final = "sidecar.istio.io/userVolumeMount"
ANNOTATION_BOOTSTRAP_OVERRIDE: Final = "sidecar.istio.io/bootstrapOverride"
# sidemesh's own: init containers (comma list) that run outside the mesh, before capture.
ANNOTATION_BYPASS_INIT_CONTAINERS: Final = "sidecar.sidemesh.io/bypass-init-containers"
# sidemesh's own: `hold` (default) or `refuse` a captured connection while the proxy is down
# (istio-init's `--while-proxy-down`; see capture.config.WhileProxyDown).
ANNOTATION_WHILE_PROXY_DOWN: Final = "sidecar.sidemesh.io/while-proxy-down"
WHILE_PROXY_DOWN_CHOICES: Final = ("hold", "refuse")
ANNOTATION_DEFAULT_CONTAINER: Final = "kubectl.kubernetes.io/default-container"
ANNOTATION_DEFAULT_LOGS_CONTAINER: Final = "kubectl.kubernetes.io/default-logs-container"
ANNOTATION_PROMETHEUS_SCRAPE: Final = "prometheus.io/scrape"
ANNOTATION_PROMETHEUS_PORT: Final = "prometheus.io/port"
ANNOTATION_PROMETHEUS_PATH: Final = "prometheus.io/path"

# Injected objects.
CONTAINER_INIT: Final = "istio-init"
CONTAINER_PROXY: Final = "istio-proxy"
VOLUME_ENVOY: Final = "istio-envoy"
VOLUME_DATA: Final = "istio-data"
VOLUME_PODINFO: Final = "istio-podinfo"
VOLUME_TOKEN: Final = "istio-token"
VOLUME_CA_CERT: Final = "istiod-ca-cert"
CONFIGMAP_CA_ROOT: Final = "istio-ca-root-cert"
TOKEN_AUDIENCE: Final = "istio-ca"

# Identity of the proxy process (traffic from it is never captured).
PROXY_UID: Final = 1337
PROXY_GID: Final = 1337

# Data-plane ports.
PORT_OUTBOUND_CAPTURE: Final = 15001
PORT_INBOUND_CAPTURE: Final = 15006
PORT_ENVOY_ADMIN: Final = 15000
PORT_AGENT_STATUS: Final = 15020
PORT_HEALTH: Final = 15021
PORT_PROMETHEUS: Final = 15090

# Control-plane ports.
PORT_XDS_PLAINTEXT: Final = 15010
PORT_XDS_TLS: Final = 15012
PORT_MONITORING: Final = 15014
PORT_WEBHOOK: Final = 15017

CONTROL_PLANE_NAMESPACE: Final = "istio-system"
TRUST_DOMAIN: Final = "cluster.local"
DEFAULT_CLUSTER_ID: Final = "Kubernetes"

# Namespaces the injector never touches, whatever their labels say.
IGNORED_NAMESPACES: Final = frozenset(
    {"kube-system", "kube-public", "kube-node-lease", "local-path-storage"}
)

# Environment variables the injector sets and the agent reads.
ENV_KUBE_APP_PROBERS: Final = "ISTIO_KUBE_APP_PROBERS"
ENV_PROMETHEUS_ANNOTATIONS: Final = "ISTIO_PROMETHEUS_ANNOTATIONS"


def service_name(revision: str) -> str:
    """The control plane's Service for a revision: `istiod` or `istiod-REV`."""
    return "istiod" if revision in ("", "default") else f"istiod-{revision}"


def webhook_configuration_name(revision: str) -> str:
    """Istio's MutatingWebhookConfiguration name for a revision."""
    return (
        "istio-sidecar-injector"
        if revision in ("", "default")
        else f"istio-sidecar-injector-{revision}"
    )
