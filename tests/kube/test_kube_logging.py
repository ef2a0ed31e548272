"""What talking to the API logs: every request only at DEBUG (an idle control plane makes about
one a second), failures as warnings or errors that say what to do."""

from __future__ import annotations

import logging

import httpx2
import pytest
from lightkube.core.exceptions import ApiError

from sidemesh.kube.client import describe_error, log_requests_at_debug, parse_server_version
from sidemesh.kube.retry import Backoff, retry_forever


def _status_error(code: int, reason: str) -> ApiError:
    request = httpx2.Request("GET", "https://api/apis/coordination.k8s.io/v1/leases")
    body = {"kind": "Status", "code": code, "reason": reason, "message": f"{reason} for test"}
    return ApiError(request=request, response=httpx2.Response(code, json=body, request=request))


@pytest.mark.parametrize("logger_name", ["httpx", "httpx2"])
def test_requests_are_logged_at_debug(caplog: pytest.LogCaptureFixture, logger_name: str) -> None:
    log_requests_at_debug()
    log_requests_at_debug()  # idempotent
    logger = logging.getLogger(logger_name)
    line = 'HTTP Request: GET https://api/api/v1/pods "HTTP/1.1 403 Forbidden"'
    with caplog.at_level(logging.INFO):
        logger.info(line)
        logger.warning("a real problem")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "a real problem")
    ]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=logger_name):
        logger.info(line)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("DEBUG", line)]


@pytest.mark.parametrize(
    ("code", "reason", "hint"),
    [
        (401, "Unauthorized", "the ServiceAccount (or its token) is gone or expired"),
        (403, "Forbidden", "RBAC does not allow it"),
    ],
)
def test_refusals_say_what_to_do(code: int, reason: str, hint: str) -> None:
    described = describe_error(_status_error(code, reason))
    assert described.startswith(f"Kubernetes API: {code} {reason}: {reason} for test (")
    assert hint in described and "sidemesh install" in described
    assert "(" not in describe_error(_status_error(404, "NotFound"))


async def test_failed_calls_are_warnings_and_unfixable_ones_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = iter([httpx2.ConnectError("down"), _status_error(403, "Forbidden"), "ok"])

    async def call() -> str:
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def sleep(seconds: float) -> None:
        pass

    with caplog.at_level(logging.INFO, logger="sidemesh.kube"):
        await retry_forever("load", call, backoff=Backoff(jitter=0), sleep=sleep)
    assert [r.levelname for r in caplog.records] == ["WARNING", "ERROR"]
    assert "RBAC does not allow it" in caplog.records[1].getMessage()


def test_server_version() -> None:
    assert parse_server_version({"major": "1", "minor": "24"}) == (1, 24)
    assert parse_server_version({"major": "1", "minor": "29+"}) == (1, 29)  # GKE, EKS
    with pytest.raises(ValueError, match="unreadable Kubernetes version"):
        parse_server_version({"major": "1"})
