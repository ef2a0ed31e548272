"""Who a pod is: its workload (from owner references) and canonical service name/revision.

Pods created by a ReplicaSet carry the pod-template-hash in the ReplicaSet's name; stripping it
gives the Deployment, which is what users see in dashboards. Jobs created by a CronJob end in
`-<8 to 10 digits>`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidemesh.api import names
from sidemesh.api.kube_names import as_label_value

# A CronJob names its Jobs `<cronjob>-<scheduled time in minutes>`; Istio matches 8-10 digits
# so that a hand-made Job such as `backup-2` stays a Job.
_CRONJOB_SUFFIX = re.compile(r"^(.+)-\d{8,10}$")


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    kind: str
    api_version: str

    def owner_uri(self, namespace: str) -> str:
        group_version = self.api_version
        return f"kubernetes://apis/{group_version}/namespaces/{namespace}/{self.kind.lower()}s/{self.name}"


def _controller(metadata: Mapping[str, Any]) -> Mapping[str, Any] | None:
    owners = metadata.get("ownerReferences")
    if not isinstance(owners, list):
        return None
    typed = [o for o in owners if isinstance(o, dict) and isinstance(o.get("name"), str)]
    for owner in typed:
        if owner.get("controller") is True:
            return owner
    return typed[0] if typed else None


def workload_of(metadata: Mapping[str, Any]) -> Workload:
    pod_name = metadata.get("name") if isinstance(metadata.get("name"), str) else ""
    if not pod_name:
        generate = metadata.get("generateName")
        pod_name = generate.rstrip("-") if isinstance(generate, str) else ""
    owner = _controller(metadata)
    if owner is None:
        return Workload(name=str(pod_name), kind="Pod", api_version="v1")
    kind = str(owner.get("kind", ""))
    name = str(owner["name"])
    api_version = str(owner.get("apiVersion", "v1"))
    labels = metadata.get("labels") if isinstance(metadata.get("labels"), dict) else {}
    assert isinstance(labels, dict)
    if kind == "ReplicaSet":
        template_hash = labels.get("pod-template-hash")
        if isinstance(template_hash, str) and name.endswith("-" + template_hash):
            return Workload(
                name=name[: -len(template_hash) - 1], kind="Deployment", api_version="apps/v1"
            )
    if kind == "Job":
        match = _CRONJOB_SUFFIX.match(name)
        if match:
            return Workload(name=match.group(1), kind="CronJob", api_version="batch/v1")
    return Workload(name=name, kind=kind, api_version=api_version)


def canonical_name(labels: Mapping[str, str], workload: Workload) -> str:
    """A label value: a workload name cut to 63 characters must still end with an alphanumeric
    character (the API server refuses `my-very-long-...-name-` as a label)."""
    for key in (names.LABEL_CANONICAL_NAME, "app.kubernetes.io/name", "app"):
        value = labels.get(key)
        if isinstance(value, str) and value:
            return as_label_value(value)
    return as_label_value(workload.name)


def canonical_revision(labels: Mapping[str, str]) -> str:
    for key in (names.LABEL_CANONICAL_REVISION, "app.kubernetes.io/version", "version"):
        value = labels.get(key)
        if isinstance(value, str) and value:
            return as_label_value(value) or "latest"
    return "latest"
