"""Sidecar templates: Jinja2 that renders YAML, compiled once per injector.

A custom template (from the injector config, so from a ConfigMap) is untrusted input and renders
in Jinja2's immutable sandbox. Rendering is cheap (compiled Python); parsing YAML is not (PyYAML
takes ~1 ms for the default template, `yaml_subset` about a quarter of that, same result), so
parsed results are cached by the rendered text. Replicas of one workload render identical text,
which makes the steady state of a rollout one render plus a dictionary lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jinja2
import orjson
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sidemesh.inject import yaml_subset

BUILTIN_TEMPLATES = ("sidecar", "gateway", "grpc-simple", "grpc-agent")
_INCLUDES = ("proxy-container",)


class TemplateError(Exception):
    """A template failed to render or did not produce a mapping; the message names it."""


def _builtin_sources() -> dict[str, str]:
    folder = resources.files("sidemesh") / "data" / "templates"
    return {
        name: (folder / f"{name}.yaml.j2").read_text(encoding="utf-8")
        for name in BUILTIN_TEMPLATES + _INCLUDES
    }


def _tojson(value: Any) -> str:
    # JSON is a subset of YAML 1.2 flow style and always safely quoted.
    return orjson.dumps(value).decode()


def _environment(kind: type[jinja2.Environment], loader: jinja2.BaseLoader) -> jinja2.Environment:
    environment = kind(
        loader=loader, undefined=jinja2.StrictUndefined, autoescape=False,
        keep_trailing_newline=True,
    )  # fmt: skip
    environment.filters["tojson"] = _tojson
    return environment


class TemplateSet:
    """Built-in templates overlaid by custom ones (same name replaces the built-in)."""

    def __init__(self, custom: Mapping[str, str] | None = None, *, cache_size: int = 512) -> None:
        builtin = _builtin_sources()
        sources = {**builtin, **(custom or {})}
        loader = jinja2.DictLoader(sources)
        # A custom template may come from a ConfigMap: it renders in the sandbox, kept to the
        # values it is given (no attribute walks to Python internals, no mutation, bounded
        # ranges). The built-in ones are our code and skip its per-access checks (~30 % of a
        # render).
        # A custom include would render inside the built-ins: then everything is sandboxed.
        overrides_include = any(name in sources and name in (custom or {}) for name in _INCLUDES)
        trusted = _environment(jinja2.Environment, jinja2.DictLoader(builtin))
        sandboxed = _environment(ImmutableSandboxedEnvironment, loader)
        self.names = frozenset(n for n in sources if n not in _INCLUDES)
        self._compiled: dict[str, jinja2.Template] = {}
        for name in self.names:
            is_builtin = sources[name] is builtin.get(name) and not overrides_include
            environment = trusted if is_builtin else sandboxed
            try:
                self._compiled[name] = environment.get_template(name)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"template {name}: line {exc.lineno}: {exc.message}") from exc
        self._parsed: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size

    def render(self, name: str, context: Mapping[str, Any]) -> dict[str, Any]:
        """Render template `name` and parse it; returns a fresh object the caller may mutate."""
        template = self._compiled.get(name)
        if template is None:
            raise TemplateError(
                f"template {name!r} does not exist (have: {', '.join(sorted(self.names))})"
            )
        try:
            text = template.render(context)
        except Exception as exc:  # a custom template is untrusted code: any failure is its own
            raise TemplateError(f"template {name}: {type(exc).__name__}: {exc}") from exc
        cached = self._parsed.get(text)
        if cached is not None:
            self._parsed.move_to_end(text)
            parsed: Any = orjson.loads(cached)  # a private copy, cheaper than deepcopy
            return parsed  # type: ignore[no-any-return]
        try:
            parsed = yaml_subset.load(text)
        except yaml.YAMLError as exc:
            raise TemplateError(f"template {name} rendered invalid YAML: {exc}") from exc
        if parsed is None:
            parsed = {}
        if not isinstance(parsed, dict):
            raise TemplateError(
                f"template {name} must render a mapping, got {type(parsed).__name__}"
            )
        self._parsed[text] = orjson.dumps(parsed)
        if len(self._parsed) > self._cache_size:
            self._parsed.popitem(last=False)
        return parsed
