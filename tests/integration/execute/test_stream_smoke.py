from __future__ import annotations

import httpx

from tests.conftest import TenantFixture
from tests.integration.execute.streams import new_conversation, stream_turn


async def test_offline_echo(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "Hello there")
    print([e for e, _ in stream.events])
    print(stream.done)
    assert stream.done["status"] == "success"
    assert "You said: Hello there" in stream.text
