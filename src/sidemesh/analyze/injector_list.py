"""`sidemesh injector list`: where injection is on, by which webhook and revision, and which
pods carry an up-to-date, outdated or missing sidecar."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sidemesh.analyze.view import InjectionView, injected_revision, is_finished, pod_with_kind
from sidemesh.kube.snapshot import ClusterSnapshot, name_of, namespace_of

PodState = Literal["up-to-date", "outdated", "missing", "not-expected"]


@dataclass(frozen=True)
class PodInjection:
    namespace: str
    name: str
    state: PodState
    injected_revision: str | None
    expected_revision: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "state": self.state,
            "injectedRevision": self.injected_revision,
            "expectedRevision": self.expected_revision,
        }


@dataclass(frozen=True)
class NamespaceInjection:
    namespace: str
    webhook: str  # configuration/entry
    revision: str
    tag: str | None
    pods: tuple[PodInjection, ...] = field(default=())

    def count(self, state: PodState) -> int:
        return sum(1 for p in self.pods if p.state == state)

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "webhook": self.webhook,
            "revision": self.revision,
            "tag": self.tag,
            "upToDate": self.count("up-to-date"),
            "outdated": self.count("outdated"),
            "missing": self.count("missing"),
            "pods": [p.as_dict() for p in self.pods],
        }


def pod_state(view: InjectionView, pod: Mapping[str, Any]) -> PodInjection | None:
    """None for pods that neither have nor should have a sidecar."""
    expectation = view.expect(pod_with_kind(pod))
    expected = expectation.revision if expectation else None
    current = injected_revision(pod)
    if expected is None and current is None:
        return None
    state: PodState
    if expected is None:
        state = "not-expected"
    elif current is None:
        state = "missing"
    else:
        state = "up-to-date" if current == expected else "outdated"
    return PodInjection(namespace_of(pod), name_of(pod), state, current, expected)


def injector_list(snapshot: ClusterSnapshot) -> list[NamespaceInjection]:
    """Namespaces where a pod without labels would be injected, with their pods' state."""
    view = InjectionView(snapshot)
    rows = []
    for ns in sorted(snapshot.namespaces, key=name_of):
        name = name_of(ns)
        match = view.namespace_match(name)
        if match.entry is None:
            continue
        pods = []
        for pod in snapshot.pods:
            if namespace_of(pod) != name or is_finished(pod):
                continue
            state = pod_state(view, pod)
            if state is not None:
                pods.append(state)
        entry = match.entry
        rows.append(
            NamespaceInjection(
                namespace=name,
                webhook=f"{entry.configuration}/{entry.name}",
                revision=entry.revision,
                tag=entry.tag,
                pods=tuple(sorted(pods, key=lambda p: p.name)),
            )
        )
    return rows
