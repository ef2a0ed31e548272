"""Talking to the Kubernetes API with lightkube, over plain dict objects.

Objects stay dicts (what we generate, print, validate and compare); lightkube supplies the
resource types, the connection, server-side apply and watches.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError, ConfigError
from lightkube.core.resource import NamespacedResource
from lightkube.core.resource_registry import resource_registry
from lightkube.types import CascadeType, PatchType

from sidemesh.install.naming import FIELD_MANAGER


class ClusterAccessError(Exception):
    """No usable kubeconfig / in-cluster configuration; the message says what was tried."""


def load_kube_config(kubeconfig: Path | None = None, context: str | None = None) -> Any:
    """The configuration to connect with: `kubeconfig` (or $KUBECONFIG, ~/.kube/config), or
    the pod's service account when running in a cluster."""
    try:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        return config.get(context_name=context) if context else config
    except (ConfigError, KeyError, OSError, ValueError) as exc:
        where = str(kubeconfig) if kubeconfig else "in-cluster config, $KUBECONFIG, ~/.kube/config"
        what = f"context {context!r}: " if context else ""
        raise ClusterAccessError(
            f"cannot load Kubernetes configuration ({where}): {what}{exc}"
        ) from exc


def make_client(
    kubeconfig: Path | None = None,
    context: str | None = None,
    *,
    field_manager: str = FIELD_MANAGER,
    timeout_seconds: float = 10.0,
) -> AsyncClient:
    return AsyncClient(
        config=load_kube_config(kubeconfig, context),
        field_manager=field_manager,
        timeout=httpx2.Timeout(timeout_seconds),
    )


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of an API error, None for anything else (connection failures...)."""
    if isinstance(exc, ApiError):
        code = getattr(exc.status, "code", None)
        return int(code) if code is not None else None
    if isinstance(exc, httpx2.HTTPStatusError):
        return exc.response.status_code
    return None


def is_not_found(exc: BaseException) -> bool:
    return status_code(exc) == 404


def is_conflict(exc: BaseException) -> bool:
    return status_code(exc) == 409


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the API server unreachable, overloaded or failing, or a write that lost
    a race (409)."""
    code = status_code(exc)
    if code is None:
        return isinstance(exc, httpx2.TransportError | OSError)
    return code in (409, 429) or code >= 500


def resource_type(api_version: str, kind: str) -> Any:
    """lightkube's resource class for a built-in kind."""
    return resource_registry.load(api_version, kind)


def object_key(obj: Mapping[str, Any]) -> tuple[Any, str, str | None]:
    metadata = obj.get("metadata") or {}
    return (
        resource_type(str(obj["apiVersion"]), str(obj["kind"])),
        str(metadata["name"]),
        metadata.get("namespace"),
    )


def as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    result: dict[str, Any] = obj.to_dict()
    return result


async def apply(
    client: AsyncClient, obj: Mapping[str, Any], *, force: bool = True
) -> dict[str, Any]:
    """Server-side apply with the client's field manager; returns the live object."""
    res, name, namespace = object_key(obj)
    applied = await client.patch(
        res, name, dict(obj), namespace=namespace, patch_type=PatchType.APPLY, force=force
    )
    return as_dict(applied)


async def get(
    client: AsyncClient, res: Any, name: str, namespace: str | None = None
) -> dict[str, Any] | None:
    """The object, or None if it does not exist."""
    try:
        return as_dict(await client.get(res, name, namespace=namespace))
    except ApiError as exc:
        if is_not_found(exc):
            return None
        raise


async def list_objects(
    client: AsyncClient,
    res: Any,
    *,
    namespace: str | None = None,
    labels: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Objects of a kind; `namespace=None` lists every namespace for namespaced kinds."""
    kwargs: dict[str, Any] = {"labels": dict(labels) if labels else None}
    if issubclass(res, NamespacedResource):
        kwargs["namespace"] = namespace if namespace is not None else "*"
    return [as_dict(o) async for o in client.list(res, **kwargs)]


async def delete(
    client: AsyncClient,
    res: Any,
    name: str,
    namespace: str | None = None,
    *,
    cascade: CascadeType | None = None,
) -> bool:
    """Delete; False if it was already gone. `cascade=FOREGROUND` keeps the object (being
    deleted) until the garbage collector has deleted its dependents."""
    try:
        await client.delete(res, name, namespace=namespace, cascade=cascade)
    except ApiError as exc:
        if is_not_found(exc):
            return False
        raise
    return True


async def merge_patch(
    client: AsyncClient, res: Any, name: str, patch: Mapping[str, Any], namespace: str | None = None
) -> dict[str, Any]:
    """JSON merge patch. Put `metadata.resourceVersion` in `patch` to make it conditional:
    the API server then refuses it (409) if the object changed since it was read."""
    patched = await client.patch(
        res, name, dict(patch), namespace=namespace, patch_type=PatchType.MERGE
    )
    return as_dict(patched)


# What to do about the refusals retrying cannot fix by itself.
_STATUS_HINTS = {
    401: "the API server does not accept these credentials: the ServiceAccount (or its token) "
    "is gone or expired; reinstall the revision (sidemesh install) or fix the kubeconfig",
    403: "RBAC does not allow it: the revision's Role/ClusterRole is missing or out of date; "
    "reinstall the revision (sidemesh install --revision REV)",
}


def describe_error(exc: BaseException) -> str:
    """One line a user can act on, for the errors talking to the API produces."""
    if isinstance(exc, ApiError):
        status = exc.status
        line = f"Kubernetes API: {status.code} {status.reason}: {status.message}"
        hint = _STATUS_HINTS.get(int(status.code or 0))
        return f"{line} ({hint})" if hint else line
    if isinstance(exc, httpx2.HTTPStatusError):
        code = exc.response.status_code
        line = f"Kubernetes API: HTTP {code} for {exc.request.url}"
        hint = _STATUS_HINTS.get(code)
        return f"{line} ({hint})" if hint else line
    if isinstance(exc, httpx2.TransportError):
        return f"cannot reach the Kubernetes API server: {exc}"
    return str(exc)


REQUEST_LOGGERS = ("httpx", "httpx2")  # each logs every request ("HTTP Request: ...") at INFO


class _RequestsAtDebug(logging.Filter):
    """Re-levels the HTTP clients' per-request INFO lines to DEBUG (an idle control plane makes
    about one request a second); failures are logged by our callers, with what to do."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_REQUESTS_AT_DEBUG = _RequestsAtDebug()


def log_requests_at_debug() -> None:
    """Install the filter on the HTTP clients' loggers (idempotent)."""
    for name in REQUEST_LOGGERS:
        logging.getLogger(name).addFilter(_REQUESTS_AT_DEBUG)


def parse_server_version(document: Mapping[str, Any]) -> tuple[int, int]:
    """(major, minor) from the API server's /version (`minor` may read like "24+")."""
    try:
        major = int(str(document["major"]).rstrip("+"))
        minor = int(str(document["minor"]).rstrip("+"))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"unreadable Kubernetes version {dict(document)!r}") from exc
    return major, minor


async def server_version(client: AsyncClient) -> tuple[int, int]:
    """The API server's Kubernetes version (GET /version)."""
    # lightkube has no call for the non-resource path /version: use its configured connection.
    http: httpx2.AsyncClient = client._client._client
    response = await http.get("/version")
    response.raise_for_status()
    return parse_server_version(response.json())
