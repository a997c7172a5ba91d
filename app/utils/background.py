"""Work that follows a response (deleting a conversation's blobs, say): tracked, so the
service waits for it at shutdown instead of dropping it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background_work_failed", task=task.get_name(), exc_info=task.exception())

    async def drain(self, seconds: float) -> None:
        """Wait up to `seconds` for the work still running."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=seconds)
