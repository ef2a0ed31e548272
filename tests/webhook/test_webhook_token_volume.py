"""Replicas that differ only in the API server's random token-volume name are one pod to the
engine: the second is a memo hit, and every answer equals the engine's own for that pod."""

from __future__ import annotations

import base64
import copy
from typing import Any

import orjson
import pytest
from webhook_testkit import PATCH, FakeAdmitter, make_review, post_review

from sidemesh.inject.engine import Injector
from sidemesh.inject.outcome import Outcome
from sidemesh.webhook.app import WebhookApp
from sidemesh.webhook.token_volume import CANONICAL_NAME, TokenVolumeNeutral, canonical_pod

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN = "kube-api-access-x7k2q"


def replica(suffix: str, **annotations: str) -> dict[str, Any]:
    """A ReplicaSet's pod as the API server sends it to mutating webhooks."""
    token = f"kube-api-access-{suffix}"
    mount = {"name": token, "readOnly": True, "mountPath": MOUNT_PATH}
    return {
        "metadata": {
            "generateName": "web-7d9f-", "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "7d9f"},
            **({"annotations": annotations} if annotations else {}),
        },
        "spec": {
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": token, "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}},
            ],
            "initContainers": [{"name": "setup", "image": "busybox", "volumeMounts": [mount]}],
            "containers": [{
                "name": "web", "image": "nginx",
                "ports": [{"containerPort": 80}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}, mount],
            }],
            "serviceAccountName": "default",
        },
    }  # fmt: skip


def apply_patch(pod: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    import jsonpatch

    assert outcome.patch is not None
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, orjson.loads(outcome.patch))
    return patched


def test_the_volume_and_its_mounts_are_renamed_and_nothing_else() -> None:
    pod = replica("x7k2q")
    before = copy.deepcopy(pod)
    renamed = canonical_pod(pod)
    assert pod == before  # not modified
    assert renamed is not None
    text = orjson.dumps(renamed)
    assert b"x7k2q" not in text and text.count(CANONICAL_NAME.encode()) == 3
    assert orjson.loads(text.replace(CANONICAL_NAME.encode(), b"kube-api-access-x7k2q")) == pod


@pytest.mark.parametrize(
    ("why", "pod"),
    [
        ("no token volume", {"spec": {"containers": [{"name": "c"}]}}),
        ("the name also in an annotation",
         replica("x7k2q", note="mounts kube-api-access-x7k2q")),
        ("the name also in an env value", {**replica("x7k2q"), "spec": {
            **replica("x7k2q")["spec"],
            "containers": [{"name": "c", "env": [{"name": "V", "value": TOKEN}],
                            "volumeMounts": [{"name": TOKEN, "mountPath": "/t"}]}],
        }}),
        ("not a projected volume", {"spec": {
            "volumes": [{"name": "kube-api-access-x7k2q", "emptyDir": {}}],
            "containers": [{"name": "c"}]}}),
        ("two token volumes", {"spec": {
            "volumes": [{"name": "kube-api-access-aaaaa", "projected": {}},
                        {"name": "kube-api-access-bbbbb", "projected": {}}],
            "containers": [{"name": "c"}]}}),
    ],
)  # fmt: skip
def test_pods_that_cannot_be_renamed_safely_are_left_alone(why: str, pod: dict[str, Any]) -> None:
    assert canonical_pod(pod) is None, why


def test_replicas_share_one_admission_and_get_the_engines_own_answer() -> None:
    engine = Injector()
    neutral = TokenVolumeNeutral(engine)
    first = neutral.admit(replica("x7k2q"), "shop", cluster_id=None, network=None)
    hits = engine._outcomes.hits
    second = neutral.admit(replica("m4b9z"), "shop", cluster_id=None, network=None)
    assert engine._outcomes.hits == hits + 1  # no rendering for the second replica
    assert first.kind == second.kind == "injected" and first.patch == second.patch
    assert second.pod is None  # the engine's pod is the renamed one: not handed out
    # The same result as the engine gives the real pod, applied to the real pod.
    direct = Injector().admit(replica("m4b9z"), "shop", cluster_id=None, network=None)
    assert apply_patch(replica("m4b9z"), second) == apply_patch(replica("m4b9z"), direct)
    injected = apply_patch(replica("m4b9z"), second)
    assert b"kube-api-access-m4b9z" in orjson.dumps(injected)
    assert CANONICAL_NAME not in orjson.dumps(injected).decode()


class CopyingAdmitter:
    """An engine whose answer mentions the volume it was shown (a template copying a mount)."""

    revision = "default"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def admit(
        self, pod: dict[str, Any], namespace: str, *, cluster_id: str | None, network: str | None
    ) -> Outcome:
        name = pod["spec"]["volumes"][-1]["name"]
        self.seen.append(name)
        patch = orjson.dumps([{"op": "add", "path": "/metadata/annotations",
                               "value": {"token-volume": name}}])  # fmt: skip
        return Outcome("injected", "ok", "", "default", patch=patch,
                       patch_base64=base64.b64encode(patch).decode())  # fmt: skip


def test_an_answer_naming_the_renamed_volume_is_redone_for_the_real_pod() -> None:
    engine = CopyingAdmitter()
    outcome = TokenVolumeNeutral(engine).admit(
        replica("x7k2q"), "shop", cluster_id=None, network=None
    )
    assert engine.seen == [CANONICAL_NAME, "kube-api-access-x7k2q"]
    assert outcome.patch is not None and b"kube-api-access-x7k2q" in outcome.patch


async def test_the_webhook_shows_its_engine_one_name_for_every_replica() -> None:
    engine = FakeAdmitter()
    app = WebhookApp(engine)
    for uid, suffix in (("uid-1", "x7k2q"), ("uid-2", "m4b9z")):
        response = await post_review(app, make_review(uid=uid, pod=replica(suffix)))
        assert response.status == 200 and response.json()["response"]["uid"] == uid
        assert response.patch() == PATCH
    assert [call["pod"]["spec"]["volumes"][1]["name"] for call in engine.calls] == [
        CANONICAL_NAME,
        CANONICAL_NAME,
    ]
