"""One table of what a user sees when the injector refuses a pod or warns about it, shared by
the real API server's tier (tests/e2e/test_e2e_refusals.py: kubectl's stderr) and the local
runtime's admission (tests/local/test_local_admission_refusals.py), so the two cannot drift.

Every pod is created in a namespace labelled `istio.io/rev=<revision>`, so the API server (or
the local runtime) calls the `rev.namespace` webhook entry.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

WEBHOOK = "rev.namespace.sidecar-injector.istio.io"


@dataclass(frozen=True)
class Case:
    name: str
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    denial: str | None = None  # the engine's reason; None: the pod is admitted
    warnings: tuple[str, ...] = ()

    @property
    def refusal(self) -> str | None:
        """The line the API server (and kubectl after `error when creating ...:`) shows."""
        if self.denial is None:
            return None
        return f'admission webhook "{WEBHOOK}" denied the request: {self.denial}'

    def kubectl_error(self, source: str = "STDIN") -> str:
        """kubectl's stderr line for the refusal (the local runtime prints the same)."""
        return f'Error from server: error when creating "{source}": {self.refusal}'

    def pod(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "labels": {"app": self.name, **self.labels},
                "annotations": dict(self.annotations),
            },
            "spec": {"containers": [copy.deepcopy(_APP)]},
        }


_APP: dict[str, Any] = {"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}

CASES: tuple[Case, ...] = (
    Case(
        "bad-cpu",
        annotations={"sidecar.istio.io/proxyCPU": "lots"},
        denial='annotation sidecar.istio.io/proxyCPU="lots" is invalid: expected a Kubernetes '
        "quantity such as 100m or 128Mi",
    ),
    Case(
        "bad-inbound-ports",
        annotations={"traffic.sidecar.istio.io/includeInboundPorts": "abc"},
        denial='annotation traffic.sidecar.istio.io/includeInboundPorts="abc" is invalid: '
        '"abc" is not a port number',
    ),
    Case(
        "bad-interception",
        annotations={"sidecar.istio.io/interceptionMode": "BOGUS"},
        denial='annotation sidecar.istio.io/interceptionMode="BOGUS" is invalid: expected '
        "REDIRECT, TPROXY or NONE",
    ),
    Case(
        "bad-cidr",
        annotations={"traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.0.0.0/33"},
        denial='annotation traffic.sidecar.istio.io/excludeOutboundIPRanges="10.0.0.0/33" is '
        'invalid: "10.0.0.0/33" is not an IP address or CIDR',
    ),
    Case(
        "inject-yes",
        labels={"sidecar.istio.io/inject": "yes"},
        warnings=(
            'SM1006: label sidecar.istio.io/inject=yes is neither "true" nor "false" and is '
            "ignored; the injector default applies",
        ),
    ),
    Case(
        "label-beats-annotation",
        labels={"sidecar.istio.io/inject": "true"},
        annotations={"sidecar.istio.io/inject": "false"},
        warnings=(
            "SM1005: annotation sidecar.istio.io/inject=false is ignored: the label "
            "sidecar.istio.io/inject=true wins",
        ),
    ),
)
