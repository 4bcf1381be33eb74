"""metalearn.waiting: a cancellation always ends a wait, even one that arrives in the
same turn as the thing waited for (Python 3.11's asyncio.wait_for swallows that one, and
a gateway whose background loop waited with it did not exit after SIGTERM)."""

from __future__ import annotations

import asyncio

import pytest

from metalearn.waiting import cancel_and_wait, wait_set, within


async def _cancelled_as_the_event_is_set(wait: object) -> asyncio.Task[None]:
    event = asyncio.Event()

    async def background_loop() -> None:  # as the dispatcher's, the profiler's
        while True:
            event.clear()
            await wait(event)  # type: ignore[operator]

    task = asyncio.create_task(background_loop())
    await asyncio.sleep(0)  # it waits
    event.set()
    task.cancel()  # the same turn: the stop of a gateway whose queue just changed
    done, _ = await asyncio.wait({task}, timeout=5)
    if not done:
        task.cancel()
    return task


def test_a_cancellation_in_the_same_turn_as_the_event_ends_the_wait() -> None:
    async def main() -> None:
        task = await _cancelled_as_the_event_is_set(lambda e: wait_set(e, 30))
        assert task.done() and task.cancelled()
        task = await _cancelled_as_the_event_is_set(lambda e: within(e.wait(), 30))
        assert task.done() and task.cancelled()

    asyncio.run(main())


def test_waits_say_whether_the_event_came() -> None:
    async def main() -> None:
        event = asyncio.Event()
        assert await wait_set(event, 0.01) is False
        event.set()
        assert await wait_set(event, 0.01) is True
        assert await within(asyncio.sleep(0, "x"), 1) == "x"
        with pytest.raises(TimeoutError):
            await within(asyncio.sleep(5), 0.01)

    asyncio.run(main())


def test_the_gateway_never_waits_with_asyncio_wait_for() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    users = [
        str(path.relative_to(root))
        for package in ("gateway", "dashboard", "metalearn", "trainer")
        for path in (root / package).rglob("*.py")
        if "asyncio.wait_for(" in path.read_text()
    ]
    assert users == []


def test_cancel_and_wait_ends_a_task_that_absorbs_one_cancel() -> None:
    async def main() -> None:
        absorbed = []

        async def stubborn() -> None:  # as a loop whose database call swallowed one
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                absorbed.append(True)
            await asyncio.sleep(30)

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await cancel_and_wait(task, patience=0.05)
        assert absorbed == [True] and task.cancelled()

        async def failing() -> None:
            raise ValueError("its own error")

        task = asyncio.create_task(failing())
        await asyncio.sleep(0)
        with pytest.raises(ValueError, match="its own error"):
            await cancel_and_wait(task)

    asyncio.run(main())
