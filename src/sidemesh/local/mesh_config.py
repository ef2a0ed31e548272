"""MeshConfig in the local runtime, set the way an Istio user sets it: the ConfigMap `istio`
(`istio-REV` for a revision) in `istio-system`, key `mesh` — what `sidemesh install` emits and
what istiod reads.

* At apply, such a ConfigMap's `mesh` is checked with the model `sidemesh discovery
  --mesh-config` takes (`api.config.MeshConfig`, unknown fields refused), so an invalid one is
  refused with the field named and never reaches a control plane.
* The daemon writes each revision's `mesh` to `<state>/mesh/<REV>/mesh` (no ConfigMap: an empty
  file, Istio's defaults). The control-plane pod mounts that directory at `/etc/istio/config`
  and runs discovery with `--mesh-config /etc/istio/config/mesh`: the runtime plays the kubelet
  refreshing a configMap volume.
* Discovery re-reads the file when it changes and rebuilds every proxy's configuration from it
  (`xds.registry_files`), without a restart. What discovery reads only once at start — the
  injector's `defaultConfig` and `enablePrometheusMerge`, the CA's `trustDomain` — is hashed into
  an annotation of the control plane's pod template (`restart_digest`), so a change there rolls
  the control plane's Deployment, as a checksum annotation does in a Helm chart.

Pure: the daemon and the API server call it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from sidemesh.api import names
from sidemesh.api.config import ConfigError, parse_mesh_config
from sidemesh.install.naming import mesh_configmap_name
from sidemesh.xds.registry_files import START_ONLY_FIELDS, start_only_alias

MESH_KEY: Final = "mesh"
MOUNT_DIR: Final = "/etc/istio/config"  # where `sidemesh install` mounts it too
MOUNTED_FILE: Final = f"{MOUNT_DIR}/{MESH_KEY}"
DIGEST_ANNOTATION: Final = "sidemesh.io/mesh-config-restart-digest"
# Read once when discovery starts (the injector, the CA): a change needs a restart.
RESTART_FIELDS: Final = START_ONLY_FIELDS
RESTART_ALIASES: Final = tuple(start_only_alias(name) for name in START_ONLY_FIELDS)


def mesh_dir(state_dir: Path, revision: str) -> Path:
    """The host directory holding a revision's `mesh` file (revisions are label values: no
    `/`, never `..`)."""
    return state_dir / "mesh" / (revision or "default")


def is_mesh_configmap(manifest: Mapping[str, Any]) -> bool:
    """Whether a ConfigMap is some revision's mesh configuration: `istio` or `istio-*` in
    `istio-system` with a `mesh` key (so `istio-sidecar-injector`, `istio-ca-root-cert` are
    not)."""
    metadata = manifest.get("metadata") or {}
    name = str(metadata.get("name") or "")
    return (
        metadata.get("namespace") == names.CONTROL_PLANE_NAMESPACE
        and (name == "istio" or name.startswith("istio-"))
        and MESH_KEY in (manifest.get("data") or {})
    )


def mesh_problem(manifest: Mapping[str, Any]) -> str | None:
    """Why a mesh ConfigMap cannot be used, in words naming the key and field; None: valid."""
    metadata = manifest.get("metadata") or {}
    text = (manifest.get("data") or {}).get(MESH_KEY)
    if not isinstance(text, str):
        return f"data.{MESH_KEY}: must be a string holding MeshConfig YAML"
    try:
        parse_mesh_config(text, f"ConfigMap {metadata.get('name')} data.{MESH_KEY}")
    except ConfigError as exc:
        return str(exc)
    return None


def mesh_text(configmaps: Mapping[str, Any], revision: str) -> str:
    """A revision's `mesh` as stored (records keyed `namespace/name`, each with a `manifest`);
    empty when there is no such ConfigMap."""
    record = configmaps.get(f"{names.CONTROL_PLANE_NAMESPACE}/{mesh_configmap_name(revision)}")
    if record is None:
        return ""
    text = (record.manifest.get("data") or {}).get(MESH_KEY)
    return text if isinstance(text, str) else ""


def restart_digest(text: str) -> str:
    """A digest of what discovery reads only at start (`RESTART_FIELDS`): equal digests, no
    restart needed."""
    try:
        mesh = parse_mesh_config(text, MESH_KEY)
    except ConfigError:  # refused at apply; hash the text so a fix still rolls the pods
        payload = text.encode()
    else:
        dumped = mesh.model_dump(mode="json", include=set(RESTART_FIELDS))
        payload = orjson.dumps(dumped, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()[:16]
