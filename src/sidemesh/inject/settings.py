"""One revision's injector configuration, parsed and validated once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sidemesh.api.config import InjectorConfig, InjectorValues, MeshConfig


@dataclass(frozen=True)
class InjectorSettings:
    revision: str = "default"
    config: InjectorConfig = field(default_factory=InjectorConfig)
    values: InjectorValues = field(default_factory=InjectorValues)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    # File-spelling dumps for templates, computed once rather than per pod.
    values_dump: dict[str, Any] = field(init=False, repr=False, compare=False)
    mesh_dump: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values_dump", self.values.model_dump(by_alias=True))
        object.__setattr__(self, "mesh_dump", self.mesh.model_dump(by_alias=True))
