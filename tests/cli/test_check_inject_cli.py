"""`sidemesh check-inject`: one answer per workload (kind, name, namespace, injected, revision,
reason), as JSON or as a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sidemesh.cli.check_inject import check_inject

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: frontend, namespace: demo}
spec:
  selector: {matchLabels: {app: frontend}}
  template:
    metadata: {labels: {app: frontend}}
    spec:
      containers: [{name: web, image: nginx}]
---
apiVersion: v1
kind: Service
metadata: {name: frontend, namespace: demo}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: toolbox
  namespace: demo
  labels: {sidecar.istio.io/inject: "false"}
spec:
  containers: [{name: toolbox, image: busybox}]
---
apiVersion: v1
kind: List
items:
- apiVersion: batch/v1
  kind: CronJob
  metadata: {name: report}
  spec:
    schedule: "0 * * * *"
    jobTemplate:
      spec:
        template:
          spec:
            containers: [{name: report, image: busybox}]
"""

FIELDS = {"kind", "name", "namespace", "injected", "revision", "reason"}


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST, encoding="utf-8")
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(check_inject, list(args))


def as_json(manifest: Path, *args: str) -> list[dict[str, Any]]:
    result = run("-f", str(manifest), "-o", "json", *args)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_json_answers_every_workload(manifest: Path) -> None:
    rows = as_json(manifest, "--namespace-labels", "istio.io/rev=x", "--revision", "x")
    assert [(r["kind"], r["name"]) for r in rows] == [
        ("Deployment", "frontend"),
        ("Pod", "toolbox"),
        ("CronJob", "report"),
    ]
    for r in rows:
        assert set(r) >= FIELDS
    frontend, toolbox, report = rows
    assert frontend["injected"] is True
    assert (frontend["revision"], frontend["namespace"]) == ("x", "demo")
    assert "istio.io/rev In [x]" in frontend["reason"]
    assert (toolbox["injected"], toolbox["revision"]) == (False, None)
    assert "opts it out" in toolbox["reason"]
    assert (report["injected"], report["namespace"]) == (True, "default")


def test_unlabelled_namespace_says_why(manifest: Path) -> None:
    rows = as_json(manifest)
    assert not any(r["injected"] for r in rows)
    assert "injection is off by default" in rows[0]["reason"]


def test_namespace_option_overrides_objects(manifest: Path) -> None:
    rows = as_json(manifest, "-n", "kube-system", "--namespace-labels", "istio-injection=enabled")
    assert {r["namespace"] for r in rows} == {"kube-system"}
    assert rows[0]["injected"] is False
    assert "never injected" in rows[0]["reason"]


def test_both_namespace_labels_warn(manifest: Path) -> None:
    rows = as_json(
        manifest, "--namespace-labels", "istio-injection=enabled,istio.io/rev=canary",
        "--revision", "default", "--revision", "canary",
    )  # fmt: skip
    frontend = rows[0]
    assert frontend["revision"] == "default"  # istio-injection wins
    (warning,) = frontend["warnings"]
    assert warning["code"] == "SM1001"
    assert "istio-injection" in warning["message"] and "istio.io/rev" in warning["message"]


@pytest.mark.parametrize("labels", ["istio-injection=enabled", "istio.io/rev=default"])
def test_default_tag_selects_its_revision_without_conflict(manifest: Path, labels: str) -> None:
    """The `default` tag deactivates the revision-less webhook configuration entirely."""
    rows = as_json(
        manifest, "--namespace-labels", labels,
        "--revision", "default", "--revision", "canary", "--tag", "default=canary",
    )  # fmt: skip
    frontend = rows[0]
    assert (frontend["injected"], frontend["revision"]) == (True, "canary")
    assert "istio-revision-tag-default" in frontend["webhook"]
    assert not any(w["code"] == "SM1002" for w in frontend["warnings"])


def test_tag_names_a_revision(manifest: Path) -> None:
    rows = as_json(
        manifest, "--namespace-labels", "istio.io/rev=stable",
        "--revision", "1-21", "--tag", "stable=1-21",
    )  # fmt: skip
    assert rows[0]["revision"] == "1-21"


def test_table_mentions_revision_and_verdict(manifest: Path) -> None:
    result = run(
        "-f", str(manifest), "--namespace-labels", "istio.io/rev=canary-7", "--revision", "canary-7"
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["WORKLOAD", "NAMESPACE", "INJECTED", "REVISION", "REASON"]
    frontend = next(line for line in lines if line.startswith("Deployment/frontend"))
    assert frontend.split()[:4] == ["Deployment/frontend", "demo", "yes", "canary-7"]
    toolbox = next(line for line in lines if line.startswith("Pod/toolbox"))
    assert toolbox.split()[:4] == ["Pod/toolbox", "demo", "no", "-"]


def test_bad_tag_is_rejected(manifest: Path) -> None:
    result = run("-f", str(manifest), "--tag", "stable")
    assert result.exit_code != 0
    assert "TAG=REVISION" in result.output


def test_bad_namespace_labels_are_rejected(manifest: Path) -> None:
    result = run("-f", str(manifest), "--namespace-labels", "istio.io/rev")
    assert result.exit_code != 0
    assert "key=value" in result.output


def test_missing_file_is_named() -> None:
    result = run("-f", "/nonexistent/app.yaml")
    assert result.exit_code != 0
    assert "/nonexistent/app.yaml" in result.output
