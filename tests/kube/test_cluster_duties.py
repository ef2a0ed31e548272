"""The control plane's cluster duties against the in-memory API: certificates, caBundle,
leader election, API outages. Waits are bounded; nothing asserts on elapsed time."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from cluster_emulator import ApiServer
from duty_testkit import eventually, replica
from lightkube import AsyncClient

from sidemesh.install.overrides import load_install_values
from sidemesh.kube import installer, tags
from sidemesh.kube.webhook_certs import WebhookCertificates

MWC = "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
SECRETS = "v1/secrets"


async def _install(client: AsyncClient, revision: str) -> None:
    values, chosen = load_install_values([], [], revision=revision)
    await installer.install(client, values, chosen, report=lambda _: None)


def _bundles(api: ApiServer, name: str) -> set[str | None]:
    configuration = api.stored(MWC, None, name) or {}
    return {w.get("clientConfig", {}).get("caBundle") for w in configuration.get("webhooks", [])}


def _secret_certs(api: ApiServer, revision: str = "blue") -> WebhookCertificates | None:
    secret = api.stored(SECRETS, "istio-system", f"istiod-{revision}-webhook-tls") or {}
    return WebhookCertificates.from_secret_data(secret.get("data"))


def _mwc_patches_by(api: ApiServer) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in api.writes():
        if (
            request.method == "PATCH"
            and "mutatingwebhookconfigurations" in request.url.path
            and request.headers.get("Content-Type", "").startswith("application/merge-patch")
        ):
            manager = request.params.get("fieldManager", "")
            counts[manager] = counts.get(manager, 0) + 1
    return counts


async def test_certificate_is_created_written_and_bundled(
    api: ApiServer, client: AsyncClient, tmp_path: Path
) -> None:
    await _install(client, "blue")
    await tags.set_tag(client, "prod", "blue")
    await _install(client, "green")
    async with replica(api, tmp_path, "a") as a:
        await eventually(a.ready.is_set)
        certs = _secret_certs(api)
        assert certs is not None
        assert a.settings.cert_file.read_bytes() == certs.cert
        assert a.settings.key_file.read_bytes() == certs.key
        assert a.settings.key_file.stat().st_mode & 0o777 == 0o600
        secret = api.stored(SECRETS, "istio-system", "istiod-blue-webhook-tls") or {}
        assert secret["metadata"]["labels"]["install.sidemesh.io/revision"] == "blue"
        bundle = certs.ca_bundle()
        await eventually(lambda: _bundles(api, "istio-sidecar-injector-blue") == {bundle})
        await eventually(lambda: _bundles(api, "istio-revision-tag-prod") == {bundle})
        # another revision's configuration is not ours to touch
        assert _bundles(api, "istio-sidecar-injector-green") == {None}


async def test_tampered_bundle_is_put_back(
    api: ApiServer, client: AsyncClient, tmp_path: Path
) -> None:
    await _install(client, "blue")
    async with replica(api, tmp_path, "a") as a:
        await eventually(a.elector.leading.is_set)
        certs = _secret_certs(api)
        assert certs is not None
        good = certs.ca_bundle()
        await eventually(lambda: _bundles(api, "istio-sidecar-injector-blue") == {good})
        live = api.stored(MWC, None, "istio-sidecar-injector-blue") or {}
        webhooks: list[dict[str, Any]] = live["webhooks"]
        webhooks[0]["clientConfig"]["caBundle"] = base64.b64encode(b"evil").decode()
        from lightkube.types import PatchType

        from sidemesh.kube.client import resource_type

        await client.patch(
            resource_type("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
            "istio-sidecar-injector-blue", {"webhooks": webhooks}, patch_type=PatchType.MERGE,
        )  # fmt: skip
        await eventually(lambda: _bundles(api, "istio-sidecar-injector-blue") == {good})
        assert a.metrics.total("sidemesh_webhook_ca_bundle_patches_total") >= 2


async def test_only_the_leader_patches_and_a_follower_takes_over(
    api: ApiServer, client: AsyncClient, tmp_path: Path
) -> None:
    await _install(client, "blue")
    async with replica(api, tmp_path, "a") as a, replica(api, tmp_path, "b") as b:
        await eventually(lambda: a.elector.is_leader or b.elector.is_leader)
        leader, follower = (a, b) if a.elector.is_leader else (b, a)
        await eventually(follower.ready.is_set)
        certs = _secret_certs(api)
        assert certs is not None
        good = certs.ca_bundle()
        # both replicas serve the one certificate from the Secret
        await eventually(lambda: follower.settings.cert_file.read_bytes() == certs.cert)
        assert leader.settings.cert_file.read_bytes() == certs.cert
        await eventually(lambda: _bundles(api, "istio-sidecar-injector-blue") == {good})
        assert set(_mwc_patches_by(api)) == {leader.identity}
        assert not follower.elector.is_leader

        await leader.crash()  # no release: the follower must wait for the lease to expire
        await eventually(follower.elector.leading.is_set)
        await tags.set_tag(client, "prod", "blue")  # a new configuration to keep current
        await eventually(lambda: _bundles(api, "istio-revision-tag-prod") == {good})
        lease = api.stored("coordination.k8s.io/v1/leases", "istio-system", "istiod-blue-leader")
        assert lease is not None and lease["spec"]["holderIdentity"] == follower.identity
        assert lease["spec"]["leaseTransitions"] >= 1


async def test_graceful_stop_releases_the_lease(
    api: ApiServer, client: AsyncClient, tmp_path: Path
) -> None:
    await _install(client, "blue")
    async with replica(api, tmp_path, "a") as a:
        await eventually(a.elector.leading.is_set)
    lease = api.stored("coordination.k8s.io/v1/leases", "istio-system", "istiod-blue-leader")
    assert lease is not None and not lease["spec"].get("holderIdentity")


async def test_api_outage_is_survived(api: ApiServer, client: AsyncClient, tmp_path: Path) -> None:
    await _install(client, "blue")
    api.unavailable = True
    async with replica(api, tmp_path, "a") as a:
        await eventually(lambda: a.metrics.total("sidemesh_kube_api_failures_total") >= 3)
        assert not a.task.done() and not a.ready.is_set()
        api.unavailable = False
        await eventually(a.elector.leading.is_set)
        await eventually(a.ready.is_set)
        api.unavailable = True  # the leader cannot renew: it must step down, not exit
        await eventually(lambda: not a.elector.is_leader)
        assert not a.task.done()
        api.unavailable = False
        await eventually(a.elector.leading.is_set)
        certs = _secret_certs(api)
        assert certs is not None
        await eventually(
            lambda: _bundles(api, "istio-sidecar-injector-blue") == {certs.ca_bundle()}
        )
        assert a.metrics.total("sidemesh_kube_api_retries_total") >= 1


async def test_unusable_secret_is_reissued(
    api: ApiServer, client: AsyncClient, tmp_path: Path
) -> None:
    await _install(client, "blue")
    api.store(SECRETS, {"metadata": {"name": "istiod-blue-webhook-tls",
                                     "namespace": "istio-system"},
                        "data": {"tls.crt": "bm9wZQ=="}})  # fmt: skip
    async with replica(api, tmp_path, "a") as a:
        await eventually(a.ready.is_set)
        certs = _secret_certs(api)
        assert certs is not None and a.settings.cert_file.read_bytes() == certs.cert


async def test_due_certificate_is_rotated_by_the_leader_and_reloaded_by_all(
    api: ApiServer, client: AsyncClient, tmp_path: Path
) -> None:
    import datetime

    from sidemesh.kube.webhook_certs import CertPolicy, issue

    await _install(client, "blue")
    old = issue("blue", datetime.datetime.now(tz=datetime.UTC) - datetime.timedelta(days=80),
                CertPolicy())  # fmt: skip
    api.store(SECRETS, {"metadata": {"name": "istiod-blue-webhook-tls",
                                     "namespace": "istio-system"},
                        "data": old.secret_data()})  # fmt: skip
    async with replica(api, tmp_path, "a") as a, replica(api, tmp_path, "b") as b:
        await eventually(lambda: a.elector.is_leader or b.elector.is_leader)
        await eventually(lambda: (_secret_certs(api) or old).cert != old.cert)
        new = _secret_certs(api)
        assert new is not None and new.ca_bundle() == old.ca_bundle()
        for r in (a, b):
            await eventually(lambda r=r: r.settings.cert_file.read_bytes() == new.cert)
        assert _bundles(api, "istio-sidecar-injector-blue") == {old.ca_bundle()}


async def test_start_cluster_duties_thread_for_discovery(
    api: ApiServer, client: AsyncClient, kubeconfig: Path, tmp_path: Path
) -> None:
    """The entry point `sidemesh discovery --kube` uses: returns once the files exist."""
    import asyncio

    from sidemesh.kube.duties import DutySettings, start_cluster_duties

    await _install(client, "blue")
    settings = DutySettings(
        revision="blue", cert_file=tmp_path / "c" / "tls.crt", key_file=tmp_path / "c" / "tls.key",
        identity="thread", kubeconfig=kubeconfig,
    )  # fmt: skip
    duties = await asyncio.wait_for(asyncio.to_thread(start_cluster_duties, settings), 10)
    try:
        certs = _secret_certs(api)
        assert certs is not None and settings.cert_file.read_bytes() == certs.cert
        await eventually(
            lambda: _bundles(api, "istio-sidecar-injector-blue") == {certs.ca_bundle()}
        )
    finally:
        await asyncio.to_thread(duties.stop)
    assert not duties.thread.is_alive()
