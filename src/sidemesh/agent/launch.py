"""From the `sidemesh` command to the long-running agent, without the command's baggage.

Resolving the settings needs the CLI (click), the ProxyConfig model (pydantic) and YAML; the
agent that then runs for the life of the pod needs none of them. So `sidemesh agent proxy`
resolves and validates the settings, hands them over in an anonymous in-memory file (memfd,
pickled: the same program on both sides), and execs `python -m sidemesh.agent`, which
imports only what the sidecar runs. The process id stays the same (the container's main
process), so signals, the kubelet and Envoy's parent-death signal see one process throughout.

The first certificate request (see `issuing`) is started before the settings are resolved and
handed over with them, still running: the agent reads its answer from the inherited pipe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pickle
import subprocess
import sys
from typing import Final, NoReturn

from sidemesh.agent.envoy_binary import EnvoyNotFoundError, find_envoy_binary
from sidemesh.agent.issuing_protocol import CA_TIMEOUT, request_json, start_child
from sidemesh.agent.settings import AgentSettings
from sidemesh.agent.telemetry import certificate_claim

SETTINGS_FD_FLAG: Final = "--settings-fd"


def configure_logging(level: int) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # Envoy's own --log-level already chose what it prints; never filter it a second time.
    logging.getLogger("sidemesh.agent.envoy.output").setLevel(logging.INFO)


@dataclasses.dataclass(frozen=True)
class FirstCertificate:
    """The early child's pid and the read end of its stdout (see `issuing.PendingAnswer`)."""

    pid: int
    stdout_fd: int


@dataclasses.dataclass(frozen=True)
class Handover:
    settings: AgentSettings
    first_certificate: FirstCertificate | None = None


def start_first_request() -> subprocess.Popen[bytes] | None:
    """The first certificate request's child, started early; None if it cannot start."""
    try:
        return start_child()
    except OSError:
        return None


def certificate_request(settings: AgentSettings) -> bytes | None:
    """The request for `settings`' certificate, or None while the mesh root is unreadable
    (the agent then reports that itself, and retries)."""
    try:
        root = settings.paths.root_cert.read_bytes()
    except OSError:
        return None
    if b"-----BEGIN CERTIFICATE-----" not in root:
        return None
    control_plane = settings.control_plane
    return request_json(
        address=control_plane.ca_address,
        server_name=control_plane.server_name(control_plane.ca_address),
        token_path=settings.paths.token,
        cluster_id=settings.cluster_id,
        timeout=CA_TIMEOUT,
        spiffe_id=settings.identity.spiffe_id,
        ttl_seconds=max(1, math.ceil(settings.cert_ttl)),
        root_pem=root,
        workload=certificate_claim(settings),
    )


def _send_request(
    child: subprocess.Popen[bytes], settings: AgentSettings
) -> FirstCertificate | None:
    """Give the early child its request; what the agent needs to read the answer."""
    request = certificate_request(settings)
    assert child.stdin is not None and child.stdout is not None
    try:
        if request is None:
            raise OSError("no request to send")
        child.stdin.write(request)
        child.stdin.close()
    except OSError:
        with contextlib.suppress(OSError):
            child.kill()
            child.wait()
        return None
    fd = child.stdout.fileno()
    os.set_inheritable(fd, True)
    return FirstCertificate(pid=child.pid, stdout_fd=fd)


def abandon(child: subprocess.Popen[bytes] | None) -> None:
    """The early child is not needed (the agent does not start): end it."""
    if child is not None:
        with contextlib.suppress(OSError):
            child.kill()
            child.wait()


def _with_envoy_binary(settings: AgentSettings) -> AgentSettings:
    """`settings` naming the Envoy binary found now (the agent reports a missing one)."""
    try:
        binary = find_envoy_binary(settings.paths.envoy_binary)
    except EnvoyNotFoundError:
        return settings
    return dataclasses.replace(
        settings, paths=dataclasses.replace(settings.paths, envoy_binary=binary)
    )


def exec_agent(settings: AgentSettings, first_request: subprocess.Popen[bytes] | None) -> NoReturn:
    """Replace this process with the lean agent running `settings`."""
    settings = _with_envoy_binary(settings)
    pending = None if first_request is None else _send_request(first_request, settings)
    fd = os.memfd_create("sidemesh-agent-settings", 0)  # no MFD_CLOEXEC: the agent reads it
    handover = Handover(settings=settings, first_certificate=pending)
    os.write(fd, pickle.dumps(handover, protocol=pickle.HIGHEST_PROTOCOL))
    os.lseek(fd, 0, os.SEEK_SET)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "sidemesh.agent", SETTINGS_FD_FLAG, str(fd)]
    os.execv(sys.executable, argv)


def read_handover(argv: list[str]) -> Handover:
    """What `exec_agent` handed over (the fd is closed once read)."""
    if len(argv) != 2 or argv[0] != SETTINGS_FD_FLAG or not argv[1].isdigit():
        raise SystemExit("python -m sidemesh.agent is started by `sidemesh agent proxy sidecar`")
    with os.fdopen(int(argv[1]), "rb") as handed_over:
        handover = pickle.load(handed_over)
    if not isinstance(handover, Handover):
        raise SystemExit("python -m sidemesh.agent: what was handed over is not settings")
    return handover
