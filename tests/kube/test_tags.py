"""Revision tags against the in-memory API: create, move, default, remove."""

from __future__ import annotations

from typing import Any

import pytest
from cluster_emulator import ApiServer
from lightkube import AsyncClient

from sidemesh.inject.webhooks import match_webhooks
from sidemesh.install.overrides import load_install_values
from sidemesh.install.tags import TagError
from sidemesh.install.webhooks import read_live_webhooks
from sidemesh.kube import installer, tags

MWC = "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


async def _install(client: AsyncClient, revision: str) -> None:
    values, chosen = load_install_values([], [], revision=revision)
    await installer.install(client, values, chosen, report=lambda _: None)


def _live(api: ApiServer) -> list[dict[str, Any]]:
    return [api.stored(MWC, None, n) or {} for n in sorted(api.stored_names(MWC))]


def _who_injects(api: ApiServer, ns: dict[str, str], pod: dict[str, str] | None = None) -> Any:
    match = match_webhooks(read_live_webhooks(_live(api)).entries, ns, pod or {})
    assert not match.conflicts, [e.configuration for e in match.conflicts]
    return (match.entry.configuration, match.entry.revision) if match.entry else None


async def test_tag_points_at_the_revision_service(api: ApiServer, client: AsyncClient) -> None:
    await _install(client, "blue")
    message = await tags.set_tag(client, "prod", "blue")
    assert "created" in message
    tag = api.stored(MWC, None, "istio-revision-tag-prod")
    assert tag is not None
    assert tag["metadata"]["labels"]["istio.io/tag"] == "prod"
    assert tag["metadata"]["labels"]["istio.io/rev"] == "blue"
    assert "install.sidemesh.io/revision" not in tag["metadata"]["labels"]
    assert {w["clientConfig"]["service"]["name"] for w in tag["webhooks"]} == {"istiod-blue"}
    assert _who_injects(api, {"istio.io/rev": "prod"}) == ("istio-revision-tag-prod", "blue")
    assert _who_injects(api, {"istio.io/rev": "blue"}) == ("istio-sidecar-injector-blue", "blue")


async def test_moving_a_tag_needs_overwrite_and_repoints(
    api: ApiServer, client: AsyncClient
) -> None:
    await _install(client, "blue")
    await _install(client, "green")
    await tags.set_tag(client, "prod", "blue")
    with pytest.raises(TagError, match=r"already points at revision blue.*--overwrite"):
        await tags.set_tag(client, "prod", "green")
    assert _who_injects(api, {"istio.io/rev": "prod"})[1] == "blue"
    message = await tags.set_tag(client, "prod", "green", overwrite=True)
    assert "moved from revision blue to green" in message
    assert _who_injects(api, {"istio.io/rev": "prod"}) == ("istio-revision-tag-prod", "green")
    tag = api.stored(MWC, None, "istio-revision-tag-prod") or {}
    assert {w["clientConfig"]["service"]["name"] for w in tag["webhooks"]} == {"istiod-green"}
    # setting it again to the same revision needs no --overwrite
    assert "already points" in await tags.set_tag(client, "prod", "green")


async def test_tag_copies_the_revision_webhook_settings(
    api: ApiServer, client: AsyncClient
) -> None:
    values, chosen = load_install_values(
        [], ["sidecarInjectorWebhook.timeoutSeconds=4",
             "sidecarInjectorWebhook.reinvocationPolicy=IfNeeded"], revision="blue"
    )  # fmt: skip
    await installer.install(client, values, chosen, report=lambda _: None)
    await tags.set_tag(client, "prod", "blue")
    tag = api.stored(MWC, None, "istio-revision-tag-prod") or {}
    assert {(w["timeoutSeconds"], w["reinvocationPolicy"]) for w in tag["webhooks"]} == {
        (4, "IfNeeded")
    }


async def test_default_tag_takes_over_the_default_revision(
    api: ApiServer, client: AsyncClient
) -> None:
    await _install(client, "default")
    await _install(client, "blue")
    assert _who_injects(api, {"istio-injection": "enabled"}) == ("istio-sidecar-injector",
                                                                 "default")  # fmt: skip
    await tags.set_tag(client, "default", "blue")
    enabled = {"istio-injection": "enabled"}
    assert _who_injects(api, enabled) == ("istio-revision-tag-default", "blue")
    assert _who_injects(api, {"istio.io/rev": "default"}) == ("istio-revision-tag-default", "blue")
    assert _who_injects(api, {}, {"sidecar.istio.io/inject": "true"}) == (
        "istio-revision-tag-default", "blue")  # fmt: skip
    # re-installing the default revision keeps it deactivated while the tag exists
    await _install(client, "default")
    assert _who_injects(api, enabled) == ("istio-revision-tag-default", "blue")
    await tags.remove_tag(client, "default")
    assert _who_injects(api, enabled) == ("istio-sidecar-injector", "default")


async def test_cannot_tag_a_missing_revision(api: ApiServer, client: AsyncClient) -> None:
    with pytest.raises(TagError, match="revision nope is not installed"):
        await tags.set_tag(client, "prod", "nope")
    assert api.writes() == []


async def test_tag_cannot_shadow_a_revision(api: ApiServer, client: AsyncClient) -> None:
    await _install(client, "blue")
    await _install(client, "green")
    with pytest.raises(TagError, match="name of an installed revision"):
        await tags.set_tag(client, "green", "blue")


@pytest.mark.parametrize("name", ["Prod", "-x", "a" * 44, "a.b"])
async def test_invalid_tag_names(api: ApiServer, client: AsyncClient, name: str) -> None:
    with pytest.raises(TagError, match="not a valid tag name"):
        await tags.set_tag(client, name, "blue")


async def test_remove_unknown_tag(api: ApiServer, client: AsyncClient) -> None:
    await _install(client, "blue")
    with pytest.raises(TagError, match="no tag named prod"):
        await tags.remove_tag(client, "prod")


async def test_list_tags_with_namespaces(api: ApiServer, client: AsyncClient) -> None:
    await _install(client, "blue")
    await _install(client, "green")
    await tags.set_tag(client, "prod", "blue")
    await tags.set_tag(client, "default", "green")
    for name, labels in [("a", {"istio.io/rev": "prod"}), ("b", {"istio-injection": "enabled"}),
                         ("c", {"istio.io/rev": "prod", "istio-injection": "enabled"}),
                         ("d", {"istio.io/rev": "blue"})]:  # fmt: skip
        api.store("v1/namespaces", {"metadata": {"name": name, "labels": labels}})
    listed = [(t.tag, t.revision, t.namespaces) for t in await tags.get_tags(client)]
    assert listed == [("default", "green", ("b", "c")), ("prod", "blue", ("a",))]
