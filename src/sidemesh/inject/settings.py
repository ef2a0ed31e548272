"""One revision's injector configuration, parsed and validated once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from sidemesh.api.config import InjectorConfig, InjectorValues, MeshConfig


@dataclass(frozen=True)
class InjectorSettings:
    revision: str = "default"
    config: InjectorConfig = field(default_factory=InjectorConfig)
    values: InjectorValues = field(default_factory=InjectorValues)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    # The Kubernetes version (major, minor) of the API server the pods are created on, when
    # known (`discovery --kube` asks it at start; the AdmissionReview does not say): a native
    # sidecar asked for on a server without them is injected the classic way, with a warning.
    server_version: tuple[int, int] | None = None
    # File-spelling dumps for templates, computed once rather than per pod.
    values_dump: dict[str, Any] = field(init=False, repr=False, compare=False)
    mesh_dump: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values_dump", self.values.model_dump(by_alias=True))
        object.__setattr__(self, "mesh_dump", self.mesh.model_dump(by_alias=True))

    @property
    def native_sidecars_supported(self) -> bool:
        """Unknown counts as supported: the configuration is trusted as written."""
        return self.server_version is None or self.server_version >= NATIVE_SIDECAR_SINCE


# Init containers with `restartPolicy: Always`: alpha (off) in 1.28, on by default from 1.29.
NATIVE_SIDECAR_SINCE: Final = (1, 29)
