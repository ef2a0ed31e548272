"""BodyDeadlines: stalled readers are cancelled, punctual ones are not, the sweeper goes idle."""

from __future__ import annotations

import asyncio

from sidemesh.webhook.deadlines import BodyDeadlines


async def test_a_stalled_reader_is_cancelled_and_marked() -> None:
    deadlines = BodyDeadlines(0.02)
    outcome: list[str] = []

    async def reader() -> None:
        task = asyncio.current_task()
        assert task is not None
        deadlines.start(task)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("expired" if deadlines.expired(task) else "cancelled")
            raise
        finally:
            deadlines.finish(task)

    task = asyncio.create_task(reader())
    async with asyncio.timeout(10):
        await asyncio.gather(task, return_exceptions=True)
    assert outcome == ["expired"]


async def test_punctual_readers_are_left_alone_and_the_sweeper_stops() -> None:
    deadlines = BodyDeadlines(0.05)

    async def reader() -> None:
        task = asyncio.current_task()
        assert task is not None
        deadlines.start(task)
        try:
            await asyncio.sleep(0.001)
        finally:
            deadlines.finish(task)

    async with asyncio.timeout(10):
        await asyncio.gather(*(reader() for _ in range(20)))
        sweeper = deadlines._sweeper
        assert sweeper is not None
        await sweeper  # nothing left to watch: it returns on its own
    assert deadlines._sweeper is None
