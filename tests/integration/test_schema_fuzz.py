"""Property-based fuzzing of the OpenAPI schema with Schemathesis: no input makes a 5xx.

Two passes over a real Uvicorn server: with the admin key (every route, random tenant
ids) and with a tenant key inside its own tenant (tenant routes explored in depth).
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

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "40"))


def _schemathesis(
    base_url: str, key: str, config: Path, report: Path
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
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(MAX_EXAMPLES),
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
        ],
        capture_output=True,
        text=True,
        timeout=600,
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
def test_no_input_causes_a_server_error(database_url: URL, tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path))
    admin_config = tmp_path / "admin.toml"
    admin_config.write_text("")
    tenant_config = tmp_path / "tenant.toml"
    tenant_config.write_text('[parameters]\n"tenant_id" = "acme"\n')
    try:
        with serve(app) as base_url:
            tenant_key = _create_tenant_with_key(base_url)
            # The tenant pass first: the admin pass may well delete the tenant.
            runs = [
                _schemathesis(base_url, tenant_key, tenant_config, tmp_path / "tenant.xml"),
                _schemathesis(base_url, ADMIN_KEY, admin_config, tmp_path / "admin.xml"),
            ]
    finally:
        asyncio.run(reset_database(database_url))
    for run in runs:
        print(run.stdout[-2500:])  # the summary, shown with -s or on failure
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert "No issues found" in run.stdout or "passed" in run.stdout, run.stdout[-3000:]
