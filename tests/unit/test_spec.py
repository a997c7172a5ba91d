"""A run's spec and the parts that make the SDK's options of it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from app.config import ModelProvider
from app.services.execute.jail import install_launcher
from app.services.execute.options import open_agent
from app.services.execute.providers import Provider
from app.services.execute.spec import AgentRuntime, RunSpec

SPEC = RunSpec("acme", "c1", "You help Acme.", "claude-sonnet-4-5", (), 7, ("Read", "Bash"), None)


def test_the_fingerprint_is_the_process_shape() -> None:
    assert SPEC.fingerprint() == dataclasses.replace(SPEC, resume="s-1").fingerprint()
    for change in ({"system_prompt": "x"}, {"tools": ("Read",)}, {"model": "m"}):
        assert SPEC.fingerprint() != dataclasses.replace(SPEC, **change).fingerprint()


async def test_the_parts_make_the_options(tmp_path: Path) -> None:
    provider = Provider(ModelProvider.ANTHROPIC, "anthropic", {"ANTHROPIC_API_KEY": "sk-x"})
    session_store: Any = object()
    runtime = AgentRuntime(
        data_dir=tmp_path,
        provider=provider,
        launcher=install_launcher(tmp_path),
        session_store=session_store,
        max_retries=2,
        nice=10,
        answering_nice=15,
        runtime_dir=tmp_path,
    )
    options, process = await open_agent(runtime, SPEC)
    try:
        assert options.tools == ["Read", "Bash"] and options.max_turns == 7
        assert options.verbatim_prompts and options.setting_sources == []
        assert options.system_prompt == {"type": "file", "path": str(process.prompt)}
        assert process.prompt.read_text() == "You help Acme."
        assert options.extra_args == {"system-prompt-snapshot": "off"}
        assert options.sandbox is not None and options.sandbox.get("failIfUnavailable")
        assert options.env["HOME"] == str(process.home) and process.home.is_dir()
        # Unjailed with Bash, the CLI keeps the key from what Bash sees.
        assert options.env["CLAUDE_CODE_SUBPROCESS_ENV_SCRUB"] == "1"
        # The launcher starts it 10 nicer than the service.
        assert options.env["CMAB_AGENT_NICE"] == "10"
        assert "ANTHROPIC_API_KEY" in options.env["CMAB_AGENT_ENV"].split()
        assert "DATABASE_URL" not in options.env["CMAB_AGENT_ENV"].split()
        assert options.hooks and "PreToolUse" in options.hooks
    finally:
        await process.close()
    assert not process.directory.exists()


def test_a_model_missing_from_the_catalog_is_priced_by_its_family() -> None:
    from decimal import Decimal

    from app.models import CatalogModel
    from app.services.execute.record import price_of

    def model(model_id: str) -> CatalogModel:
        zero = Decimal(0)
        return CatalogModel(
            model_id=model_id,
            display_name=model_id,
            anthropic_model_id=f"{model_id}-20250929",
            bedrock_model_id=None,
            price_input=zero,
            price_output=zero,
            price_cache_write_5m=zero,
            price_cache_write_1h=zero,
            price_cache_read=zero,
            context_window=200_000,
        )

    sonnet, haiku = model("claude-sonnet-4-5"), model("claude-haiku-4-5")
    catalog = [sonnet, haiku]
    assert price_of("claude-sonnet-4-5-20250929", {}, catalog, haiku) == (sonnet, "exact")
    assert price_of("claude-haiku-4-5-20991231", {}, catalog, sonnet) == (haiku, "family")
    assert price_of("us.anthropic.claude-haiku-4-5-20251001-v1:0", {}, catalog, sonnet) == (
        haiku,
        "family",
    )
    assert price_of("claude-haiku-4", {}, catalog, sonnet) == (sonnet, "run_model")
    assert price_of("gpt-4o", {}, catalog, sonnet) == (sonnet, "run_model")
