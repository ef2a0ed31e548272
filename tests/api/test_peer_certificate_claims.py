"""The workload a certificate request claims, and the subject unit that carries it to the server
side of a TCP connection (`api/telemetry/peer_certificate.py`): what the CA accepts, what it
writes, and that reading the unit back gives the same workload."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from sidemesh.api.telemetry.peer import UNKNOWN, WorkloadMetadata
from sidemesh.api.telemetry.peer_certificate import (
    CSR_METADATA_KEY,
    FIELDS,
    claim,
    claimed_workload,
    parse_subject_unit,
    subject_unit,
)

ALNUM = string.ascii_letters + string.digits
INNER = ALNUM + "._-"

# A label value: alphanumeric at both ends, `.`, `_`, `-` inside; 1..63 characters.
_label_value = st.one_of(
    st.sampled_from(ALNUM),
    st.builds(
        lambda first, middle, last: first + middle + last,
        st.sampled_from(ALNUM),
        st.text(alphabet=INNER, max_size=61),
        st.sampled_from(ALNUM),
    ),
)
values = st.one_of(st.sampled_from([UNKNOWN, "latest"]), _label_value)
workloads = st.builds(WorkloadMetadata, **{name: values for name in FIELDS})

CALLER = WorkloadMetadata(
    workload="web-v1", namespace="demo", app="web", version="v1",
    canonical_service="web", canonical_revision="v1",
)  # fmt: skip


def _metadata(**overrides: Any) -> dict[str, Any]:
    """Request metadata whose claim is `CALLER` with some values replaced."""
    return {CSR_METADATA_KEY: {**claim(CALLER), **overrides}}


@seed(20261205)
@settings(max_examples=300, deadline=None, database=None)
@given(workloads)
def test_a_claim_round_trips_through_the_subject_unit(workload: WorkloadMetadata) -> None:
    metadata = {CSR_METADATA_KEY: claim(workload)}
    accepted = claimed_workload(metadata, namespace=workload.namespace)
    assert accepted == workload
    unit = subject_unit(accepted)
    assert unit.count("/") == len(FIELDS)
    assert parse_subject_unit(unit) == workload


def test_the_claim_names_every_field_in_order() -> None:
    assert list(claim(CALLER)) == list(FIELDS)
    assert subject_unit(CALLER) == "sidemesh.peer/web-v1/demo/web/v1/web/v1"


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"other.io/key": claim(CALLER)},
        {CSR_METADATA_KEY: None},
        {CSR_METADATA_KEY: "web-v1"},
        {CSR_METADATA_KEY: ["web-v1", "demo"]},
        {CSR_METADATA_KEY: 7},
    ],
    ids=["empty", "other-key", "null", "string", "list", "number"],
)
def test_without_a_claim_mapping_nothing_is_written(metadata: dict[str, Any]) -> None:
    assert claimed_workload(metadata, namespace="demo") is None


@pytest.mark.parametrize(
    "namespace",
    ["shop", "Demo", "demo ", "", None, 7, "x" * 254],
    ids=["other", "case", "space", "empty", "null", "number", "too-long"],
)
def test_a_claim_for_another_namespace_is_not_written(namespace: object) -> None:
    """The namespace must be the caller's, as the CA knows it from the caller's token; a
    namespace that is not a plain value reads `unknown`, which is not the caller's either."""
    assert claimed_workload(_metadata(namespace=namespace), namespace="demo") is None


def test_a_claim_without_a_namespace_is_not_written() -> None:
    claimed = {k: v for k, v in claim(CALLER).items() if k != "namespace"}
    assert claimed_workload({CSR_METADATA_KEY: claimed}, namespace="demo") is None


@pytest.mark.parametrize(
    "value",
    [
        "a b",
        "a,b",
        "a/b",
        "a=b",
        "a+b",
        "né",
        "ü",
        "",
        "x" * 254,
        7,
        1.5,
        None,
        True,
        ["web"],
        {"app": "web"},
        "-web",
        "web-",
        ".web",
        "web.",
        "_web",
        "a\n",
        "a;b",
        "a\\b",
        'a"b',
        "a<b",
        "#web",
        "a\x00b",
    ],
    ids=lambda value: repr(value)[:16],
)
@pytest.mark.parametrize("field", [f for f in FIELDS if f != "namespace"])
def test_a_value_that_is_not_a_plain_label_value_reads_unknown(field: str, value: object) -> None:
    accepted = claimed_workload(_metadata(**{field: value}), namespace="demo")
    expected = WorkloadMetadata(**{**claim(CALLER), field: UNKNOWN})
    assert accepted == expected


@pytest.mark.parametrize("field", [f for f in FIELDS if f != "namespace"])
def test_a_missing_value_reads_unknown(field: str) -> None:
    claimed = {k: v for k, v in claim(CALLER).items() if k != field}
    accepted = claimed_workload({CSR_METADATA_KEY: claimed}, namespace="demo")
    assert accepted == WorkloadMetadata(**{**claim(CALLER), field: UNKNOWN})


@pytest.mark.parametrize(
    "value",
    ["a", "7", "x" * 253, "a.b_c-d", "A-Z_0.9", "latest", UNKNOWN],
    ids=lambda value: repr(value)[:16],
)
def test_plain_label_values_are_kept(value: str) -> None:
    accepted = claimed_workload(_metadata(app=value), namespace="demo")
    assert accepted == WorkloadMetadata(**{**claim(CALLER), "app": value})


def test_keys_outside_the_fields_are_ignored() -> None:
    metadata = _metadata(principal="spiffe://cluster.local/ns/demo/sa/admin", extra="x")
    assert claimed_workload(metadata, namespace="demo") == CALLER


@pytest.mark.parametrize(
    "unit",
    [
        "",
        "sidemesh.peer",
        "sidemesh.peer/web-v1/demo/web/v1/web",
        "sidemesh.peer/web-v1/demo/web/v1/web/v1/extra",
        "sidemesh.peer/a/b",
        "other.peer/web-v1/demo/web/v1/web/v1",
        "OU=sidemesh.peer/web-v1/demo/web/v1/web/v1",
    ],
    ids=["empty", "prefix-only", "too-few", "too-many", "two", "other-prefix", "with-ou"],
)
def test_a_unit_of_another_shape_reads_nothing(unit: str) -> None:
    assert parse_subject_unit(unit) is None
