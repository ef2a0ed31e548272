"""What the local runtime's Prometheus scrapes: pods read by their prometheus.io/* annotations
as Kubernetes' `kubernetes-pods` job reads them, each skip with its reason; and its config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidemesh.local.model import PodRecord
from sidemesh.local.paths import RuntimePaths
from sidemesh.local.prometheus import (
    PrometheusPaths,
    Skipped,
    pod_target,
    prometheus_argv,
    render_config,
    scrape_targets,
    write_targets,
)

MERGED = {"prometheus.io/scrape": "true", "prometheus.io/port": "15020",
          "prometheus.io/path": "/stats/prometheus"}  # fmt: skip


def pod(name: str = "web-1", annotations: dict[str, str] | None = None, **fields: Any) -> PodRecord:
    values: dict[str, Any] = {"phase": "Running", "pod_ip": "10.244.0.7"} | fields
    metadata = {"name": name, "namespace": "demo", "labels": {"app": "web"},
                "annotations": MERGED if annotations is None else annotations}  # fmt: skip
    return PodRecord(
        namespace="demo", name=name, uid=f"uid-{name}", created=0.0,
        manifest={"metadata": metadata, "spec": {}}, **values,
    )  # fmt: skip


def test_an_injected_pod_is_scraped_at_the_sidecars_merged_endpoint() -> None:
    assert pod_target(pod()) == {
        "targets": ["10.244.0.7:15020"],
        "labels": {"__metrics_path__": "/stats/prometheus", "__scheme__": "http",
                   "namespace": "demo", "pod": "web-1", "app": "web"},
    }  # fmt: skip


def test_path_defaults_to_metrics() -> None:
    target = pod_target(
        pod(annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "9100"})
    )
    assert isinstance(target, dict) and target["labels"]["__metrics_path__"] == "/metrics"


@pytest.mark.parametrize(
    ("annotations", "fields", "reason"),
    [
        ({}, {}, 'no annotation prometheus.io/scrape: "true"'),
        (MERGED | {"prometheus.io/scrape": "false"}, {}, "no annotation prometheus.io/scrape"),
        (MERGED, {"phase": "Pending"}, "not running with a pod IP"),
        (MERGED, {"pod_ip": None}, "not running with a pod IP"),
        (MERGED, {"deletion_requested": 1.0}, "not running with a pod IP"),
        (MERGED | {"prometheus.io/port": "http"}, {}, "prometheus.io/port is missing"),
        (MERGED | {"prometheus.io/port": "70000"}, {}, "prometheus.io/port is missing"),
        ({"prometheus.io/scrape": "true"}, {}, "prometheus.io/port is missing"),
        (MERGED | {"prometheus.io/path": "metrics"}, {}, "not an absolute URL path"),
        (MERGED | {"prometheus.io/path": "/m\n# evil"}, {}, "not an absolute URL path"),
        (MERGED | {"prometheus.io/path": "/m?x=1"}, {}, "not an absolute URL path"),
        (MERGED | {"prometheus.io/scheme": "file"}, {}, "neither http nor https"),
    ],
)
def test_pods_not_scraped_say_why(
    annotations: dict[str, str], fields: dict[str, Any], reason: str
) -> None:
    skipped = pod_target(pod(annotations=annotations, **fields))
    assert isinstance(skipped, Skipped) and skipped.pod == "demo/web-1"
    assert reason in skipped.reason


def test_targets_file_is_sorted_file_sd_json(tmp_path: Path) -> None:
    pods = [pod("b"), pod("a", pod_ip="10.244.0.8"), pod("c", annotations={})]
    targets = scrape_targets(pods)
    assert [g["labels"]["pod"] for g in targets.groups] == ["a", "b"]
    assert [s.pod for s in targets.skipped] == ["demo/c"]
    runtime = RuntimePaths(tmp_path)
    assert write_targets(runtime, pods) is True
    assert write_targets(runtime, pods) is False  # unchanged: not rewritten
    written = json.loads(PrometheusPaths.of(runtime).pod_targets.read_text())
    assert [g["targets"] for g in written] == [["10.244.0.8:15020"], ["10.244.0.7:15020"]]


def test_config_reads_every_targets_file(tmp_path: Path) -> None:
    config = yaml.safe_load(render_config(tmp_path / "targets", scrape_interval="2s"))
    assert config["global"]["scrape_interval"] == "2s"
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "kubernetes-pods" and job["honor_labels"] is True
    assert job["file_sd_configs"] == [
        {"files": [f"{tmp_path}/targets/*.json"], "refresh_interval": "2s"}
    ]


def test_argv_runs_in_the_node_namespace_on_loopback(tmp_path: Path) -> None:
    paths = PrometheusPaths(tmp_path)
    argv = prometheus_argv(
        paths, binary="/usr/bin/prometheus", listen="127.0.0.1:9090", netns="sm-node"
    )
    assert argv[:5] == ["ip", "netns", "exec", "sm-node", "/usr/bin/prometheus"]
    assert "--web.listen-address=127.0.0.1:9090" in argv
    assert f"--storage.tsdb.path={tmp_path}/data" in argv
