"""`sidemesh install/uninstall/tag` as a user runs them, against the in-memory API.

The CLI runs its own event loop, so it is invoked in a worker thread while the in-memory API
keeps serving on the test's loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from cluster_emulator import ApiServer

from sidemesh.cli.main import cli

MWC = "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


async def _run(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        (["pilot.replicas=3"], "'pilot.replicas'"),
        (["pilot.replicaCount=3", "global.hubb=x"], "'global.hubb'"),
        (["pilot.replicaCount=lots"], "--set pilot.replicaCount=lots"),
    ],
)
async def test_bad_set_is_rejected_before_any_request(
    api: ApiServer, kubeconfig: Path, sets: list[str], named: str
) -> None:
    args = ["install", "--revision", "blue", "--kubeconfig", str(kubeconfig)]
    for item in sets:
        args += ["--set", item]
    result = await _run(*args)
    assert result.exit_code != 0
    assert named in result.output
    assert list(api) == []  # not even a read: nothing was applied


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("pilot: [unclosed\n", "not valid YAML"),
        ("pilot:\n  replicas: 2\n", "pilot.replicas"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
async def test_bad_values_file_is_rejected_before_any_request(
    api: ApiServer, kubeconfig: Path, tmp_path: Path, content: str, problem: str
) -> None:
    values = tmp_path / "my-values.yaml"
    values.write_text(content)
    result = await _run(
        "install", "--revision", "blue", "-f", str(values), "--kubeconfig", str(kubeconfig)
    )
    assert result.exit_code != 0
    assert str(values) in result.output and problem in result.output
    assert list(api) == []


async def test_dry_run_prints_and_touches_nothing(api: ApiServer, kubeconfig: Path) -> None:
    result = await _run("install", "--revision", "blue", "--dry-run", "--kubeconfig",
                        str(kubeconfig))  # fmt: skip
    assert result.exit_code == 0, result.output
    kinds = [d["kind"] for d in yaml.safe_load_all(result.output)]
    assert kinds[0] == "Namespace"
    assert kinds[-2:] == ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
    assert list(api) == []


async def test_install_tag_list_and_uninstall(api: ApiServer, kubeconfig: Path) -> None:
    k = ["--kubeconfig", str(kubeconfig)]
    result = await _run("install", "--revision", "blue", *k)
    assert result.exit_code == 0, result.output
    assert "applied MutatingWebhookConfiguration/istio-sidecar-injector-blue" in result.output
    api.store("v1/namespaces", {"metadata": {"name": "shop", "labels": {"istio.io/rev": "prod"}}})
    result = await _run("tag", "set", "prod", "--revision", "blue", *k)
    assert result.exit_code == 0, result.output
    result = await _run("tag", "list", *k)
    assert result.exit_code == 0, result.output
    assert result.output.split("\n")[0].split() == ["TAG", "REVISION", "NAMESPACES"]
    assert result.output.split("\n")[1].split() == ["prod", "blue", "shop"]
    result = await _run("tag", "list", "-o", "json", *k)
    assert '"namespaces": [\n      "shop"' in result.output
    result = await _run("uninstall", "--revision", "blue", *k)
    assert result.exit_code != 0 and "prod" in result.output
    result = await _run("tag", "remove", "prod", *k)
    assert result.exit_code == 0 and "shop" in result.output  # warned: still selects it
    result = await _run("uninstall", "--revision", "blue", *k)
    assert result.exit_code == 0, result.output
    assert api.stored_names(MWC) == set()


async def test_unreachable_cluster_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "x", "user": {}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
    }))  # fmt: skip
    result = await _run("tag", "list", "--kubeconfig", str(config))
    assert result.exit_code == 1
    assert "cannot reach the Kubernetes API server" in result.output


async def test_unknown_context_is_named(kubeconfig: Path) -> None:
    result = await _run("tag", "list", "--kubeconfig", str(kubeconfig), "--context", "nope")
    assert result.exit_code == 1 and "nope" in result.output
