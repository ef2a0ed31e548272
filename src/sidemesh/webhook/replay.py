"""Answer a repeated AdmissionReview without decoding it again.

A rollout sends the webhook the same request over and over: every replica of a ReplicaSet is
admitted with the same pod template, owner, namespace and user, and the bodies differ only in
`request.uid`. `review()` depends on that uid for one thing, echoing it in `response.uid`, so
once a body has been answered, a later body that is byte-for-byte the same except for the uid
value gets the same answer with the new uid spliced in: no JSON decode, no engine, no encode.

Soundness rests on three checks, so that the hit path is a `find`, a dict lookup and a
concatenation:

* the key is the body with the value of its first `"uid":"…"` cut out; that value must be a
  plain run of uid characters (no escapes, so its bytes are its value);
* the answer must echo exactly that uid right after `"response":{"uid":"`, where the splice goes
  (checked when the answer is remembered);
* the cut-out slot must be `request.uid`: the body with a sentinel in the slot is decoded and
  its `request.uid` must read back as the sentinel (an owner reference or anything else that
  happens to come first never qualifies). This costs a decode, so it is made once per key, on
  its first replay, not when the answer is remembered: on a real API server most bodies never
  repeat (each pod's token volume has a random name), and would pay for it in vain. A key whose
  slot fails is kept as unsound and never replayed.

Answers with an admitter error are never remembered (the error is logged per request), and
neither are bodies over `max_body_bytes` or anything beyond `max_bytes` in all. One memo serves
one admitter: a webhook that swaps its engine must start a new memo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

import orjson

from sidemesh.inject.memo import Memo
from sidemesh.webhook.admission import ResultKind, ReviewResult

Route = tuple[str | None, str | None]  # (cluster_id, network) from the request path

_UID_KEY: Final = b'"uid":"'
_RESPONSE_UID: Final = b'"response":{"uid":"'
# Kubernetes uids are UUIDs; allow a little more, but nothing that JSON would escape.
_UID: Final = re.compile(rb"[0-9A-Za-z._:-]{1,128}")
_LONGEST_UID: Final = 128
_SENTINEL: Final = "sidemesh-replay-probe"

MAX_ENTRIES: Final = 256
MAX_BYTES: Final = 16 * 1024 * 1024
MAX_BODY_BYTES: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class _Answer:
    head: bytes  # response body up to the uid
    tail: bytes  # response body after the uid
    kind: ResultKind
    code: str
    checked: bool = False  # the slot was proven to be `request.uid`


class ReplayMemo:
    """LRU of answers keyed by request body minus its request uid."""

    def __init__(
        self,
        *,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self._answers: Memo[tuple[Route, bytes], _Answer] = Memo(max_entries, max_weight=max_bytes)

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def hits(self) -> int:
        return self._answers.hits

    @property
    def misses(self) -> int:
        return self._answers.misses

    def lookup(self, body: bytes, route: Route) -> ReviewResult | None:
        """The answer to `body` if an equal body (but for its uid) was answered before."""
        if not self._answers.size or len(body) > self.max_body_bytes:
            return None  # never remembered, so not worth copying and hashing
        cut = _cut_uid(body)
        if cut is None:
            self._answers.misses += 1
            return None
        stripped, uid, start = cut
        key = (route, stripped)
        answer = self._answers.get(key)
        if answer is None:
            return None
        if not answer.checked:
            if not _slot_is_request_uid(body, start, len(uid)):
                self._answers.put(key, _UNSOUND, weight=len(stripped))
                return None
            answer = replace(answer, checked=True)
            self._answers.put(key, answer, weight=_weight(stripped, answer))
        if answer is _UNSOUND:
            return None
        return ReviewResult(200, answer.head + uid + answer.tail, answer.kind, answer.code)

    def remember(self, body: bytes, route: Route, result: ReviewResult) -> None:
        """Keep `result` (the answer `review()` gave to `body`) if it can be replayed soundly."""
        if not self._answers.size or result.status != 200 or result.error is not None:
            return
        if len(body) > self.max_body_bytes:
            return
        cut = _cut_uid(body)
        if cut is None:
            return
        stripped, uid, _ = cut
        key = (route, stripped)
        if key in self._answers:
            return
        at = result.body.find(_RESPONSE_UID)
        if at < 0:
            return
        head_end = at + len(_RESPONSE_UID)
        tail_start = head_end + len(uid)
        if result.body[head_end:tail_start] != uid or result.body[tail_start:][:1] != b'"':
            return
        answer = _Answer(result.body[:head_end], result.body[tail_start:], result.kind, result.code)
        self._answers.put(key, answer, weight=_weight(stripped, answer))


# A key whose uid slot is not `request.uid`: remembered so that it is not checked again.
_UNSOUND: Final = _Answer(b"", b"", "rejected", "", checked=True)


def _weight(stripped: bytes, answer: _Answer) -> int:
    return len(stripped) + len(answer.head) + len(answer.tail)


def _cut_uid(body: bytes) -> tuple[bytes, bytes, int] | None:
    """(body without the value of its first `"uid":"…"`, that value, where it started), if the
    value is a plain uid.

    The slot stays marked by the empty string left behind, so bodies whose first uid sits in
    different places never share a key."""
    start = body.find(_UID_KEY)
    if start < 0:
        return None
    start += len(_UID_KEY)
    end = body.find(b'"', start, start + _LONGEST_UID + 1)
    if end < 0:
        return None
    uid = body[start:end]
    if _UID.fullmatch(uid) is None:
        return None
    return body[:start] + body[end:], uid, start


def _slot_is_request_uid(body: bytes, start: int, length: int) -> bool:
    """Whether the value at body[start:start+length] is `request.uid` (decoded with a sentinel
    in its place)."""
    probe = body[:start] + _SENTINEL.encode() + body[start + length :]
    try:
        document = orjson.loads(probe)
    except orjson.JSONDecodeError:
        return False
    request = document.get("request") if isinstance(document, dict) else None
    return isinstance(request, dict) and request.get("uid") == _SENTINEL
