"""Model providers: the environment that points the CLI at Bedrock, the Anthropic API
or the offline model, and the model name each expects."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from app.config import ModelProvider, Settings
from app.models import CatalogModel

# AWS variables the CLI may need for Bedrock (the standard credential chain).
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


# The CLI's model aliases; each is pointed at a catalog model by ANTHROPIC_DEFAULT_{X}_MODEL.
MODEL_ALIASES = ("haiku", "sonnet", "opus")


@dataclass(frozen=True)
class Provider:
    """What the agent's CLI needs to reach its model."""

    name: ModelProvider
    wire: str  # "anthropic" or "bedrock"
    env: dict[str, str] = field(default_factory=dict)
    region: str = "us-east-1"

    @property
    def url_variable(self) -> str:
        """The variable that points the CLI at its model endpoint."""
        return "ANTHROPIC_BEDROCK_BASE_URL" if self.wire == "bedrock" else "ANTHROPIC_BASE_URL"

    @property
    def url(self) -> str:
        """The model endpoint the CLI calls: its base URL, or the provider's default."""
        default = (
            f"https://bedrock-runtime.{self.region}.amazonaws.com"
            if self.wire == "bedrock"
            else "https://api.anthropic.com"
        )
        return self.env.get(self.url_variable) or default

    def model_name(self, model: CatalogModel) -> str:
        name = model.bedrock_model_id if self.wire == "bedrock" else model.anthropic_model_id
        return name or model.model_id

    def aliases(self, catalog: Iterable[CatalogModel]) -> tuple[tuple[str, str], ...]:
        """What the CLI's model aliases (a sub-agent's `model: haiku`, its own helper
        calls) name: the catalog's newest active model of each family, so the agent calls
        a model the catalog prices, never one the CLI release picked."""
        active = sorted(
            (m for m in catalog if m.status == "active"),
            key=lambda m: (m.created_at, m.model_id),
            reverse=True,
        )
        return tuple(
            (alias, self.model_name(found))
            for alias in MODEL_ALIASES
            if (found := next((m for m in active if alias in m.model_id), None)) is not None
        )


def resolve_provider(
    settings: Settings, offline_url: str | None, environ: dict[str, str]
) -> Provider:
    provider = settings.provider
    if provider is ModelProvider.OFFLINE:
        assert offline_url is not None, "the offline model server runs"
        if settings.offline_model_wire == "bedrock":
            return Provider(
                provider,
                "bedrock",
                _bedrock_env(settings, offline_url, skip_auth=True),
                settings.aws_region,
            )
        return Provider(
            provider,
            "anthropic",
            {"ANTHROPIC_BASE_URL": offline_url, "ANTHROPIC_API_KEY": "offline"},
        )
    if provider is ModelProvider.ANTHROPIC:
        env = {}
        if settings.anthropic_api_key is not None:
            env["ANTHROPIC_API_KEY"] = settings.anthropic_api_key.get_secret_value()
        if settings.anthropic_base_url:
            env["ANTHROPIC_BASE_URL"] = settings.anthropic_base_url
        return Provider(provider, "anthropic", env)
    env = _bedrock_env(settings, settings.bedrock_base_url, skip_auth=False)
    env.update({name: environ[name] for name in AWS_VARIABLES if environ.get(name)})
    return Provider(provider, "bedrock", env, settings.aws_region)


def _bedrock_env(settings: Settings, base_url: str | None, *, skip_auth: bool) -> dict[str, str]:
    env = {"CLAUDE_CODE_USE_BEDROCK": "1", "AWS_REGION": settings.aws_region}
    if base_url:
        env["ANTHROPIC_BEDROCK_BASE_URL"] = base_url
    if skip_auth:
        env["CLAUDE_CODE_SKIP_BEDROCK_AUTH"] = "1"
    return env
