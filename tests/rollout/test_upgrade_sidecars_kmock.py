"""upgrade-sidecars against the in-memory API server: plan, patch in place, leave the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner
from rollout_kit import (
    add_namespace,
    add_pod,
    api_server,
    app_pod,
    client_for,
    install_revision,
    write_kubeconfig,
)

from sidemesh.cli.main import cli
from sidemesh.rollout.plan import sidecar_revision
from sidemesh.rollout.upgrade import apply_in_place, upgrade_sidecars


def _image(pod: dict[str, Any], container: str) -> str:
    spec = pod["spec"]
    for item in [*spec.get("initContainers", []), *spec["containers"]]:
        if item["name"] == container:
            return str(item["image"])
    raise AssertionError(container)


async def test_upgrade_patches_in_place_and_lists_the_rest() -> None:
    async with api_server() as api, client_for(api) as client:
        old = install_revision(api, "1-0", "1.0")
        install_revision(api, "1-1", "1.1")
        add_namespace(api, "shop", {"istio.io/rev": "1-1"})  # relabelled to the new revision
        add_namespace(api, "plain", {})
        web = add_pod(api, app_pod("web-5c8d-a", "shop"), old)
        add_pod(api, app_pod("bare-5c8d-b", "shop", deployment="bare"), None)  # no sidecar yet
        add_pod(api, app_pod("other-5c8d-c", "plain", deployment="other"), old)

        planned = await upgrade_sidecars(client, "shop", dry_run=True)
        assert [(r.plan.name, r.plan.action, r.outcome) for r in planned] == [
            ("bare-5c8d-b", "restart", "unchanged"),
            ("web-5c8d-a", "in-place", "would patch"),
        ]
        assert sidecar_revision(api.stored("v1/pods", "shop", "web-5c8d-a")) == "1-0"  # dry run

        done = await upgrade_sidecars(client, "shop")
        assert [r.outcome for r in done] == ["unchanged", "patched"]
        live = api.stored("v1/pods", "shop", "web-5c8d-a")
        assert sidecar_revision(live) == "1-1"
        assert live["metadata"]["annotations"]["istio.io/rev"] == "1-1"
        assert _image(live, "istio-proxy").endswith(":1.1")
        assert _image(live, "app") == _image(web, "app")
        assert live["metadata"]["uid"] == web["metadata"]["uid"]  # the same pod, patched

        again = await upgrade_sidecars(client, "shop")
        assert [r.plan.action for r in again] == ["restart", "current"]
        # a namespace without injection is never touched
        plain = await upgrade_sidecars(client, "plain")
        assert [r.plan.action for r in plain] == ["skip"]


async def test_revision_filter_and_stale_read_conflict() -> None:
    async with api_server() as api, client_for(api) as client:
        old = install_revision(api, "1-0", "1.0")
        install_revision(api, "1-1", "1.1")
        add_namespace(api, "shop", {"istio.io/rev": "1-1"})
        add_pod(api, app_pod("web-5c8d-a", "shop"), old)
        skipped = await upgrade_sidecars(client, "shop", revision="1-0")
        assert skipped[0].plan.action == "skip"
        assert "not revision 1-0" in skipped[0].plan.reasons[0]

        planned = await upgrade_sidecars(client, "shop", revision="1-1", dry_run=True)
        changed = api.stored("v1/pods", "shop", "web-5c8d-a")
        changed["metadata"]["labels"]["touched"] = "yes"
        api.store("v1/pods", changed)  # someone else wrote the pod after it was read
        result = await apply_in_place(client, planned[0].plan)
        assert (result.outcome, result.detail) == (
            "failed",
            "the pod changed since it was read; run the command again",
        )
        assert sidecar_revision(api.stored("v1/pods", "shop", "web-5c8d-a")) == "1-0"


def test_cli_dry_run_prints_the_plan(tmp_path: Path) -> None:
    import asyncio

    async def scenario() -> None:
        async with api_server() as api:
            old = install_revision(api, "1-0", "1.0")
            install_revision(api, "1-1", "1.1")
            add_namespace(api, "shop", {"istio.io/rev": "1-1"})
            add_pod(api, app_pod("web-5c8d-a", "shop"), old)
            kubeconfig = write_kubeconfig(api, tmp_path / "kubeconfig")
            result = await asyncio.to_thread(
                CliRunner().invoke, cli,
                ["upgrade-sidecars", "-n", "shop", "--dry-run", "--kubeconfig", str(kubeconfig)],
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            assert "web-5c8d-a" in result.output and "would patch" in result.output
            assert "restarts istio-proxy only" in result.output
            assert sidecar_revision(api.stored("v1/pods", "shop", "web-5c8d-a")) == "1-0"

    asyncio.run(scenario())


def test_cli_hands_the_rest_to_the_restarter(tmp_path: Path) -> None:
    import asyncio

    async def scenario() -> None:
        async with api_server() as api:
            old = install_revision(api, "1-0", "1.0")
            install_revision(api, "1-1", "1.1")
            add_namespace(api, "shop", {"istio.io/rev": "1-1"})
            add_pod(api, app_pod("web-5c8d-a", "shop"), old)
            add_pod(api, app_pod("bare-5c8d-b", "shop", deployment="bare"), None)
            kubeconfig = write_kubeconfig(api, tmp_path / "kubeconfig")
            argv = ["upgrade-sidecars", "-n", "shop", "--dry-run", "--restart-stale",
                    "--kubeconfig", str(kubeconfig)]  # fmt: skip
            result = await asyncio.to_thread(CliRunner().invoke, cli, argv)
            assert result.exit_code == 0, result.output
            assert "restart-stale: Deployment/bare: would restart" in result.output
            assert "restart-stale: Deployment/web" in result.output  # in place, also stale

    asyncio.run(scenario())
