"""Install values: files and --set are checked completely, and errors name the key or file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidemesh.api.config import ConfigError
from sidemesh.install.overrides import load_install_values, parse_assignment
from sidemesh.install.values import InstallValues


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("pilot.replicaCount=3", ("pilot", "replicaCount"), 3),
        ("global.tag=1.10", ("global", "tag"), "1.10"),  # text fields stay text
        ("global.hub=docker.io/x", ("global", "hub"), "docker.io/x"),
        ("global.imagePullSecrets={a,b}", ("global", "imagePullSecrets"), ["a", "b"]),
        ("global.imagePullSecrets=[a, b]", ("global", "imagePullSecrets"), ["a", "b"]),
        ("sidecarInjectorWebhook.reinvocationPolicy=IfNeeded",
         ("sidecarInjectorWebhook", "reinvocationPolicy"), "IfNeeded"),
        ("sidecarInjectorWebhook.injectedAnnotations.example\\.com/x=true",
         ("sidecarInjectorWebhook", "injectedAnnotations", "example.com/x"), "true"),
        ("pilot.env.LOG_LEVEL=debug", ("pilot", "env", "LOG_LEVEL"), "debug"),
        ("global.defaultPodDisruptionBudget.enabled=false",
         ("global", "defaultPodDisruptionBudget", "enabled"), False),
    ],
)  # fmt: skip
def test_set_parses_keys_and_values(text: str, path: tuple[str, ...], value: object) -> None:
    assignment = parse_assignment(text)
    assert assignment.path == path
    assert assignment.value == value


@pytest.mark.parametrize(
    ("text", "named", "hint"),
    [
        ("pilot.replicas=3", "'pilot.replicas'", "did you mean pilot.replicaCount?"),
        ("globl.hub=x", "'globl'", "did you mean global?"),
        ("global.proxy.imag=x", "'global.proxy.imag'", "did you mean global.proxy.image?"),
        ("global.tag.x=1", "global.tag is a single value", "no key 'x'"),
        ("novalue", "--set novalue", "expected key=value"),
        ("a..b=1", "--set a..b=1", "empty key segment"),
    ],
)
def test_unknown_or_malformed_set_keys_are_named(text: str, named: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_assignment(text)
    assert named in str(caught.value)
    assert hint in str(caught.value)


def test_bad_value_type_names_the_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--set pilot.replicaCount=many.*pilot.replicaCount"):
        load_install_values([], ["pilot.replicaCount=many"], revision="r1")


def test_files_merge_in_order_then_sets_win(tmp_path: Path) -> None:
    first = tmp_path / "a.yaml"
    first.write_text("pilot:\n  replicaCount: 3\n  image: one\nglobal:\n  hub: h1\n")
    second = tmp_path / "b.yaml"
    second.write_text("pilot:\n  image: two\n")
    values, revision = load_install_values([first, second], ["global.hub=h2"], revision="canary")
    assert (values.pilot.replica_count, values.pilot.image, values.global_.hub) == (3, "two", "h2")
    assert revision == "canary"
    assert values.control_plane_image() == f"h2/two:{values.global_.tag}"


def test_malformed_values_file_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pilot:\n  replicaCount: [1,\n")
    with pytest.raises(ConfigError, match=rf"{bad}:\d+: not valid YAML"):
        load_install_values([bad], [], revision=None)


def test_unknown_key_in_values_file_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "values.yaml"
    bad.write_text("pilot:\n  replicas: 3\n")
    with pytest.raises(ConfigError, match=rf"{bad}: pilot.replicas: Extra inputs"):
        load_install_values([bad], [], revision=None)


def test_values_file_must_be_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=rf"{bad}: expected a mapping"):
        load_install_values([bad], [], revision=None)


def test_missing_values_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_install_values([tmp_path / "nope.yaml"], [], revision=None)


@pytest.mark.parametrize("revision", ["Asm", "-x", "x_y", "a" * 57, "x."])
def test_invalid_revision_names_are_refused(revision: str) -> None:
    with pytest.raises(ConfigError, match="not a valid revision name"):
        load_install_values([], [], revision=revision)


def test_revision_from_values_and_flag_must_agree() -> None:
    assert load_install_values([], ["revision=blue"], revision=None)[1] == "blue"
    assert load_install_values([], [], revision=None)[1] == "default"
    with pytest.raises(ConfigError, match="contradicts"):
        load_install_values([], ["revision=blue"], revision="green")


def test_injector_values_drop_install_only_keys() -> None:
    values = InstallValues.model_validate(
        {"pilot": {"replicaCount": 5}, "global": {"defaultPodDisruptionBudget": {"enabled": False}},
         "sidecarInjectorWebhook": {"neverInjectSelector": [{"matchLabels": {"a": "b"}}]}}
    )  # fmt: skip
    injector = values.injector_values("blue")
    assert injector.revision == "blue"
    dumped = injector.model_dump(by_alias=True)
    assert "pilot" not in dumped and "defaultPodDisruptionBudget" not in dumped["global"]
    assert values.injector_config().never_inject_selector[0].match_labels == {"a": "b"}
