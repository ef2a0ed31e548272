"""PeerAuthentication composition, Istio's precedence as a truth table: a policy set and a
workload port in, the effective mode out (`effective_mtls_mode`, a pure function)."""

from __future__ import annotations

from typing import Any

import pytest
from test_envoy_acks import NODE, mixed_snapshot

from sidemesh.xds import generate as gen
from sidemesh.xds.model import MeshSnapshot, MtlsMode, PeerAuthentication, effective_mtls_mode
from sidemesh.xds.proxy import parse_node

ROOT = "istio-system"
APP = {"app": "finance", "version": "v1"}


def mesh(mode: MtlsMode | None, *, name: str = "default", created: float = 0.0) -> Any:
    return PeerAuthentication(ROOT, name, mode, created=created)


def namespace_wide(mode: MtlsMode | None, *, name: str = "default") -> Any:
    return PeerAuthentication("foo", name, mode)


def workload(
    mode: MtlsMode | None,
    *,
    ports: dict[int, MtlsMode | None] | None = None,
    name: str = "finance",
    namespace: str = "foo",
    selector: dict[str, str] | None = None,
    created: float = 0.0,
) -> Any:
    return PeerAuthentication(
        namespace, name, mode,
        selector=tuple(sorted((selector or {"app": "finance"}).items())),
        port_modes=tuple(sorted((ports or {}).items())), created=created,
    )  # fmt: skip


CASES: list[tuple[str, tuple[PeerAuthentication, ...], int | None, MtlsMode]] = [
    ("no policy at all", (), 8080, "PERMISSIVE"),
    ("mesh only", (mesh("STRICT"),), 8080, "STRICT"),
    ("namespace over mesh", (mesh("STRICT"), namespace_wide("DISABLE")), 8080, "DISABLE"),
    ("workload over namespace",
     (mesh("DISABLE"), namespace_wide("STRICT"), workload("PERMISSIVE")), 8080, "PERMISSIVE"),
    ("UNSET workload inherits the namespace",
     (namespace_wide("STRICT"), workload(None)), 8080, "STRICT"),
    ("UNSET workload and namespace inherit the mesh",
     (mesh("STRICT"), namespace_wide(None), workload(None)), 8080, "STRICT"),
    ("UNSET everywhere is PERMISSIVE", (mesh(None), namespace_wide(None)), 8080, "PERMISSIVE"),
    ("port level overrides the workload mode",
     (workload("STRICT", ports={8080: "PERMISSIVE"}),), 8080, "PERMISSIVE"),
    ("another port keeps the workload mode",
     (workload("STRICT", ports={8080: "PERMISSIVE"}),), 9090, "STRICT"),
    ("port level over an inherited mode",
     (namespace_wide("STRICT"), workload(None, ports={8080: "DISABLE"})), 8080, "DISABLE"),
    ("UNSET port level keeps the inherited mode",
     (mesh("STRICT"), workload(None, ports={8080: None})), 8080, "STRICT"),
    ("the listener's default chain ignores port levels",
     (workload("STRICT", ports={8080: "DISABLE"}),), None, "STRICT"),
    ("a selector that does not match",
     (namespace_wide("DISABLE"), workload("STRICT", selector={"app": "web"})), 8080, "DISABLE"),
    ("every selector label must match",
     (workload("STRICT", selector={"app": "finance", "version": "v2"}),), 8080, "PERMISSIVE"),
    ("a workload policy of another namespace",
     (workload("STRICT", namespace="bar"),), 8080, "PERMISSIVE"),
    ("selector policies in the root namespace apply to nobody",
     (workload("STRICT", namespace=ROOT, ports={8080: "DISABLE"}),), 8080, "PERMISSIVE"),
    ("the oldest workload policy wins",
     (workload("DISABLE", name="a", created=20.0), workload("STRICT", name="b", created=10.0)),
     8080, "STRICT"),
    ("its port levels come with it, not the younger one's",
     (workload("STRICT", name="old", created=1.0),
      workload("STRICT", name="new", created=2.0, ports={8080: "DISABLE"})), 8080, "STRICT"),
    ("same age: the first by name wins",
     (workload("DISABLE", name="b", created=5.0), workload("STRICT", name="a", created=5.0)),
     8080, "STRICT"),
    ("the oldest mesh policy wins",
     (mesh("DISABLE", name="a", created=9.0), mesh("STRICT", name="z", created=3.0)),
     8080, "STRICT"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("policies", "port", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_effective_mode(
    policies: tuple[PeerAuthentication, ...], port: int | None, expected: MtlsMode
) -> None:
    found = effective_mtls_mode(
        policies, root_namespace=ROOT, namespace="foo", labels=APP, port=port
    )
    assert found == expected


def test_a_workload_in_the_root_namespace_gets_the_mesh_policy() -> None:
    policies = (mesh("STRICT"), workload("DISABLE", namespace=ROOT))
    found = effective_mtls_mode(policies, root_namespace=ROOT, namespace=ROOT, labels=APP, port=1)
    assert found == "STRICT"


def test_inbound_listeners_are_per_proxy_selected_by_its_labels() -> None:
    """Two proxies at one address's services: only the selected one gets the port levels."""
    snapshot = mixed_snapshot()
    policy = PeerAuthentication("demo", "web-only", "STRICT", selector=(("app", "web"),),
                                port_modes=((8080, "DISABLE"),))  # fmt: skip
    snapshot = MeshSnapshot(
        version=snapshot.version, services=snapshot.services, endpoints=snapshot.endpoints,
        peer_authentications=(PeerAuthentication("demo", "default", "PERMISSIVE"), policy),
    )  # fmt: skip

    def chains_of(labels: dict[str, str]) -> set[str]:
        proxy = parse_node(NODE, {"NAMESPACE": "demo", "SERVICE_ACCOUNT": "web", "LABELS": labels})
        listeners = {lst.name: lst for lst in gen.generate(snapshot, proxy).listeners}
        return {c.name for c in listeners[gen.VIRTUAL_INBOUND].filter_chains}

    selected, other = chains_of({"app": "web"}), chains_of({"app": "other"})
    assert "inbound|8080||" in selected and "inbound|8080||-mtls" not in selected
    assert {"inbound|8080||-mtls", "inbound|8080||-plaintext"} <= other
