"""The Prometheus scrape configuration for a cluster running sidemesh (documentation output:
`sidemesh install --print-scrape-config`, and docs/prometheus-scrape-config.yaml).

sidemesh deploys no Prometheus. A cluster's Prometheus finds pods with Kubernetes service
discovery and keeps those annotated `prometheus.io/scrape: "true"`, at `prometheus.io/port`
and `prometheus.io/path`; injection rewrites these on every injected pod to the sidecar's
merged endpoint (`:15020/stats/prometheus`: Envoy's Istio standard metrics, the agent's own,
and the application's, whose original annotations the agent follows). The same reading of the
annotations drives the local runtime's Prometheus (`sidemesh.local.prometheus`).
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from sidemesh.install import naming

CONFIG_MAP_NAME: Final = "prometheus-sidemesh-scrape"
CONFIG_KEY: Final = "prometheus.yml"
_ANNOTATION = "__meta_kubernetes_pod_annotation_prometheus_io_"
_POD_IP = "__meta_kubernetes_pod_ip"


def kubernetes_pods_job(scrape_interval: str = "15s") -> dict[str, Any]:
    """The `kubernetes-pods` job: every pod that asks to be scraped, where it asks."""
    return {
        "job_name": "kubernetes-pods",
        "scrape_interval": scrape_interval,
        # The merged endpoint already carries the application's own labels: keep them.
        "honor_labels": True,
        "kubernetes_sd_configs": [{"role": "pod"}],
        "relabel_configs": [
            {"source_labels": [f"{_ANNOTATION}scrape"], "regex": "true", "action": "keep"},
            {
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "Pending|Succeeded|Failed|Completed",
                "action": "drop",
            },
            {
                "source_labels": [f"{_ANNOTATION}path"],
                "regex": "(/.*)",
                "target_label": "__metrics_path__",
            },
            {
                "source_labels": [f"{_ANNOTATION}scheme"],
                "regex": "(https?)",
                "target_label": "__scheme__",
            },
            # The pod's IP with the annotated port (IPv4, then IPv6 in brackets).
            {
                "source_labels": [f"{_ANNOTATION}port", _POD_IP],
                "regex": r"([0-9]+);([0-9.]+)",
                "replacement": "$2:$1",
                "target_label": "__address__",
            },
            {
                "source_labels": [f"{_ANNOTATION}port", _POD_IP],
                "regex": r"([0-9]+);([0-9A-Fa-f:]+:[0-9A-Fa-f:.]*)",
                "replacement": "[$2]:$1",
                "target_label": "__address__",
            },
            {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    }


def prometheus_config(scrape_interval: str = "15s") -> str:
    """A prometheus.yml holding just that job (merge it into yours)."""
    config = {"scrape_configs": [kubernetes_pods_job(scrape_interval)]}
    return yaml.safe_dump(config, sort_keys=False)


def scrape_config_map(namespace: str = "monitoring") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIG_MAP_NAME,
            "namespace": namespace,
            "labels": {naming.LABEL_PART_OF: naming.PART_OF},
        },
        "data": {CONFIG_KEY: prometheus_config()},
    }


class _ReadableDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so the embedded prometheus.yml reads as YAML."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _represent_str)


def scrape_config_map_yaml(namespace: str = "monitoring") -> str:
    """The ConfigMap as documented (docs/prometheus-scrape-config.yaml is this text)."""
    header = (
        "# The Prometheus job that scrapes every sidemesh sidecar (and the applications' own\n"
        "# metrics through it). Merge `scrape_configs` into your Prometheus' configuration;\n"
        "# its service account needs get/list/watch on pods. Printed by:\n"
        "#   sidemesh install --print-scrape-config\n"
    )
    body = yaml.dump(scrape_config_map(namespace), Dumper=_ReadableDumper, sort_keys=False)
    return header + body
