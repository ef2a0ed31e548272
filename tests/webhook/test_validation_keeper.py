"""The leader's handling of the revision's ValidatingWebhookConfiguration, step by step: the
bundle first, `failurePolicy: Fail` only once the webhook has been seen refusing, never for
another revision's configuration. (The real API server round trip is in tests/e2e.)"""

from __future__ import annotations

from typing import Any

from sidemesh.kube.metrics import KubeMetrics
from sidemesh.kube.retry import Backoff
from sidemesh.kube.validator_keeper import ValidatorKeeper

BUNDLE = "LS0tLS1CRUdJTi1CVU5ETEU="
LABELS = {"istio.io/rev": "canary", "install.sidemesh.io/revision": "canary"}


class RecordingClient:
    """Records merge patches (all a keeper writes)."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def patch(self, res: Any, name: str, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.patches.append((name, obj))
        return obj


class ScriptedKeeper(ValidatorKeeper):
    """`probe` answers from a script: what the API server said to each dry run."""

    def __init__(self, client: RecordingClient, answers: list[str | None]) -> None:
        super().__init__(
            client,  # type: ignore[arg-type]
            revision="canary", bundle=lambda: BUNDLE, metrics=KubeMetrics(),
            backoff=Backoff(initial=0.0, maximum=0.0, jitter=0.0),
        )  # fmt: skip
        self.answers = answers
        self.probes = 0

    async def probe(self) -> str | None:
        self.probes += 1
        return self.answers.pop(0)


def configuration(*, bundle: str | None, policy: str, labels: dict[str, str] = LABELS) -> Any:
    client_config = {"url": "https://127.0.0.1:15017/validate"}
    if bundle:
        client_config["caBundle"] = bundle
    return {
        "metadata": {"name": "istio-validator-canary-istio-system", "labels": labels,
                     "resourceVersion": "42"},
        "webhooks": [{"name": "rev.validation.istio.io", "clientConfig": client_config,
                      "failurePolicy": policy}],
    }  # fmt: skip


async def test_the_bundle_goes_in_first_and_alone() -> None:
    client = RecordingClient()
    keeper = ScriptedKeeper(client, [])
    assert await keeper.fix(configuration(bundle=None, policy="Ignore"))
    [(name, patch)] = client.patches
    assert name == "istio-validator-canary-istio-system"
    assert patch["webhooks"][0]["clientConfig"]["caBundle"] == BUNDLE
    assert patch["webhooks"][0]["failurePolicy"] == "Ignore"
    assert keeper.probes == 0


async def test_fail_only_after_the_webhook_was_seen_refusing() -> None:
    client = RecordingClient()
    keeper = ScriptedKeeper(client, ["connection refused", "accepted an invalid Gateway", None])
    assert await keeper.fix(configuration(bundle=BUNDLE, policy="Ignore"))
    assert keeper.probes == 3  # closed after the third dry run, the first refused one
    [(_, patch)] = client.patches
    assert patch == {
        "metadata": {"resourceVersion": "42"},
        "webhooks": [{"name": "rev.validation.istio.io", "failurePolicy": "Fail",
                      "clientConfig": {"url": "https://127.0.0.1:15017/validate",
                                       "caBundle": BUNDLE}}],
    }  # fmt: skip


async def test_a_closed_trusted_configuration_is_left_alone() -> None:
    client = RecordingClient()
    keeper = ScriptedKeeper(client, [])
    assert not await keeper.fix(configuration(bundle=BUNDLE, policy="Fail"))
    assert client.patches == [] and keeper.probes == 0


async def test_a_bundle_renewal_does_not_wait_for_the_probe() -> None:
    client = RecordingClient()
    keeper = ScriptedKeeper(client, [])
    assert not await keeper.fix(configuration(bundle=BUNDLE, policy="Ignore"), close=False)
    assert client.patches == [] and keeper.probes == 0


async def test_another_revisions_configuration_is_never_touched() -> None:
    client = RecordingClient()
    keeper = ScriptedKeeper(client, [])
    other = {"istio.io/rev": "stable", "install.sidemesh.io/revision": "stable"}
    assert not await keeper.fix(configuration(bundle=None, policy="Ignore", labels=other))
    assert client.patches == []
