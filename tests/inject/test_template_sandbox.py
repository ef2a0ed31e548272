"""A custom template (from the injector config, so from a ConfigMap) renders in Jinja2's
sandbox: it sees the values it is given and nothing of Python behind them."""

from __future__ import annotations

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment as Sandbox

from sidemesh.inject.template import TemplateError, TemplateSet

CONTEXT = {"values": {"global": {"hub": "docker.io/sidemesh"}}, "names": ["a", "b"]}

ESCAPES = {
    "class walk": "x: {{ names.__class__.__mro__ }}",
    "subclasses": "x: {{ ''.__class__.__base__.__subclasses__() }}",
    "globals of a method": "x: {{ names.append.__self__ }}",
    "mutation": "x: {{ names.append('c') }}",
    "dict mutation": "x: {{ values.update({'global': {}}) }}",
    "huge range": "x: {% for i in range(10**9) %}{% endfor %}",
}


@pytest.mark.parametrize("source", ESCAPES.values(), ids=ESCAPES.keys())
def test_a_custom_template_cannot_reach_python(source: str) -> None:
    templates = TemplateSet({"evil": source})
    with pytest.raises(TemplateError, match="template evil"):
        templates.render("evil", CONTEXT)
    assert CONTEXT["names"] == ["a", "b"]


def test_a_custom_template_still_renders_values() -> None:
    templates = TemplateSet({"plain": "hub: {{ values.global.hub }}\nn: {{ names | length }}\n"})
    assert templates.render("plain", CONTEXT) == {"hub": "docker.io/sidemesh", "n": 2}


def test_only_builtins_skip_the_sandbox() -> None:
    assert not isinstance(TemplateSet()._compiled["sidecar"].environment, Sandbox)
    replaced = TemplateSet({"sidecar": "a: 1\n"})
    assert isinstance(replaced._compiled["sidecar"].environment, Sandbox)
    # A custom include would render inside the built-in that includes it.
    evil = TemplateSet({"proxy-container": "{{ ''.__class__.__base__.__subclasses__() }}"})
    assert isinstance(evil._compiled["sidecar"].environment, Sandbox)
