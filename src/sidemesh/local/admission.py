"""Mutating admission, done the way the API server does it: the webhook layout the control
planes install selects the webhook (`match_webhooks`, Kubernetes' selector semantics), a real
AdmissionReview (admission.k8s.io/v1) goes over HTTPS to that revision's control plane, and the
returned JSONPatch is applied. `failurePolicy: Fail`: an error or a denial means no pod.

The pure parts (which webhooks, the review, reading the answer) are separate from the one
function that talks HTTPS, which takes the socket factory from its caller: the daemon already
lives in the node's network namespace, the CLI reaches into it (`netns.connect_in_netns`).
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidemesh.api import names
from sidemesh.inject.warnings import webhook_failure_ignored
from sidemesh.inject.webhooks import WebhookEntry, match_webhooks, revision_webhooks
from sidemesh.local.jsonpatch import PatchError, apply_patch
from sidemesh.local.model import ControlPlaneRecord, ServiceRecord

WEBHOOK_TIMEOUT_SECONDS = 10.0  # the API server's default timeoutSeconds
WEBHOOK_PORT = 443
WEBHOOK_PATH = "/inject"

Connect = Callable[[str, int, float], socket.socket]


class AdmissionError(Exception):
    """The pod is not created; str() is what the API server would say."""


class WebhookCallError(AdmissionError):
    """The webhook could not be asked or gave no usable answer (failurePolicy decides)."""


def webhook_entries(control_planes: Iterable[ControlPlaneRecord]) -> list[WebhookEntry]:
    """The webhook entries the running local control planes have "installed"."""
    entries: list[WebhookEntry] = []
    for plane in sorted(control_planes, key=lambda p: p.created):
        entries += revision_webhooks(plane.revision, default=plane.default)
    return entries


def apply_pod_defaults(pod: dict[str, Any]) -> dict[str, Any]:
    """What defaulting and the ServiceAccount admission plugin set before webhooks run."""
    spec = pod.setdefault("spec", {})
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = account
    spec["serviceAccount"] = account
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("enableServiceLinks", True)
    return pod


def build_review(pod: Mapping[str, Any], namespace: str, *, uid: str | None = None) -> bytes:
    request = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "name": (pod.get("metadata") or {}).get("name", ""),
        "namespace": namespace,
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": pod,
        "oldObject": None,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    return orjson.dumps(review)


def denial_message(webhook: str, status: object) -> str:
    """What the API server makes of a denial's `response.status` (metav1.Status): its message,
    else its reason, else "without explanation" (the apiserver's webhook `ToStatusErr`)."""
    fields = status if isinstance(status, dict) else {}
    denied = f'admission webhook "{webhook}" denied the request'
    explanation = fields.get("message") or fields.get("reason")
    return f"{denied}: {explanation}" if explanation else f"{denied} without explanation"


@dataclass(frozen=True)
class WebhookAnswer:
    pod: dict[str, Any]
    patched: bool
    warnings: tuple[str, ...] = ()


def read_answer(
    body: bytes, pod: dict[str, Any], *, request_uid: str, webhook: str
) -> WebhookAnswer:
    """The pod after the webhook's answer, or AdmissionError as the API server words it."""
    try:
        document = orjson.loads(body)
        response = document["response"]
        if response.get("uid") != request_uid:
            raise ValueError(f"response uid {response.get('uid')!r} does not match the request")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise WebhookCallError(
            f'Internal error occurred: failed calling webhook "{webhook}": '
            f"received invalid webhook response: {exc}"
        ) from None
    warnings = tuple(str(w) for w in response.get("warnings") or [])
    if not response.get("allowed"):
        raise AdmissionError(denial_message(webhook, response.get("status")))
    patch_text = response.get("patch")
    if not patch_text:
        return WebhookAnswer(pod=pod, patched=False, warnings=warnings)
    if response.get("patchType") != "JSONPatch":
        raise WebhookCallError(
            f'Internal error occurred: webhook "{webhook}" returned patchType '
            f"{response.get('patchType')!r}, expected JSONPatch"
        )
    try:
        patch = orjson.loads(base64.b64decode(patch_text))
        patched = apply_patch(pod, patch)
    except (ValueError, PatchError) as exc:
        raise WebhookCallError(
            f'Internal error occurred: webhook "{webhook}" returned a patch that does not '
            f"apply: {exc}"
        ) from None
    if not isinstance(patched, dict):
        raise WebhookCallError(f'Internal error occurred: webhook "{webhook}" replaced the pod')
    return WebhookAnswer(pod=patched, patched=True, warnings=warnings)


@dataclass(frozen=True)
class Target:
    """Where a revision's webhook answers: its Service's cluster IP, under its DNS name."""

    host: str  # the name the serving certificate carries: `istiod-REV.istio-system.svc`
    address: str
    port: int = WEBHOOK_PORT


def webhook_target(revision: str, services: Mapping[str, ServiceRecord]) -> Target | None:
    service_name = names.service_name(revision)
    record = services.get(f"{names.CONTROL_PLANE_NAMESPACE}/{service_name}")
    if record is None or not record.cluster_ip:
        return None
    return Target(
        host=f"{service_name}.{names.CONTROL_PLANE_NAMESPACE}.svc", address=record.cluster_ip
    )


class _PreconnectedHTTPS(http.client.HTTPSConnection):
    def __init__(self, sock: socket.socket, host: str, context: ssl.SSLContext, timeout: float):
        super().__init__(host, WEBHOOK_PORT, context=context, timeout=timeout)
        self._raw = sock
        self._tls_context = context

    def connect(self) -> None:
        self.sock = self._tls_context.wrap_socket(self._raw, server_hostname=self.host)


def post_review(
    target: Target, body: bytes, *, ca_pem: str, connect: Connect, webhook: str
) -> bytes:
    """POST the review; AdmissionError (worded like the API server's) on any failure."""
    url = f"https://{target.host}:{target.port}{WEBHOOK_PATH}?timeout=10s"
    failed = f'Internal error occurred: failed calling webhook "{webhook}": failed to call webhook'
    try:
        sock = connect(target.address, target.port, WEBHOOK_TIMEOUT_SECONDS)
    except OSError as exc:
        raise WebhookCallError(
            f'{failed}: Post "{url}": dial tcp {target.address}:{target.port}: '
            f"connect: {_reason(exc)}"
        ) from None
    try:
        context = ssl.create_default_context(cadata=ca_pem)
        connection = _PreconnectedHTTPS(sock, target.host, context, WEBHOOK_TIMEOUT_SECONDS)
        try:
            connection.request(
                "POST",
                f"{WEBHOOK_PATH}?timeout=10s",
                body=body,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
    except (OSError, http.client.HTTPException) as exc:
        sock.close()
        raise WebhookCallError(f'{failed}: Post "{url}": {_reason(exc)}') from None
    if response.status != 200:
        raise WebhookCallError(
            f'Internal error occurred: failed calling webhook "{webhook}": expected response '
            f"code 200, got {response.status}: {data[:200].decode(errors='replace')}"
        )
    return data


def _call(
    entry: WebhookEntry,
    pod: dict[str, Any],
    namespace: str,
    services: Mapping[str, ServiceRecord],
    ca_pem: str,
    connect: Connect,
) -> WebhookAnswer:
    target = webhook_target(entry.revision, services)
    if target is None:
        raise WebhookCallError(
            f'Internal error occurred: failed calling webhook "{entry.name}": service '
            f'"{names.CONTROL_PLANE_NAMESPACE}/{names.service_name(entry.revision)}" not found'
        )
    request_uid = str(uuid.uuid4())
    body = post_review(
        target,
        build_review(pod, namespace, uid=request_uid),
        ca_pem=ca_pem,
        connect=connect,
        webhook=entry.name,
    )
    return read_answer(body, pod, request_uid=request_uid, webhook=entry.name)


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ssl.SSLError):
        return exc.strerror
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class Admission:
    pod: dict[str, Any]
    reason: str  # which webhook was called, or why none was
    injected_by: str | None = None  # the revision whose webhook patched the pod
    warnings: tuple[str, ...] = field(default=())


def admit(
    pod: dict[str, Any],
    namespace: str,
    *,
    namespace_labels: Mapping[str, str],
    control_planes: Iterable[ControlPlaneRecord],
    services: Mapping[str, ServiceRecord],
    ca_pem: str,
    connect: Connect,
) -> Admission:
    """Run mutating admission for a new pod; raises AdmissionError when it must not exist."""
    planes = list(control_planes)
    policies = {plane.revision: plane.failure_policy for plane in planes}
    raw_labels = (pod.get("metadata") or {}).get("labels") or {}
    pod_labels = {str(k): str(v) for k, v in raw_labels.items()}
    match = match_webhooks(webhook_entries(planes), namespace_labels, pod_labels)
    if match.entry is None:
        return Admission(pod=pod, reason=match.reason)
    called = list(match.conflicts) or [match.entry]
    warnings: list[str] = []
    injected_by = None
    for entry in called:  # the API server calls every matching webhook, in order
        try:
            answer = _call(entry, pod, namespace, services, ca_pem, connect)
        except WebhookCallError as exc:
            if policies.get(entry.revision) == "Ignore":
                warnings.append(str(webhook_failure_ignored(str(exc))))
                continue
            raise
        pod = answer.pod
        warnings += answer.warnings
        if answer.patched:
            injected_by = entry.revision
    return Admission(
        pod=pod, reason=match.reason, injected_by=injected_by, warnings=tuple(warnings)
    )
