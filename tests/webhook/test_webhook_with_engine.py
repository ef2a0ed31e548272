"""The webhook with the real engine (`Injector.from_files()` defaults): a pod in, a sidecar out."""

from __future__ import annotations

import jsonpatch
import orjson
from webhook_testkit import make_pod, make_review, post_review

from sidemesh.inject.engine import Injector
from sidemesh.webhook.app import WebhookApp


async def test_real_injection_through_the_webhook() -> None:
    app = WebhookApp(Injector.from_files())
    pod = make_pod(managedFields=[{"manager": "kubectl", "operation": "Update"}])
    response = await post_review(app, make_review(uid="engine-uid", pod=pod, namespace="demo"))
    assert response.status == 200
    answer = response.json()["response"]
    assert answer["uid"] == "engine-uid"
    assert answer["allowed"] is True, answer.get("status")
    assert answer["patchType"] == "JSONPatch"
    operations = response.patch()
    assert b"istio-proxy" in orjson.dumps(operations)
    injected = jsonpatch.apply_patch(make_pod(), operations)
    names = [c["name"] for c in injected["spec"]["containers"]]
    names += [c["name"] for c in injected["spec"].get("initContainers", [])]
    assert "istio-proxy" in names
    assert all("managedFields" not in op["path"] for op in operations)
