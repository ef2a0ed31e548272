"""The documented Prometheus scrape job for Kubernetes: the docs file is what the command
prints, the ConfigMap is a valid Kubernetes object, Prometheus' own checker accepts the job,
and its relabelling turns pod annotations into the sidecar's address and path."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from sidemesh.cli.main import cli
from sidemesh.install.prometheus import (
    CONFIG_KEY,
    kubernetes_pods_job,
    scrape_config_map,
    scrape_config_map_yaml,
)

DOCS = Path(__file__).parents[2] / "docs" / "prometheus-scrape-config.yaml"


def test_docs_hold_exactly_what_the_command_prints() -> None:
    printed = CliRunner().invoke(cli, ["install", "--print-scrape-config"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == scrape_config_map_yaml() == DOCS.read_text()
    assert yaml.safe_load(DOCS.read_text()) == scrape_config_map()


def test_config_map_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate.validate(
        scrape_config_map(), kubernetes_validate.utils.latest_version(), strict=True
    )


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (Debian prometheus)")
def test_prometheus_accepts_the_job(tmp_path: Path) -> None:
    # Debian builds Prometheus without Kubernetes discovery, so its promtool cannot parse
    # `kubernetes_sd_configs`: check everything else (relabel rules, RE2 regexes) with static
    # targets in their place.
    document = yaml.safe_load(scrape_config_map()["data"][CONFIG_KEY])
    (job,) = document["scrape_configs"]
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    job["static_configs"] = [{"targets": ["10.244.0.7:8080"]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(document))
    checked = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def relabel(labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus' relabelling, for the actions the job uses (regexes are anchored)."""
    labels = dict(labels)
    for rule in kubernetes_pods_job()["relabel_configs"]:
        action = rule.get("action", "replace")
        pattern = re.compile(rule.get("regex", "(.*)"))
        if action == "labelmap":
            for name, value in list(labels.items()):
                if match := pattern.fullmatch(name):
                    labels[match.expand(r"\1")] = value
            continue
        value = ";".join(labels.get(s, "") for s in rule["source_labels"])
        match = pattern.fullmatch(value)
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            replacement = re.sub(r"\$(\d)", r"\\\1", rule.get("replacement", "$1"))
            labels[rule["target_label"]] = match.expand(replacement)
    return labels


INJECTED = {
    "__address__": "10.244.0.7:8080",
    "__metrics_path__": "/metrics",
    "__meta_kubernetes_namespace": "demo",
    "__meta_kubernetes_pod_name": "reviews-1",
    "__meta_kubernetes_pod_phase": "Running",
    "__meta_kubernetes_pod_ip": "10.244.0.7",
    "__meta_kubernetes_pod_label_app": "reviews",
    "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
    "__meta_kubernetes_pod_annotation_prometheus_io_port": "15020",
    "__meta_kubernetes_pod_annotation_prometheus_io_path": "/stats/prometheus",
}


def test_an_injected_pod_is_scraped_at_the_merged_endpoint() -> None:
    target = relabel(INJECTED)
    assert target is not None
    assert (target["__address__"], target["__metrics_path__"]) == (
        "10.244.0.7:15020",
        "/stats/prometheus",
    )
    assert (target["namespace"], target["pod"], target["app"]) == ("demo", "reviews-1", "reviews")


def test_ipv6_pod_addresses_are_bracketed() -> None:
    target = relabel(INJECTED | {"__meta_kubernetes_pod_ip": "fd00:10:244::7"})
    assert target is not None and target["__address__"] == "[fd00:10:244::7]:15020"


@pytest.mark.parametrize(
    "change",
    [
        {"__meta_kubernetes_pod_annotation_prometheus_io_scrape": "false"},
        {"__meta_kubernetes_pod_annotation_prometheus_io_scrape": ""},
        {"__meta_kubernetes_pod_phase": "Succeeded"},
        {"__meta_kubernetes_pod_phase": "Pending"},
    ],
)
def test_pods_not_asking_or_not_running_are_dropped(change: dict[str, str]) -> None:
    assert relabel(INJECTED | change) is None


def test_without_path_or_port_annotations_prometheus_defaults_stay() -> None:
    target = relabel(
        {
            k: v
            for k, v in INJECTED.items()
            if not k.endswith(("prometheus_io_path", "prometheus_io_port"))
        }
    )
    assert target is not None
    assert (target["__address__"], target["__metrics_path__"]) == ("10.244.0.7:8080", "/metrics")
