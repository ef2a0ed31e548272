"""Issue #14: a pod attacks the local runtime from inside, and every attempt fails.

The attacker runs in a real runtime, through the command line, as a user's pod would: as root
with no securityContext (`loader`), and as uid 1337 like every sidecar (`mimic`). It tries to
read the mesh CA's key and the identity tokens under the runtime's state directory, another
pod's volumes (there, and through `/proc/PID/root` of that pod's processes, `/proc/1/root`
included), the host's disk, and to flush its pod's iptables. With what it could read it could
have asked the CA for any identity; it can read none of it. `istio-init` (NET_ADMIN + NET_RAW,
as injected) still writes its rules, and `privileged: true` keeps everything.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_kit import PYTHON, Local, needs_root

from sidemesh.local.daemon import exposed_paths
from sidemesh.local.privileges import CAPABILITIES, DEFAULT_CAPABILITIES

pytestmark = needs_root

NAMESPACE = "iso"
VICTIM_TOKEN_DIR = "/var/run/secrets/victim"

# Prints one JSON line: what it could read, whether it could flush iptables, its privileges.
ATTACK = r"""
import glob, json, os, stat, subprocess, sys
state = sys.argv[1]
stolen = []
def attempt(path):
    try:
        with open(path, "rb") as file:
            file.read(1)
        stolen.append(path)
    except OSError:
        pass
attempt(f"{state}/pki/ca-key.pem")
for path in glob.glob(f"{state}/identity/*/*") + glob.glob(f"{state}/pods/*/volumes/*/*"):
    attempt(path)
victim_files = ["/var/run/secrets/victim/token", "/var/run/secrets/victim-secret/key.pem"]
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    attempt(f"/proc/{pid}/root{state}/pki/ca-key.pem")
    for path in victim_files:  # an absolute symlink (/var/run) would resolve in our own root
        attempt(f"/proc/{pid}/root{os.path.realpath(path)}")
for name in os.listdir("/dev"):
    try:
        if stat.S_ISBLK(os.stat(f"/dev/{name}").st_mode):
            attempt(f"/dev/{name}")
    except OSError:
        pass
home = sorted(os.listdir("/root")) if os.path.isdir("/root") else []
try:  # opened, never written: a host-wide knob (a core_pattern pipe runs as the host's root)
    os.close(os.open("/proc/sys/kernel/core_pattern", os.O_WRONLY))
    host_sysctl_writable = True
except OSError:
    host_sysctl_writable = False
flush = subprocess.run(["iptables", "-w", "-t", "nat", "-F"], capture_output=True)
status = {}
for line in open("/proc/self/status").read().splitlines():
    name, _, value = line.partition(":")
    status[name] = value.strip()
print(json.dumps({
    "stolen": sorted(set(stolen)),
    "iptables_flushed": flush.returncode == 0,
    "uid": os.getuid(),
    "root_home": home,
    "host_sysctl_writable": host_sysctl_writable,
    "CapEff": int(status["CapEff"], 16),
    "CapBnd": int(status["CapBnd"], 16),
    "NoNewPrivs": int(status["NoNewPrivs"]),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
}), flush=True)
"""

VICTIM = (
    "import sys, time\n"
    f"open('{VICTIM_TOKEN_DIR}/token').read()\n"
    "open('/var/run/secrets/victim-secret/key.pem').read()\n"
    "print('victim reads its own token and key', flush=True)\n"
    "time.sleep(3600)\n"
)


def bits(names: frozenset[str] | set[str]) -> int:
    return sum(1 << CAPABILITIES[name] for name in names)


def attacker(name: str, state: Path, security: dict[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "attack",
        "image": "busybox",
        "command": [PYTHON, "-c", ATTACK, str(state)],
    }
    if security is not None:
        container["securityContext"] = security
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    }


def manifest(state: Path) -> list[dict[str, Any]]:
    key = base64.b64encode(b"-----BEGIN PRIVATE KEY-----\nvictim\n").decode()
    istio_init = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        "privileged": False,
        "runAsGroup": 0,
        "runAsNonRoot": False,
        "runAsUser": 0,
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "victim-secret", "namespace": NAMESPACE},
            "data": {"key.pem": key},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "victim", "namespace": NAMESPACE},
            "spec": {
                "serviceAccountName": "payments",
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "victim",
                        "image": "busybox",
                        "command": [PYTHON, "-c", VICTIM],
                        "securityContext": {"runAsUser": 1337, "runAsGroup": 1337},
                        "volumeMounts": [
                            {"name": "token", "mountPath": VICTIM_TOKEN_DIR},
                            {"name": "secret", "mountPath": "/var/run/secrets/victim-secret"},
                        ],
                    }
                ],
                "volumes": [
                    {
                        "name": "token",
                        "projected": {
                            "defaultMode": 0o644,
                            "sources": [{"serviceAccountToken": {"path": "token"}}],
                        },
                    },
                    {
                        "name": "secret",
                        "secret": {"secretName": "victim-secret", "defaultMode": 0o644},
                    },
                ],
            },
        },
        attacker("loader", state),
        attacker("mimic", state, {"runAsUser": 1337, "runAsGroup": 1337}),
        attacker("istio-init", state, istio_init),
        attacker("debug", state, {"privileged": True}),
    ]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """Each attacker's report, taken once the victim runs (its token and key exist)."""
    local = Local(tmp_path_factory.mktemp("sm-iso") / "state")
    path = tmp_path_factory.mktemp("manifests") / "attack.yaml"
    path.write_text("\n---\n".join(json.dumps(d) for d in manifest(local.state_dir)))
    attackers = ("loader", "mimic", "istio-init", "debug")
    try:
        victim_path = path.with_name("victim.yaml")
        victim_path.write_text("\n---\n".join(json.dumps(d) for d in manifest(local.state_dir)[:3]))
        local.run("apply", "-f", str(victim_path))
        local.wait(
            "the victim reading its own token",
            lambda: "reads its own token" in local.run("logs", "victim", "-n", NAMESPACE).stdout,
        )
        local.run("apply", "-f", str(path))

        def finished() -> bool:
            phases = {
                p["metadata"]["name"]: p["status"].get("phase") for p in local.pods(NAMESPACE)
            }
            return all(phases.get(name) in ("Succeeded", "Failed") for name in attackers)

        local.wait("the attackers to finish", finished)
        found = {}
        for name in attackers:
            logs = local.run("logs", name, "-n", NAMESPACE).stdout
            lines = [line for line in logs.splitlines() if line.startswith("{")]
            assert lines, f"{name} printed no report:\n{logs}"
            found[name] = json.loads(lines[-1])
        yield found
    finally:
        local.run("down", check=False)


def test_a_root_pod_reads_no_key_no_token_no_other_pods_files(
    reports: dict[str, dict[str, Any]],
) -> None:
    assert reports["loader"]["stolen"] == []


def test_a_pod_running_as_the_proxy_uid_cannot_reach_a_sidecars_token(
    reports: dict[str, dict[str, Any]],
) -> None:
    assert reports["mimic"]["uid"] == 1337
    assert reports["mimic"]["stolen"] == []


def test_the_hosts_root_home_shows_only_the_python_installation(
    reports: dict[str, dict[str, Any]],
) -> None:
    """/root (kubeconfigs, SSH keys) is covered; a Python under it stays (as in CI's pyenv)."""
    exposed = exposed_paths()
    for name in ("loader", "mimic"):
        seen = reports[name]["root_home"]
        assert all(any(p.startswith(f"/root/{entry}/") for p in exposed) for entry in seen), seen


def test_a_pod_sees_only_its_own_processes(reports: dict[str, dict[str, Any]]) -> None:
    """Its own PID namespace: the container's init (1) and the command (2), nothing else."""
    for name in ("loader", "mimic", "istio-init"):
        assert reports[name]["pids"][:2] == [1, 2], name
        assert len(reports[name]["pids"]) <= 4, reports[name]["pids"]  # + iptables, reaped


def test_a_root_pod_cannot_write_the_hosts_kernel_settings(
    reports: dict[str, dict[str, Any]],
) -> None:
    assert reports["loader"]["host_sysctl_writable"] is False
    assert reports["debug"]["host_sysctl_writable"] is True  # privileged: as on Kubernetes


def test_an_app_cannot_flush_its_pods_iptables(reports: dict[str, dict[str, Any]]) -> None:
    assert reports["loader"]["iptables_flushed"] is False
    assert reports["mimic"]["iptables_flushed"] is False


def test_capabilities_are_what_the_security_context_asks(
    reports: dict[str, dict[str, Any]],
) -> None:
    network = bits({"NET_ADMIN", "NET_RAW"})
    status = Path("/proc/self/status").read_text()
    ours = int(status.split("CapBnd:")[1].split()[0], 16)
    assert [(r["CapEff"], r["CapBnd"], r["NoNewPrivs"]) for r in reports.values()] == [
        (bits(DEFAULT_CAPABILITIES), bits(DEFAULT_CAPABILITIES), 1),  # loader: root, defaults
        (0, bits(DEFAULT_CAPABILITIES), 1),  # mimic: uid 1337, nothing effective
        (network, network, 1),  # istio-init, as injected
        (ours, ours, 0),  # privileged: all the runtime has
    ]


def test_istio_init_still_writes_its_rules(reports: dict[str, dict[str, Any]]) -> None:
    assert reports["istio-init"]["iptables_flushed"] is True
    assert reports["istio-init"]["stolen"] == []
