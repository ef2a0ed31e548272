"""Names the runtime makes up, the way Kubernetes makes them up.

`web` (Deployment) -> `web-5788d57586` (ReplicaSet, suffix = pod-template-hash) ->
`web-5788d57586-bljj4` (Pod, 5 random characters). The hash is FNV-32a over the pod template
encoded by Kubernetes' `rand.SafeEncodeString` (so it never spells words and never looks like a
number); Kubernetes hashes its Go structure, we hash canonical JSON, so the values differ from a
real cluster's but behave the same: equal templates, equal hash; any change, a new hash.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from pathlib import Path
from typing import Any

import orjson

# Kubernetes' alphabet for generated names: no vowels (no words), no 0/1/3 (no look-alikes).
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
RANDOM_SUFFIX_LENGTH = 5
MAX_NAME_LENGTH = 63
MAX_GENERATE_NAME_BASE = MAX_NAME_LENGTH - RANDOM_SUFFIX_LENGTH  # 58, as the API server


def fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value


def safe_encode(text: str) -> str:
    """Kubernetes' `rand.SafeEncodeString`: each byte picks a character of the alphabet."""
    return "".join(SAFE_ALPHABET[ord(ch) % len(SAFE_ALPHABET)] for ch in text)


def pod_template_hash(template: Any, collision_count: int = 0) -> str:
    encoded = orjson.dumps(template, option=orjson.OPT_SORT_KEYS)
    if collision_count:
        encoded += collision_count.to_bytes(4, "little")
    return safe_encode(str(fnv32a(encoded)))


def random_suffix(length: int = RANDOM_SUFFIX_LENGTH) -> str:
    return "".join(secrets.choice(SAFE_ALPHABET) for _ in range(length))


def generate_name(base: str, suffix: str | None = None) -> str:
    """`generateName` + random suffix, the base cut to 58 characters like the API server."""
    return base[:MAX_GENERATE_NAME_BASE] + (suffix if suffix is not None else random_suffix())


def replicaset_name(deployment: str, template_hash: str) -> str:
    return f"{deployment}-{template_hash}"


def new_uid() -> str:
    return str(uuid.uuid4())


def runtime_prefix(state_dir: Path) -> str:
    """`sm-XXXX`, from the state directory: two runtimes with different state directories
    never share a namespace name, and `down` only ever touches names with its own prefix."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()
    return f"sm-{digest[:4]}"


def node_netns(prefix: str) -> str:
    return f"{prefix}-node"


def pod_netns(prefix: str, uid: str) -> str:
    return f"{prefix}-pod-{uid.replace('-', '')[:12]}"


def veth_name(uid: str) -> str:
    """The node's end of a pod's veth pair (at most 15 characters, IFNAMSIZ)."""
    return f"veth{uid.replace('-', '')[:8]}"
