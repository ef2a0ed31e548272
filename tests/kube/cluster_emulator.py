"""kmock's in-memory Kubernetes API, taught the few API-server behaviours our code relies on.

kmock's KubernetesEmulator stores objects and serves list/watch/get/patch/delete, but it is
deliberately simple: it ignores label selectors, has no resourceVersion, and PATCH on a missing
object is a 404 (server-side apply creates it on a real API server). This subclass adds:

* server-side apply (`application/apply-patch+yaml`): creates the object when absent; when
  present, merges it, treating lists of named items as maps keyed by `name` (as SSA does for
  `webhooks`, `containers`, ...). Field ownership is not modelled: an applied object never
  removes fields another writer set.
* resourceVersion on every write, and optimistic concurrency: a write that carries
  `metadata.resourceVersion` different from the stored one is refused with 409 Conflict.
* uid and creationTimestamp on create.
* labelSelector on list and watch (`k=v`, `k!=v`, `k`, `!k`, `k in (..)`, `k notin (..)`).
* JSON Patch is refused (415) so accidental use shows up in tests.
* SubjectAccessReviews are answered (denied; `allow_everything` allows), not stored.

It is an in-memory fake of the API, not a cluster: no controllers, no admission, no GC.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import gzip
import importlib.resources
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import enums, parsing, rendering

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    for term in _split_selector(selector):
        term = term.strip()
        if not term:
            continue
        match = _SET_RE.match(term)
        if match:
            key, operator, raw = match.groups()
            values = {v.strip() for v in raw.split(",") if v.strip()}
            if operator == "in" and labels.get(key) not in values:
                return False
            if operator == "notin" and key in labels and labels[key] in values:
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            key = key.strip().rstrip("=")
            if labels.get(key) != value.strip().lstrip("="):
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def merge_applied(old: Any, new: Any) -> Any:
    """SSA-like merge: dicts recursively, lists of named dicts by name, anything else replaced."""
    if isinstance(old, dict) and isinstance(new, dict):
        merged = dict(old)
        for key, value in new.items():
            merged[key] = merge_applied(old[key], value) if key in old else copy.deepcopy(value)
        return merged
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and all(isinstance(i, dict) and "name" in i for i in old + new)
    ):
        by_name = {i["name"]: i for i in old}
        return [merge_applied(by_name[i["name"]], i) if i["name"] in by_name else i for i in new]
    return copy.deepcopy(new)


_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock reads `/api/v1/namespaces/NAME` as "namespace NAME" rather than the Namespace
    object NAME (and cannot parse `/api/v1/namespaces` at all); Namespaces are objects here."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return parsing.ParsedPath(
            "", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None
        )
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path  # kmock's Request._parse looks it up at call time


def _labels(obj: Any) -> dict[str, str]:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    return dict(labels) if isinstance(labels, dict) else {}


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    _versions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    # Tests flip this to make every API request fail with 503, as during an API-server restart.
    unavailable: bool = attrs.field(default=False, init=False)
    allow_everything: bool = attrs.field(default=False, init=False)  # SubjectAccessReviews

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        bundled = importlib.resources.files("kmock._internal").joinpath("resources.json.gz")
        self.resources.load_data(gzip.decompress(bundled.read_bytes()))

    # -- writes -------------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> Any:
        if self.unavailable:
            raise kmock.KubernetesError(
                status=503, reason="ServiceUnavailable", message="the test API server is down"
            )
        if request.resource is None or request.action not in (
            enums.action.CREATE,
            enums.action.UPDATE,
        ):
            return await super()._handle(request)
        if getattr(request.resource, "plural", None) == "subjectaccessreviews":
            # A review is answered, never stored; this API has no RBAC: it says no, unless a
            # test plays a permissive cluster.
            review = copy.deepcopy(request.data) if isinstance(request.data, dict) else {}
            review["status"] = {"allowed": self.allow_everything}
            return aiohttp.web.json_response(review, status=201)
        async with self._write_lock:
            prepared = self._prepare_write(request)
            if prepared is None:
                return await self._apply_create(request)
            # kmock finds a request's reactions by identity in its request log.
            index = next(i for i, r in enumerate(self._requests) if r is request)
            self._requests[index] = prepared
            return await super()._handle(prepared)

    def _key(self, request: rendering.Request) -> tuple[Any, str | None, str | None]:
        metadata = request.data.get("metadata", {}) if isinstance(request.data, dict) else {}
        name = request.name or metadata.get("name")
        namespace = request.namespace or metadata.get("namespace")
        return (request.resource, namespace, name)

    def _prepare_write(self, request: rendering.Request) -> rendering.Request | None:
        """The request to hand to kmock, or None for an apply that creates the object."""
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if request.action == enums.action.UPDATE and content_type == JSON_PATCH:
            raise kmock.KubernetesError(
                status=415,
                reason="UnsupportedMediaType",
                message="the test API server does not do JSON Patch",
            )
        data = copy.deepcopy(request.data) if isinstance(request.data, dict) else {}
        metadata = data.setdefault("metadata", {})
        key = self._key(request)
        existing = self.objects[key] if key in self.objects else None  # noqa: SIM401
        alive = existing is not None and not existing.deleted
        wanted_version = metadata.get("resourceVersion")
        if alive and wanted_version is not None:
            assert existing is not None
            current = existing.get("metadata", {}).get("resourceVersion")
            if str(wanted_version) != str(current):
                raise kmock.KubernetesError(
                    status=409,
                    reason="Conflict",
                    message=f"the object has been modified (have {current}, got {wanted_version})",
                )
        metadata["resourceVersion"] = str(next(self._versions))
        if request.action == enums.action.UPDATE and content_type == APPLY:
            if not alive:
                return None
            assert existing is not None
            data = merge_applied(existing.raw, data)
        elif request.action == enums.action.CREATE:
            if key[1] is not None:
                metadata.setdefault("namespace", key[1])
            self._stamp_new(metadata)
        return attrs.evolve(request, data=data)

    async def _apply_create(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        resource, namespace, name = self._key(request)
        data = copy.deepcopy(request.data)
        metadata = data.setdefault("metadata", {})
        metadata["name"] = name
        if namespace is not None:
            metadata["namespace"] = namespace
        metadata["resourceVersion"] = str(next(self._versions))
        self._stamp_new(metadata)
        async with self._lock:
            self.objects[resource, namespace, name] = data
            raw = self.objects[resource, namespace, name].raw
            await self._buses[resource].put({"type": "ADDED", "object": raw})
        return aiohttp.web.json_response(raw, status=201)

    @staticmethod
    def _stamp_new(metadata: dict[str, Any]) -> None:
        metadata.setdefault("uid", str(uuid.uuid4()))
        now = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        metadata.setdefault("creationTimestamp", now)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        # lightkube turns an error into ApiError only for exactly `application/json`, which is
        # what the API server sends; aiohttp would append `; charset=utf-8`.
        response = await super()._render_error(exc)
        assert isinstance(response, aiohttp.web.Response) and response.body is not None
        body = response.body if isinstance(response.body, bytes) else b""
        return aiohttp.web.Response(
            body=body, status=response.status, content_type="application/json"
        )

    # -- reads ---------------------------------------------------------------------------

    async def _serve_list(self, request: rendering.Request) -> Any:
        payload = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            payload["items"] = [
                i for i in payload["items"] if selector_matches(selector, _labels(i))
            ]
        payload["metadata"] = {"resourceVersion": str(next(self._versions))}
        return payload

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        selector = request.params.get("labelSelector")
        async for event in super()._serve_watch(request):
            if (
                not selector
                or not isinstance(event, dict)
                or selector_matches(selector, _labels(event.get("object")))
            ):
                yield event

    # -- test helpers --------------------------------------------------------------------

    def writes(self) -> list[rendering.Request]:
        """Every request that could have changed state."""
        return [r for r in self if r.method not in (enums.method.GET, enums.method.HEAD)]

    def stored(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def stored_names(self, resource: str, namespace: str | None = None) -> set[str]:
        wanted = kmock.resource(resource)
        return {
            name
            for (res, ns, name), obj in self.objects.items()
            if res == wanted and ns == namespace and not obj.deleted
        }

    def store(self, resource: str, obj: dict[str, Any]) -> None:
        """Store an object directly (a fixture), with a fresh resourceVersion."""
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        metadata["resourceVersion"] = str(next(self._versions))
        self._stamp_new(metadata)
        self.objects[resource, metadata.get("namespace"), metadata["name"]] = obj
