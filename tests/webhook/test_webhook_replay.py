"""The replay memo: a repeat of a request but for its uid gets exactly the answer a fresh
review would give, and nothing that could be answered wrongly is ever remembered."""

from __future__ import annotations

import string
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from webhook_testkit import FakeAdmitter, make_pod, make_review, post_review

from sidemesh.inject.engine import Injector
from sidemesh.webhook.admission import review
from sidemesh.webhook.app import WebhookApp
from sidemesh.webhook.replay import ReplayMemo

ROUTE = (None, None)
UIDS = st.text(alphabet=string.ascii_letters + string.digits + "-._:", min_size=1, max_size=64)
ENGINE = Injector.from_files()


def body_of(uid: str, pod: dict[str, Any] | None = None, **request: Any) -> bytes:
    return orjson.dumps(make_review(uid=uid, pod=pod, **request))


def owned_pod(owner_uid: str) -> dict[str, Any]:
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": owner_uid,
             "controller": True}  # fmt: skip
    return make_pod(generateName="web-1-", ownerReferences=[owner])


# Pods the real engine injects, skips or denies; replays must match a fresh review for each.
POD_ROWS: list[tuple[str, dict[str, Any]]] = [
    ("plain", make_pod()),
    ("owned", owned_pod("8d1f2e3a-0000-4000-8000-000000000001")),
    ("opted out", make_pod(annotations={"sidecar.istio.io/inject": "false"})),
    ("invalid annotation", make_pod(annotations={"sidecar.istio.io/proxyCPU": "lots"})),
    ("html characters", make_pod(labels={"app": "a"}, annotations={"note": "<a&b>\u00e9"})),
]


@pytest.mark.parametrize("pod", [row[1] for row in POD_ROWS], ids=[row[0] for row in POD_ROWS])
@settings(max_examples=25, deadline=None)
@given(first=UIDS, second=UIDS)
def test_replay_equals_a_fresh_review(pod: dict[str, Any], first: str, second: str) -> None:
    memo = ReplayMemo()
    original = body_of(first, pod)
    memo.remember(original, ROUTE, review(original, ENGINE))
    assert len(memo) == 1
    repeat = body_of(second, pod)
    replayed = memo.lookup(repeat, ROUTE)
    fresh = review(repeat, Injector.from_files())
    assert replayed == fresh
    assert orjson.loads(replayed.body)["response"]["uid"] == second


def test_a_uid_that_also_appears_in_the_pod_is_still_replayed_correctly() -> None:
    uid = "0df28fbd-5f5f-11e8-bc74-36e6bb280816"
    pod = make_pod(annotations={"copied": uid})
    memo = ReplayMemo()
    original = body_of(uid, pod)
    memo.remember(original, ROUTE, review(original, ENGINE))
    repeat = body_of("another", pod)
    assert memo.lookup(repeat, ROUTE) == review(repeat, ENGINE)


def test_a_uid_key_before_the_request_uid_is_never_used() -> None:
    # The object (with an owner's uid) precedes request.uid: the first "uid" is the owner's.
    request = {"object": owned_pod("owner-uid"), "uid": "request-uid",
               "kind": {"kind": "Pod"}, "namespace": "demo"}  # fmt: skip
    body = orjson.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    )
    assert body.index(b"owner-uid") < body.index(b"request-uid")
    memo = ReplayMemo()
    result = review(body, ENGINE)
    assert result.status == 200
    memo.remember(body, ROUTE, result)
    assert len(memo) == 0
    assert memo.lookup(body.replace(b"owner-uid", b"other-uid"), ROUTE) is None


def test_an_owner_uid_equal_to_an_escaped_request_uid_is_not_taken_for_it() -> None:
    # request.uid is written with an escape, so the first plain "uid" with its value is the
    # owner's: replaying on that slot would echo the owner's uid of the next request.
    request = {"object": owned_pod("same-uid"), "uid": "ESCAPED",
               "kind": {"kind": "Pod"}, "namespace": "demo"}  # fmt: skip
    body = orjson.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).replace(b"ESCAPED", b"\\u0073ame-uid")
    result = review(body, ENGINE)
    assert orjson.loads(result.body)["response"]["uid"] == "same-uid"
    memo = ReplayMemo()
    memo.remember(body, ROUTE, result)
    # The next pod of that owner but for its uid would hit: its slot is checked on that first
    # replay, found not to be request.uid, and never replayed.
    other = body.replace(b'"uid":"same-uid"', b'"uid":"other-uid"', 1)
    assert other != body
    assert memo.lookup(other, ROUTE) is None
    assert memo.lookup(other, ROUTE) is None  # remembered as unsound, not checked again


@pytest.mark.parametrize(
    "raw_uid",
    [
        b"\\u0061bc",  # an escape: the bytes are not the value
        b"a b",  # a space: outside the uid alphabet
        b"",  # empty: review() rejects it anyway
        b"x" * 129,  # longer than any uid
    ],
)
def test_uids_that_are_not_plain_are_not_memoised(raw_uid: bytes) -> None:
    body = body_of("PLACEHOLDER").replace(b"PLACEHOLDER", raw_uid)
    memo = ReplayMemo()
    memo.remember(body, ROUTE, review(body, ENGINE))
    assert len(memo) == 0
    assert memo.lookup(body, ROUTE) is None


def test_errors_and_rejections_are_not_remembered() -> None:
    memo = ReplayMemo()
    failing = FakeAdmitter(error=RuntimeError("boom"))
    body = body_of("uid-1")
    errored = review(body, failing)
    assert errored.error is not None
    memo.remember(body, ROUTE, errored)
    rejected_body = (
        b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"'
    )
    memo.remember(rejected_body, ROUTE, review(rejected_body, failing))
    assert len(memo) == 0


def test_routes_are_kept_apart() -> None:
    memo = ReplayMemo()
    body = body_of("uid-1")
    memo.remember(body, ("c1", "n1"), review(body, ENGINE, cluster_id="c1", network="n1"))
    assert memo.lookup(body_of("uid-2"), ("c1", "n1")) is not None
    assert memo.lookup(body_of("uid-2"), ("c2", "n1")) is None
    assert memo.lookup(body_of("uid-2"), ROUTE) is None


def test_least_recently_used_answers_go_first_by_count_and_by_bytes() -> None:
    bodies = [body_of("u", make_pod(labels={"n": str(i)})) for i in range(4)]
    results = [review(b, ENGINE) for b in bodies]
    memo = ReplayMemo(max_entries=2)
    memo.remember(bodies[0], ROUTE, results[0])
    memo.remember(bodies[1], ROUTE, results[1])
    assert memo.lookup(bodies[0], ROUTE) is not None  # 0 is now the most recent
    memo.remember(bodies[2], ROUTE, results[2])
    assert [memo.lookup(b, ROUTE) is not None for b in bodies[:3]] == [True, False, True]

    one_entry = len(bodies[3]) + len(results[3].body)
    small = ReplayMemo(max_bytes=one_entry + 10)
    small.remember(bodies[2], ROUTE, results[2])
    small.remember(bodies[3], ROUTE, results[3])
    assert len(small) == 1 and small.lookup(bodies[3], ROUTE) is not None

    tiny = ReplayMemo(max_body_bytes=len(bodies[0]) - 1)
    tiny.remember(bodies[0], ROUTE, results[0])
    assert len(tiny) == 0
    assert tiny.lookup(bodies[0], ROUTE) is None and tiny.misses == 0  # not even looked up


async def test_a_rollout_is_admitted_once_and_every_answer_echoes_its_uid() -> None:
    admitter = FakeAdmitter()
    app = WebhookApp(admitter)
    for replica in range(5):
        response = await post_review(app, make_review(uid=f"uid-{replica}", pod=owned_pod("rs")))
        assert response.status == 200
        assert response.json()["response"]["uid"] == f"uid-{replica}"
    assert len(admitter.calls) == 1
    assert (app.replay.hits, len(app.replay)) == (4, 1)


async def test_the_memo_can_be_turned_off() -> None:
    admitter = FakeAdmitter()
    app = WebhookApp(admitter, replay=ReplayMemo(max_entries=0))
    for replica in range(3):
        await post_review(app, make_review(uid=f"uid-{replica}"))
    assert len(admitter.calls) == 3
