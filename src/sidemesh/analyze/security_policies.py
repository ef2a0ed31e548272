"""Security configuration findings: AuthorizationPolicies and RequestAuthentications that
cannot do what they say. Pure: stored objects in, findings out.

* IST0106 SchemaValidationError: a stored policy `sidemesh validate` refuses (the control
  plane turns an AuthorizationPolicy into a DENY of everything it selects, and skips a
  RequestAuthentication);
* IST0127 NoMatchingWorkloadsFound: a policy whose selector matches no pod (in its namespace,
  or anywhere for the root namespace);
* SM0014 PrincipalOutsideTrustDomain: a principal (from.source.principals/notPrincipals, or a
  `source.principal` condition) whose trust domain is not the mesh's, so no peer of this mesh
  can ever present it: an ALLOW for it allows nobody, a DENY denies nobody.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidemesh.analyze import findings as codes
from sidemesh.analyze.findings import Finding
from sidemesh.api import names, security
from sidemesh.api.networking import Resource, ValidationError
from sidemesh.api.security import AuthorizationPolicy
from sidemesh.kube.snapshot import Object, labels_of, namespace_of
from sidemesh.xds.rbac import applies_to


@dataclass(frozen=True)
class SecurityConfig:
    """The stored AuthorizationPolicies and RequestAuthentications of every namespace."""

    authorization_policies: tuple[Object, ...] = ()
    request_authentications: tuple[Object, ...] = ()


def security_findings(
    config: SecurityConfig,
    *,
    pods: Sequence[Mapping[str, Any]],
    namespaces: set[str] | None = None,
    pod_namespaces: set[str] | None = None,
    trust_domain: str = names.TRUST_DOMAIN,
    root_namespace: str = names.CONTROL_PLANE_NAMESPACE,
) -> list[Finding]:
    """`namespaces`: those to report on (None: all); `pod_namespaces`: those whose pods are in
    `pods` (None: all), so "no workload" is only said where the pods are known."""
    valid: list[Resource[Any]] = []
    found: list[Finding] = []
    for obj in (*config.authorization_policies, *config.request_authentications):
        if namespaces is not None and namespace_of(obj) not in namespaces:
            continue
        try:
            valid.append(security.validate(obj))
        except ValidationError as exc:
            found.append(_invalid(obj, exc))
    found += _no_workloads(valid, pods, pod_namespaces, root_namespace)
    found += _foreign_principals(
        [r for r in valid if r.kind == "AuthorizationPolicy"], trust_domain
    )
    return found


def _invalid(obj: Object, error: ValidationError) -> Finding:
    shown = "; ".join(str(issue) for issue in error.issues[:3])
    more = len(error.issues) - 3
    meanwhile = ("denies every request to the workloads it selects"
                 if security.deny_all_stand_in(obj) is not None else "ignores it")  # fmt: skip
    return Finding(
        codes.SCHEMA_VALIDATION_ERROR, error.document,
        f"the stored object is invalid: {shown}" + (f" (and {more} more)" if more > 0 else ""),
        "fix it and apply it again (sidemesh validate -f FILE lists every problem); "
        f"meanwhile the control plane {meanwhile}",
    )  # fmt: skip


def _no_workloads(
    policies: Iterable[Resource[Any]],
    pods: Sequence[Mapping[str, Any]],
    pod_namespaces: set[str] | None,
    root_namespace: str,
) -> Iterator[Finding]:
    for policy in policies:
        selector = policy.spec.selector
        if selector is None or not selector.match_labels:
            continue  # namespace- or mesh-wide: applies to whatever runs there
        mesh_wide = policy.namespace == root_namespace
        if pod_namespaces is not None and (mesh_wide or policy.namespace not in pod_namespaces):
            continue  # the pods it could select were not loaded
        matched = any(
            applies_to(policy, root_namespace=root_namespace, namespace=namespace_of(pod),
                       labels=labels_of(pod))
            for pod in pods
        )  # fmt: skip
        if not matched:
            wanted = ",".join(f"{k}={v}" for k, v in sorted(selector.match_labels.items()))
            where = "any namespace" if mesh_wide else f"namespace {policy.namespace}"
            yield Finding(
                codes.NO_MATCHING_WORKLOADS_FOUND, policy.describe(),
                f"no pod in {where} has the labels {wanted}: the policy applies to nothing",
                "correct spec.selector.matchLabels (kubectl get pods -n NAMESPACE "
                "--show-labels), or delete the policy if its workload is gone",
            )  # fmt: skip


def _foreign_principals(
    policies: Iterable[Resource[AuthorizationPolicy]], trust_domain: str
) -> Iterator[Finding]:
    for policy in policies:
        for path, value in _principals(policy.spec):
            domain = _trust_domain(value)
            if domain is not None and domain != trust_domain:
                yield Finding(
                    codes.PRINCIPAL_OUTSIDE_TRUST_DOMAIN, policy.describe(),
                    f"{path} {value!r} is in trust domain {domain!r}, not the mesh's "
                    f"{trust_domain!r}: no peer of this mesh presents it",
                    f"write it as {trust_domain}/ns/NAMESPACE/sa/SERVICE_ACCOUNT "
                    "(or use namespaces / serviceAccounts)",
                )  # fmt: skip


def _principals(spec: AuthorizationPolicy) -> Iterator[tuple[str, str]]:
    for r, rule in enumerate(spec.rules or ()):
        for f, entry in enumerate(rule.from_ or ()):
            source = entry.source
            if source is None:
                continue
            for name, values in (("principals", source.principals),
                                 ("notPrincipals", source.not_principals)):  # fmt: skip
                for value in values or ():
                    yield f"spec.rules[{r}].from[{f}].source.{name}", value
        for w, condition in enumerate(rule.when or ()):
            if condition.key == "source.principal":
                for value in (*(condition.values or ()), *(condition.not_values or ())):
                    yield f"spec.rules[{r}].when[{w}]", value


def _trust_domain(principal: str) -> str | None:
    """The trust domain a principal names, when it names one: not `*`, not `*suffix`, and a
    prefix form only when its domain part is complete."""
    if principal.startswith("*"):
        return None
    domain, slash, _ = principal.partition("/")
    if not slash or "*" in domain:
        return None
    return domain
