"""A registry read from YAML files: the single-host runtime's view of the mesh.

The files hold ordinary Kubernetes/Istio objects, several per file (`---`), in any of:

* `v1/Service` (ports, clusterIP = the VIP, selector),
* `discovery.k8s.io/v1/EndpointSlice` (label `kubernetes.io/service-name`),
* `v1/Pod` (labels, `spec.serviceAccountName`, `status.podIP`; selected directly by a
  Service when it has no EndpointSlice, as the local runtime does),
* `networking.istio.io/v1/WorkloadEntry` (address, labels, serviceAccount, ports),
* `security.istio.io/v1/PeerAuthentication`,
* `security.istio.io/v1` AuthorizationPolicy and RequestAuthentication (v1beta1 too): like the
  traffic kinds below, an invalid one is skipped with the reason logged (`api.security.validate`),
* `networking.istio.io/v1` VirtualService, DestinationRule, ServiceEntry and Sidecar
  (v1beta1, v1alpha3 too): an
  invalid one does not stop the file's other objects; the snapshot builder skips it and logs
  why (`api.networking.validate`, the one validation path),
* `v1/Namespace`, and `v1/List` wrapping any of the above.

Other kinds are ignored. A broken file fails with a message naming the file and document
(`services.yaml#3 (Service demo/web): ...`). Files are re-read when they change (polled; the
directory is small and polling needs no platform support).

So is the MeshConfig file (`mesh_file`, discovery's `--mesh-config`), as istiod re-reads its
mounted `mesh`: a valid change rebuilds every proxy's configuration from it (outbound traffic
policy, access logs, tracing providers, ...); an invalid one is logged and the last good one
kept. Fields read only at start (the injector's `defaultConfig`, the CA's `trustDomain`,
`enablePrometheusMerge`) are logged as waiting for a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from sidemesh.api.config import ConfigError, MeshConfig, load_mesh_config
from sidemesh.xds import convert
from sidemesh.xds.builder import KINDS, SnapshotBuilder, build_snapshot
from sidemesh.xds.mesh_reload import START_ONLY_FIELDS as START_ONLY_FIELDS
from sidemesh.xds.mesh_reload import MeshReloader
from sidemesh.xds.mesh_reload import start_only_alias as start_only_alias
from sidemesh.xds.model import MeshSnapshot

log = logging.getLogger("sidemesh.xds.registry_files")

SUFFIXES = (".yaml", ".yml", ".json")
POLL_SECONDS = 1.0


class RegistryFileError(ValueError):
    """A registry file cannot be used; the message names the file and the document."""


def _files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        else:
            found.append(path)
    return found


def _documents(path: Path) -> Iterator[tuple[str, Mapping[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        documents = list(yaml.load_all(text, Loader=yaml.CSafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise RegistryFileError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    for index, document in enumerate(documents, start=1):
        if document is None:
            continue
        if not isinstance(document, dict):
            raise RegistryFileError(f"{path}#{index}: expected an object, got "
                                    f"{type(document).__name__}")  # fmt: skip
        items = document.get("items") if document.get("kind") == "List" else [document]
        for item in items or []:
            yield f"{path}#{index}", item


def load_objects(paths: Iterable[Path]) -> list[Mapping[str, Any]]:
    """Every usable object in the files, each checked enough to name its problems."""
    objects: list[Mapping[str, Any]] = []
    for path in _files(paths):
        for where, obj in _documents(path):
            if not isinstance(obj, dict) or obj.get("kind") not in KINDS:
                continue
            try:
                kind, namespace, _ = convert.object_key(obj)
                if kind == "Service":
                    convert.service(obj)
                elif kind == "PeerAuthentication":
                    convert.peer_authentication(obj)
            except (convert.ObjectError, ValueError, TypeError) as exc:
                label = obj.get("kind", "object")
                raise RegistryFileError(f"{where} ({label}): {exc}") from exc
            if not (obj.get("metadata") or {}).get("namespace") and kind != "Namespace":
                obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
            objects.append(obj)
    return objects


def load_snapshot(paths: Iterable[Path], *, mesh: MeshConfig | None = None) -> MeshSnapshot:
    objects = {convert.object_key(o): o for o in load_objects(paths)}
    return build_snapshot(objects, mesh=mesh or MeshConfig(), version=1)


class FileRegistry:
    def __init__(
        self,
        paths: Iterable[Path],
        *,
        mesh: MeshConfig | None = None,
        debounce: float = 0.1,
        poll: float = POLL_SECONDS,
        mesh_file: Path | None = None,
    ) -> None:
        self.paths = list(paths)
        self.mesh = mesh or MeshConfig()
        self.debounce = debounce
        self.poll = poll
        self.mesh_file = mesh_file  # `mesh` came from it; re-read when it changes
        self._reloader = MeshReloader(self.mesh, logger=log)

    def _stamp(self) -> tuple[tuple[str, int, int], ...]:
        stamps = []
        for path in _files(self.paths):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    def _mesh_stamp(self) -> tuple[int, int, int] | None:
        if self.mesh_file is None:
            return None
        try:
            stat = self.mesh_file.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino  # ino: replaced by a rename

    def reload_mesh(self, builder: SnapshotBuilder) -> None:
        """Hand a changed, valid MeshConfig file to the builder; keep the last good one
        otherwise (`mesh_reload`, shared with the Kubernetes registry)."""
        if self.mesh_file is None:
            return
        try:
            mesh = load_mesh_config(self.mesh_file)
        except ConfigError as exc:
            self._reloader.refuse(str(exc))
            return
        self._reloader.offer(mesh, builder, source=str(self.mesh_file))

    async def run(self, publish: Callable[[MeshSnapshot], None]) -> None:
        builder = SnapshotBuilder(publish, mesh=self.mesh, debounce=self.debounce)
        builder_task = asyncio.create_task(builder.run())
        seen: tuple[tuple[str, int, int], ...] | None = None
        mesh_seen: tuple[int, int, int] | None = None  # first look: re-read (a no-op if equal)
        try:
            while True:
                mesh_stamp = self._mesh_stamp()
                if mesh_stamp != mesh_seen:
                    mesh_seen = mesh_stamp
                    self.reload_mesh(builder)
                stamp = self._stamp()
                if stamp != seen:
                    seen = stamp
                    try:
                        objects = load_objects(self.paths)
                    except RegistryFileError as exc:
                        log.error("registry files not reloaded: %s", exc)  # keep the last good
                    else:
                        for kind in KINDS:
                            builder.replace_kind(kind, [o for o in objects if o["kind"] == kind])
                await asyncio.sleep(self.poll)
        finally:
            builder_task.cancel()
            await asyncio.gather(builder_task, return_exceptions=True)
