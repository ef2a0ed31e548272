"""Injection on the local runtime through the REAL webhook of a local control plane: the
guide's steps (find the revision label, label the namespace, restart), what istio-init did in
the pod's namespace, what the sidecar finds at the injector's paths, and failurePolicy Fail.
Needs root, `ip` and `iptables`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_kit import Local, names, needs_root, owned, running_app

pytestmark = needs_root


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    with running_app(tmp_path_factory, "demo") as local:
        yield local


def test_injection_through_the_real_webhook_after_labelling(app: Local) -> None:
    app.run("control-plane", "start", "--revision", "canary", "--timeout", "60")
    listing = app.run(
        "get", "pods", "-n", "istio-system", "-l", "app=istiod", "--show-labels"
    ).stdout.splitlines()
    assert listing[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "LABELS"]
    name, ready_column, status, _, _, labels = listing[1].split()
    assert name.startswith("istiod-canary-") and (ready_column, status) == ("1/1", "Running")
    template_hash = name.split("-")[-2]
    assert (
        labels == f"app=istiod,istio.io/rev=canary,istio=istiod,pod-template-hash={template_hash}"
    )

    labelled = app.run(
        "label", "namespace", "demo", "istio-injection-", "istio.io/rev=canary", "--overwrite"
    ).stdout
    assert labelled == 'label "istio-injection" not found.\nnamespace/demo labeled\n'
    before = names(owned(app.pods("demo")))
    app.run("delete", "pod", "-n", "demo", "--all")

    def injected() -> bool:
        pods = owned(app.pods("demo"))
        return (
            len(pods) == 2
            and not names(pods) & before
            and all(
                s["state"].get("terminated", {}).get("exitCode") == 0
                for p in pods
                for s in p["status"]["initContainerStatuses"]
            )
        )

    app.wait("injected pods whose istio-init completed", injected)
    for pod in owned(app.pods("demo")):
        annotations = pod["metadata"]["annotations"]
        status = json.loads(annotations["sidecar.istio.io/status"])
        assert status["revision"] == "canary" and annotations["istio.io/rev"] == "canary"
        assert [c["name"] for c in pod["spec"]["initContainers"]] == ["istio-init"]
        assert [c["name"] for c in pod["spec"]["containers"]] == ["web", "istio-proxy"]
        assert pod["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio"
        # istio-init really ran `sidemesh iptables` inside the pod's namespace
        rules = subprocess.run(
            ["ip", "netns", "exec", app.netns(pod), "iptables-save", "-t", "nat"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert ":ISTIO_OUTPUT" in rules and "--to-ports 15001" in rules
        assert "--to-ports 15006" in rules
        # what the sidecar agent needs is in place, at the paths the injector mounts
        proxy = ["exec", pod["metadata"]["name"], "-n", "demo", "-c", "istio-proxy", "--"]
        check = app.run(
            *proxy,
            "sh",
            "-c",
            "id -u; head -c 27 /var/run/secrets/istio/root-cert.pem;"
            " echo; wc -c < /var/run/secrets/tokens/istio-token;"
            " cat /etc/istio/pod/labels; echo; getent hosts istiod-canary.istio-system.svc",
        )
        lines = check.stdout.splitlines()
        assert lines[0] == "1337" and lines[1] == "-----BEGIN CERTIFICATE-----"
        assert int(lines[2]) >= 40
        assert 'app="web"' in lines and 'security.istio.io/tlsMode="istio"' in lines
        assert lines[-1].split()[0].startswith("10.96.")
    registry = (app.state_dir / "registry" / "local.yaml").read_text()
    assert "kind: EndpointSlice" in registry and "security.istio.io/tlsMode: istio" in registry


def test_bare_pods_are_admitted_by_the_cli_and_a_dead_webhook_blocks_creation(
    app: Local, tmp_path: Path
) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                # Neither "true" nor "false": admitted with a warning, shown as kubectl does.
                "metadata": {
                    "name": "bare",
                    "namespace": "demo",
                    "labels": {"sidecar.istio.io/inject": "yes"},
                },
                "spec": {
                    "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "600"]}]
                },
            }
        )
    )
    applied = app.run("apply", "-f", str(bare))
    assert applied.stdout == "pod/bare created\n"
    assert applied.stderr == (
        'Warning: SM1006: label sidecar.istio.io/inject=yes is neither "true" nor "false" and is '
        "ignored; the injector default applies\n"
    )
    (pod,) = [p for p in app.pods("demo") if p["metadata"]["name"] == "bare"]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["c", "istio-proxy"]
    app.run("delete", "pod", "bare", "-n", "demo")

    # No control-plane pod left: the webhook (failurePolicy Fail) cannot be called.
    app.run("delete", "deployment", "istiod-canary", "-n", "istio-system")
    app.wait("the control plane gone", lambda: app.pods("istio-system") == [])
    refused = app.run("apply", "-f", str(bare), check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith(
        f'Error from server: error when creating "{bare}": Internal error occurred: failed '
        'calling webhook "rev.namespace.sidecar-injector.istio.io": failed to call webhook: '
        'Post "https://istiod-canary.istio-system.svc:443/inject?timeout=10s"'
    )
    app.run("delete", "pod", "-n", "demo", "--all")

    def reported() -> bool:
        listing = app.run("get", "pods", "-n", "demo")
        return "Warning  FailedCreate  replicaset/web-" in listing.stderr

    app.wait("the failed creations reported", reported)
    assert owned(app.pods("demo")) == []
    app.run("control-plane", "start", "--revision", "canary", "--timeout", "60")
    app.wait("the deployment's pods back, injected", lambda: len(owned(app.pods("demo"))) == 2)
