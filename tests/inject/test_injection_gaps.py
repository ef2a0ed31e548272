"""Gaps against Istio's injector, closed: the kubevirtInterfaces annotation (istio-init's -k),
CIDRs passed on as written, interface names the capture accepts, and label values the API
server accepts (canonical names cut to 63 characters)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from sidemesh.api import kube_names
from sidemesh.capture.config import parse_capture_config
from sidemesh.inject.annotations import InvalidAnnotation, parse_cidr_list, parse_interface_list
from sidemesh.inject.engine import Injector
from sidemesh.inject.identity import Workload, canonical_name, canonical_revision

KUBEVIRT = "traffic.sidecar.istio.io/kubevirtInterfaces"
REROUTE = "istio.io/reroute-virtual-interfaces"
INJECTOR = Injector()


def _pod(annotations: dict[str, str] | None = None, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": annotations or {}, **metadata},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }


def _capture_args(pod: dict[str, Any]) -> list[str]:
    injected = INJECTOR.inject(pod, "shop")
    (init,) = [c for c in injected["spec"]["initContainers"] if c["name"] == "istio-init"]
    args: list[str] = init["args"]
    return args


def _flag(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, None),
        ({KUBEVIRT: "k6t-eth0"}, "k6t-eth0"),
        ({REROUTE: "tap0"}, "tap0"),
        ({KUBEVIRT: "k6t-eth0", REROUTE: "tap0"}, "tap0"),  # the newer annotation wins
        ({KUBEVIRT: " k6t-eth0 , tap1 "}, "k6t-eth0,tap1"),
        ({KUBEVIRT: "bad name!", REROUTE: "tap0"}, "tap0"),  # ignored, so not read
    ],
)
def test_virtual_interfaces_become_dash_k(annotations: dict[str, str], expected: str) -> None:
    assert _flag(_capture_args(_pod(annotations)), "-k") == expected


def test_a_bad_kubevirt_interface_denies_the_pod_naming_the_annotation() -> None:
    outcome = INJECTOR.admit(_pod({KUBEVIRT: "eth0;reboot"}), "shop")
    assert outcome.kind == "denied"
    assert outcome.reason.startswith(f'annotation {KUBEVIRT}="eth0;reboot" is invalid')


@pytest.mark.parametrize(
    ("written", "passed_on"),
    [
        ("10.1.2.3/8", "10.1.2.3/8"),
        ("10.96.0.1", "10.96.0.1"),
        (" 10.0.0.0/8 , fd00::1/8 ", "10.0.0.0/8,fd00::1/8"),
        ("2001:DB8::/32", "2001:DB8::/32"),
    ],
)
def test_cidrs_are_passed_on_as_written(written: str, passed_on: str) -> None:
    assert parse_cidr_list("a", written) == passed_on
    args = _capture_args(_pod({"traffic.sidecar.istio.io/excludeOutboundIPRanges": written}))
    assert _flag(args, "-x") == passed_on


def test_the_capture_reads_host_bits_as_the_network() -> None:
    args = _capture_args(_pod({"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.1.2.3/8"}))
    config = parse_capture_config(include_outbound_ranges=_flag(args, "-i") or "")
    assert [str(n) for n in config.include_outbound_ranges] == ["10.0.0.0/8"]


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "300.1.1.1", "*,10.0.0.0/8", "10.0.0.0/8/8"])
def test_invalid_cidrs_are_still_refused(bad: str) -> None:
    with pytest.raises(InvalidAnnotation):
        parse_cidr_list("a", bad)


@pytest.mark.parametrize(
    "name",
    ["eth0", "k6t-eth0", "veth+", "br_0.10", "a" * 15, "a" * 16, "eth0:1", "net@if2", "e+0",
     "tap 0", "+"],
)  # fmt: skip
def test_admission_accepts_exactly_the_interface_names_capture_accepts(name: str) -> None:
    try:
        parse_capture_config(reroute_virtual_interfaces=name)
        capture_ok = True
    except ValueError:
        capture_ok = False
    try:
        admitted = parse_interface_list("a", name) == name
    except InvalidAnnotation:
        admitted = False
    assert admitted == capture_ok, name


# --- label values ------------------------------------------------------------------------

_SUBDOMAIN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-."
object_names = st.text(_SUBDOMAIN_CHARS, min_size=1, max_size=253).filter(
    lambda n: not kube_names.dns1123_subdomain(n)
)


@seed(15)
@settings(max_examples=200, deadline=None, derandomize=True)
@given(name=object_names)
def test_canonical_name_from_any_workload_name_is_a_valid_label(name: str) -> None:
    value = canonical_name({}, Workload(name=name, kind="Deployment", api_version="apps/v1"))
    assert kube_names.label_value(value) == []
    assert name.startswith(value)  # a prefix of the name, never made up


@seed(15)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    name=object_names,
    generate=st.booleans(),
    kind=st.sampled_from(["ReplicaSet", "Job", "StatefulSet", None]),
)
def test_every_label_the_injector_writes_is_valid(
    name: str, generate: bool, kind: str | None
) -> None:
    metadata: dict[str, Any] = {"generateName": name + "-"} if generate else {"name": name}
    metadata["labels"] = {"pod-template-hash": "5d4f8b9c7"}
    if kind is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": kind, "name": name, "controller": True, "uid": "u"}
        ]
    pod = _pod(**metadata)
    pod["metadata"].pop("annotations")
    if generate:
        pod["metadata"].pop("name")
    injected = INJECTOR.inject(pod, "shop")
    for key, value in injected["metadata"]["labels"].items():
        assert kube_names.label_value(value) == [], (key, value)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({}, "latest"),
        ({"version": "v1"}, "v1"),
        ({"app.kubernetes.io/version": "1.2.3", "version": "v1"}, "1.2.3"),
        ({"service.istio.io/canonical-revision": "canary"}, "canary"),
    ],
)
def test_canonical_revision(labels: dict[str, str], expected: str) -> None:
    assert canonical_revision(labels) == expected
