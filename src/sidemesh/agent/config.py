"""The agent's settings: the injector's env and flags, resolved once into a frozen value.

Precedence for every setting: command-line flag, then environment variable, then Istio's
default. Every path the agent touches can be moved (flags/env) so that tests and the local
runtime run the agent as an ordinary process in a temporary directory; ports likewise, so tests
do not collide. Defaults stay exactly Istio's.

The control plane is reached over TLS (15012), verified against the mesh root. Plaintext (15010)
is used only when explicitly asked for with `--xds-plaintext` / SIDEMESH_XDS_PLAINTEXT=true.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson
import yaml
from pydantic import ValidationError

from sidemesh import __version__
from sidemesh.agent import parsing
from sidemesh.agent.metrics import MetricsConfigError, parse_prometheus_annotations
from sidemesh.agent.probes import ProbeConfigError, parse_app_probers
from sidemesh.agent.settings import (
    AgentFlags,
    AgentSettings,
    ControlPlane,
    EnvoyOptions,
    Identity,
    Paths,
    Ports,
)
from sidemesh.api import kube_names, names
from sidemesh.api.config import ProxyConfig

__all__ = ["AgentFlags", "AgentSettings", "SettingsError", "load_settings"]

# Environment the injector sets (see data/templates/proxy-container.yaml.j2).
ENV_POD_NAME: Final = "POD_NAME"
ENV_POD_NAMESPACE: Final = "POD_NAMESPACE"
ENV_INSTANCE_IP: Final = "INSTANCE_IP"
ENV_SERVICE_ACCOUNT: Final = "SERVICE_ACCOUNT"
ENV_CA_ADDR: Final = "CA_ADDR"
ENV_PROXY_CONFIG: Final = "PROXY_CONFIG"
ENV_TRUST_DOMAIN: Final = "TRUST_DOMAIN"
ENV_CPU_LIMIT: Final = "ISTIO_CPU_LIMIT"
META_PREFIX: Final = "ISTIO_META_"
# Istio's agent knobs, same names and meaning.
ENV_ISTIOD_SAN: Final = "ISTIOD_SAN"
ENV_SECRET_TTL: Final = "SECRET_TTL"
ENV_OUTPUT_CERTS: Final = "OUTPUT_CERTS"
ENV_DISABLE_ENVOY: Final = "DISABLE_ENVOY"  # proxyless gRPC: no Envoy (`no_envoy`)
ENV_GRPC_XDS_BOOTSTRAP: Final = "GRPC_XDS_BOOTSTRAP"  # where `no_envoy` writes the bootstrap
# sidemesh's own overrides (paths, ports, plaintext), for tests and the local runtime.
ENV_XDS_PLAINTEXT: Final = "SIDEMESH_XDS_PLAINTEXT"
ENV_XDS_DELTA: Final = "SIDEMESH_XDS_DELTA"  # "false": State-of-the-World ADS
ENV_RENEW_FRACTION: Final = "SIDEMESH_CERT_RENEW_FRACTION"

DEFAULT_CONFIG_DIR: Final = Path("/etc/istio/proxy")
BOOTSTRAP_FILE: Final = "envoy-rev.json"
SDS_SOCKET_FILE: Final = "SDS"  # in the writable istio-envoy volume: the root fs is read-only
DEFAULT_TOKEN_PATH: Final = Path("/var/run/secrets/tokens/istio-token")
DEFAULT_ROOT_CERT: Final = Path("/var/run/secrets/istio/root-cert.pem")
DEFAULT_PODINFO_DIR: Final = Path("/etc/istio/pod")
DEFAULT_CERT_TTL: Final = "24h"
DEFAULT_RENEW_FRACTION: Final = 0.5
DEFAULT_CONCURRENCY: Final = 2
_UNIX_PATH_MAX: Final = 107  # sun_path is 108 bytes including the terminating NUL


class SettingsError(ValueError):
    """The agent cannot start with this configuration; the message names the setting."""


def _pick(flag: Any, env: Mapping[str, str], name: str | None, default: Any) -> Any:
    if flag is not None:
        return flag
    if name is not None and env.get(name, "") != "":
        return env[name]
    return default


def _required(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} is not set: the agent needs {what} (the injector sets it)")
    return value


def _port(value: Any, setting: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{setting}: {value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise SettingsError(f"{setting}: {port} is outside 1-65535")
    return port


def _bool(value: Any, setting: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{setting}: {value!r} is not true or false")


def _duration(value: str, setting: str) -> float:
    try:
        return parsing.parse_duration(value)
    except ValueError as exc:
        raise SettingsError(f"{setting}: {exc}") from None


def parse_proxy_config(encoded: str) -> ProxyConfig:
    """PROXY_CONFIG: the non-default ProxyConfig fields, JSON (or YAML) in Istio's spelling."""
    if not encoded.strip():
        return ProxyConfig()
    try:
        data = orjson.loads(encoded)
    except orjson.JSONDecodeError:
        try:
            data = yaml.load(encoded, Loader=yaml.CSafeLoader)
        except yaml.YAMLError as exc:
            raise SettingsError(f"{ENV_PROXY_CONFIG} is neither JSON nor YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{ENV_PROXY_CONFIG} must be an object")
    try:
        return ProxyConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"{ENV_PROXY_CONFIG}: {problems}") from None


def _concurrency(proxy_config: ProxyConfig, env: Mapping[str, str]) -> int | None:
    """ProxyConfig.concurrency, else the container's CPU limit, else 2; 0 means all cores."""
    chosen = proxy_config.concurrency
    if chosen is None:
        try:
            chosen = max(1, math.ceil(float(env.get(ENV_CPU_LIMIT, ""))))
        except ValueError:
            chosen = DEFAULT_CONCURRENCY
    return chosen or None


def _read_podinfo(path: Path) -> dict[str, str]:
    try:
        return parsing.parse_downward_api_file(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _identity(env: Mapping[str, str], flags: AgentFlags) -> Identity:
    namespace = _required(env, ENV_POD_NAMESPACE, "its pod's namespace")
    domain = flags.domain or f"{namespace}.svc.cluster.local"
    return Identity(
        pod_name=_required(env, ENV_POD_NAME, "its pod's name"),
        namespace=namespace,
        service_account=_required(env, ENV_SERVICE_ACCOUNT, "its pod's service account"),
        instance_ip=env.get(ENV_INSTANCE_IP) or "127.0.0.1",
        trust_domain=env.get(ENV_TRUST_DOMAIN) or names.TRUST_DOMAIN,
        # kubelet expands $(POD_NAMESPACE) in args; a plain process launcher may not.
        domain=domain.replace("$(POD_NAMESPACE)", namespace),
    )


def revision_address(revision: str) -> str:
    """The control plane address the injector writes for a revision (CA_ADDR)."""
    service = f"{names.service_name(revision)}.{names.CONTROL_PLANE_NAMESPACE}.svc"
    return f"{service}:{names.PORT_XDS_TLS}"


def follow_revision(address: str, revision: str) -> str:
    """`address` moved to `revision`'s control plane when it is some revision's default
    address; an address the user chose is kept. An in-place sidecar upgrade changes only the
    pod's annotations and the proxy image, so the restarted agent learns its revision from
    the `istio.io/rev` annotation (downward API), not from its env."""
    if not revision or kube_names.dns1123_label(revision):
        return address
    suffix = f".{names.CONTROL_PLANE_NAMESPACE}.svc:{names.PORT_XDS_TLS}"
    service = address.removesuffix(suffix)
    base = names.service_name("")
    if service != address and (service == base or service.startswith(f"{base}-")):
        return revision_address(revision)
    return address


def _control_plane(
    env: Mapping[str, str], flags: AgentFlags, proxy_config: ProxyConfig, revision: str = ""
) -> ControlPlane:
    ca_address = follow_revision(env.get(ENV_CA_ADDR) or revision_address(""), revision)
    discovery_address = follow_revision(proxy_config.discovery_address or ca_address, revision)
    for setting, address in ((ENV_CA_ADDR, ca_address), ("discoveryAddress", discovery_address)):
        try:
            parsing.split_host_port(address)
        except ValueError as exc:
            raise SettingsError(f"{setting}: {exc}") from None
    plaintext = _pick(flags.xds_plaintext, env, ENV_XDS_PLAINTEXT, False)
    return ControlPlane(
        discovery_address=discovery_address,
        ca_address=ca_address,
        plaintext=_bool(plaintext, ENV_XDS_PLAINTEXT),
        san_override=env.get(ENV_ISTIOD_SAN) or None,
        delta=_bool(_pick(None, env, ENV_XDS_DELTA, True), ENV_XDS_DELTA),
    )


def _ports(flags: AgentFlags, proxy_config: ProxyConfig) -> Ports:
    # statusPort 0 only removes the kubelet's probes of the proxy (injector side); Envoy's
    # 15021 still asks the agent, so the status server keeps its default port.
    status = flags.status_port or proxy_config.status_port or names.PORT_AGENT_STATUS
    ports = Ports(
        status=_port(status, "--status-port"),
        admin=_port(flags.admin_port or names.PORT_ENVOY_ADMIN, "--admin-port"),
        health=_port(flags.health_port or names.PORT_HEALTH, "--health-port"),
        prometheus=_port(flags.prometheus_port or names.PORT_PROMETHEUS, "--prometheus-port"),
    )
    if len({ports.status, ports.admin, ports.health, ports.prometheus}) != 4:
        raise SettingsError(f"status, admin, health and prometheus ports must differ: {ports}")
    return ports


def _paths(env: Mapping[str, str], flags: AgentFlags) -> Paths:
    def path(flag: Path | None, name: str, default: Path) -> Path:
        return Path(_pick(flag, env, name, default))

    def optional(flag: Path | None, name: str) -> Path | None:
        value = _pick(flag, env, name, None)
        return Path(value) if value else None

    config_dir = path(flags.config_dir, "SIDEMESH_CONFIG_DIR", DEFAULT_CONFIG_DIR)
    paths = Paths(
        bootstrap=path(
            flags.bootstrap_path, "SIDEMESH_BOOTSTRAP_PATH", config_dir / BOOTSTRAP_FILE
        ),
        sds_socket=path(flags.sds_socket, "SIDEMESH_SDS_SOCKET", config_dir / SDS_SOCKET_FILE),
        token=path(flags.token_path, "SIDEMESH_TOKEN_PATH", DEFAULT_TOKEN_PATH),
        root_cert=path(flags.root_cert, "SIDEMESH_ROOT_CERT", DEFAULT_ROOT_CERT),
        podinfo_dir=path(flags.podinfo_dir, "SIDEMESH_PODINFO_DIR", DEFAULT_PODINFO_DIR),
        output_certs=optional(flags.output_certs, ENV_OUTPUT_CERTS),
        envoy_binary=optional(flags.envoy_binary, "SIDEMESH_ENVOY_BINARY"),
        grpc_bootstrap=optional(None, ENV_GRPC_XDS_BOOTSTRAP),
    )
    if len(str(paths.sds_socket).encode()) > _UNIX_PATH_MAX:
        raise SettingsError(
            f"SDS socket path {paths.sds_socket} is longer than {_UNIX_PATH_MAX} bytes, the limit "
            "of a Unix socket address; choose a shorter --sds-socket"
        )
    return paths


def _envoy_options(
    env: Mapping[str, str], flags: AgentFlags, proxy_config: ProxyConfig
) -> EnvoyOptions:
    try:
        level, component_level = parsing.split_envoy_log_level(
            flags.proxy_log_level or "warning", flags.proxy_component_log_level or "misc:error"
        )
    except ValueError as exc:
        raise SettingsError(f"--proxyLogLevel/--proxyComponentLogLevel: {exc}") from None
    return EnvoyOptions(
        log_level=level,
        component_log_level=component_level,
        concurrency=_concurrency(proxy_config, env),
        drain_duration=_duration(proxy_config.drain_duration, "drainDuration"),
        termination_drain_duration=_duration(
            proxy_config.termination_drain_duration, "terminationDrainDuration"
        ),
    )


def _certificate_timing(env: Mapping[str, str], flags: AgentFlags) -> tuple[float, float]:
    ttl = _duration(str(_pick(flags.cert_ttl, env, ENV_SECRET_TTL, DEFAULT_CERT_TTL)), "--cert-ttl")
    if ttl < 1:
        raise SettingsError("--cert-ttl: a certificate lifetime under 1s cannot be renewed")
    fraction_text = _pick(flags.renew_fraction, env, ENV_RENEW_FRACTION, DEFAULT_RENEW_FRACTION)
    try:
        fraction = float(fraction_text)
    except ValueError:
        raise SettingsError(f"--renew-fraction: {fraction_text!r} is not a number") from None
    if not 0 < fraction < 1:
        raise SettingsError(f"--renew-fraction: {fraction} is not between 0 and 1 (exclusive)")
    return ttl, fraction


def load_settings(
    env: Mapping[str, str] | None = None, flags: AgentFlags | None = None
) -> AgentSettings:
    """Resolve flags and env into settings, or raise SettingsError naming what is wrong."""
    env = dict(os.environ) if env is None else env
    flags = flags or AgentFlags()
    identity = _identity(env, flags)
    proxy_config = parse_proxy_config(env.get(ENV_PROXY_CONFIG, ""))
    ports = _ports(flags, proxy_config)
    paths = _paths(env, flags)
    try:
        agent_log_level = parsing.parse_agent_log_level(flags.agent_log_level or "default:info")
    except ValueError as exc:
        raise SettingsError(f"--log_output_level: {exc}") from None
    cert_ttl, renew_fraction = _certificate_timing(env, flags)
    try:
        app_probers = parse_app_probers(env.get(names.ENV_KUBE_APP_PROBERS, ""))
        app_metrics = parse_prometheus_annotations(
            env.get(names.ENV_PROMETHEUS_ANNOTATIONS, ""), status_port=ports.status
        )
    except (ProbeConfigError, MetricsConfigError) as exc:
        raise SettingsError(str(exc)) from None
    metadata = {
        key.removeprefix(META_PREFIX): value
        for key, value in env.items()
        if key.startswith(META_PREFIX) and len(key) > len(META_PREFIX)
    }
    annotations = _read_podinfo(paths.podinfo_dir / "annotations")
    return AgentSettings(
        identity=identity,
        control_plane=_control_plane(
            env, flags, proxy_config, annotations.get(names.LABEL_REVISION, "")
        ),
        ports=ports,
        paths=paths,
        envoy=_envoy_options(env, flags, proxy_config),
        agent_log_level=agent_log_level,
        cert_ttl=cert_ttl,
        renew_fraction=renew_fraction,
        cluster_id=metadata.get("CLUSTER_ID") or names.DEFAULT_CLUSTER_ID,
        mesh_id=metadata.get("MESH_ID") or identity.trust_domain,
        revision=annotations.get(names.LABEL_REVISION) or metadata.get("ISTIO_REVISION") or "",
        version=__version__,
        interception_mode=metadata.get("INTERCEPTION_MODE") or proxy_config.interception_mode,
        probe_host=str(_pick(flags.probe_host, env, "SIDEMESH_PROBE_HOST", identity.instance_ip)),
        status_host=str(_pick(flags.status_host, env, "SIDEMESH_STATUS_HOST", "0.0.0.0")),
        app_metrics=app_metrics,
        labels=_read_podinfo(paths.podinfo_dir / "labels"),
        metadata=metadata,
        app_probers=app_probers,
        proxy_type=flags.proxy_type or "sidecar",
        disable_envoy=_bool(env.get(ENV_DISABLE_ENVOY, ""), ENV_DISABLE_ENVOY),
    )
