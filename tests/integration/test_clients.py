"""Generated clients prove the OpenAPI document: the Python client (openapi-python-client)
drives the README's first session against a real server and gets typed models back, and
the TypeScript example (openapi-typescript + openapi-fetch) type-checks against the same
document and runs. Both are made by `make clients`'s own functions (clients/generate.py).
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
from httpx_sse import connect_sse
from sqlalchemy import URL

from app.main import create_app
from clients.generate import (
    PythonClient,
    copy_typescript_project,
    fetch_document,
    generate_python,
    generate_typescript,
    install_typescript,
    typecheck_typescript,
)
from tests.conftest import ADMIN_KEY, make_settings, reset_database
from tests.integration.live_server import serve


@dataclass(frozen=True)
class Service:
    url: str
    document: Path  # its /openapi.json, as fetched


@pytest.fixture(scope="module")
def service(database_url: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One real server for both clients (each uses its own tenant)."""
    data = tmp_path_factory.mktemp("service")
    try:
        with serve(create_app(make_settings(database_url, data))) as url:
            yield Service(url, fetch_document(f"{url}/openapi.json", data / "openapi.json"))
    finally:
        asyncio.run(reset_database(database_url))


class Generated:
    """The generated Python package, imported: `api("tenants.tenants_create_tenant")`."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.client = importlib.import_module(package)
        self.models = importlib.import_module(f"{package}.models")
        self.types = importlib.import_module(f"{package}.types")

    def api(self, name: str) -> ModuleType:
        return importlib.import_module(f"{self.package}.api.{name}")


@contextmanager
def imported(generated: PythonClient) -> Iterator[Generated]:
    sys.path.insert(0, str(generated.project))
    try:
        yield Generated(generated.package)
    finally:
        sys.path.remove(str(generated.project))
        for name in [m for m in sys.modules if m.partition(".")[0] == generated.package]:
            del sys.modules[name]


def undocumented_fields(value: Any, where: str = "") -> list[str]:
    """Fields the server sent that the document does not name: openapi-python-client
    keeps them in `additional_properties` (of models that declare fields; a free-form
    object's model declares none)."""
    found: list[str] = []
    if attrs.has(type(value)):
        declared = [f.name for f in attrs.fields(type(value)) if f.name != "additional_properties"]
        if declared:
            extra = getattr(value, "additional_properties", {})  # none: closed in the document
            found += [f"{where}.{key}" for key in extra]
            for name in declared:
                found += undocumented_fields(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += undocumented_fields(item, f"{where}[{index}]")
    return found


def parsed(response: Any, status: int, model: type) -> Any:
    """The response's body as the generated model, with nothing the document leaves out."""
    assert response.status_code == status, response.content
    body = response.parsed
    assert isinstance(body, model), f"{model.__name__} expected, got {type(body).__name__}"
    assert undocumented_fields(body, model.__name__) == []
    return body


def test_python_client_drives_the_first_session(service: Service, tmp_path: Path) -> None:
    generated = generate_python(service.document, tmp_path / "python")
    assert generated.document_defects == [], "\n\n".join(generated.document_defects)
    with imported(generated) as cmab, ExitStack() as closing:
        m = cmab.models

        def client(key: str) -> Any:
            return closing.enter_context(
                cmab.client.AuthenticatedClient(
                    base_url=service.url, token=key, raise_on_unexpected_status=True
                )
            )

        admin = client(ADMIN_KEY)

        # 1. An admin creates a tenant (its default model is the catalog's default)...
        tenant = parsed(
            cmab.api("tenants.tenants_create_tenant").sync_detailed(
                client=admin,
                body=m.TenantCreate(
                    tenant_id="acme", name="Acme Corp", system_prompt="You help Acme staff."
                ),
            ),
            201,
            m.TenantRead,
        )
        assert tenant.default_model_id == "claude-sonnet-4-5"
        assert tenant.status == m.TenantReadStatus.ACTIVE
        assert isinstance(tenant.created_at, datetime.datetime)
        assert tenant.settings.max_turns == 50

        # 2. ...and a key for it, shown once.
        key = parsed(
            cmab.api("api_keys.api_keys_create_api_key").sync_detailed(
                "acme", client=admin, body=m.ApiKeyCreate(name="web front end")
            ),
            201,
            m.ApiKeyCreated,
        )
        assert key.key.startswith("cmab_") and key.key.startswith(key.prefix)
        acme = client(key.key)

        # 3. The tenant's front end creates a conversation for one of its users (and
        #    one for another user, so the list below has something to leave out)...
        create_conversation = cmab.api("conversations.conversations_create_conversation")
        conversation = parsed(
            create_conversation.sync_detailed(
                "acme",
                client=acme,
                body=m.ConversationCreate(title="Quarterly report"),
                x_user_id="alice",
            ),
            201,
            m.ConversationRead,
        )
        assert isinstance(conversation.conversation_id, uuid.UUID)
        assert (conversation.user_id, conversation.status) == (
            "alice",
            m.ConversationReadStatus.ACTIVE,
        )
        create_conversation.sync_detailed(
            "acme", client=acme, body=m.ConversationCreate(), x_user_id="bob"
        )

        # 4. ...and lists that user's conversations.
        page = parsed(
            cmab.api("conversations.conversations_list_conversations").sync_detailed(
                "acme", client=acme, user_id="alice"
            ),
            200,
            m.PageConversationRead,
        )
        assert page.total == 1
        assert [c.conversation_id for c in page.items] == [conversation.conversation_id]
        assert isinstance(page.items[0], m.ConversationRead)

        # 5. ...and runs the agent on a user's message, streamed as Server-Sent Events
        #    (not modelled by the generator: read through the client's own httpx client).
        stream_path = f"/api/tenants/acme/conversations/{conversation.conversation_id}/stream"
        body = m.StreamRequest(user_input="Hello, agent").to_dict()
        with connect_sse(acme.get_httpx_client(), "POST", stream_path, json=body) as source:
            assert source.response.status_code == 200
            run_id = uuid.UUID(source.response.headers["x-run-id"])
            events = [(e.event, e.id, json.loads(e.data)) for e in source.iter_sse()]
        names = [name for name, _, _ in events]
        answer = "".join(data["text"] for name, _, data in events if name == "text_delta")
        assert "offline" in answer.lower(), answer
        assert names[-1] == "done", names
        assert events[-1][2]["status"] == "success", events[-1]
        assert {data["run_id"] for _, _, data in events} == {str(run_id)}

        run = parsed(
            cmab.api("execution.execution_get_run").sync_detailed("acme", run_id, client=acme),
            200,
            m.RunRead,
        )
        assert run.status == m.RunReadStatus.SUCCEEDED
        assert run.result == answer
        assert isinstance(run.usage, m.Usage) and run.usage.total_tokens > 0

        # 6. A stream that was cut reads on from the last event id it got.
        events_path = f"/api/tenants/acme/runs/{run_id}/events"
        with connect_sse(
            acme.get_httpx_client(), "GET", events_path, headers={"Last-Event-ID": "5"}
        ) as source:
            replayed = [(e.event, e.id, json.loads(e.data)) for e in source.iter_sse()]
        assert replayed == events[5:]

        # The conversation's messages, in order: the user's, then the agent's.
        messages = parsed(
            cmab.api("conversations.conversations_list_messages").sync_detailed(
                "acme", conversation.conversation_id, client=acme
            ),
            200,
            m.PageMessageRead,
        )
        assert [message.seq for message in messages.items] == sorted(
            message.seq for message in messages.items
        )
        assert messages.items[0].role == "user"
        assert "assistant" in [message.role for message in messages.items]
        assert {message.run_id for message in messages.items} == {run_id}

        # The tenant's usage: the run's record, and the summary by model.
        usage = parsed(
            cmab.api("usage.usage_list_usage").sync_detailed(
                "acme", client=acme, conversation_id=conversation.conversation_id
            ),
            200,
            m.PageUsageRecordRead,
        )
        assert [record.run_id for record in usage.items] == [run_id]
        record = usage.items[0]
        assert (record.user_id, record.api_key_id) == ("alice", key.id)
        assert record.input_tokens == run.usage.input_tokens
        summary = parsed(
            cmab.api("usage.usage_usage_summary").sync_detailed(
                "acme", client=acme, group_by="model"
            ),
            200,
            m.UsageSummary,
        )
        assert [bucket.model_id for bucket in summary.buckets] == [record.model_id]
        assert summary.totals.runs == 1
        assert summary.totals.input_tokens == record.input_tokens

        # An error comes back as the documented envelope, typed too.
        missing = parsed(
            cmab.api("conversations.conversations_get_conversation").sync_detailed(
                "acme", uuid.uuid4(), client=acme
            ),
            404,
            m.ErrorEnvelope,
        )
        assert missing.error.code == "NOT_FOUND"


# Mistakes a typed client must refuse: (line, what tsc says about it).
WRONG_TS = """\
import { connect } from "./usage";
const admin = connect("http://127.0.0.1:8000", "key");
await admin.POST("/api/tenants", { body: { tenant_id: "acme" } });
await admin.GET("/api/tenant", {});
const got = await admin.GET("/api/tenants/{tenant_id}", { params: { path: { tenant_id: "acme" } } });
if (got.data) console.log(got.data.tenantId);
await admin.GET("/api/tenants/{tenant_id}/conversations", { params: { path: { tenant: "acme" } } });
"""
WRONG_LINES = {3: "'name'", 4: '"/api/tenant"', 6: "'tenantId'", 7: "'tenant'"}

RUN_TS = """\
import { firstSession } from "./build/usage.js";
const [baseUrl, adminKey, tenantId] = process.argv.slice(1);
console.log(JSON.stringify(await firstSession(baseUrl, adminKey, tenantId)));
"""


def _node_tool(project: Path, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (the project's own tools)
        [str(project / "node_modules" / ".bin" / name), *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_typescript_client_type_checks_and_runs(service: Service, tmp_path: Path) -> None:
    node = shutil.which("node")
    if shutil.which("npm") is None or node is None:
        pytest.fail("npm and node must be on PATH: the TypeScript client needs Node.js 18+")
    project = copy_typescript_project(tmp_path / "typescript")
    install_typescript(project)
    generate_typescript(service.document, project)

    check = typecheck_typescript(project)
    assert check.returncode == 0, check.stdout + check.stderr

    # The types bite: each mistake is an error, on its line.
    (project / "wrong.ts").write_text(WRONG_TS)
    check = typecheck_typescript(project)
    (project / "wrong.ts").unlink()
    # An error's first line names its place; its explanation may go on, indented.
    errors = re.findall(r"^(\S+)\((\d+),\d+\): error TS\d+: (.*(?:\n .*)*)", check.stdout, re.M)
    assert check.returncode != 0
    assert {int(line) for file, line, _ in errors if file == "wrong.ts"} == set(WRONG_LINES)
    assert {file for file, _, _ in errors} == {"wrong.ts"}, check.stdout
    for line, named in WRONG_LINES.items():
        said = " ".join(text for file, n, text in errors if int(n) == line)
        assert named in said, (line, said)

    # And the example runs: the first session through openapi-fetch, on the real server.
    built = _node_tool(
        project, "tsc", "-p", ".", "--noEmit", "false", "--noCheck", "--outDir", "build"
    )
    assert built.returncode == 0, built.stdout + built.stderr
    ran = subprocess.run(  # noqa: S603 (node on our own script)
        [node, "--input-type=module", "-e", RUN_TS, service.url, ADMIN_KEY, "acme-ts"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    session = json.loads(ran.stdout)
    assert session["tenant"]["tenant_id"] == "acme-ts"
    assert [c["conversation_id"] for c in session["listed"]] == [
        session["conversation"]["conversation_id"]
    ]
    assert session["events"][-1]["event"] == "done"
    assert session["events"][-1]["data"]["status"] == "success"
    assert "offline" in session["answer"].lower()
    assert session["run"]["status"] == "succeeded"
    assert session["messages"][0]["role"] == "user"
    assert [r["run_id"] for r in session["usage"]] == [session["run"]["run_id"]]
