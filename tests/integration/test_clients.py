"""Generated clients prove the OpenAPI document. The Python client (openapi-python-client)
drives the README's first session against a real server and gets typed models back, each
field named by the document and of its type; the TypeScript example (openapi-typescript +
openapi-fetch) type-checks against the same document, refuses what it must, and runs.
Both are made by `make clients`'s own functions (clients/generate.py).
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import io
import json
import re
import shutil
import subprocess
import sys
import types
import typing
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
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

# Response fields the server always sends that the document leaves optional (not in
# `required`) would be typed `X | Unset` (Python) and `x?: X` (TypeScript) where a value
# always comes: there must be none. (Exceptions, if ever needed, go here by model.)
LOOSE_IN_THE_DOCUMENT: dict[str, set[str]] = {}


def _conforms(value: Any, hint: Any) -> bool:
    """Whether `value` is of the type a generated model declares (`hint`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is typing.Literal:  # the generated enums
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if hint is None or hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_conforms(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_conforms(v, args[1]) for v in value.values())
    if hint in (int, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


@dataclass
class Conformance:
    """What a generated model parsed from an answer shows about the document: fields the
    server sent that the document does not name (openapi-python-client keeps them in
    `additional_properties`), values not of their documented type, and fields the
    document leaves optional although the server sent them."""

    namespace: dict[str, Any]  # what the models' annotations name
    undocumented: list[str] = field(default_factory=list)
    mistyped: list[str] = field(default_factory=list)
    loose: dict[str, set[str]] = field(default_factory=dict)

    def walk(self, value: Any, where: str) -> None:
        if isinstance(value, list):
            for index, item in enumerate(value):
                self.walk(item, f"{where}[{index}]")
        if not attrs.has(type(value)):
            return
        model = type(value)
        declared = [f for f in attrs.fields(model) if f.name != "additional_properties"]
        if not declared:
            return  # a free-form object
        module = vars(sys.modules[model.__module__])
        hints = typing.get_type_hints(model, {**module, **self.namespace})
        self.undocumented += [f"{where}.{k}" for k in getattr(value, "additional_properties", {})]
        unset = self.namespace["Unset"]
        for attribute in declared:
            item = getattr(value, attribute.name)
            if not _conforms(item, hints[attribute.name]):
                self.mistyped.append(
                    f"{where}.{attribute.name}: {hints[attribute.name]}, got {item!r}"
                )
            if unset in typing.get_args(hints[attribute.name]) and not isinstance(item, unset):
                self.loose.setdefault(model.__name__, set()).add(attribute.name)
            self.walk(item, f"{where}.{attribute.name}")


@dataclass(frozen=True)
class Service:
    url: str
    document: Path  # its /openapi.json, as fetched


@pytest.fixture(scope="module")
def service(database_url: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One real server for every client here (each test uses its own tenant)."""
    data = tmp_path_factory.mktemp("service")
    try:
        with serve(create_app(make_settings(database_url, data))) as url:
            yield Service(url, fetch_document(f"{url}/openapi.json", data / "openapi.json"))
    finally:
        asyncio.run(reset_database(database_url))


@pytest.fixture(scope="module")
def python_client(service: Service, tmp_path_factory: pytest.TempPathFactory) -> PythonClient:
    return generate_python(service.document, tmp_path_factory.mktemp("python") / "python")


class Generated:
    """The generated Python package, imported: `api("tenants.tenants_create_tenant")`."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.client = importlib.import_module(f"{package}.client")
        self.models = importlib.import_module(f"{package}.models")
        self.types = importlib.import_module(f"{package}.types")

    def api(self, name: str) -> ModuleType:
        return importlib.import_module(f"{self.package}.api.{name}")

    @property
    def namespace(self) -> dict[str, Any]:
        """What the models' annotations name, some of it imported only for type checkers."""
        return {
            **vars(self.models),
            "Unset": self.types.Unset,
            "File": self.types.File,
            "datetime": datetime,
            "UUID": uuid.UUID,
        }


@pytest.fixture(scope="module")
def cmab(python_client: PythonClient) -> Iterator[Generated]:
    sys.path.insert(0, str(python_client.project))
    try:
        yield Generated(python_client.package)
    finally:
        sys.path.remove(str(python_client.project))
        for name in [m for m in sys.modules if m.partition(".")[0] == python_client.package]:
            del sys.modules[name]


class Session:
    """Clients of the generated package on the server, each closed at the end, and what
    their answers show about the document."""

    def __init__(self, cmab: Generated, service: Service, closing: ExitStack) -> None:
        self.cmab, self.service, self.closing = cmab, service, closing
        self.seen = Conformance(cmab.namespace)

    def client(self, key: str) -> Any:
        """Sends `Authorization: Bearer <key>`; an undocumented status raises."""
        return self.closing.enter_context(
            self.cmab.client.AuthenticatedClient(
                base_url=self.service.url, token=key, raise_on_unexpected_status=True
            )
        )

    def parsed(self, response: Any, status: int, model: type) -> Any:
        """The answer's body as the generated model: every field documented, every value
        of its documented type."""
        assert response.status_code == status, response.content
        body = response.parsed
        assert isinstance(body, model), f"{model.__name__} expected, got {type(body).__name__}"
        self.seen.walk(body, model.__name__)
        assert self.seen.undocumented == [], "sent, not in the document"
        assert self.seen.mistyped == [], "not of the documented type"
        return body


@pytest.fixture
def session(cmab: Generated, service: Service) -> Iterator[Session]:
    with ExitStack() as closing:
        yield Session(cmab, service, closing)


def test_python_client_is_generated_whole(python_client: PythonClient) -> None:
    """openapi-python-client leaves nothing out but what it cannot do (a zip body)."""
    assert python_client.document_defects == [], "\n\n".join(python_client.document_defects)


def test_python_client_drives_the_first_session(cmab: Generated, session: Session) -> None:
    m, api, parsed = cmab.models, cmab.api, session.parsed
    admin = session.client(ADMIN_KEY)

    # 1. An admin creates a tenant (its default model is the catalog's default)...
    tenant = parsed(
        api("tenants.tenants_create_tenant").sync_detailed(
            client=admin,
            body=m.TenantCreate(
                tenant_id="acme", name="Acme Corp", system_prompt="You help Acme staff."
            ),
        ),
        201,
        m.TenantRead,
    )
    assert tenant.default_model_id == "claude-sonnet-4-5"
    assert tenant.status == "active"
    assert isinstance(tenant.created_at, datetime.datetime)
    assert tenant.settings.max_turns == 50

    # 2. ...and a key for it, shown once.
    key = parsed(
        api("api_keys.api_keys_create_api_key").sync_detailed(
            "acme", client=admin, body=m.ApiKeyCreate(name="web front end")
        ),
        201,
        m.ApiKeyCreated,
    )
    assert key.key.startswith(key.prefix) and key.prefix.startswith("cmab_")
    acme = session.client(key.key)

    # 3. The tenant's front end creates a conversation for one of its users (and one for
    #    another user, for the list below to leave out)...
    create_conversation = api("conversations.conversations_create_conversation")
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
    assert conversation.user_id == "alice"
    assert conversation.status == "active"
    parsed(
        create_conversation.sync_detailed(
            "acme", client=acme, body=m.ConversationCreate(), x_user_id="bob"
        ),
        201,
        m.ConversationRead,
    )

    # 4. ...and lists that user's conversations.
    page = parsed(
        api("conversations.conversations_list_conversations").sync_detailed(
            "acme", client=acme, user_id="alice"
        ),
        200,
        m.PageConversationRead,
    )
    assert page.total == 1
    assert [c.conversation_id for c in page.items] == [conversation.conversation_id]

    # 5. ...and runs the agent on a user's message, streamed as Server-Sent Events: not
    #    modelled by the generator, so read through the client's own httpx client.
    stream = f"/api/tenants/acme/conversations/{conversation.conversation_id}/stream"
    body = m.StreamRequest(user_input="Hello, agent").to_dict()
    with connect_sse(acme.get_httpx_client(), "POST", stream, json=body) as source:
        assert source.response.status_code == 200
        run_id = uuid.UUID(source.response.headers["x-run-id"])
        events = [(e.event, e.id, json.loads(e.data)) for e in source.iter_sse()]
    answer = "".join(data["text"] for name, _, data in events if name == "text_delta")
    assert "offline model" in answer, answer
    assert events[-1][0] == "done" and events[-1][2]["status"] == "success", events[-1]
    assert {data["run_id"] for _, _, data in events} == {str(run_id)}

    run = parsed(
        api("execution.execution_get_run").sync_detailed("acme", run_id, client=acme),
        200,
        m.RunRead,
    )
    assert run.status == "succeeded"
    assert run.result == answer
    assert run.usage.total_tokens == run.usage.input_tokens + run.usage.output_tokens > 0

    # 6. A stream that was cut reads on from the last event id it got.
    replay = f"/api/tenants/acme/runs/{run_id}/events"
    headers = {"Last-Event-ID": "5"}
    with connect_sse(acme.get_httpx_client(), "GET", replay, headers=headers) as source:
        assert [(e.event, e.id, json.loads(e.data)) for e in source.iter_sse()] == events[5:]

    # The conversation's messages, in order: the user's, then the agent's.
    messages = parsed(
        api("conversations.conversations_list_messages").sync_detailed(
            "acme", conversation.conversation_id, client=acme
        ),
        200,
        m.PageMessageRead,
    ).items
    assert [message.seq for message in messages] == list(range(1, len(messages) + 1))
    assert [message.role for message in messages][:2] == ["user", "assistant"]
    assert {message.run_id for message in messages} == {run_id}

    # The tenant's usage: the run's record, and the summary by model.
    usage = parsed(
        api("usage.usage_list_usage").sync_detailed(
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
        api("usage.usage_usage_summary").sync_detailed("acme", client=acme, group_by="model"),
        200,
        m.UsageSummary,
    )
    assert [bucket.model_id for bucket in summary.buckets] == [record.model_id]
    assert (summary.totals.runs, summary.totals.input_tokens) == (1, record.input_tokens)

    # An error is the documented envelope, typed too.
    missing = parsed(
        api("conversations.conversations_get_conversation").sync_detailed(
            "acme", uuid.uuid4(), client=acme
        ),
        404,
        m.ErrorEnvelope,
    )
    assert missing.error.code == "NOT_FOUND"

    loose = session.seen.loose
    assert loose == LOOSE_IN_THE_DOCUMENT, {
        "now required in the document (take off LOOSE_IN_THE_DOCUMENT)": {
            name: fields - loose.get(name, set())
            for name, fields in LOOSE_IN_THE_DOCUMENT.items()
            if fields - loose.get(name, set())
        },
        "newly optional in the document, yet sent": {
            name: fields - LOOSE_IN_THE_DOCUMENT.get(name, set())
            for name, fields in loose.items()
            if fields - LOOSE_IN_THE_DOCUMENT.get(name, set())
        },
    }


def test_python_client_uploads_and_downloads_a_file(cmab: Generated, session: Session) -> None:
    """README step 7's files, without its run: a raw body up, the content down."""
    m, api, parsed = cmab.models, cmab.api, session.parsed
    admin = session.client(ADMIN_KEY)
    parsed(
        api("tenants.tenants_create_tenant").sync_detailed(
            client=admin, body=m.TenantCreate(tenant_id="acme-files", name="Acme Files")
        ),
        201,
        m.TenantRead,
    )
    conversation = parsed(
        api("conversations.conversations_create_conversation").sync_detailed(
            "acme-files", client=admin, body=m.ConversationCreate()
        ),
        201,
        m.ConversationRead,
    )
    content = b"Quarterly figures: up 4 %\n"
    # The document types this body as text ({"type": "string"}), so the generated
    # function says `body: str`; but it sends `body.payload`, so only a File works.
    uploaded = parsed(
        api("workspace.workspace_upload_file").sync_detailed(
            "acme-files",
            conversation.conversation_id,
            "notes/brief.md",
            client=admin,
            body=cmab.types.File(payload=io.BytesIO(content), file_name="brief.md"),
        ),
        200,
        m.WorkspaceFileRead,
    )
    assert (uploaded.path, uploaded.version, uploaded.size) == ("notes/brief.md", 1, len(content))
    downloaded = api("workspace.workspace_download_file").sync_detailed(
        "acme-files", conversation.conversation_id, "notes/brief.md", client=admin
    )
    assert downloaded.status_code == 200 and downloaded.content == content


# Mistakes a typed client must refuse, and by line what tsc names in its error.
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
    check = _node_tool(project, "tsc", "-p", ".", "--skipLibCheck")  # the .d.ts passed above
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
