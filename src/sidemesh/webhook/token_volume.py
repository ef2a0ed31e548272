"""Admit every replica of a rollout as the same pod, despite its service-account token volume.

Before any mutating webhook runs, the API server's ServiceAccount admission plugin gives each
pod a projected volume for its token named `kube-api-access-` plus five random characters, and
mounts it in every container. So no two replicas reach the webhook alike, and the engine's
memo (which answers a rollout's repeated pod at lookup cost) never hits on a real cluster: each
admission renders and diffs the sidecar again (measured by benchmarks/kube_admission.py).

The name is only a reference from the containers' volumeMounts to the volume. The engine is
shown the pod with that volume, and the mounts naming it, renamed to one fixed name; the
answer holds for the real pod as long as it does not mention the fixed name (a JSON Patch
addresses list items by position, so the renamed values are never touched). When it does
mention it (a template copied the reference), or when the name appears anywhere else in the pod,
the pod is admitted exactly as it came.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Final

import orjson

from sidemesh.inject.outcome import Outcome
from sidemesh.webhook.admission import Admitter

# kube-apiserver's `kube-api-access-` + utilrand.String(5)
_TOKEN_VOLUME: Final = re.compile(r"kube-api-access-[a-z0-9]{5}")
CANONICAL_NAME: Final = "kube-api-access-sidemesh"
_CONTAINER_FIELDS: Final = ("initContainers", "containers", "ephemeralContainers")


class TokenVolumeNeutral:
    """An Admitter that admits pods with their token volume under one fixed name."""

    def __init__(self, admitter: Admitter) -> None:
        self.admitter = admitter

    @property
    def revision(self) -> str:
        return self.admitter.revision

    def admit(
        self,
        pod: dict[str, Any],
        namespace: str,
        *,
        cluster_id: str | None,
        network: str | None,
    ) -> Outcome:
        canonical = canonical_pod(pod)
        if canonical is not None:
            outcome = self.admitter.admit(
                canonical, namespace, cluster_id=cluster_id, network=network
            )
            if not _mentions(outcome, CANONICAL_NAME):
                # Its `pod` is the renamed one; the webhook answers with the patch alone.
                return dataclasses.replace(outcome, pod=None) if outcome.pod else outcome
        return self.admitter.admit(pod, namespace, cluster_id=cluster_id, network=network)


def canonical_pod(pod: dict[str, Any]) -> dict[str, Any] | None:
    """`pod` (not modified) with its token volume and the mounts of it renamed to
    CANONICAL_NAME; None when there is no such single volume, or its name is used elsewhere."""
    spec = pod.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("volumes"), list):
        return None
    volumes: list[Any] = spec["volumes"]
    found = [
        index
        for index, volume in enumerate(volumes)
        if isinstance(volume, dict)
        and isinstance(volume.get("name"), str)
        and (volume["name"] == CANONICAL_NAME or _TOKEN_VOLUME.fullmatch(volume["name"]))
    ]
    if len(found) != 1 or "projected" not in volumes[found[0]]:
        return None
    name: str = volumes[found[0]]["name"]
    if name == CANONICAL_NAME:
        return None
    renamed = {**spec, "volumes": list(volumes)}
    renamed["volumes"][found[0]] = {**volumes[found[0]], "name": CANONICAL_NAME}
    references = 1
    for field in _CONTAINER_FIELDS:
        containers = spec.get(field)
        if not isinstance(containers, list):
            continue
        copies = []
        for container in containers:
            mounts = container.get("volumeMounts") if isinstance(container, dict) else None
            if isinstance(mounts, list) and any(_names(m, name) for m in mounts):
                new_mounts = [
                    {**m, "name": CANONICAL_NAME} if _names(m, name) else m for m in mounts
                ]
                references += sum(1 for m in mounts if _names(m, name))
                container = {**container, "volumeMounts": new_mounts}
            copies.append(container)
        renamed[field] = copies
    # Anywhere else (an annotation, an env value, a subPath), renaming could change meaning.
    if orjson.dumps(pod).count(name.encode()) != references:
        return None
    return {**pod, "spec": renamed}


def _names(mount: Any, name: str) -> bool:
    return isinstance(mount, dict) and mount.get("name") == name


def _mentions(outcome: Outcome, name: str) -> bool:
    if outcome.patch is not None and name.encode() in outcome.patch:
        return True
    return name in outcome.reason or any(name in str(warning) for warning in outcome.warnings)
