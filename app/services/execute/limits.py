"""Concurrency limits for runs: a global cap and each tenant's own. A run over a limit
waits in a queue (first come, first served, but a tenant at its limit never holds up
another tenant) for up to its timeout; a full queue refuses new runs at once.

A run is admitted synchronously, when it is asked for: it takes a slot or a place in the
queue then and there, so a burst of requests can never overfill the queue."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from app.errors import TooManyRequestsError


class QueueTimeoutError(Exception):
    """The run waited for a slot longer than the queue timeout."""


class QueueFullError(TooManyRequestsError):
    def __init__(self) -> None:
        super().__init__(
            "Too many runs are waiting for a slot; try again shortly", code="QUEUE_FULL"
        )


@dataclass(eq=False)
class Admission:
    """A run's claim on a slot: granted at once, or a place in the queue until it is."""

    tenant_id: str
    tenant_limit: int
    position: int = 0  # 1-based place in the queue; 0 once granted
    on_position: Callable[[int], None] | None = None
    released: bool = False
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class RunSlots:
    def __init__(self, global_limit: int, max_waiting: int) -> None:
        self.global_limit = global_limit
        self.max_waiting = max_waiting
        self.running = 0
        self.running_by_tenant: Counter[str] = Counter()
        self.waiting: list[Admission] = []

    def _fits(self, tenant_id: str, tenant_limit: int) -> bool:
        # Runs still waiting are all held by a limit (each change grants what fits): a
        # new run that fits now jumps only those held by their own tenant's limit.
        return self.running < self.global_limit and self.running_by_tenant[tenant_id] < tenant_limit

    def admit(self, tenant_id: str, tenant_limit: int) -> Admission:
        """A slot now, or a place in the queue; QueueFullError when neither is free."""
        admission = Admission(tenant_id, tenant_limit)
        if self._fits(tenant_id, tenant_limit):
            self._grant_to(admission)
        elif len(self.waiting) >= self.max_waiting:
            raise QueueFullError
        else:
            self.waiting.append(admission)
            admission.position = len(self.waiting)
        return admission

    async def wait(
        self, admission: Admission, wait_seconds: float, on_position: Callable[[int], None]
    ) -> None:
        """Wait for the admission's slot; `on_position` hears the run's place in the
        queue now and whenever it changes. On a timeout (QueueTimeoutError) or a cancel
        the claim is released."""
        admission.on_position = on_position
        if admission.position:
            on_position(admission.position)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
            # that lands as the slot is granted.
            async with asyncio.timeout(wait_seconds):
                await asyncio.shield(admission.granted)
        except TimeoutError as exc:
            self.release(admission)
            raise QueueTimeoutError from exc
        except BaseException:
            self.release(admission)
            raise

    def release(self, admission: Admission) -> None:
        """Give back the slot, or the place in the queue; only the first call counts."""
        if admission.released:
            return
        admission.released = True
        if admission in self.waiting:
            self.waiting.remove(admission)
            self._tell_positions()
        elif admission.granted.done():
            self.running -= 1
            self.running_by_tenant[admission.tenant_id] -= 1
            self._grant()

    def _grant_to(self, admission: Admission) -> None:
        self.running += 1
        self.running_by_tenant[admission.tenant_id] += 1
        admission.position = 0
        admission.granted.set_result(None)

    def _grant(self) -> None:
        for admission in list(self.waiting):
            if self._fits(admission.tenant_id, admission.tenant_limit):
                self.waiting.remove(admission)
                self._grant_to(admission)
        self._tell_positions()

    def _tell_positions(self) -> None:
        for position, admission in enumerate(self.waiting, start=1):
            if admission.position != position:
                admission.position = position
                if admission.on_position is not None:
                    admission.on_position(position)
