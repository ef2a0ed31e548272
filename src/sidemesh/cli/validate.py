"""`sidemesh validate -f FILE...`: Istio configuration checked offline, like `istioctl
validate`, by the same functions the registries (and a validating webhook) use.

Every `networking.istio.io` VirtualService, DestinationRule, ServiceEntry, Sidecar and Gateway
and every `security.istio.io` PeerAuthentication, AuthorizationPolicy and RequestAuthentication
and `telemetry.istio.io` Telemetry is validated; other objects are reported as skipped. One
line per object: `FILE document N Kind namespace/name: validation succeed` on standard output,
or one line per problem (naming the field path) on standard error. Exit 1 if any object is
invalid or a file cannot be read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import click

from sidemesh.api import manifests, security, telemetry
from sidemesh.api.networking import GROUP as NETWORKING_GROUP
from sidemesh.api.networking import ValidationError, describe, is_networking, validate
from sidemesh.cli.manifests import ManifestError, read_documents
from sidemesh.xds.convert import ObjectError, peer_authentication

SECURITY_GROUP = "security.istio.io"


@dataclass(frozen=True)
class Outcome:
    where: str  # FILE document N [item M] Kind namespace/name
    problems: tuple[str, ...] = ()
    skipped: str = ""


def check_document(document: Any) -> tuple[str, ...] | None:
    """The problems of one object (empty: valid), or None when it is not a kind we check."""
    if not isinstance(document, Mapping):
        return None
    check = GROUP_CHECKS.get(str(document.get("apiVersion") or "").partition("/")[0])
    return None if check is None else check(document)


def _check_networking(document: Mapping[str, Any]) -> tuple[str, ...] | None:
    if not is_networking(document):
        return None
    try:
        validate(document)
    except ValidationError as exc:
        return tuple(str(issue) for issue in exc.issues)
    return ()


def _check_security(document: Mapping[str, Any]) -> tuple[str, ...] | None:
    if _is_peer_authentication(document):
        try:
            peer_authentication(document)
        except (ObjectError, ValueError, TypeError, AttributeError) as exc:
            return (str(exc),)
        return ()
    if security.is_security(document):
        try:
            security.validate(document)
        except ValidationError as exc:
            return tuple(str(issue) for issue in exc.issues)
        return ()
    return None


def _check_telemetry(document: Mapping[str, Any]) -> tuple[str, ...] | None:
    if not telemetry.is_telemetry(document):
        return None
    try:
        telemetry.validate(document)
    except ValidationError as exc:
        return tuple(str(issue) for issue in exc.issues)
    return ()


# API group -> the check of its kinds: the problems of one object (empty: valid), or None for a
# kind of the group it does not know. The one routing table of `sidemesh validate` and of the
# validating webhook `sidemesh discovery` serves (same checks, same words); a new group's
# kinds are checked at both doors by adding it here.
GROUP_CHECKS: dict[str, Callable[[Mapping[str, Any]], tuple[str, ...] | None]] = {
    NETWORKING_GROUP: _check_networking,
    SECURITY_GROUP: _check_security,
    telemetry.GROUP: _check_telemetry,
}


def _is_peer_authentication(document: Any) -> bool:
    return (
        isinstance(document, Mapping)
        and str(document.get("apiVersion") or "").partition("/")[0] == SECURITY_GROUP
        and document.get("kind") == "PeerAuthentication"
    )


def _objects(document: Any, where: str) -> Iterator[tuple[str, Any]]:
    """The document, or the items of a `kind: List`."""
    if isinstance(document, Mapping) and document.get("kind") == "List":
        for index, item in enumerate(document.get("items") or [], start=1):
            yield f"{where} item {index}", item
    else:
        yield where, document


def check_files(sources: tuple[str, ...]) -> Iterator[Outcome]:
    for source in manifests.expand(sources):
        label = manifests.label(source)
        try:
            documents = read_documents(source)
        except ManifestError as exc:
            yield Outcome(where=label, problems=(str(exc.message),))
            continue
        for number, document in enumerate(documents, start=1):
            for where, obj in _objects(document, f"{label} document {number}"):
                name = f"{where} {describe(obj)}"
                problems = check_document(obj)
                if problems is None:
                    yield Outcome(where=name, skipped="unknown kind")
                else:
                    yield Outcome(where=name, problems=problems)


@click.command("validate")
@click.option(
    "-f",
    "--filename",
    "sources",
    multiple=True,
    required=True,
    help="Manifest file, directory (its .yaml/.yml/.json files) or - for stdin; repeatable.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only problems.")
def validate_command(sources: tuple[str, ...], quiet: bool) -> None:
    """Validate Istio configuration files offline (as `istioctl validate`)."""
    invalid = 0
    for outcome in check_files(sources):
        if outcome.problems:
            invalid += 1
            for problem in outcome.problems:
                click.echo(f"{outcome.where}: {problem}", err=True)
        elif not quiet:
            verdict = f"skipped: {outcome.skipped}" if outcome.skipped else "validation succeed"
            click.echo(f"{outcome.where}: {verdict}")
    if invalid:
        raise click.ClickException(f"{invalid} invalid object(s)")
