"""How many large ADS responses are being written at once.

gRPC copies each message it sends and holds the copy until the peer has read it, so with
1,000 services (a proxy's LDS is megabytes) thousands of proxies connecting at once would each
pin a copy. A large write therefore takes one of a few slots. A proxy that does not read must
not stall every other proxy's large responses, though: a write gives its slot back once it is
done or after `hold_seconds`, whichever comes first, and then finishes without one (that
proxy's copy stays pinned until it reads or goes, as it would without slots)."""

from __future__ import annotations

import asyncio
from typing import Any

# Responses from this size on take a slot (small ones, e.g. one changed assignment, never wait
# behind the megabytes of another proxy's initial LDS).
LARGE_RESPONSE_BYTES = 64 * 1024


class WriteSlots:
    def __init__(self, concurrency: int, hold_seconds: float) -> None:
        if concurrency < 1 or hold_seconds <= 0:
            raise ValueError("write slots need a concurrency of at least 1 and a hold time")
        self._slots = asyncio.Semaphore(concurrency)
        self.hold_seconds = hold_seconds

    async def acquire(self) -> None:
        """Take a slot before building a response known to be large (`write(held=True)`)."""
        await self._slots.acquire()

    def release(self) -> None:
        """Give back a slot taken with `acquire` when nothing is written after all."""
        self._slots.release()

    async def write(self, context: Any, message: bytes, *, held: bool) -> None:
        """Write `message` on the stream; a large one under a slot (already taken if `held`)."""
        if not held:
            if len(message) < LARGE_RESPONSE_BYTES:
                await context.write(message)
                return
            await self._slots.acquire()
        writing = asyncio.ensure_future(context.write(message))
        try:
            try:
                await asyncio.wait({writing}, timeout=self.hold_seconds)
            finally:
                self._slots.release()
            await writing
        finally:
            writing.cancel()  # only if the stream's task was cancelled meanwhile
