"""Revision tags as data: the tag's webhook configuration, and listing tags.

A tag is a stable name (`prod`, `default`) for a revision: namespaces label themselves
`istio.io/rev=TAG`, and moving the tag re-points their injection without relabelling them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidemesh.api import names
from sidemesh.inject.webhooks import tag_webhooks
from sidemesh.install import naming
from sidemesh.install.webhooks import WebhookSettings, webhook_configuration

_TAG = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_TAG_LENGTH = 43  # `istio-revision-tag-TAG` within a 63-character label/name budget


class TagError(Exception):
    """A tag operation that must not happen; the message says why and what to do."""


def check_tag(tag: str) -> str:
    if not _TAG.match(tag) or len(tag) > MAX_TAG_LENGTH:
        raise TagError(
            f"tag {tag!r} is not a valid tag name: lowercase letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {MAX_TAG_LENGTH} characters"
        )
    return tag


def tag_labels(tag: str, revision: str) -> dict[str, str]:
    return {
        names.LABEL_TAG: tag,
        names.LABEL_REVISION: revision,
        naming.LABEL_PART_OF: naming.PART_OF,
        "app": "sidecar-injector",
    }


def tag_configuration(tag: str, revision: str, settings: WebhookSettings) -> dict[str, Any]:
    """`istio-revision-tag-TAG`, pointing at `revision`'s service with its settings."""
    return webhook_configuration(
        naming.tag_configuration_name(tag),
        tag_webhooks(tag, revision),
        settings,
        labels=tag_labels(tag, revision),
    )


def settings_of(configuration: Mapping[str, Any], service_name: str) -> WebhookSettings:
    """The shared settings of a live injector configuration (to copy them into a tag)."""
    items = [i for i in configuration.get("webhooks") or [] if isinstance(i, Mapping)]
    first: Mapping[str, Any] = items[0] if items else {}
    client_config = first.get("clientConfig") or {}
    reinvocation = first.get("reinvocationPolicy", "Never")
    failure = first.get("failurePolicy", "Fail")
    return WebhookSettings(
        service_name=service_name,
        timeout_seconds=int(first.get("timeoutSeconds", 10)),
        reinvocation_policy="IfNeeded" if reinvocation == "IfNeeded" else "Never",
        failure_policy="Ignore" if failure == "Ignore" else "Fail",
        ca_bundle=client_config.get("caBundle") if isinstance(client_config, Mapping) else None,
        url=str(client_config.get("url") or "") if isinstance(client_config, Mapping) else "",
    )


@dataclass(frozen=True)
class TagInfo:
    tag: str
    revision: str
    namespaces: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "revision": self.revision, "namespaces": list(self.namespaces)}


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    return labels if isinstance(labels, Mapping) else {}


def _name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("name", "")) if isinstance(metadata, Mapping) else ""


def tag_namespaces(tag: str, namespaces: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """Namespaces that select the tag (`default` also serves `istio-injection=enabled`)."""
    selected = []
    for ns in namespaces:
        labels = _labels(ns)
        injection = labels.get(names.LABEL_INJECTION)
        if (labels.get(names.LABEL_REVISION) == tag and injection is None) or (
            tag == "default" and injection == "enabled"
        ):
            selected.append(_name(ns))
    return tuple(sorted(selected))


def list_tags(
    configurations: Sequence[Mapping[str, Any]], namespaces: Sequence[Mapping[str, Any]]
) -> list[TagInfo]:
    tags = []
    for configuration in configurations:
        labels = _labels(configuration)
        tag = labels.get(names.LABEL_TAG)
        if tag is None:
            continue
        revision = labels.get(names.LABEL_REVISION, "")
        tags.append(TagInfo(tag, revision, tag_namespaces(tag, namespaces)))
    return sorted(tags, key=lambda t: t.tag)
