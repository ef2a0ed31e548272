"""Options shared by the commands that build an injector from files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from sidemesh.api.config import ConfigError
from sidemesh.inject.engine import Injector
from sidemesh.inject.template import TemplateError

F = TypeVar("F", bound=Callable[..., Any])

_file = click.Path(exists=False, dir_okay=False, path_type=Path)


def injector_options(function: F) -> F:
    for option in reversed(
        [
            click.option(
                "--revision", default="default", show_default=True, help="Control-plane revision."
            ),
            click.option(
                "--injector-config",
                type=_file,
                help="Injector config (policy, selectors, templates).",
            ),
            click.option("--mesh-config", type=_file, help="MeshConfig YAML."),
            click.option("--values", "values_file", type=_file, help="Injector values YAML."),
        ]
    ):
        function = option(function)
    return function


def build_injector(
    revision: str, injector_config: Path | None, mesh_config: Path | None, values_file: Path | None
) -> Injector:
    try:
        return Injector.from_files(
            revision=revision,
            injector_config=injector_config,
            mesh_config=mesh_config,
            values=values_file,
        )
    except (ConfigError, TemplateError) as exc:
        raise click.ClickException(str(exc)) from exc
