"""Schemathesis against a real Uvicorn server, every check, positive and negative data:
no input makes a 5xx, and the OpenAPI document and the server agree (statuses, response
schemas, what is accepted and what refused, Allow headers, authentication).

Two passes: with a tenant key inside its own tenant (tenant routes in depth), then with
the admin key over the admin-only routes (it may delete the tenant the first one used).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import URL

from app.main import create_app
from tests.conftest import ADMIN, ADMIN_KEY, make_settings, reset_database
from tests.integration.live_server import serve

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))

# Rules that hold between values, or on data, which no schema can state: schema-valid
# requests these operations may refuse (422, or 416 for a range beyond the file), each
# listed with why. Every other operation must take every schema-valid request.
_DATA_RULES = {
    ("POST", "/api/tenants"): (422, "default_model_id must be in the models catalog"),
    ("PUT", "/api/tenants/{tenant_id}"): (422, "default_model_id must be in the catalog"),
    ("POST", "/api/tenants/{tenant_id}/conversations"): (
        422,
        "user_id must match X-User-ID; model_id must be in the catalog; no NUL deep in metadata",
    ),
    ("PATCH", "/api/tenants/{tenant_id}/conversations/{conversation_id}"): (
        422,
        "model_id must be in the catalog; no NUL deep in metadata",
    ),
    ("POST", "/api/tenants/{tenant_id}/conversations/{conversation_id}/files"): (
        422,
        "one path per file",
    ),
    ("GET", "/api/tenants/{tenant_id}/conversations/{conversation_id}/files/{path}"): (
        416,
        "a Range within the file",
    ),
    ("POST", "/api/tenants/{tenant_id}/conversations/{conversation_id}/stream"): (
        422,
        "one path per file; the MCP servers named must exist",
    ),
    ("POST", "/api/tenants/{tenant_id}/mcp-servers"): (
        422,
        "the operator's STDIO commands, placeholders that name secrets or tokens, a valid"
        " OpenAPI document, no NUL deep in a config",
    ),
    ("PUT", "/api/tenants/{tenant_id}/mcp-servers/{server_id}"): (422, "as when creating one"),
    ("POST", "/api/tenants/{tenant_id}/mcp-servers/{server_id}/test"): (
        422,
        "the server must answer (MCP_CONNECT_FAILED)",
    ),
    ("POST", "/api/tenants/{tenant_id}/skills"): (422, "a SKILL.md with its frontmatter"),
    ("PUT", "/api/tenants/{tenant_id}/skills/{name}"): (422, "a SKILL.md with its frontmatter"),
}
# Schemathesis's coverage phase cannot make strings near these bodies' maxLength (1 MB of
# user input, 16 MB a skill file): it sends `0` as the body instead. Fuzzing covers them.
_NO_COVERAGE = [
    ("POST", "/api/tenants/{tenant_id}/conversations/{conversation_id}/stream"),
    ("POST", "/api/tenants/{tenant_id}/skills"),
    ("PUT", "/api/tenants/{tenant_id}/skills/{name}"),
]
# The admin pass: what a tenant key cannot reach (the tenant pass covered the rest).
_ADMIN_ONLY = r"^/api/(models.*|usage/summary|tenants(/\{tenant_id\}(/api-keys.*)?)?)$"


def _config(parameters: str = "") -> str:
    sections = [parameters]
    for (method, path), (status, why) in _DATA_RULES.items():
        sections.append(
            f'# {why}\n[[operations]]\ninclude-method = "{method}"\ninclude-path = "{path}"\n'
            "[operations.checks.positive_data_acceptance]\nexpected-statuses = "
            f'["2xx", "401", "403", "404", "409", "429", "{status}"]\n'
        )
    for method, path in _NO_COVERAGE:
        sections.append(
            f'[[operations]]\ninclude-method = "{method}"\ninclude-path = "{path}"\n'
            "[operations.phases.coverage]\nenabled = false\n"
        )
    return "\n".join(sections)


def _schemathesis(
    base_url: str, key: str, config: Path, report: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (fixed arguments)
        [
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(config),
            "run",
            f"{base_url}/openapi.json",
            "--header",
            f"X-API-Key: {key}",
            # Every check: no 5xx, documented statuses, content types and response
            # schemas, schema-valid data taken, invalid data refused, auth not ignored,
            # 405 with a true Allow for methods a path does not have.
            "--checks",
            "all",
            "--mode",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            # Two at a time: the server and Schemathesis each keep a core busy.
            "--workers",
            "2",
            "--phases",
            "examples,coverage,fuzzing",
            "--generation-deterministic",
            "--generation-allow-x00",
            "true",
            "--generation-with-security-parameters",
            "false",
            "--report-junit-path",
            str(report),
            "--report",
            "junit",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _create_tenant_with_key(base_url: str) -> str:
    with httpx.Client(base_url=base_url, headers=ADMIN) as http:
        http.post("/api/tenants", json={"tenant_id": "acme", "name": "Acme"}).raise_for_status()
        http.post("/api/tenants/acme/conversations", json={"title": "seed"}).raise_for_status()
        key = http.post("/api/tenants/acme/api-keys", json={"name": "fuzz"})
        key.raise_for_status()
        return str(key.json()["key"])


@pytest.mark.fuzz
def test_the_document_tells_the_truth(database_url: URL, tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path))
    admin_config = tmp_path / "admin.toml"
    admin_config.write_text(_config())
    tenant_config = tmp_path / "tenant.toml"
    tenant_config.write_text(_config('[parameters]\n"tenant_id" = "acme"\n'))
    try:
        with serve(app) as base_url:
            tenant_key = _create_tenant_with_key(base_url)
            # The tenant pass first: the admin pass may well delete the tenant.
            runs = [
                _schemathesis(base_url, tenant_key, tenant_config, tmp_path / "tenant.xml"),
                _schemathesis(
                    base_url,
                    ADMIN_KEY,
                    admin_config,
                    tmp_path / "admin.xml",
                    "--include-path-regex",
                    _ADMIN_ONLY,
                ),
            ]
    finally:
        asyncio.run(reset_database(database_url))
    for run in runs:
        print(run.stdout[-2500:])  # the summary, shown with -s or on failure
        assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-2000:]
        assert "No issues found" in run.stdout or "passed" in run.stdout, run.stdout[-3000:]
