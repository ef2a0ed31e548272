"""Every warning the injector gives, in one table: a stable code, a title, and the one function
that words it.

A warning means the pod is admitted (or would be) but will not behave as its owner expects.
Every door prints these the same way: the webhook's `AdmissionResponse.warnings` (kubectl's
`Warning:` lines) and kube-inject/check-inject on stderr as `SM1xxx: message`, and
`check-inject -o json` as `{"code": ..., "message": ...}`. The README's "Injection warnings"
table lists the same codes (a test keeps the two in step).

Codes are never reused: SM10xx are about which webhook and policy decide, SM11xx about the
pod's own spec and annotations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sidemesh.api import names


@dataclass(frozen=True, slots=True)
class InjectionWarning:
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class WarningKind:
    code: str
    title: str

    def __call__(self, message: str) -> InjectionWarning:
        return InjectionWarning(self.code, message)


NAMESPACE_BOTH_LABELS: Final = WarningKind("SM1001", "namespace has both injection labels")
SEVERAL_WEBHOOKS: Final = WarningKind("SM1002", "more than one webhook would inject the pod")
ANNOTATION_CANNOT_OPT_IN: Final = WarningKind("SM1003", "the inject annotation cannot opt a pod in")
ANNOTATION_DEPRECATED: Final = WarningKind("SM1004", "the inject annotation is deprecated")
ANNOTATION_OVERRULED: Final = WarningKind("SM1005", "the inject label overrules the annotation")
NOT_A_BOOLEAN: Final = WarningKind("SM1006", 'inject value is neither "true" nor "false"')
INJECT_ON_WORKLOAD: Final = WarningKind(
    "SM1007", "inject label or annotation on the workload, not its pod template"
)
NO_NATIVE_SIDECARS: Final = WarningKind(
    "SM1008", "native sidecar asked for, the API server has none"
)
WEBHOOK_FAILURE_IGNORED: Final = WarningKind(
    "SM1009", "the webhook failed and failurePolicy Ignore admitted the pod"
)
RESERVED_PORT: Final = WarningKind("SM1101", "app container uses a port the sidecar reserves")
PROXY_UID: Final = WarningKind("SM1102", "app container runs as the proxy's uid")
UNDECLARED_PROBE_PORT: Final = WarningKind("SM1103", "probe on a port no container declares")
CAPTURE_CONFLICT: Final = WarningKind("SM1104", "include and exclude annotations cancel out")
SERVED_PORT_UNCAPTURED: Final = WarningKind(
    "SM1105", "a port the pod serves is left out of inbound capture"
)
INIT_OUTSIDE_MESH: Final = WarningKind("SM1106", "init container calls out before the sidecar runs")
APP_BEFORE_PROXY: Final = WarningKind(
    "SM1107", "app calls out at start without holdApplicationUntilProxyStarts"
)
IGNORED_IN_MODE: Final = WarningKind("SM1108", "annotation is valid but ignored in this mode")
DEPRECATED_KUBEVIRT: Final = WarningKind(
    "SM1109", "kubevirtInterfaces is deprecated (reroute-virtual-interfaces)"
)
CIDR_HOST_BITS: Final = WarningKind("SM1110", "CIDR with host bits set")
BYPASS_UNKNOWN: Final = WarningKind(
    "SM1111", "bypass-init-containers names no init container of the pod"
)

TABLE: Final[tuple[WarningKind, ...]] = (
    NAMESPACE_BOTH_LABELS,
    SEVERAL_WEBHOOKS,
    ANNOTATION_CANNOT_OPT_IN,
    ANNOTATION_DEPRECATED,
    ANNOTATION_OVERRULED,
    NOT_A_BOOLEAN,
    INJECT_ON_WORKLOAD,
    NO_NATIVE_SIDECARS,
    WEBHOOK_FAILURE_IGNORED,
    RESERVED_PORT,
    PROXY_UID,
    UNDECLARED_PROBE_PORT,
    CAPTURE_CONFLICT,
    SERVED_PORT_UNCAPTURED,
    INIT_OUTSIDE_MESH,
    APP_BEFORE_PROXY,
    IGNORED_IN_MODE,
    DEPRECATED_KUBEVIRT,
    CIDR_HOST_BITS,
    BYPASS_UNKNOWN,
)


def lines(warnings: Iterable[InjectionWarning]) -> list[str]:
    """`SM1xxx: message`, as AdmissionResponse.warnings and stderr carry them."""
    return [str(w) for w in warnings]


# --- which webhook, which policy (SM10xx) ---------------------------------------------------


def namespace_both_labels() -> InjectionWarning:
    return NAMESPACE_BOTH_LABELS(
        f"namespace has both {names.LABEL_INJECTION} and {names.LABEL_REVISION} labels; "
        f"{names.LABEL_INJECTION} wins and {names.LABEL_REVISION} is ignored (IST0123). "
        f"Remove one: kubectl label namespace NS {names.LABEL_INJECTION}-"
    )


def several_webhooks(configurations: Iterable[str]) -> InjectionWarning:
    return SEVERAL_WEBHOOKS(
        "more than one webhook would inject this pod: "
        + ", ".join(sorted(set(configurations)))
        + " (IST0139)"
    )


def annotation_cannot_opt_in() -> InjectionWarning:
    return ANNOTATION_CANNOT_OPT_IN(
        f"annotation {names.ANNOTATION_INJECT}=true cannot opt a pod in: webhook selectors "
        f"see labels only; use the label {names.LABEL_INJECT}=true"
    )


def annotation_deprecated() -> InjectionWarning:
    return ANNOTATION_DEPRECATED(
        f"annotation {names.ANNOTATION_INJECT} is deprecated; use the pod label "
        f"{names.LABEL_INJECT} (the annotation cannot make the API server call the webhook)"
    )


def annotation_overruled(annotation_value: str, label_value: str) -> InjectionWarning:
    return ANNOTATION_OVERRULED(
        f"annotation {names.ANNOTATION_INJECT}={annotation_value} is ignored: "
        f"the label {names.LABEL_INJECT}={label_value} wins"
    )


def not_a_boolean(source: str) -> InjectionWarning:
    return NOT_A_BOOLEAN(
        f'{source} is neither "true" nor "false" and is ignored; the injector default applies'
    )


def inject_on_workload(where: str, kind: str) -> InjectionWarning:
    return INJECT_ON_WORKLOAD(
        f"{names.LABEL_INJECT} {where} is on the {kind}'s metadata, where it has no effect; "
        "put it in the pod template (spec.template.metadata)"
    )


def no_native_sidecars(asked: str, version: tuple[int, int], since: str) -> InjectionWarning:
    return NO_NATIVE_SIDECARS(
        f"{asked} asks for a native sidecar, but the API server runs Kubernetes "
        f"{version[0]}.{version[1]} (native sidecars, init containers with restartPolicy "
        f"Always, need {since} or later): {names.CONTAINER_PROXY} was injected as a classic "
        "sidecar container instead"
    )


def webhook_failure_ignored(error: str) -> InjectionWarning:
    """The local runtime's admission: the pod is created without a sidecar."""
    return WEBHOOK_FAILURE_IGNORED(f"{error} (failurePolicy Ignore: admitted without it)")


# --- the pod's own spec and annotations (SM11xx) --------------------------------------------


def reserved_port(container: str, port: int, low: int, high: int) -> InjectionWarning:
    return RESERVED_PORT(
        f"container {container} declares port {port}, inside the range {low}-{high} the "
        "sidecar reserves (the proxy listens on 15000, 15001, 15006, 15020, 15021 and 15090, "
        "and capture treats them specially): move the app to another port"
    )


def proxy_uid(container: str, where: str) -> InjectionWarning:
    return PROXY_UID(
        f"container {container} runs as uid {names.PROXY_UID} (the proxy's, set in {where}): "
        "capture lets its traffic through, so it bypasses the mesh (no mTLS, no policy) "
        "(IST0144); run it as another user"
    )


def undeclared_probe_port(container: str, probe: str, port: object) -> InjectionWarning:
    return UNDECLARED_PROBE_PORT(
        f"{probe} of container {container} checks port {port}, which no container declares; "
        "declare it under the container's ports (or fix the probe)"
    )


def capture_conflict(include: str, exclude: str, items: Iterable[str]) -> InjectionWarning:
    return CAPTURE_CONFLICT(
        f"annotations {include} and {exclude} both name {', '.join(items)}; the exclusion "
        "wins: remove it from one of them"
    )


def served_port_excluded(annotation: str, port: int, container: str) -> InjectionWarning:
    return SERVED_PORT_UNCAPTURED(
        f"annotation {annotation} names port {port}, which container {container} serves: "
        "inbound traffic to it bypasses the sidecar (no mTLS, no policy); remove the port "
        "from the annotation unless that is what you want"
    )


def served_port_not_included(annotation: str, port: int, container: str) -> InjectionWarning:
    return SERVED_PORT_UNCAPTURED(
        f"annotation {annotation} does not name port {port}, which container {container} "
        "serves: inbound traffic to it bypasses the sidecar (no mTLS, no policy); add it, or "
        'use "*"'
    )


def init_outside_mesh(container: str) -> InjectionWarning:
    return INIT_OUTSIDE_MESH(
        f"init container {container} appears to use the network, and runs before the "
        "sidecar (classic sidecar mode): its calls leave the pod outside the mesh (no mTLS; "
        f"a STRICT destination refuses them). Set {names.ANNOTATION_NATIVE_SIDECAR}: "
        '"true" to run it after the sidecar is ready'
    )


def app_before_proxy(container: str) -> InjectionWarning:
    return APP_BEFORE_PROXY(
        f"container {container} appears to call out when it starts, but the sidecar may not "
        "be ready yet (holdApplicationUntilProxyStarts is off) and its first connections can "
        f"fail: set {names.ANNOTATION_PROXY_CONFIG}: "
        "'{holdApplicationUntilProxyStarts: true}'"
    )


def ignored_in_mode(annotation: str, why: str) -> InjectionWarning:
    return IGNORED_IN_MODE(f"annotation {annotation} is ignored: {why}")


def deprecated_kubevirt(both: bool) -> InjectionWarning:
    old, new = names.ANNOTATION_KUBEVIRT_INTERFACES, names.ANNOTATION_REROUTE_VIRTUAL_INTERFACES
    if both:
        return DEPRECATED_KUBEVIRT(
            f"annotations {old} and {new} are both set: {new} wins and {old} is ignored; "
            f"remove {old}"
        )
    return DEPRECATED_KUBEVIRT(f"annotation {old} is deprecated: use {new} (same value)")


def cidr_host_bits(annotation: str, written: str, network: str) -> InjectionWarning:
    return CIDR_HOST_BITS(
        f"annotation {annotation} lists {written}, which has host bits set; capture treats "
        f"it as {network}: write {network} if that is what you mean"
    )


def bypass_unknown(name: str, init_containers: Iterable[str]) -> InjectionWarning:
    have = ", ".join(init_containers) or "none"
    return BYPASS_UNKNOWN(
        f"annotation {names.ANNOTATION_BYPASS_INIT_CONTAINERS} names {name}, which is not an "
        f"init container of this pod (its init containers: {have}); check the spelling"
    )
