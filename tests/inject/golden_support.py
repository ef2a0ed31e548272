"""The golden corpus under tests/data/inject: one small input per edge case, its expected
kube-inject output beside it, and optional per-case settings files.

    <case>.yaml             input manifest
    <case>.injected.yaml    expected `sidemesh kube-inject` output
    <case>.values.yaml      injector values   (--values), when present
    <case>.mesh.yaml        MeshConfig        (--mesh-config), when present
    <case>.config.yaml      injector config   (--injector-config), when present

Set SIDEMESH_UPDATE_GOLDEN=1 to rewrite the .injected.yaml files (the run then fails), then
review them by eye.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from golden_files import updating
from sidemesh.cli.kube_inject import kube_inject
from sidemesh.inject.engine import Injector

DATA = Path(__file__).resolve().parent.parent / "data" / "inject"
UPDATE = updating()

_SETTINGS = (
    (".values.yaml", "--values", "values"),
    (".mesh.yaml", "--mesh-config", "mesh_config"),
    (".config.yaml", "--injector-config", "injector_config"),
)


@dataclass(frozen=True)
class GoldenCase:
    name: str

    @property
    def source(self) -> Path:
        return DATA / f"{self.name}.yaml"

    @property
    def expected(self) -> Path:
        return DATA / f"{self.name}.injected.yaml"

    def _settings(self) -> list[tuple[str, str, Path]]:
        found = []
        for suffix, option, keyword in _SETTINGS:
            path = DATA / f"{self.name}{suffix}"
            if path.exists():
                found.append((option, keyword, path))
        return found

    def cli_options(self) -> list[str]:
        return [part for option, _, path in self._settings() for part in (option, str(path))]

    def injector(self) -> Injector:
        """The injector kube-inject builds for this case, for the webhook-side checks."""
        files = {keyword: path for _, keyword, path in self._settings()}
        return Injector.from_files(**files)

    def expected_documents(self) -> list[Any]:
        return load_documents(self.expected.read_text(encoding="utf-8"))


def golden_cases() -> list[GoldenCase]:
    """Inputs are the files with exactly one dot: `<case>.yaml`."""
    inputs = sorted(p for p in DATA.glob("*.yaml") if p.name.count(".") == 1)
    return [GoldenCase(p.name[: -len(".yaml")]) for p in inputs]


def run_kube_inject(case: GoldenCase, source: Path | None = None) -> Result:
    args = ["-f", str(source or case.source), *case.cli_options()]
    return CliRunner().invoke(kube_inject, args, catch_exceptions=False)


def load_documents(text: str) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d is not None]
