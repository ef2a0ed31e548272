"""The local runtime's state: what was asked for (objects) and what runs (pod status).

One JSON document in the state directory holds all of it (see `store`). Kubernetes objects
keep their manifests as plain dicts, because admission patches them as JSON and users wrote
them as YAML; the records around them carry what the runtime adds (uid, creation time, the
cluster IP, the pod's address and container states). Times are Unix seconds.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Manifest = dict[str, Any]

STATE_VERSION = 1
EVENT_LIMIT = 200  # newest events kept


def key(namespace: str, name: str) -> str:
    """How namespaced objects are keyed in the state: `namespace/name`."""
    return f"{namespace}/{name}"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class NamespaceRecord(_Record):
    name: str
    uid: str
    created: float
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    applied_labels: dict[str, str] | None = None  # as last applied (`kubectl label` adds more)


class ObjectRecord(_Record):
    """A namespaced object the runtime stores as given (Deployment, Service, ConfigMap...)."""

    namespace: str
    name: str
    uid: str
    created: float
    manifest: Manifest  # live: as applied, plus what was changed since (`rollout restart`)
    applied: Manifest | None = None  # as last applied, for apply's three-way merge


class DeploymentRecord(ObjectRecord):
    pass


class ServiceRecord(ObjectRecord):
    cluster_ip: str | None = None  # None: headless


class ConfigMapRecord(ObjectRecord):
    pass


class SecretRecord(ObjectRecord):
    pass


class ServiceAccountRecord(ObjectRecord):
    pass


class PeerAuthenticationRecord(ObjectRecord):
    """security.istio.io PeerAuthentication: stored for the control plane's registry only."""


class VirtualServiceRecord(ObjectRecord):
    """networking.istio.io VirtualService: stored for the control plane's registry only."""


class DestinationRuleRecord(ObjectRecord):
    """networking.istio.io DestinationRule: stored for the control plane's registry only."""


class GatewayRecord(ObjectRecord):
    """networking.istio.io Gateway: stored for the control plane's registry only."""


class AuthorizationPolicyRecord(ObjectRecord):
    """security.istio.io AuthorizationPolicy: stored for the control plane's registry only."""


class RequestAuthenticationRecord(ObjectRecord):
    """security.istio.io RequestAuthentication: stored for the control plane's registry only."""


class ServiceEntryRecord(ObjectRecord):
    """networking.istio.io ServiceEntry: stored for the control plane's registry only."""


class SidecarRecord(ObjectRecord):
    """networking.istio.io Sidecar: stored for the control plane's registry only."""


class TelemetryRecord(ObjectRecord):
    """telemetry.istio.io Telemetry: stored for the control plane's registry only."""


class ReplicaSetRecord(_Record):
    namespace: str
    name: str
    uid: str
    created: float
    deployment: str
    template_hash: str
    template: Manifest
    replicas: int
    revision: int = 1
    # The replica-set controller backs off after a failed pod creation (a denied admission).
    create_failures: int = 0
    next_create_after: float = 0.0


ContainerState = Literal["waiting", "running", "terminated"]


class ContainerStatus(_Record):
    name: str
    state: ContainerState = "waiting"
    reason: str = ""  # waiting reason, or terminated reason
    message: str = ""
    exit_code: int | None = None
    signal: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    restart_count: int = 0
    last_exit_code: int | None = None  # lastTerminationState.terminated
    last_finished_at: float | None = None
    ready: bool = False
    started: bool = False  # the startup probe passed (true at start when there is none)
    pid: int | None = None


PodPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


class PodRecord(_Record):
    namespace: str
    name: str
    uid: str
    created: float
    manifest: Manifest  # the pod as admitted (after the webhook's patch)
    owner: str | None = None  # the ReplicaSet's name
    deletion_requested: float | None = None
    grace_seconds: int | None = None
    phase: PodPhase = "Pending"
    reason: str = ""
    message: str = ""
    pod_ip: str | None = None
    netns: str | None = None
    veth: str | None = None
    initialized: bool = False
    ready: bool = False
    init_statuses: list[ContainerStatus] = Field(default_factory=list)
    statuses: list[ContainerStatus] = Field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        labels = (self.manifest.get("metadata") or {}).get("labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    @property
    def annotations(self) -> dict[str, str]:
        annotations = (self.manifest.get("metadata") or {}).get("annotations") or {}
        return {str(k): str(v) for k, v in annotations.items()}

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.manifest.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def terminating(self) -> bool:
        return self.deletion_requested is not None


class ControlPlaneRecord(_Record):
    revision: str
    default: bool
    created: float
    # As istiod does to its webhook: `Ignore` until the control plane is first ready (so its
    # own pods can be created while nothing answers yet), then `Fail`.
    failure_policy: Literal["Ignore", "Fail"] = "Ignore"


class Event(_Record):
    namespace: str
    object: str  # `kind/name`, e.g. `replicaset/web-5788d57586`
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    first: float
    last: float
    count: int = 1


class NetworkRecord(_Record):
    """Names and ranges of this runtime's network. Everything lives in namespaces we create;
    the host's own namespace is never touched."""

    prefix: str  # every namespace we create is named `<prefix>-...`
    node_netns: str
    bridge: str = "smbr0"
    pod_cidr: str = "10.244.0.0/16"
    bridge_ip: str = "10.244.0.1"
    service_cidr: str = "10.96.0.0/16"
    node_name: str = "sidemesh-local"
    last_pod_ip: str | None = None  # pod addresses are handed out round-robin


class State(_Record):
    version: int = STATE_VERSION
    generation: int = 0  # bumped on every write
    network: NetworkRecord
    namespaces: dict[str, NamespaceRecord] = Field(default_factory=dict)
    deployments: dict[str, DeploymentRecord] = Field(default_factory=dict)
    replicasets: dict[str, ReplicaSetRecord] = Field(default_factory=dict)
    services: dict[str, ServiceRecord] = Field(default_factory=dict)
    configmaps: dict[str, ConfigMapRecord] = Field(default_factory=dict)
    secrets: dict[str, SecretRecord] = Field(default_factory=dict)
    serviceaccounts: dict[str, ServiceAccountRecord] = Field(default_factory=dict)
    peerauthentications: dict[str, PeerAuthenticationRecord] = Field(default_factory=dict)
    virtualservices: dict[str, VirtualServiceRecord] = Field(default_factory=dict)
    destinationrules: dict[str, DestinationRuleRecord] = Field(default_factory=dict)
    gateways: dict[str, GatewayRecord] = Field(default_factory=dict)
    authorizationpolicies: dict[str, AuthorizationPolicyRecord] = Field(default_factory=dict)
    requestauthentications: dict[str, RequestAuthenticationRecord] = Field(default_factory=dict)
    serviceentries: dict[str, ServiceEntryRecord] = Field(default_factory=dict)
    sidecars: dict[str, SidecarRecord] = Field(default_factory=dict)
    telemetries: dict[str, TelemetryRecord] = Field(default_factory=dict)
    pods: dict[str, PodRecord] = Field(default_factory=dict)
    control_planes: dict[str, ControlPlaneRecord] = Field(default_factory=dict)
    events: list[Event] = Field(default_factory=list)
    # Mount points created on the host for volumeMounts (removed again by `down`).
    host_paths: list[str] = Field(default_factory=list)

    def record_event(
        self,
        *,
        namespace: str,
        object: str,
        type: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        now: float,
    ) -> None:
        """Add an event, folding a repeat of the newest identical one into a count (as
        Kubernetes' event correlator does)."""
        for event in reversed(self.events[-20:]):
            if (event.namespace, event.object, event.reason, event.message) == (
                namespace,
                object,
                reason,
                message,
            ):
                event.count += 1
                event.last = now
                return
        self.events.append(
            Event(
                namespace=namespace,
                object=object,
                type=type,
                reason=reason,
                message=message,
                first=now,
                last=now,
            )
        )
        del self.events[:-EVENT_LIMIT]
