"""Live `check-inject`: evaluate the webhook configurations installed in the cluster (their
selectors read back, not what we think we installed) against live namespace and pod labels.

`check_inject_live` loads; `check_live_objects` is the pure part. Each result says which
webhook would inject, which revision, and why; `conflicts` names pods two configurations would
both inject (the CLI should exit non-zero for them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient

from sidemesh.analyze.view import InjectionView
from sidemesh.inject.check import CheckResult
from sidemesh.kube import client as kube
from sidemesh.kube.snapshot import ClusterSnapshot, load_snapshot

# kubectl's names and short names for the kinds check-inject understands
KINDS: dict[str, tuple[str, str]] = {}
for _aliases, _target in (
    (("pod", "pods", "po"), ("v1", "Pod")),
    (("deployment", "deployments", "deploy"), ("apps/v1", "Deployment")),
    (("statefulset", "statefulsets", "sts"), ("apps/v1", "StatefulSet")),
    (("daemonset", "daemonsets", "ds"), ("apps/v1", "DaemonSet")),
    (("replicaset", "replicasets", "rs"), ("apps/v1", "ReplicaSet")),
    (("job", "jobs"), ("batch/v1", "Job")),
    (("cronjob", "cronjobs", "cj"), ("batch/v1", "CronJob")),
):
    for _alias in _aliases:
        KINDS[_alias] = _target


class LiveCheckError(Exception):
    """The target cannot be checked; the message says why."""


@dataclass(frozen=True)
class LiveCheck:
    results: tuple[CheckResult, ...]
    conflicts: tuple[tuple[str, tuple[str, ...]], ...]  # (KIND/NAME, configurations)


def parse_target(target: str) -> tuple[str, str, str]:
    """`[KIND/]NAME` as (apiVersion, kind, name); a bare NAME is a pod."""
    kind, sep, name = target.partition("/")
    if not sep:
        kind, name = "pod", target
    resolved = KINDS.get(kind.lower())
    if resolved is None or not name:
        known = ", ".join(sorted({v[1].lower() for v in KINDS.values()}))
        raise LiveCheckError(f"{target!r}: expected [KIND/]NAME with KIND one of {known}")
    return resolved[0], resolved[1], name


def check_live_objects(
    snapshot: ClusterSnapshot, objects: Sequence[Mapping[str, Any]], namespace: str
) -> LiveCheck:
    view = InjectionView(snapshot)
    results: list[CheckResult] = []
    conflicts: list[tuple[str, tuple[str, ...]]] = []
    for obj in objects:
        expectation = view.expect(obj, namespace)
        if expectation is None:
            continue
        result = expectation.result
        results.append(result)
        if expectation.match.conflicts:
            configurations = tuple(sorted({e.configuration for e in expectation.match.conflicts}))
            conflicts.append((f"{result.kind}/{result.name}", configurations))
    return LiveCheck(tuple(results), tuple(conflicts))


def parse_label_selector(text: str) -> dict[str, Any]:
    """A kubectl `-l` selector as lightkube's `labels=` (k=v, k!=v, k, !k, k in (..),
    k notin (..))."""
    from lightkube import operators

    selector: dict[str, Any] = {}
    depth, current, parts = 0, "", []
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    for raw in (p.strip() for p in parts):
        if not raw:
            continue
        words = raw.split(None, 2)
        if len(words) == 3 and words[1] in ("in", "notin"):
            values = [v.strip() for v in words[2].strip("()").split(",") if v.strip()]
            op = operators.in_ if words[1] == "in" else operators.not_in
            selector[words[0]] = op(values)
        elif "!=" in raw:
            key, value = raw.split("!=", 1)
            selector[key.strip()] = operators.not_equal(value.strip())
        elif "=" in raw:
            key, value = raw.split("==", 1) if "==" in raw else raw.split("=", 1)
            selector[key.strip()] = value.strip()
        elif raw.startswith("!"):
            selector[raw[1:].strip()] = operators.not_exists()
        else:
            selector[raw] = None
    if not selector:
        raise LiveCheckError(f"empty label selector {text!r}")
    return selector


async def check_inject_live(
    client: AsyncClient, *, target: str | None, namespace: str, selector: str | None
) -> LiveCheck:
    """Check `[KIND/]NAME` in `namespace`, or every pod matching `selector` there."""
    if (target is None) == (selector is None):
        raise LiveCheckError("give either [KIND/]NAME or -l SELECTOR")
    snapshot = await load_snapshot(client, namespace=namespace)
    objects: list[dict[str, Any]]
    if target is not None:
        api_version, kind, name = parse_target(target)
        obj = await kube.get(client, kube.resource_type(api_version, kind), name, namespace)
        if obj is None:
            raise LiveCheckError(f"{kind} {name} not found in namespace {namespace}")
        objects = [{"apiVersion": api_version, "kind": kind, **obj}]
    else:
        assert selector is not None
        pods = kube.resource_type("v1", "Pod")
        labels = parse_label_selector(selector)
        found = await kube.list_objects(client, pods, namespace=namespace, labels=labels)
        objects = [{"apiVersion": "v1", "kind": "Pod", **p} for p in found]
        if not objects:
            raise LiveCheckError(f"no pods match {selector!r} in namespace {namespace}")
    return check_live_objects(snapshot, objects, namespace)
