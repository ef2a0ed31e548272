"""Pieces every `networking.istio.io` kind shares: the frozen model base, durations,
percentages, string matches, destinations, selectors, and the checks Istio applies to host
names, namespaces and `exportTo`.

Field rules a type can say (ranges, enums, unknown fields) live on the models; rules that
need several fields (`one of`, uniqueness, sums) are checks that report an `Issue` with the
field path, so `sidemesh validate`, a webhook and the registries all say the same words.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sidemesh.api.durations import go_duration_seconds
from sidemesh.api.networking.re2_syntax import regex_problem

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Istio's host labels allow upper case and underscores are refused (RFC 1123, case-insensitive).
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 7230 token
MAX_REGEX_LENGTH = 1024  # Istio's limit (it approximates Envoy's RE2 program size by length)


class Model(BaseModel):
    """Frozen, unknown fields refused, Istio's camelCase in files (Python names inside)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- durations and percentages -------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """A duration as Istio's YAML writes it (`1s`, `500ms`, `1m30s`, `1.5s`, `1h`).
    Raises ValueError."""
    if not isinstance(text, str) or not text:
        raise ValueError("must be a duration such as 1s, 500ms or 1m")
    seconds = go_duration_seconds(text)
    if seconds is None:
        raise ValueError(f"{text!r} is not a duration such as 1s, 500ms or 1m")
    return timedelta(seconds=seconds)


def _duration_at_least_1ms(text: str) -> str:
    # Istio (agent.ValidateDuration): at least 1ms, and whole milliseconds.
    value = parse_duration(text)
    if value < timedelta(milliseconds=1):
        raise ValueError("duration must be at least 1ms")
    if value.microseconds % 1000:
        raise ValueError("only durations to ms precision are supported")
    return text


def _duration_or_zero(text: str) -> str:
    """A duration where `0s` means "disabled" (tcp idleTimeout, route timeout)."""
    return text if parse_duration(text) == timedelta(0) else _duration_at_least_1ms(text)


Duration = Annotated[str, AfterValidator(_duration_at_least_1ms)]
DurationOrZero = Annotated[str, AfterValidator(_duration_or_zero)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
NonNegative = Annotated[int, Field(ge=0)]


class Percent(Model):
    """Istio's `Percent`: `{value: 0.1}` is one request in a thousand."""

    value: float = Field(0.0, ge=0, le=100)


# --- matches, destinations, selectors ------------------------------------------------------


class StringMatch(Model):
    """At most one of exact, prefix, regex (an empty match in `headers` means "present")."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class PortSelector(Model):
    number: PortNumber


class Destination(Model):
    host: str
    subset: str | None = None
    port: PortSelector | None = None


class WorkloadSelector(Model):
    labels: dict[str, str] = Field(default_factory=dict)


class Port(Model):
    """A server or service port (Gateway, ServiceEntry, Sidecar)."""

    number: Annotated[int, Field(ge=0, le=65535)]
    protocol: str | None = None
    name: str | None = None
    target_port: PortNumber | None = Field(None, alias="targetPort")


PROTOCOLS = frozenset(
    {"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP"}
)
TLSMode = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]


# --- issues --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """One problem: where (`spec.http[0].route[1].weight`) and what, in words."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Issues:
    """Collects issues while the semantic checks walk a spec."""

    found: list[Issue] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.found.append(Issue(path, message))


def field_path(location: Iterable[Any]) -> str:
    """pydantic's error location as a YAML path: ("spec", "http", 0, "route") →
    `spec.http[0].route`."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


# --- shared checks -------------------------------------------------------------------------


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_ip_or_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def is_dns_label(text: str) -> bool:
    """A Kubernetes name: DNS-1123 label (namespaces, subsets, gateways)."""
    return len(text) <= 63 and bool(_DNS_LABEL.match(text))


def host_error(host: str, *, allow_full_wildcard: bool = True) -> str | None:
    """Why `host` is not a DNS name with an optional leading `*` (Istio's
    ValidateWildcardDomain), or None. Short names (`reviews`) are fine."""
    if host == "*":
        return None if allow_full_wildcard else "the wildcard host * is not allowed here"
    if not host:
        return "host must not be empty"
    if len(host) > 255:
        return f"host {host!r} is longer than 255 characters"
    labels = host.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    elif labels[0].startswith("*"):
        labels[0] = labels[0][1:]  # a partial wildcard (`*foo.com`): Istio accepts it
        if not labels[0]:
            return f"host {host!r} is not a valid DNS name"
    if host.endswith("."):
        labels = labels[:-1]
    for label in labels:
        if not label or len(label) > 63 or not _HOST_LABEL.match(label):
            return f"host {host!r} is not a valid DNS name (label {label!r})"
    return None


def check_host(issues: Issues, path: str, host: str, *, allow_full_wildcard: bool = True) -> None:
    error = host_error(host, allow_full_wildcard=allow_full_wildcard)
    if error:
        issues.add(path, error)


def check_namespace_host(issues: Issues, path: str, value: str) -> None:
    """`namespace/dnsName` as Sidecar egress and Gateway servers write it: the namespace is
    `.`, `*`, `~` or a namespace name; the host a DNS name, `*` or `*.suffix`."""
    namespace, sep, host = value.partition("/")
    if not sep:
        issues.add(path, f"{value!r} must be of the form namespace/dnsName")
        return
    if namespace not in (".", "*", "~") and not is_dns_label(namespace):
        issues.add(path, f"invalid namespace {namespace!r} in {value!r}")
    error = host_error(host)
    if error:
        issues.add(path, error)


def check_export_to(issues: Issues, path: str, export_to: Iterable[str]) -> None:
    """Istio's exportTo: `.`, `*`, `~` or namespace names; no repeats; `*` and `~` alone."""
    values = list(export_to)
    for index, value in enumerate(values):
        if value not in (".", "*", "~") and not is_dns_label(value):
            issues.add(f"{path}[{index}]", f"{value!r} is not '.', '*', '~' or a namespace name")
        if value in values[:index]:
            issues.add(f"{path}[{index}]", f"duplicate entry {value!r}")
    for alone in ("*", "~"):
        if alone in values and len(set(values)) > 1:
            issues.add(path, f"{alone!r} cannot be combined with other entries")


def check_string_match(
    issues: Issues, path: str, match: StringMatch | None, *, required: bool = False
) -> None:
    """At most one of exact/prefix/regex (exactly one when `required`); no empty prefix or
    regex; the regex is one Envoy accepts (RE2 syntax and program size: `re2_syntax`)."""
    if match is None:
        return
    chosen = [n for n in ("exact", "prefix", "regex") if getattr(match, n) is not None]
    if len(chosen) > 1:
        issues.add(path, f"only one of exact, prefix or regex may be set (found {chosen})")
    elif required and not chosen:
        issues.add(path, "one of exact, prefix or regex is required")
    if match.prefix == "":
        issues.add(f"{path}.prefix", "prefix string match must not be empty")
    if match.regex is not None:
        check_regex(issues, f"{path}.regex", match.regex)


def check_regex(issues: Issues, path: str, pattern: str) -> None:
    if not pattern:
        issues.add(path, "regex string match must not be empty")
    elif len(pattern) > MAX_REGEX_LENGTH:
        issues.add(path, f"regex is too large, max length allowed is {MAX_REGEX_LENGTH}")
    else:
        problem = regex_problem(pattern)
        if problem is not None:
            issues.add(path, problem)


def check_destination(issues: Issues, path: str, destination: Destination) -> None:
    if destination.host == "*":
        issues.add(f"{path}.host", "invalid destination host *")
    else:
        error = host_error(destination.host)
        if error:
            issues.add(f"{path}.host", error)
    if destination.subset is not None and not is_dns_label(destination.subset):
        issues.add(f"{path}.subset", f"subset name {destination.subset!r} is not a DNS-1123 label")


def check_header_names(issues: Issues, path: str, names: Iterable[str]) -> None:
    for name in names:
        if not _HEADER_NAME.match(name):
            issues.add(f"{path}.{name}", f"invalid header name {name!r}")


def check_labels(issues: Issues, path: str, labels: Mapping[str, str]) -> None:
    for key in labels:
        name = key.rpartition("/")[2]
        if not name or len(name) > 63 or not re.match(r"^[A-Za-z0-9]([-_.A-Za-z0-9]*)?$", name):
            issues.add(f"{path}.{key}", f"invalid label key {key!r}")


def check_port(issues: Issues, path: str, port: Port, *, name_required: bool) -> None:
    if port.number == 0:
        issues.add(f"{path}.number", "port number must be between 1 and 65535")
    if port.protocol is not None and port.protocol.upper() not in PROTOCOLS:
        issues.add(f"{path}.protocol", f"unrecognized protocol {port.protocol!r}")
    if name_required and not port.name:
        issues.add(f"{path}.name", "port name is required")
