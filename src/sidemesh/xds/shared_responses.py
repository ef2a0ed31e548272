"""The response bytes each ADS stream is owed, shared between streams in the same position.

Connections in the same position (same previous and next resources, same subscription) get the
very same response bytes, nonce included: nonces need only be unique within a stream, and
sharing saves a copy of a large response per proxy. Shared responses are kept in an LRU bounded
in bytes (proxies of distinct shapes cannot share, and a 1,000-service LDS response is
megabytes), forgotten with every new snapshot."""

from __future__ import annotations

import itertools
from typing import Any

from sidemesh.inject.memo import Memo
from sidemesh.xds.cache import ResourceCache
from sidemesh.xds.resource_sets import TypedResources
from sidemesh.xds.responses import TypeState, control_plane_field, delta_payload, sotw_payload

_NOTHING: frozenset[Any] = frozenset()


class SharedResponses:
    def __init__(self, cache: ResourceCache, *, instance_id: str, memory_bytes: int) -> None:
        self._cache = cache
        self._memory_bytes = memory_bytes
        self._nonces = itertools.count(1)
        self._memo = self._new_memo()
        self._control_plane_sotw = control_plane_field(instance_id, delta=False)
        self._control_plane_delta = control_plane_field(instance_id, delta=True)

    def _new_memo(self) -> Memo[tuple[Any, ...], tuple[str, bytes | None]]:
        return Memo(1_000_000, max_weight=self._memory_bytes)

    def forget(self) -> None:
        """Drop every kept response (a new snapshot: none is owed any more)."""
        self._memo = self._new_memo()

    @property
    def memory_bytes(self) -> int:
        """Bytes of responses kept for sharing (bounded by `memory_bytes`)."""
        return self._memo.weight

    def owed(
        self, state: TypeState, typed: TypedResources, *, delta: bool, initial: bool
    ) -> bytes | None:
        """The response owed (None: nothing), recorded as sent in `state`."""
        key = (
            delta, initial, state.sent, typed, state.subscribed,
            frozenset(state.pending) if state.pending else _NOTHING,
            frozenset(state.client_versions.items()) if state.client_versions else _NOTHING,
        )  # fmt: skip
        response = self._memo.get(key)
        if response is None or (response[0] and response[0] == state.nonce_sent):
            change = self._cache.diff(state.sent, typed)
            nonce = str(next(self._nonces))  # unused if nothing is sent: nonces need no order
            if delta:
                payload = delta_payload(
                    state, typed, *change.as_tuple(), control_plane=self._control_plane_delta,
                    nonce=nonce,
                )  # fmt: skip
            else:
                payload = sotw_payload(
                    state, typed, *change.as_tuple(), initial=initial,
                    control_plane=self._control_plane_sotw, nonce=nonce,
                )  # fmt: skip
            response = (nonce, payload) if payload is not None else ("", None)
            self._memo.put(key, response, weight=len(payload or b""))
        state.sent = typed
        state.pending.clear()
        state.client_versions = {}
        nonce, message = response
        if message is None:
            if not state.nonce_sent:
                state.version_sent = state.version_acked = typed.version
            return None
        state.nonce_sent = nonce
        state.version_sent = typed.version
        return message
