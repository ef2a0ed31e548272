"""Names as Kubernetes makes them: pod-template-hash, generated pod names, our namespaces."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from sidemesh.local.naming import (
    SAFE_ALPHABET,
    fnv32a,
    generate_name,
    node_netns,
    pod_netns,
    pod_template_hash,
    replicaset_name,
    runtime_prefix,
    safe_encode,
    veth_name,
)

TEMPLATE = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "python:3.11"}]},
}


def test_fnv32a_reference_values() -> None:
    assert fnv32a(b"") == 0x811C9DC5
    assert fnv32a(b"a") == 0xE40C292C
    assert fnv32a(b"foobar") == 0xBF9CF968


def test_safe_encode_maps_digits_like_kubernetes() -> None:
    # '0'..'9' -> 4 5 6 7 8 9 b c d f: the guide's 5788d57586 is the hash 1344813142.
    assert safe_encode("0123456789") == "456789bcdf"
    assert safe_encode("1344813142") == "5788d57586"


def test_hash_is_stable_and_key_order_free() -> None:
    reordered = {"spec": TEMPLATE["spec"], "metadata": TEMPLATE["metadata"]}
    assert pod_template_hash(TEMPLATE) == pod_template_hash(reordered)
    changed = {
        **TEMPLATE,
        "metadata": {
            "labels": {"app": "web"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "x"},
        },
    }
    assert pod_template_hash(changed) != pod_template_hash(TEMPLATE)
    assert pod_template_hash(TEMPLATE, collision_count=1) != pod_template_hash(TEMPLATE)


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=5))
def test_hash_uses_only_the_safe_alphabet(labels: dict[str, str]) -> None:
    value = pod_template_hash({"metadata": {"labels": labels}})
    assert 1 <= len(value) <= 10 and set(value) <= set(SAFE_ALPHABET)


def test_pod_names_look_like_the_guides() -> None:
    rs = replicaset_name("istiod-asm-173-3", "5788d57586")
    name = generate_name(rs + "-")
    assert re.fullmatch(r"istiod-asm-173-3-5788d57586-[bcdfghjklmnpqrstvwxz2456789]{5}", name)
    assert generate_name("x" * 80 + "-", suffix="abcde") == "x" * 58 + "abcde"


def test_runtime_names() -> None:
    prefix = runtime_prefix(Path("/run/sidemesh-local"))
    assert re.fullmatch(r"sm-[0-9a-f]{4}", prefix)
    assert prefix != runtime_prefix(Path("/tmp/other"))
    assert node_netns(prefix) == f"{prefix}-node"
    uid = "5d41402a-bc4b-2a76-b971-9d911017c592"
    assert pod_netns(prefix, uid) == f"{prefix}-pod-5d41402abc4b"
    assert veth_name(uid) == "veth5d41402a" and len(veth_name(uid)) <= 15
