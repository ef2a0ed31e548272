"""`sidemesh authz check POD` (like `istioctl x authz check`): the AuthorizationPolicies and
RequestAuthentications that apply to a pod's sidecar, and the Envoy RBAC rules they became,
with what was made stricter and why (an HTTP-only rule on a TCP port, a CUSTOM provider, a
rule that cannot be translated, a JWKS not available).

With -f, the pod and the policies come from manifest files (a directory of them works, such as
the local runtime's registry); otherwise from the cluster. Either way the objects go through
the registries' own path (`xds.builder.build_snapshot`): a policy the control plane would skip
is listed as skipped, with the reason.

A proxyless gRPC server (a pod whose `inject.istio.io/templates` names a `grpc-*` template) has
no Envoy: the report shows the RBAC filters the server gets instead (`xds/grpc_gen_authz.py`),
with gRPC's own notes (no AUDIT, no JWT: a RequestAuthentication refuses every call).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from sidemesh.api import manifests, names
from sidemesh.api.config import MeshConfig
from sidemesh.cli.install import cluster_options, run_against_cluster
from sidemesh.cli.manifests import read_documents
from sidemesh.xds.builder import SECURITY_KINDS, build_snapshot
from sidemesh.xds.convert import ObjectError, object_key
from sidemesh.xds.grpc_gen_authz import grpc_authz
from sidemesh.xds.inbound_policy import InboundPolicy, inbound_policy


@click.group("authz")
def authz() -> None:
    """Authorization policy tools (as `istioctl x authz`)."""


@authz.command("check")
@click.argument("pod")
@click.option(
    "-f", "--filename", "sources", multiple=True,
    help="Manifests (file, directory or -) holding the pod and the policies; repeatable. "
    "Without it, the cluster is asked.",
)  # fmt: skip
@click.option("-n", "--namespace", default=None, help="The pod's namespace (default: default).")
@click.option("--root-namespace", default=None, help="The mesh root namespace (istio-system).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True)  # fmt: skip
@cluster_options
def check(
    pod: str, sources: tuple[str, ...], namespace: str | None, root_namespace: str | None,
    output: str, kubeconfig: Path | None, context: str | None,
) -> None:  # fmt: skip
    """The policies that apply to POD (NAME or NAME.NAMESPACE) and the rules they became."""
    name, _, dotted = pod.partition(".")
    namespace = namespace or dotted or "default"
    mesh = MeshConfig() if root_namespace is None else MeshConfig(root_namespace=root_namespace)
    if sources:
        objects = [o for source in manifests.expand(sources) for o in _objects(source)]
    else:
        objects = run_against_cluster(
            kubeconfig, context, lambda client: _live(client, name, namespace)
        )
    report = explain(objects, name=name, namespace=namespace, mesh=mesh)
    if output == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render(report))


def _objects(source: str) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []
    for document in read_documents(source):
        if isinstance(document, Mapping) and document.get("kind") == "List":
            found += [i for i in document.get("items") or [] if isinstance(i, Mapping)]
        elif isinstance(document, Mapping):
            found.append(document)
    return found


async def _live(client: Any, name: str, namespace: str) -> list[Any]:
    """The pod, and the policies of every namespace (a cluster without the CRDs has none)."""
    from lightkube.resources.core_v1 import Pod

    from sidemesh.analyze.security_loader import load_security_config

    pod = await client.get(Pod, name, namespace=namespace)
    config = await load_security_config(client)
    return [{**pod.to_dict(), "kind": "Pod"}, *config.authorization_policies,
            *config.request_authentications]  # fmt: skip


def explain(
    objects: Iterable[Mapping[str, Any]], *, name: str, namespace: str, mesh: MeshConfig
) -> dict[str, Any]:
    """The report of one pod: what applies, the rules, the notes, what was skipped. Raises
    click.ClickException when the pod is not among `objects`."""
    keyed: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for obj in objects:
        try:
            key = object_key(obj)
        except ObjectError:
            continue
        if key[0] == "Pod" or key[0] in SECURITY_KINDS:
            keyed[key] = obj
    pod = keyed.get(("Pod", namespace, name))
    if pod is None:
        raise click.ClickException(f"pod {namespace}/{name} is not in the given objects")
    labels = {str(k): str(v) for k, v in ((pod.get("metadata") or {}).get("labels") or {}).items()}
    skipped: list[str] = []
    snapshot = build_snapshot(
        {k: o for k, o in keyed.items() if k[0] != "Pod"}, mesh=mesh, version=1, errors=skipped
    )
    if is_proxyless_grpc(pod):
        server = grpc_authz(snapshot, namespace, labels)
        return {
            "pod": f"{namespace}/{name}",
            "proxy": PROXYLESS_GRPC,
            "policies": list(server.policies),
            "rules": [
                {"name": f["name"], "rbac": f["typed_config"]["rules"]} for f in server.http_filters
            ],
            "notes": list(server.notes),
            "skipped": skipped,
        }
    policy = inbound_policy(snapshot, namespace, labels)
    return {
        "pod": f"{namespace}/{name}",
        "proxy": SIDECAR,
        "policies": list(policy.policies),
        "rules": _rules(policy),
        "notes": list(policy.notes),
        "skipped": skipped,
    }


SIDECAR = "sidecar"
PROXYLESS_GRPC = "proxyless gRPC"


def is_proxyless_grpc(pod: Mapping[str, Any]) -> bool:
    """A pod injected (or to be injected) with a proxyless gRPC template: no Envoy serves it."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    templates = str(annotations.get(names.ANNOTATION_TEMPLATES) or "")
    return any(t.strip().startswith("grpc-") for t in templates.split(","))


def _rules(policy: InboundPolicy) -> list[dict[str, Any]]:
    return [
        {"action": r.action, "policy": r.policy, "name": r.name, "note": r.note,
         "envoy": dict(r.envoy) if r.envoy is not None else None}
        for r in policy.rules
    ]  # fmt: skip


def render(report: Mapping[str, Any]) -> str:
    lines = [
        f"Pod {report['pod']}"
        + (" (proxyless gRPC)" if report.get("proxy") == PROXYLESS_GRPC else "")
    ]
    if not report["policies"]:
        lines.append("No AuthorizationPolicy or RequestAuthentication applies: every request "
                     "is allowed.")  # fmt: skip
    else:
        lines.append("Applied policies:")
        lines += [f"  {p}" for p in report["policies"]]
    proxyless = report.get("proxy") == PROXYLESS_GRPC
    if proxyless and report["rules"]:
        lines.append("Proxyless gRPC server: no Envoy; the server applies these RBAC filters "
                     "(gRFC A41), in order:")  # fmt: skip
        for found in report["rules"]:
            lines.append(f"  {found['name']}: {json.dumps(found['rbac'], sort_keys=True)}")
    elif not proxyless and report["rules"]:
        lines.append("Rules (HTTP ports; Envoy RBAC policy names):")
        for rule in report["rules"]:
            effect = "dropped" if rule["envoy"] is None else json.dumps(rule["envoy"],
                                                                        sort_keys=True)  # fmt: skip
            lines.append(f"  {rule['action']:<5} {rule['name']}: {effect}")
    for title, key in (("Made stricter", "notes"), ("Skipped (invalid)", "skipped")):
        if report[key]:
            lines.append(f"{title}:")
            lines += [f"  {item}" for item in report[key]]
    return "\n".join(lines)
