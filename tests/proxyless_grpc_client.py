"""A proxyless gRPC client (run by `proxyless_grpc_kit.call_through_xds` in its own process):
`python proxyless_grpc_client.py HOST:PORT CALLS UNTIL insecure|xds`, with GRPC_XDS_BOOTSTRAP
set. Prints the answers as a JSON list."""

from __future__ import annotations

import json
import sys
import time

import grpc
from grpc.experimental import insecure_channel_credentials

METHOD = "/sidemesh.test.Who/Am"
DEADLINE = 30.0


def main() -> int:
    target, calls, until, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    credentials = (grpc.xds_channel_credentials(insecure_channel_credentials())
                   if mode == "xds" else None)  # fmt: skip
    address = f"xds:///{target}"
    channel = (grpc.insecure_channel(address) if credentials is None
               else grpc.secure_channel(address, credentials))  # fmt: skip
    method = channel.unary_unary(METHOD)

    def call() -> str:
        try:
            answer: bytes = method(b"", timeout=DEADLINE, wait_for_ready=True)
        except grpc.RpcError as exc:  # the tests assert on refusals too
            return f"error {exc.code().name}"
        return answer.decode()

    answers: list[str] = []
    give_up = time.monotonic() + DEADLINE
    with channel:
        if until:  # configuration may still be on its way: call until it shows
            while True:
                answer = call()
                if answer == until:
                    break
                if time.monotonic() > give_up:
                    print(f"never answered by {until}; last {answer}", file=sys.stderr)
                    return 1
        for _ in range(calls):
            answers.append(call())
    print(json.dumps(answers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
