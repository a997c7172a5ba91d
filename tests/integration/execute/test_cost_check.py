"""An independent check of the service's prices: for the same turn (the scripted model's
`cache` scenario: input, output, 5-minute and 1-hour cache writes, cache reads), the
cost the service records equals the CLI's own `costUSD` for the same tokens."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from claude_agent_sdk import ClaudeSDKClient, ResultMessage
from fastapi import FastAPI

from tests.conftest import TenantFixture
from tests.integration.bare_sdk import bare_options
from tests.integration.execute.streams import new_conversation, stream_turn


@pytest.fixture
def wire() -> str:
    return "anthropic"


async def _cli_cost(model_url: str, workdir: Path, prompt: str) -> ResultMessage:
    options = bare_options(model_url, workdir, tools=[])
    async with ClaudeSDKClient(options) as client:
        await client.query(prompt)
        async for message in client.receive_response():
            if isinstance(message, ResultMessage):
                return message
    raise AssertionError("no result")


async def test_the_services_cost_equals_the_clis(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture, tmp_path: Path
) -> None:
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "scenario:cache")
    run = (
        await client.get(tenant.url(f"/runs/{stream.done['run_id']}"), headers=tenant.headers)
    ).json()
    result = await _cli_cost(app.state.offline_model.url, tmp_path, "scenario:cache")
    ((name, usage),) = (result.model_usage or {}).items()
    assert usage["cacheReadInputTokens"] > 0 and usage["cacheCreationInputTokens"] > 0
    assert run["usage"]["cache_read_tokens"] == usage["cacheReadInputTokens"]
    cli = Decimal(str(usage["costUSD"])).quantize(Decimal("0.000001"))
    assert Decimal(run["cost_usd"]) == cli, (name, usage, run["cost_usd"])
