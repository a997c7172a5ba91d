"""This node's cache of workspaces: the agents' working directories, copies of what the
object store holds. Past its size cap the least recently used idle workspaces leave it
(never one a run holds or a warm session works in); a later run there fetches them
again."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import structlog

from app.services.execute.spec import workspace_dir
from app.services.execute.sync import cached_copy

log = structlog.get_logger(__name__)

Key = tuple[str, str]  # (tenant id, conversation id)


def _disk_usage(folder: Path) -> int:
    """The bytes of the regular files under `folder` (links are neither followed nor
    counted)."""
    total, stack = 0, [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


class WorkspaceCache:
    def __init__(self, data_dir: Path, max_bytes: int | None) -> None:
        self.data_dir = data_dir.resolve()
        self.max_bytes = max_bytes
        # Least recently used first: each workspace's bytes as last measured.
        self._sizes: OrderedDict[Key, int] = OrderedDict()
        # Workspaces runs are using now (a count each: a run and a delete may overlap).
        self._held: dict[Key, int] = {}
        self._trash = self.data_dir / "workspace-trash"

    @property
    def used_bytes(self) -> int:
        return sum(self._sizes.values())

    def _scan(self) -> list[tuple[float, Key, int]]:
        shutil.rmtree(self._trash, ignore_errors=True)  # what an earlier process left
        found = []
        for tenant in (self.data_dir / "workspaces").glob("*"):
            for folder in tenant.glob("*"):
                if folder.is_dir() and not folder.is_symlink():
                    key = (tenant.name, folder.name)
                    found.append((folder.stat().st_mtime, key, _disk_usage(folder)))
        return sorted(found)

    async def load(self) -> None:
        """What the node already holds, at start: the least recently changed first."""
        for _, key, size in await asyncio.to_thread(self._scan):
            self._sizes[key] = size
        log.info("workspace_cache_loaded", workspaces=len(self._sizes), bytes=self.used_bytes)

    @contextmanager
    def hold(self, tenant_id: str, conversation_id: str) -> Iterator[None]:
        """A run uses this workspace: it is not evicted meanwhile, and becomes the most
        recently used."""
        key = (tenant_id, conversation_id)
        self._held[key] = self._held.get(key, 0) + 1
        self._sizes[key] = self._sizes.pop(key, 0)
        try:
            yield
        finally:
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]

    def forget(self, tenant_id: str, conversation_id: str | None = None) -> None:
        """A conversation (or a whole tenant) was deleted; its files go with it."""
        for key in [k for k in self._sizes if k[0] == tenant_id]:
            if conversation_id in (None, key[1]):
                del self._sizes[key]

    async def settle(
        self, tenant_id: str, conversation_id: str, *, in_use: Callable[[str], bool]
    ) -> None:
        """After a run: measure its workspace, then evict idle ones, least recently used
        first, until the cache is within its cap. `in_use(conversation_id)`: a warm
        session works there."""
        if self.max_bytes is None:
            return  # no cap: nothing to measure
        key = (tenant_id, conversation_id)
        folder = workspace_dir(self.data_dir, tenant_id, conversation_id)
        size = await asyncio.to_thread(_disk_usage, folder)
        if key in self._sizes:
            self._sizes[key] = size
        if self.used_bytes <= self.max_bytes:
            return
        evicted: list[Path] = []
        for candidate in list(self._sizes):
            if self.used_bytes <= self.max_bytes:
                break
            if candidate in self._held or in_use(candidate[1]):
                continue
            # Moved out of the way at once (no await between the check and the move, so
            # no run can start there meanwhile); deleted in the background.
            evicted.append(self._take_out(*candidate))
            del self._sizes[candidate]
            log.info("workspace_evicted", tenant_id=candidate[0], conversation_id=candidate[1])
        if self.used_bytes > self.max_bytes:
            log.warning("workspace_cache_over_cap", bytes=self.used_bytes, max_bytes=self.max_bytes)
        for path in evicted:
            await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)

    def _take_out(self, tenant_id: str, conversation_id: str) -> Path:
        folder, *state = cached_copy(self.data_dir, tenant_id, conversation_id)
        for path in state:
            path.unlink(missing_ok=True)
        trash = self._trash / uuid.uuid4().hex
        self._trash.mkdir(parents=True, exist_ok=True)
        with suppress(FileNotFoundError):
            folder.rename(trash)
        return trash
