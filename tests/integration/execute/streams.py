"""Helpers to run a turn through the API and read its SSE stream."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from tests.conftest import TenantFixture


@dataclass
class Stream:
    status_code: int
    events: list[tuple[str, dict[str, Any]]]
    ids: list[str]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for event, data in self.events if event == kind]

    @property
    def done(self) -> dict[str, Any]:
        assert self.events and self.events[-1][0] == "done", self.events[-3:]
        return self.events[-1][1]

    @property
    def text(self) -> str:
        return "".join(d["text"] for d in self.of("text_delta") if "parent_agent_id" not in d)


async def stream_turn(
    client: httpx.AsyncClient,
    tenant: TenantFixture,
    conversation_id: str,
    user_input: str,
    **body: Any,
) -> Stream:
    url = tenant.url(f"/conversations/{conversation_id}/stream")
    events: list[tuple[str, dict[str, Any]]] = []
    ids: list[str] = []
    async with aconnect_sse(
        client,
        "POST",
        url,
        json={"user_input": user_input, **body},
        headers=tenant.headers,
        timeout=120,
    ) as source:
        if source.response.status_code != 200:
            await source.response.aread()
            return Stream(source.response.status_code, [("http_error", source.response.json())], [])
        async for sse in source.aiter_sse():
            events.append((sse.event, json.loads(sse.data)))
            ids.append(sse.id)
    return Stream(200, events, ids)


async def new_conversation(client: httpx.AsyncClient, tenant: TenantFixture, **body: Any) -> str:
    response = await client.post(tenant.url("/conversations"), json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["conversation_id"])
