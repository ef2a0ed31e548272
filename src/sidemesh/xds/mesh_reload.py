"""A MeshConfig changed while discovery runs: what applies now, and what waits for a restart.

istiod re-reads its MeshConfig (the mounted `mesh` file, or its `istio-<rev>` ConfigMap) and
pushes a new configuration to every proxy. Both registries do the same through `MeshReloader`:
the file registry when `--mesh-config` changes, the Kubernetes registry when the revision's
ConfigMap does (`mesh_reload_kube`). The rules, in one place:

* an invalid MeshConfig is logged and the last good one stays;
* fields read only at start (the injector's `defaultConfig`, the CA's `trustDomain`,
  `enablePrometheusMerge`) keep their start values, with a warning that they wait for a
  restart, so the proxies' configuration keeps agreeing with the CA and the injector;
* the rest (outbound traffic policy, access logs, tracing providers, ...) reaches the builder,
  which rebuilds every proxy's configuration; an equal MeshConfig changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from sidemesh.api.config import MeshConfig
from sidemesh.api.config import parse_mesh_config as parse_mesh_config
from sidemesh.xds.builder import SnapshotBuilder

log = logging.getLogger("sidemesh.xds.mesh_reload")

# MeshConfig fields only a restart applies (read once by the injector and the CA).
START_ONLY_FIELDS: Final = ("trust_domain", "default_config", "enable_prometheus_merge")


def start_only_alias(field: str) -> str:
    """A MeshConfig field's name as users write it (`trustDomain`)."""
    return MeshConfig.model_fields[field].alias or field


@dataclass(frozen=True)
class LiveMesh:
    """What a new MeshConfig changes now: `mesh` (start-only fields at their start values),
    and the start-only fields, as users write them, that differ and wait for a restart."""

    mesh: MeshConfig
    waiting: tuple[str, ...]


def live_mesh(start: MeshConfig, new: MeshConfig) -> LiveMesh:
    """`new` as it applies while discovery keeps running with the start MeshConfig `start`."""
    waiting = tuple(
        start_only_alias(name)
        for name in START_ONLY_FIELDS
        if getattr(new, name) != getattr(start, name)
    )
    mesh = new.model_copy(update={name: getattr(start, name) for name in START_ONLY_FIELDS})
    return LiveMesh(mesh, waiting)


class MeshReloader:
    """Hands changed, valid MeshConfigs to a builder; `start` is the one discovery started
    with (the injector and the CA use it until a restart)."""

    def __init__(self, start: MeshConfig, *, logger: logging.Logger = log) -> None:
        self.start = start
        self.log = logger

    def offer(self, mesh: MeshConfig, builder: SnapshotBuilder, *, source: str) -> bool:
        """Apply a valid MeshConfig read from `source`; True when the builder got a new one."""
        live = live_mesh(self.start, mesh)
        if live.waiting:
            self.log.warning("mesh config: %s take effect when discovery restarts",
                             ", ".join(live.waiting))  # fmt: skip
        if live.mesh == builder.mesh:
            return False
        self.log.info("mesh config reloaded from %s: outboundTrafficPolicy %s", source,
                      live.mesh.outbound_traffic_policy.mode)  # fmt: skip
        builder.replace_mesh(live.mesh)
        return True

    def refuse(self, problem: str) -> None:
        """A MeshConfig that cannot be used: said once here, the last good one stays."""
        self.log.error("mesh config not reloaded, the last good one stays: %s", problem)
