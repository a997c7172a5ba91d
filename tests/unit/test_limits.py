"""Run slots: admission is decided at once, a tenant at its own limit never holds up
another, the queue never grows past its size, and every claim is given back once."""

from __future__ import annotations

import asyncio

import pytest

from app.services.execute.limits import QueueFullError, QueueTimeoutError, RunSlots


async def test_a_tenant_at_its_limit_does_not_hold_up_another() -> None:
    slots = RunSlots(global_limit=10, max_waiting=3)
    running = slots.admit("a", 1)
    waiting = [slots.admit("a", 1) for _ in range(3)]  # held by their tenant's limit
    assert [w.position for w in waiting] == [1, 2, 3]
    with pytest.raises(QueueFullError):
        slots.admit("a", 1)  # the queue is full for runs that must wait...
    other = slots.admit("b", 1)  # ...but not for one that can start now
    assert other.granted.done() and running.granted.done()
    assert not any(w.granted.done() for w in waiting)


async def test_the_queue_never_grows_past_its_size() -> None:
    slots = RunSlots(global_limit=1, max_waiting=2)
    admitted, refused = [], 0
    for _ in range(10):  # a burst, all decided before anything awaits
        try:
            admitted.append(slots.admit("a", 5))
        except QueueFullError:
            refused += 1
    assert len(admitted) == 3 and refused == 7 and len(slots.waiting) == 2


async def test_waiters_hear_their_position_and_are_granted_in_order() -> None:
    slots = RunSlots(global_limit=1, max_waiting=5)
    first = slots.admit("a", 5)
    second, third = slots.admit("a", 5), slots.admit("b", 5)
    heard: list[tuple[str, int]] = []
    waits = [
        asyncio.create_task(slots.wait(admission, 5, lambda p, n=name: heard.append((n, p))))
        for name, admission in (("second", second), ("third", third))
    ]
    await asyncio.sleep(0)
    assert heard == [("second", 1), ("third", 2)]
    slots.release(first)
    await waits[0]
    assert heard[-1] == ("third", 1) and not third.granted.done()
    slots.release(second)
    await waits[1]
    slots.release(third)
    slots.release(third)  # a second release is a no-op
    assert slots.running == 0 and not slots.waiting


async def test_a_timed_out_or_cancelled_wait_gives_its_place_back() -> None:
    slots = RunSlots(global_limit=1, max_waiting=5)
    holder = slots.admit("a", 5)
    late, cancelled = slots.admit("a", 5), slots.admit("a", 5)
    with pytest.raises(QueueTimeoutError):
        await slots.wait(late, 0.01, lambda _: None)
    task = asyncio.create_task(slots.wait(cancelled, 5, lambda _: None))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not slots.waiting
    slots.release(holder)
    assert slots.running == 0


async def test_a_withdrawn_grant_frees_its_slot_for_the_next() -> None:
    slots = RunSlots(global_limit=1, max_waiting=5)
    granted = slots.admit("a", 5)
    queued = slots.admit("a", 5)
    slots.release(granted)  # e.g. the request's commit failed
    assert queued.granted.done() and slots.running == 1
