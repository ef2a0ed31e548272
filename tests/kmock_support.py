"""kmock (the in-memory Kubernetes API) for the tests that talk to it through lightkube.

Shared by the test kits of several areas; `tests/conftest.py` puts this folder on the path."""

from __future__ import annotations

from typing import Any


def fix_kmock_namespaces() -> None:
    """kmock 0.8 cannot parse /api/v1/namespaces[/NAME] (it takes `namespaces` as the
    namespaced-path prefix); teach it that these paths name the Namespace resource."""
    from kmock._internal import parsing

    original = getattr(parsing, "_sidemesh_original", parsing.parse_path)

    def parse_path(path: str) -> Any:
        parts = path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            name = parts[3] if len(parts) == 4 else None
            return parsing.ParsedPath("", "v1", "namespaces", None, name, None)
        return original(path)

    parsing._sidemesh_original = original  # type: ignore[attr-defined]
    parsing.parse_path = parse_path


def kube_client(kmock: Any) -> Any:
    """A lightkube AsyncClient pointed at a kmock server."""
    from lightkube import AsyncClient, KubeConfig

    fix_kmock_namespaces()
    config = KubeConfig.from_dict({
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url)}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
        "users": [{"name": "test", "user": {"token": "test"}}],
        "current-context": "kmock",
    })  # fmt: skip
    return AsyncClient(config)
