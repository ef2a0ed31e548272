"""Local token file and TokenReview authentication."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from security_testkit import kube_client

from sidemesh.security.authn import (
    AuthenticationError,
    Caller,
    LocalTokenAuthenticator,
    TokenReviewAuthenticator,
    caller_from_username,
    issue_local_token,
)


async def test_local_tokens_are_random_hashed_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    first = issue_local_token(path, namespace="demo", service_account="web")
    auth = LocalTokenAuthenticator(path)
    assert await auth.authenticate(first) == Caller("demo", "web")
    assert len(first) >= 43 and first not in path.read_text()
    second = issue_local_token(path, namespace="demo", service_account="api")
    assert await auth.authenticate(second) == Caller("demo", "api")
    assert first != second
    assert path.stat().st_mode & 0o077 == 0


async def test_missing_token_file_is_a_reason(tmp_path: Path) -> None:
    with pytest.raises(AuthenticationError, match="no token file"):
        await LocalTokenAuthenticator(tmp_path / "none").authenticate("x" * 50)


@pytest.mark.parametrize(
    ("username", "ok"),
    [
        ("system:serviceaccount:demo:web", True),
        ("system:serviceaccount:demo", False),
        ("alice", False),
        ("system:serviceaccount::web", False),
    ],
)
def test_service_account_usernames(username: str, ok: bool) -> None:
    if ok:
        assert caller_from_username(username) == Caller("demo", "web")
    else:
        with pytest.raises(AuthenticationError):
            caller_from_username(username)


def review(status: dict[str, Any]) -> Any:
    def react(request: Any) -> dict[str, Any]:
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": request.data["spec"],
            "status": status,
        }

    return react


async def test_token_review_returns_namespace_and_service_account(kmock: Any) -> None:
    kmock["post", kmock.resource("authentication.k8s.io", "v1", "tokenreviews")] << review(
        {
            "authenticated": True,
            "audiences": ["istio-ca"],
            "user": {"username": "system:serviceaccount:demo:web"},
        }
    )
    caller = await TokenReviewAuthenticator(kube_client(kmock)).authenticate("token")
    assert caller == Caller("demo", "web")
    sent = [r.data for r in kmock if r.resource is not None and r.data]
    assert sent[-1]["spec"] == {"token": "token", "audiences": ["istio-ca"]}


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ({"authenticated": False, "error": "token has expired"}, "token has expired"),
        (
            {
                "authenticated": True,
                "audiences": ["other"],
                "user": {"username": "system:serviceaccount:demo:web"},
            },
            "audiences",
        ),
        (
            {"authenticated": True, "user": {"username": "kubernetes-admin"}},
            "not a service account",
        ),
    ],
)
async def test_token_review_refusals_carry_reasons(
    kmock: Any, status: dict[str, Any], reason: str
) -> None:
    kmock["post", kmock.resource("authentication.k8s.io", "v1", "tokenreviews")] << review(status)
    with pytest.raises(AuthenticationError, match=reason):
        await TokenReviewAuthenticator(kube_client(kmock)).authenticate("token")


async def test_expiry_uses_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    token = issue_local_token(
        path, namespace="a", service_account="b", expires=now + datetime.timedelta(seconds=1)
    )
    clock = [now]
    auth = LocalTokenAuthenticator(path, clock=lambda: clock[0])
    assert await auth.authenticate(token) == Caller("a", "b")
    clock[0] = now + datetime.timedelta(seconds=1)
    with pytest.raises(AuthenticationError, match="expired"):
        await auth.authenticate(token)
