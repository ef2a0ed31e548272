"""The image definition: well-formed, pinned, non-root, and its entrypoint really exists."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KNOWN = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "USER", "ENTRYPOINT", "CMD",
         "LABEL", "EXPOSE", "HEALTHCHECK", "SHELL", "STOPSIGNAL", "VOLUME", "ONBUILD"}  # fmt: skip


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        pending += (" " if pending else "") + stripped.rstrip("\\").strip()
        if stripped.endswith("\\"):
            continue
        word, _, rest = pending.partition(" ")
        out.append((word, rest.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def test_instructions_are_well_formed() -> None:
    parsed = instructions()
    assert parsed[0][0] == "FROM"
    for word, rest in parsed:
        assert word in KNOWN and word == word.upper(), word
        assert rest, f"{word} without arguments"


def test_base_images_are_pinned() -> None:
    pinned = re.compile(r"^[\w./-]+(:\d+\.\d+\.\d+[\w.-]*)?(@sha256:[0-9a-f]{64})?$")
    for word, rest in instructions():
        if word != "FROM":
            continue
        image = rest.split()[0]
        assert pinned.match(image) and (":" in image or "@" in image), image
        assert "latest" not in image


def test_packages_are_pinned() -> None:
    runs = [rest for word, rest in instructions() if word == "RUN"]
    for run in runs:
        for package in re.findall(r"apt-get install [^&]*", run):
            for name in package.split()[2:]:
                if not name.startswith("-"):
                    assert "=" in name, f"apt package {name} is not pinned"
        for spec in re.findall(r"pip install ([^&]+)", run):
            for name in spec.split():
                if not name.startswith(("-", '"', ".")):
                    assert "==" in name, f"pip package {name} is not pinned"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("proxy", "kube"):
        wanted += project["optional-dependencies"][extra]
    for requirement in wanted:
        assert "==" in requirement, f"{requirement} is not pinned in pyproject.toml"


def test_runs_as_the_proxy_uid_not_root() -> None:
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users, "no USER: the image would run as root"
    final = users[-1].split(":")[0]
    assert final not in ("root", "0")
    assert final == "1337"


def test_entrypoint_is_the_sidemesh_command() -> None:
    (entrypoint,) = [rest for word, rest in instructions() if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["sidemesh"]  # exec form
    assert not [rest for word, rest in instructions() if word == "CMD"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sidemesh"] == "sidemesh.cli.main:main"


@pytest.mark.parametrize("command", ["discovery", "agent", "iptables"])
def test_the_commands_the_pods_run_exist(command: str) -> None:
    from sidemesh.cli.main import _COMMANDS

    module, _, attribute = _COMMANDS[command].partition(":")
    assert importlib.util.find_spec(module) is not None, f"{module} is missing"
    loaded = importlib.import_module(module)
    assert hasattr(loaded, attribute)


def test_copied_sources_exist_and_dockerignore_keeps_the_context_small() -> None:
    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[1:2] == ["*"] or "*" in ignore
    assert "!src/" in ignore and "!pyproject.toml" in ignore
