"""The template YAML loader, case by case: what the fast path reads must come out exactly as
PyYAML's CSafeLoader makes it (YAML 1.1 types included); what it does not read, and malformed
YAML, go to PyYAML and come out (or fail) exactly as before."""

from __future__ import annotations

import pytest
from yaml_subset_support import OUTSIDE, check_same_as_reference

from sidemesh.inject.template import TemplateError, TemplateSet

# Read by the fast path: each must give the reference's value.
INSIDE = {
    "empty": "",
    "comments only": "# nothing\n  # here\n",
    "yaml 1.1 booleans": "a: yes\nb: No\nc: on\nd: OFF\ne: y\nf: n\ng: true\nh: False\n",
    "yaml 1.1 numbers": (
        "octal: 0755\nhex: 0x1F\nbinary: 0b101\nunderscores: 1_000\nsexagesimal: 190:20:30\n"
        "float: 1.5\nexponent: 1.5e+3\nno-exponent-sign: 1.5e3\nno-dot: 1e5\ninf: .inf\n"
        "nan: .NaN\nsigned: +5\nminus-zero: -0\ndot: 3.\nleading-dot: .5\n"
        "octal-1.2: 0o17\n"
    ),
    "nulls": "a: ~\nb: null\nc: Null\nd:\ne: NULL\n",
    "timestamps": (
        "date: 2001-12-14\nstamp: 2001-12-14t21:59:43.10-05:00\nspaced: 2001-12-14 21:59:43.10 -5\n"
    ),
    "keys of every type": "1: int\ntrue: bool\n~: null\n1.5: float\n2001-12-14: date\n'q': s\n",
    "equal keys of different types": "1: int\ntrue: bool\n",
    "duplicate keys": "a: 1\nb: 2\na: 3\n",
    "plain scalars with indicators inside": (
        "url: http://x/y?z=1#frag\nlist: a,b]c{d}\nhash: a#b\ncolon: a:b\nspace-colon: a :b\n"
        'dash: -x\nflag: --proxyLogLevel=warning\nquotes: it\'s "fine"\n'
    ),
    "comments after values": "a: b # c\nd: 'e' # f\ng: [h] # i\nj: # k\n  l: m\n",
    "quoted scalars": (
        'double: "a # b: c"\nsingle: \'it\'\'s\'\nescapes: "q\\"b\\\\n\\nt\\tu\\u00e9s\\/"\n'
        "empty: ''\nnumber: \"0755\"\nbool: 'yes'\n\"quoted key\": 1\n'single key': 2\n"
    ),
    "trailing spaces": "a: b   \nc: 'd'  \ne: [f]  \ng:   \n",
    "nested block mappings": "a:\n  b:\n    c: 1\n  d: 2\ne: 3\n",
    "indented and indentless sequences": "a:\n- 1\n- 2\nb:\n    - 3\n    -   4\nc: 5\n",
    "compact mappings in sequences": "- a: 1\n  b: 2\n-   c: 3\n    d:\n    - 4\n  # x\n- e\n",
    "entries with nested blocks": "-\n  a: 1\n-\n- x\n",
    "indentless sequence in a compact mapping": "- a:\n  - x\n  b: 1\n- c\n",
    "flow collections": (
        "a: {x: 1, y: [on, off, '2', \"3\"], z: {}}\nb: [ ]\nc: {x : 1}\n"
        'd: [a b, c  d , -1]\ne: {"k":1, "m":b, "n" : [1.5e3, 1.5e+3]}\n'
    ),
    "json from tojson": (
        'args: ["-p","15001","","*"]\nres: {"requests":{"cpu":"100m"},"n":[1,2.5,1e5,true,null]}\n'
        'esc: ["\\"q\\"","\\u00e9","a\\/b"]\nquoted merge key: {"<<": 1}\n'
    ),
    "blank lines": "a:\n\n  b: 1\n\n\nc: 2\n",
    "top-level sequence": "- 1\n- a\n- [b]\n",
    "a 1000-character key": "k" * 999 + ": v\n",
}

# Outside the fast path's subset (or malformed): PyYAML decides, with its value or its error.
OUTSIDE_CASES = {
    "anchors and aliases": "a: &x {b: 1}\nc: *x\n",
    "merge keys": "base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n",
    "inline merge": "a:\n  <<: {x: 1}\n",
    "merge as a value": "a: <<\n",
    "value key": "a: =\n",
    "tags": "a: !!str 1\nb: !!int '2'\nc: !!binary aGk=\n",
    "unknown tag": "a: !custom x\n",
    "literal block": "a: |\n  line 1\n  line 2\n",
    "folded block": "a: >-\n  one\n  two\n",
    "multi-line plain": "a: one\n  two\n",
    "multi-line quoted": 'a: "one\n  two"\n',
    "multi-line flow": "a: [1,\n  2]\n",
    "complex key": "? [a, b]\n: c\n",
    "flow key": "[a]: b\n",
    "document markers": "---\na: 1\n...\n",
    "two documents": "a: 1\n---\nb: 2\n",
    "directive": "%YAML 1.1\n---\na: 1\n",
    "tab indentation": "a:\n\tb: 1\n",
    "tab before a colon": "a\t: b\n",
    "tab after a colon": "a:\tb\n",
    "tab in a value": "a: b\tc\n",
    "carriage returns": "a: 1\r\nb: 2\r\n",
    "non-ascii": "a: é\nb: \u2028\n",
    "escapes json lacks": 'a: "\\x41\\e\\N\\_"\n',
    "surrogate escape": 'a: "\\ud83d\\ude00"\n',
    "surrogate escape in json": 'a: ["\\ud83d\\ude00"]\n',
    "comment without a space": 'a: "x"#c\n',
    "flow plain with colon": "a: {k:1, [a:b]: 2}\n",
    "flow single pair": "a: [b: 1]\n",
    "flow empty value": "a: {b: , c: 1}\n",
    "flow trailing comma": "a: [1, 2, ]\n",
    "impossible date": "a: 2001-02-30\n",
    "a 1100-character key": "k" * 1100 + ": v\n",
    "a 1100-character flow key": 'a: {"' + "k" * 1100 + '": v}\n',
    "scalar document": "just text\n",
    "flow document": "{a: 1}\n",
    # malformed
    "mapping value in a plain scalar": "a: b: c\n",
    "sequence entry as a value": "a: - b\n",
    "entry after a mapping": "a: 1\n- b\n",
    "key after a sequence": "- a\nb: 1\n",
    "bad dedent": "a:\n    b: 1\n  c: 2\n",
    "text after a quoted scalar": 'a: "x"y\n',
    "text after a flow collection": "a: [x] y\n",
    "unclosed flow": "a: [x\n",
    "unclosed quote": 'a: "x\n',
    "empty flow entry": "a: [1,,2]\n",
    "reserved indicator": "a: @x\nb: `y`\n",
    "scalar between keys": "a: 1\nb\nc: 2\n",
    "key spanning lines": "a\nb: 1\n",
    "lone bracket": "a: [\n",
}


@pytest.mark.parametrize("text", INSIDE.values(), ids=INSIDE.keys())
def test_fast_path_equals_pyyaml(text: str) -> None:
    assert check_same_as_reference(text) != OUTSIDE, "the fast path should read this"


@pytest.mark.parametrize("text", OUTSIDE_CASES.values(), ids=OUTSIDE_CASES.keys())
def test_everything_else_is_pyyaml(text: str) -> None:
    assert check_same_as_reference(text) == OUTSIDE, "the fast path should refuse this"


def test_invalid_yaml_keeps_its_template_error() -> None:
    templates = TemplateSet({"broken": "spec:\n  containers: [{name: x}\n"})
    with pytest.raises(TemplateError, match=r"template broken rendered invalid YAML: .*flow"):
        templates.render("broken", {})


def test_templates_outside_the_subset_still_render() -> None:
    templates = TemplateSet({"anchored": "a: &x {b: yes}\nc: *x\nd: |\n  text\n"})
    assert templates.render("anchored", {}) == {"a": {"b": True}, "c": {"b": True}, "d": "text\n"}
