"""The built-in `web` server: a `fetch` tool run by the service, every connection through
the outbound guard (each redirect checked again, the checked address pinned), the
answer capped. The safe way to give an agent the web: its own process stays offline."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx2
from claude_agent_sdk import McpSdkServerConfig, SdkMcpTool, create_sdk_mcp_server

from app.services.mcp.proxy import MAX_RESULT_CHARS, PinnedTransport, failure_reason

MAX_REDIRECTS = 5
MAX_BYTES = 1024 * 1024
TIMEOUT_SECONDS = 20.0
MAX_URL_CHARS = 2048

_SCHEMA = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "description": "An http or https URL", "maxLength": 2048},
    },
    "required": ["url"],
}


def _error(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "is_error": True}


class WebFetcher:
    def __init__(self, allow_hosts: Iterable[str]) -> None:
        self.allow_hosts = tuple(allow_hosts)

    async def fetch(self, args: dict[str, Any]) -> dict[str, Any]:
        url = args.get("url")
        if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
            return _error("fetch needs a URL of at most 2048 characters.")
        async with httpx2.AsyncClient(
            transport=PinnedTransport(self.allow_hosts),
            follow_redirects=False,
            timeout=TIMEOUT_SECONDS,
        ) as http:
            for _ in range(MAX_REDIRECTS + 1):
                if urlsplit(url).scheme not in ("http", "https"):
                    return _error("fetch only follows http and https URLs.")
                try:
                    async with http.stream("GET", url) as response:
                        if response.is_redirect and "location" in response.headers:
                            url = urljoin(url, response.headers["location"])
                            continue
                        return await _read(url, response)
                except Exception as exc:
                    return _error(f"{url} could not be fetched: {failure_reason(exc)}.")
        return _error(f"More than {MAX_REDIRECTS} redirects.")

    def server(self, name: str) -> McpSdkServerConfig:
        tool = SdkMcpTool(
            name="fetch",
            description="Fetch a public web page (http or https) and return its text.",
            input_schema=_SCHEMA,
            handler=self.fetch,
        )
        return create_sdk_mcp_server(name, tools=[tool])


async def _read(url: str, response: httpx2.Response) -> dict[str, Any]:
    kind = response.headers.get("content-type", "")
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_BYTES:
            break
    head = f"{url}: HTTP {response.status_code}, {kind or 'no content type'}"
    if not kind.startswith(("text/", "application/json", "application/xml")):
        return {"content": [{"type": "text", "text": f"{head}; not text ({len(body)} bytes)."}]}
    text = body[:MAX_BYTES].decode(response.encoding or "utf-8", errors="replace")
    if len(text) > MAX_RESULT_CHARS or len(body) > MAX_BYTES:
        text = text[:MAX_RESULT_CHARS] + "\n[cut: the page is longer]"
    return {
        "content": [{"type": "text", "text": f"{head}\n\n{text}"}],
        "is_error": response.is_error,
    }
