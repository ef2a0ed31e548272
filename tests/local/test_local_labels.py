"""kubectl's label syntax and selectors, with kubectl's messages."""

from __future__ import annotations

import pytest

from sidemesh.local.labels import (
    LabelError,
    LabelUpdate,
    apply_label_update,
    format_labels,
    parse_label_args,
    parse_selector,
)


def test_the_guides_label_command() -> None:
    update = parse_label_args(["istio-injection-", "istio.io/rev=asm-173-3"])
    assert update == LabelUpdate(set={"istio.io/rev": "asm-173-3"}, remove=("istio-injection",))
    result = apply_label_update({"istio-injection": "enabled", "team": "a"}, update, overwrite=True)
    assert result.labels == {"team": "a", "istio.io/rev": "asm-173-3"}
    assert result.changed and result.notes == ()


def test_removing_a_missing_label_is_a_note_not_an_error() -> None:
    update = parse_label_args(["istio-injection-", "istio.io/rev=canary"])
    result = apply_label_update({}, update, overwrite=True)
    assert result.notes == ('label "istio-injection" not found.',)
    assert result.labels == {"istio.io/rev": "canary"}


def test_changing_a_value_needs_overwrite() -> None:
    update = parse_label_args(["istio.io/rev=canary"])
    with pytest.raises(
        LabelError,
        match=r"'istio.io/rev' already has a value \(stable\), "
        "and --overwrite is false",
    ):
        apply_label_update({"istio.io/rev": "stable"}, update, overwrite=False)
    same = apply_label_update({"istio.io/rev": "canary"}, update, overwrite=False)
    assert not same.changed  # setting the same value is fine and changes nothing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bad key=x"], "invalid label spec"),
        (["k=bad value"], "invalid label value"),
        (["k=" + "v" * 64], "invalid label value"),
        (["nodash"], "invalid label spec: nodash"),
        (["k=v", "k-"], "can not both modify and remove"),
        (["UPPER.example/x=1"], "prefix part must be a lowercase RFC 1123 subdomain"),
    ],
)
def test_invalid_label_arguments(args: list[str], message: str) -> None:
    with pytest.raises(LabelError, match=message):
        parse_label_args(args)


def test_empty_value_is_allowed() -> None:
    assert parse_label_args(["k="]).set == {"k": ""}


def test_labels_column_sorts_pairs_as_strings() -> None:
    # The guide's order: `istio.io/rev=` sorts before `istio=` because '.' < '='.
    labels = {
        "pod-template-hash": "5788d57586",
        "istio": "istiod",
        "app": "istiod",
        "istio.io/rev": "asm-173-3",
    }
    assert format_labels(labels) == (
        "app=istiod,istio.io/rev=asm-173-3,istio=istiod,pod-template-hash=5788d57586"
    )
    assert format_labels({}) == "<none>"


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=istiod", {"app": "istiod"}, True),
        ("app==istiod", {"app": "web"}, False),
        ("app!=web", {}, True),  # != matches objects without the label
        ("app in (web, api)", {"app": "api"}, True),
        ("app notin (web,api)", {"app": "db"}, True),
        ("app notin (web,api)", {}, True),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("app=istiod,istio.io/rev=asm-173-3", {"app": "istiod", "istio.io/rev": "asm-173-3"}, True),
        ("app=istiod,istio.io/rev=canary", {"app": "istiod", "istio.io/rev": "asm-173-3"}, False),
        ("env in (a,b),tier", {"env": "b", "tier": "x"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(selector).matches(labels) is expected


@pytest.mark.parametrize("selector", ["app in (a", "app in ()", "=x", "app=a b", ",app"])
def test_bad_selectors(selector: str) -> None:
    with pytest.raises(LabelError):
        parse_selector(selector)
