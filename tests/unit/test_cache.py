"""The node's workspace cache: past its cap, idle workspaces leave it, least recently used
first; never one a run holds or a warm session works in."""

from __future__ import annotations

from pathlib import Path

from app.services.execute.cache import WorkspaceCache
from app.services.execute.spec import workspace_dir
from app.services.execute.sync import cached_copy


def _fill(data_dir: Path, conversation: str, size: int) -> None:
    folder = workspace_dir(data_dir, "acme", conversation)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "sub" / "data.bin").write_bytes(b"x" * size)
    for state in cached_copy(data_dir, "acme", conversation)[1:]:
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text("{}")


def _cached(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "workspaces" / "acme").iterdir())


async def _run(cache: WorkspaceCache, data_dir: Path, conversation: str, size: int) -> None:
    with cache.hold("acme", conversation):
        _fill(data_dir, conversation, size)
    await cache.settle("acme", conversation, in_use=lambda _: False)


async def test_idle_workspaces_leave_least_recently_used_first(tmp_path: Path) -> None:
    cache = WorkspaceCache(tmp_path, max_bytes=250)
    for conversation in ("a", "b"):
        await _run(cache, tmp_path, conversation, 100)
    assert _cached(tmp_path) == ["a", "b"] and cache.used_bytes == 200
    await _run(cache, tmp_path, "a", 100)  # a is used again: b is now the oldest
    await _run(cache, tmp_path, "c", 100)
    assert _cached(tmp_path) == ["a", "c"] and cache.used_bytes == 200
    # what the node last synced of b went with it: a later run there fetches everything
    assert not any(p.exists() for p in cached_copy(tmp_path, "acme", "b"))
    assert not any((tmp_path / "workspace-trash").iterdir())


async def test_held_and_warm_workspaces_are_never_evicted(tmp_path: Path) -> None:
    cache = WorkspaceCache(tmp_path, max_bytes=250)
    for conversation in ("held", "warm"):
        await _run(cache, tmp_path, conversation, 100)
    cache.max_bytes = 150
    with cache.hold("acme", "held"):
        _fill(tmp_path, "new", 100)
        with cache.hold("acme", "new"):
            await cache.settle("acme", "new", in_use=lambda cid: cid == "warm")
    # over the cap, but nothing it may take: all three stay (and it is said in the log)
    assert _cached(tmp_path) == ["held", "new", "warm"]
    cache.max_bytes = 200  # once held no more, the oldest idle one goes
    await cache.settle("acme", "new", in_use=lambda cid: cid == "warm")
    assert _cached(tmp_path) == ["new", "warm"]


async def test_a_restarted_node_knows_what_it_holds(tmp_path: Path) -> None:
    _fill(tmp_path, "old", 100)
    (tmp_path / "workspace-trash" / "left").mkdir(parents=True)
    cache = WorkspaceCache(tmp_path, max_bytes=100)
    await cache.load()
    assert cache.used_bytes == 100 and not (tmp_path / "workspace-trash" / "left").exists()
    await _run(cache, tmp_path, "new", 50)
    assert _cached(tmp_path) == ["new"]
    cache.forget("acme")
    assert cache.used_bytes == 0
