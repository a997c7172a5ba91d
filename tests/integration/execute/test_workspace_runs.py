"""Workspace files in runs: what a user uploaded is in the agent's working directory when
its run starts; what the agent creates, changes and deletes becomes versions of the run,
said in `files_changed` before `done`."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import URL

from app.main import create_app
from app.services.execute.spec import workspace_dir
from app.services.execute.sync import cached_copy
from app.services.workspace import FileCaps
from tests.conftest import (
    ADMIN,
    TenantFixture,
    assert_error,
    create_tenant,
    make_settings,
    reset_database,
    s3_storage,
)
from tests.integration.execute.streams import (
    hostile,
    new_conversation,
    parse_sse,
    running_service,
    stream_turn,
)
from tests.integration.live_server import serve_in_loop


@pytest.fixture
def wire() -> str:
    return "anthropic"


async def _versions(client: httpx.AsyncClient, tenant: TenantFixture, cid: str, path: str) -> list:
    response = await client.get(
        tenant.url(f"/conversations/{cid}/files/{path}/versions"), headers=tenant.headers
    )
    return [(v["version"], v["source"], v["run_id"]) for v in response.json()["items"]]


async def test_runs_see_uploads_and_record_their_changes(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    await client.put(tenant.url(), json={"settings": {"bash_enabled": True}}, headers=ADMIN)
    cid = await new_conversation(client, tenant)
    files = tenant.url(f"/conversations/{cid}/files")
    await client.put(f"{files}/input.txt", content=b"from the user", headers=tenant.headers)
    ws = workspace_dir(app.state.settings.data_dir, tenant.tenant_id, cid)

    first = await stream_turn(
        client,
        tenant,
        cid,
        hostile(
            ["Read", {"file_path": f"{ws}/input.txt"}],
            ["Write", {"file_path": f"{ws}/out.md", "content": "made by the agent"}],
            ["Write", {"file_path": f"{ws}/input.txt", "content": "changed by the agent"}],
        ),
    )
    assert "from the user" in first.done["result"]
    kinds = [e for e, _ in first.events]
    assert kinds.index("files_changed") < kinds.index("done")
    (changed,) = first.of("files_changed")
    assert changed["created"] == [{"path": "out.md", "version": 1}]
    assert changed["modified"] == [{"path": "input.txt", "version": 2}]
    run_id = first.done["run_id"]
    assert await _versions(client, tenant, cid, "input.txt") == [
        (2, "agent_modified", run_id),
        (1, "user_upload", None),
    ]
    made = await client.get(f"{files}/out.md", headers=tenant.headers)
    assert made.content == b"made by the agent"

    # Between runs, the user uploads a new version; the agent deletes what it made.
    await client.put(f"{files}/input.txt", content=b"second upload", headers=tenant.headers)
    second = await stream_turn(
        client,
        tenant,
        cid,
        hostile(["Bash", {"command": "cat input.txt; rm out.md"}]),
    )
    assert "second upload" in second.done["result"]
    (changed,) = second.of("files_changed")
    assert changed == {
        **changed,
        "created": [],
        "modified": [],
        "deleted": [{"path": "out.md", "version": 2}],
    }
    assert await _versions(client, tenant, cid, "out.md") == [
        (2, "agent_deleted", second.done["run_id"]),
        (1, "agent_created", run_id),
    ]
    listed = (await client.get(files, headers=tenant.headers)).json()
    assert [f["path"] for f in listed["items"]] == ["input.txt"]

    # A run that changes nothing says nothing about files.
    quiet = await stream_turn(client, tenant, cid, "hello")
    assert quiet.of("files_changed") == []
    assert (ws / "input.txt").read_text() == "second upload"


async def test_the_agent_presents_files(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    ws = workspace_dir(app.state.settings.data_dir, tenant.tenant_id, cid)
    present = "mcp__workspace__present_files"
    stream = await stream_turn(
        client,
        tenant,
        cid,
        hostile(
            ["Write", {"file_path": f"{ws}/report.md", "content": "# Report"}],
            [present, {"paths": ["report.md"]}],
            [present, {"paths": ["../../../../etc/passwd"]}],
            [present, {"paths": ["/etc/passwd"]}],
            [present, {"paths": ["missing.md"]}],
            [present, {"paths": ".claude/x"}],
        ),
    )
    result = stream.done["result"]
    assert "[2] mcp__workspace__present_files OK" in result
    for n in (3, 4, 5, 6):
        assert f"[{n}] mcp__workspace__present_files ERROR" in result, result
    (shown,) = stream.of("file_presented")
    assert shown["path"] == "report.md" and shown["version"] == 1 and shown["size"] == 8
    assert shown["mime_type"] == "text/markdown"
    kinds = [e for e, _ in stream.events]
    assert kinds.index("files_changed") < kinds.index("file_presented") < kinds.index("done")
    download = await client.get(shown["download_path"], headers=tenant.headers)
    assert download.content == b"# Report"
    listed = await client.get(
        tenant.url(f"/conversations/{cid}/files/presented"), headers=tenant.headers
    )
    assert [f["path"] for f in listed.json()["items"]] == ["report.md"]


async def test_two_nodes_share_one_store(
    database_url: URL, tmp_path: Path, s3_endpoint: str
) -> None:
    """Two service processes on one database and one S3 bucket, with data directories of
    their own: a file uploaded through A (which only serves the API) is there for a run
    on B (the worker), and what B's run changed is downloadable through A."""
    storage = s3_storage(s3_endpoint)
    apps = [
        create_app(
            make_settings(
                database_url,
                tmp_path / name,
                storage=storage,
                max_warm_sessions=0,
                node_roles=roles,
            )
        )
        for name, roles in (("a", ["api"]), ("b", ["api", "worker"]))
    ]
    try:
        async with AsyncExitStack() as stack:
            clients = []
            for node in apps:
                await stack.enter_async_context(node.router.lifespan_context(node))
                url = await stack.enter_async_context(serve_in_loop(node))
                clients.append(await stack.enter_async_context(httpx.AsyncClient(base_url=url)))
            node_a, node_b = clients
            tenant = await create_tenant(node_a, "acme")
            cid = await new_conversation(node_a, tenant)
            files = tenant.url(f"/conversations/{cid}/files")
            await node_a.put(f"{files}/brief.md", content=b"from A", headers=tenant.headers)
            ws_b = workspace_dir(apps[1].state.settings.data_dir, tenant.tenant_id, cid)
            stream = await stream_turn(
                node_b,
                tenant,
                cid,
                hostile(
                    ["Read", {"file_path": f"{ws_b}/brief.md"}],
                    ["Write", {"file_path": f"{ws_b}/answer.md", "content": "from B"}],
                ),
            )
            assert "from A" in stream.done["result"]
            answer = await node_a.get(f"{files}/answer.md", headers=tenant.headers)
            assert answer.content == b"from B"
    finally:
        await reset_database(database_url)


async def test_a_run_over_the_quota_records_none_of_its_changes(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    await client.put(tenant.url(), json={"settings": {"storage_quota_bytes": 10}}, headers=ADMIN)
    cid = await new_conversation(client, tenant)
    ws = workspace_dir(app.state.settings.data_dir, tenant.tenant_id, cid)
    stream = await stream_turn(
        client,
        tenant,
        cid,
        hostile(
            ["Write", {"file_path": f"{ws}/small.txt", "content": "tiny"}],
            ["Write", {"file_path": f"{ws}/large.txt", "content": "far too large for it"}],
        ),
    )
    (error,) = stream.of("error")
    assert error["error_type"] == "quota_exceeded"
    assert stream.of("files_changed") == []
    listed = await client.get(tenant.url(f"/conversations/{cid}/files"), headers=tenant.headers)
    assert listed.json()["items"] == []


async def test_links_the_agent_plants_are_never_followed(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture, tmp_path: Path
) -> None:
    """A hostile agent links workspace paths to files outside it: nothing outside is
    uploaded, and no later sync writes through a link."""
    await client.put(tenant.url(), json={"settings": {"bash_enabled": True}}, headers=ADMIN)
    cid = await new_conversation(client, tenant)
    files = tenant.url(f"/conversations/{cid}/files")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    # The jail has no such host path, but a link names whatever it likes; it is the host's
    # sync that must not follow it.
    stream = await stream_turn(
        client,
        tenant,
        cid,
        hostile(
            [
                "Bash",
                {
                    "command": f"ln -s {outside}/secret.txt leak.txt; ln -s {outside} docs; "
                    "ln -s /etc/passwd passwd; mkfifo pipe; echo ok > real.txt"
                },
            ]
        ),
    )
    (changed,) = stream.of("files_changed")
    assert changed["created"] == [{"path": "real.txt", "version": 1}]
    listed = (await client.get(files, headers=tenant.headers)).json()
    assert [f["path"] for f in listed["items"]] == ["real.txt"]
    assert "host secret" not in str(stream.events)
    # An upload to a path under the linked folder lands in the store; the next run's sync
    # does not write it through the link.
    await client.put(f"{files}/docs/new.txt", content=b"uploaded", headers=tenant.headers)
    await stream_turn(client, tenant, cid, "hello")
    assert not (outside / "new.txt").exists()
    assert (outside / "secret.txt").read_text() == "host secret"


async def test_a_file_over_the_cap_is_never_read(database_url: URL, tmp_path: Path) -> None:
    """A hostile agent writes a file larger than the cap: the service does not read it
    (no memory spent on it), and the run's changes are not recorded."""
    async with running_service(database_url, tmp_path, max_file_bytes=1000) as (_, client):
        tenant = await create_tenant(client, "acme", settings={"bash_enabled": True})
        cid = await new_conversation(client, tenant)
        stream = await stream_turn(
            client,
            tenant,
            cid,
            hostile(["Bash", {"command": "head -c 5000 /dev/zero > big.bin; echo ok > ok.txt"}]),
        )
        (error,) = stream.of("error")
        assert error["error_type"] == "file_too_large" and "big.bin" in error["message"]
        listed = await client.get(tenant.url(f"/conversations/{cid}/files"), headers=tenant.headers)
        assert listed.json()["items"] == []


async def test_deleting_a_conversation_removes_its_cached_copy(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    await stream_turn(client, tenant, cid, "Take notes scenario:tool")
    cached = cached_copy(app.state.settings.data_dir, tenant.tenant_id, cid)
    assert all(path.exists() for path in cached)  # the files, the manifest, the state
    await client.delete(tenant.url(f"/conversations/{cid}"), headers=tenant.headers)
    for _ in range(100):
        if not any(path.exists() for path in cached):
            break
        await asyncio.sleep(0.05)
    assert not any(path.exists() for path in cached)


async def test_idle_workspaces_leave_a_full_cache_and_come_back(
    database_url: URL, tmp_path: Path
) -> None:
    """With a cache cap smaller than one workspace, a conversation's copy leaves this node
    once its run ends and no warm session holds it; its next run fetches it again."""
    async with running_service(
        database_url, tmp_path, workspace_cache_bytes=1, max_warm_sessions=0
    ) as (app, client):
        tenant = await create_tenant(client, "acme")
        cid = await new_conversation(client, tenant)
        files = tenant.url(f"/conversations/{cid}/files")
        await client.put(f"{files}/brief.md", content=b"kept in the store", headers=tenant.headers)
        ws = workspace_dir(app.state.settings.data_dir, tenant.tenant_id, cid)
        write = ["Write", {"file_path": f"{ws}/notes.md", "content": "by the agent"}]
        await stream_turn(client, tenant, cid, hostile(write))
        await asyncio.sleep(0.2)  # the run has ended; its workspace left after `done`
        assert not any(
            path.exists()
            for path in cached_copy(app.state.settings.data_dir, tenant.tenant_id, cid)
        )
        read = [["Read", {"file_path": f"{ws}/{name}"}] for name in ("brief.md", "notes.md")]
        again = await stream_turn(client, tenant, cid, hostile(*read))
        assert (
            "kept in the store" in again.done["result"] and "by the agent" in again.done["result"]
        )


async def test_a_multipart_stream_request_brings_its_files(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    """Files sent with the stream request are in the workspace when the run starts; a
    request whose files are refused starts no run and records no file."""
    cid = await new_conversation(client, tenant)
    url = tenant.url(f"/conversations/{cid}/stream")
    files_url = tenant.url(f"/conversations/{cid}/files")
    ws = workspace_dir(app.state.settings.data_dir, tenant.tenant_id, cid)

    async def post(request: object, files: list, **data: object) -> httpx.Response:
        form = {"request": json.dumps(request), **data}
        return await client.post(url, data=form, files=files, headers=tenant.headers, timeout=60)

    read = {"user_input": hostile(["Read", {"file_path": f"{ws}/data/in.csv"}])}
    response = await post(read, [("files", ("upload.csv", b"a,b\n1,2\n"))], paths=["data/in.csv"])
    assert response.status_code == 200, response.text
    events = parse_sse(response.text)
    assert events[-1][0] == "done" and "a,b" in events[-1][1]["result"]
    assert await _versions(client, tenant, cid, "data/in.csv") == [(1, "user_upload", None)]
    messages = tenant.url(f"/conversations/{cid}/messages")
    recorded = (await client.get(messages, headers=tenant.headers)).json()["total"]

    # Refused before any run: each leaves the conversation as it was.
    attempts = [
        (read, [("files", ("x", b"1"))], {"paths": ["../escape"]}, 422),
        (read, [("files", ("x", b"1"))], {"paths": [".claude/settings.json"]}, 422),
        (read, [("files", ("a", b"1")), ("files", ("b", b"2"))], {"paths": ["c"]}, 422),
        ({"user_input": ""}, [("files", ("x.txt", b"1"))], {}, 422),
        ("not json", [("files", ("x.txt", b"1"))], {}, 422),
    ]
    for request, files, data, status in attempts:
        refused = await post(request, files, **data)
        assert refused.status_code == status, refused.text
    app.state.file_caps = FileCaps(4)
    too_big = await post(read, [("files", ("big.bin", b"12345"))])
    assert_error(too_big, 413, "FILE_TOO_LARGE")
    no_request = await client.post(url, files=[("files", ("x.txt", b"1"))], headers=tenant.headers)
    assert_error(no_request, 422, "VALIDATION_ERROR")
    after = (await client.get(messages, headers=tenant.headers)).json()["total"]
    assert after == recorded  # no run started
    listed = (await client.get(files_url, headers=tenant.headers)).json()
    assert [f["path"] for f in listed["items"]] == ["data/in.csv"]

    # Another tenant's key on this conversation: 404, and nothing lands in it.
    foreign = await client.post(
        url,
        data={"request": json.dumps(read)},
        files=[("files", ("planted.txt", b"x"))],
        headers=other_tenant.headers,
    )
    assert_error(foreign, 404, "NOT_FOUND")
    listed = (await client.get(files_url, headers=tenant.headers)).json()
    assert listed["total"] == 1
