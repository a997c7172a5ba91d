"""How a jailed CLI reaches its model: through the loopback port bridged to the service."""

from __future__ import annotations

from urllib.parse import urlsplit

from app.services.execute.egress import Endpoint
from app.services.execute.jail import JAIL_PORT
from app.services.execute.providers import Provider
from app.services.execute.spec import AgentBuild

# What the CLI holds instead of the provider's key (the bridge adds the real one).
KEY_PLACEHOLDER = "held-by-the-service"


def apply(build: AgentBuild) -> None:
    if build.jailed:
        env, _ = jailed_network(build.runtime.provider, web_access="WebFetch" in build.spec.tools)
        build.env.update(env)


def jailed_network(
    provider: Provider, *, web_access: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """The variables the jailed CLI gets, and the headers the bridge adds to its model
    requests.

    An Anthropic-wire or plain-http endpoint is called at the bridge itself, which sends the
    request on with the provider's key (the CLI holds a placeholder). Bedrock over https
    signs its own requests, so the bridge is its https proxy, tunnelling only to the model
    (its AWS credentials stay in the CLI). With web access, the bridge is everyone's proxy:
    tunnels then reach public addresses too."""
    bridge = f"http://127.0.0.1:{JAIL_PORT}"
    env: dict[str, str] = {}
    credentials: dict[str, str] = {}
    if provider.wire == "anthropic" or Endpoint.from_url(provider.url).scheme == "http":
        env[provider.url_variable] = bridge + urlsplit(provider.url).path.rstrip("/")
        if "ANTHROPIC_API_KEY" in provider.env:
            credentials["x-api-key"] = provider.env["ANTHROPIC_API_KEY"]
            env["ANTHROPIC_API_KEY"] = KEY_PLACEHOLDER
    else:
        env["HTTPS_PROXY"] = env["https_proxy"] = bridge
    if web_access:
        env["HTTPS_PROXY"] = env["https_proxy"] = bridge
        env["HTTP_PROXY"] = env["http_proxy"] = bridge
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env, credentials
