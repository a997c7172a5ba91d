"""Concurrency limits for runs: a global cap and each tenant's own. A run over a limit
waits in a queue (first come, first served, but a tenant at its limit never holds up
another tenant) for up to its timeout; a full queue refuses new runs at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


class QueueTimeoutError(Exception):
    """The run waited for a slot longer than the queue timeout."""


@dataclass(eq=False)
class _Waiter:
    tenant_id: str
    tenant_limit: int
    on_position: Callable[[int], None]
    position: int = 0
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class RunSlots:
    def __init__(self, global_limit: int, max_waiting: int) -> None:
        self.global_limit = global_limit
        self.max_waiting = max_waiting
        self.running = 0
        self.running_by_tenant: Counter[str] = Counter()
        self.waiting: list[_Waiter] = []

    def queue_full(self) -> bool:
        return len(self.waiting) >= self.max_waiting

    def can_start(self, tenant_id: str, tenant_limit: int) -> bool:
        """A run of this tenant would start at once."""
        return not self.waiting and self._fits(tenant_id, tenant_limit)

    def _fits(self, tenant_id: str, tenant_limit: int) -> bool:
        return self.running < self.global_limit and self.running_by_tenant[tenant_id] < tenant_limit

    def _take(self, tenant_id: str) -> None:
        self.running += 1
        self.running_by_tenant[tenant_id] += 1

    async def acquire(
        self,
        tenant_id: str,
        tenant_limit: int,
        wait_seconds: float,
        on_position: Callable[[int], None],
    ) -> None:
        """Take a slot, waiting in the queue when none is free (`on_position` is told the
        run's place, 1-based, whenever it changes)."""
        if self.can_start(tenant_id, tenant_limit):
            self._take(tenant_id)
            return
        waiter = _Waiter(tenant_id, tenant_limit, on_position)
        self.waiting.append(waiter)
        # Those ahead may be held only by their own tenant's limit: this one may fit now.
        self._grant()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.granted), wait_seconds)
        except BaseException as exc:
            if waiter in self.waiting:
                self.waiting.remove(waiter)
                self._tell_positions()
            elif waiter.granted.done():  # granted as the wait ended: hand the slot back
                self.release(tenant_id)
            if isinstance(exc, TimeoutError):
                raise QueueTimeoutError from exc
            raise

    def release(self, tenant_id: str) -> None:
        self.running -= 1
        self.running_by_tenant[tenant_id] -= 1
        self._grant()

    def _grant(self) -> None:
        for waiter in list(self.waiting):
            if self._fits(waiter.tenant_id, waiter.tenant_limit):
                self.waiting.remove(waiter)
                self._take(waiter.tenant_id)
                waiter.granted.set_result(None)
        self._tell_positions()

    def _tell_positions(self) -> None:
        for position, waiter in enumerate(self.waiting, start=1):
            if waiter.position != position:
                waiter.position = position
                waiter.on_position(position)
