"""Request size limits: headers over the cap are 431, bodies over it 413, both in the
envelope and before any handler runs; requests under the caps are served."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import URL

from tests.conftest import ADMIN, ADMIN_KEY, assert_error, reset_database
from tests.integration.live_server import spawn_service

TENANT = {"tenant_id": "big-body", "name": "Big body"}


def _header_bytes(request: httpx.Request) -> int:
    return sum(len(name) + len(value) for name, value in request.headers.raw)


def _with_filler(client: httpx.AsyncClient, total: int) -> httpx.Request:
    """A GET of the tenant list whose headers, names and values summed, come to `total`."""
    request = client.build_request("GET", "/api/tenants", headers={**ADMIN, "X-Filler": ""})
    filler = "f" * (total - _header_bytes(request))
    request = client.build_request("GET", "/api/tenants", headers={**ADMIN, "X-Filler": filler})
    assert _header_bytes(request) == total
    return request


def _padded_tenant(size: int) -> bytes:
    """A valid tenant-create body of exactly `size` bytes (JSON allows trailing spaces)."""
    body = json.dumps(TENANT).encode()
    return body + b" " * (size - len(body))


async def _chunks(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def _tenant_exists(client: httpx.AsyncClient) -> bool:
    response = await client.get(f"/api/tenants/{TENANT['tenant_id']}", headers=ADMIN)
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


async def test_headers_over_the_cap_are_431_with_the_request_id(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/api/tenants", headers={**ADMIN, "X-Request-ID": "limits-1", "X-Big": "a" * 100_000}
    )
    error = assert_error(response, 431, "REQUEST_HEADER_FIELDS_TOO_LARGE")
    assert error["request_id"] == "limits-1"
    assert "65536" in error["message"]
    assert error["details"] == []


async def test_a_60_kb_header_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/tenants", headers={**ADMIN, "X-Big": "a" * 60_000})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("over", "status"), [(0, 200), (1, 431)])
async def test_the_header_cap_counts_every_name_and_value(
    client: httpx.AsyncClient, app: FastAPI, over: int, status: int
) -> None:
    limit = app.state.settings.max_request_header_bytes
    response = await client.send(_with_filler(client, limit + over))
    assert response.status_code == status, response.text


async def test_a_declared_length_over_the_cap_is_413_before_the_handler(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """A small valid body that declares more than the cap: only Content-Length can
    refuse it, and the tenant is not created."""
    limit = app.state.settings.max_request_body_bytes
    response = await client.post(
        "/api/tenants",
        content=json.dumps(TENANT).encode(),
        headers={**ADMIN, "Content-Type": "application/json", "Content-Length": str(limit + 1)},
    )
    error = assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert str(limit) in error["message"]
    assert not await _tenant_exists(client)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_bodies_over_the_cap_are_413_and_write_nothing(
    client: httpx.AsyncClient, app: FastAPI, chunked: bool
) -> None:
    body = _padded_tenant(app.state.settings.max_request_body_bytes + 1)
    content = _chunks(body) if chunked else body
    response = await client.post(
        "/api/tenants", content=content, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert ("content-length" not in response.request.headers) is chunked
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert not await _tenant_exists(client)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_at_the_cap_is_served(
    client: httpx.AsyncClient, app: FastAPI, chunked: bool
) -> None:
    body = _padded_tenant(app.state.settings.max_request_body_bytes)
    content = _chunks(body) if chunked else body
    response = await client.post(
        "/api/tenants", content=content, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert await _tenant_exists(client)


@pytest.mark.parametrize(
    "content_length",
    [
        pytest.param([("Content-Length", "abc")], id="word"),
        pytest.param([("Content-Length", "-1")], id="negative"),
        pytest.param([("Content-Length", "+37")], id="plus-sign"),
        pytest.param([("Content-Length", "3.5")], id="fraction"),
        pytest.param([("Content-Length", "37, 37")], id="list"),
        pytest.param([("Content-Length", "37"), ("Content-Length", "38")], id="two-values"),
    ],
)
async def test_a_content_length_that_is_not_one_integer_is_400(
    client: httpx.AsyncClient, content_length: list[tuple[str, str]]
) -> None:
    """Uvicorn refuses these itself (a plain 400); behind any other server the app does,
    in the envelope."""
    headers = [*ADMIN.items(), ("Content-Type", "application/json"), *content_length]
    response = await client.post("/api/tenants", content=json.dumps(TENANT), headers=headers)
    assert_error(response, 400, "BAD_REQUEST")
    assert not await _tenant_exists(client)


def _raw_request(base: str, head: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Send a request head on a socket of its own; the status, headers and JSON body."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head_part, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, json.loads(body)


def test_the_real_service_refuses_a_16_mb_header(database_url: URL, tmp_path: Path) -> None:
    """`python -m app` on Uvicorn (httptools, which has no header limit of its own):
    a 16 MB header is answered 431 in the envelope, never served; the service goes on."""
    settings = {
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "DB_AUTO_MIGRATE": "false",
        "ADMIN_API_KEYS": ADMIN_KEY,
        "DATA_DIR": str(tmp_path),
        "MODEL_PROVIDER": "offline",
    }
    service, base = spawn_service(
        settings, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        head = (
            b"GET /api/tenants HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            + f"X-API-Key: {ADMIN_KEY}\r\n".encode()
            + b"X-Big: "
            + b"a" * (16 * 1024 * 1024)
            + b"\r\n\r\n"
        )
        status, headers, body = _raw_request(base, head)
        assert status == 431, body
        assert body["error"]["code"] == "REQUEST_HEADER_FIELDS_TOO_LARGE"
        assert body["error"]["request_id"] == headers["x-request-id"]

        with httpx.Client(base_url=base, headers=ADMIN) as http:
            assert http.get("/api/tenants").status_code == 200
    finally:
        service.send_signal(signal.SIGINT)
        output, _ = service.communicate(timeout=30)
        asyncio.run(reset_database(database_url))
    assert "request_headers_too_large" in output
