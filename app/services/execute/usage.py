"""Token usage of a run, and its cost from the catalog's prices (Decimal, never float)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from app.models import CatalogModel

PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Tokens:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_5m_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    cache_read_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Tokens) -> Tokens:
        return Tokens(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def cost(self, model: CatalogModel) -> Decimal:
        return (
            self.input_tokens * model.price_input
            + self.output_tokens * model.price_output
            + self.cache_creation_5m_tokens * model.price_cache_write_5m
            + self.cache_creation_1h_tokens * model.price_cache_write_1h
            + self.cache_read_tokens * model.price_cache_read
        ) / PER_MILLION

    def cache_saved(self, model: CatalogModel) -> Decimal:
        """What the cache reads saved against the same tokens as uncached input."""
        return self.cache_read_tokens * (model.price_input - model.price_cache_read) / PER_MILLION

    def as_dict(self) -> dict[str, int]:
        return {
            **{f.name: getattr(self, f.name) for f in fields(self)},
            "total_tokens": self.total_tokens,
        }

    @classmethod
    def from_model_usage(cls, entry: dict[str, Any]) -> Tokens:
        """One entry of ResultMessage.model_usage (camelCase, cumulative per process)."""
        five, hour = _cache_writes(
            entry.get("cacheCreationEphemeral5mInputTokens"),
            entry.get("cacheCreationEphemeral1hInputTokens"),
            entry.get("cacheCreationInputTokens"),
        )
        return cls(
            int(entry.get("inputTokens") or 0),
            int(entry.get("outputTokens") or 0),
            five,
            hour,
            int(entry.get("cacheReadInputTokens") or 0),
        )

    @classmethod
    def from_api_usage(cls, usage: dict[str, Any]) -> Tokens:
        """A Messages API usage object (message_start / message_delta)."""
        split = usage.get("cache_creation") or {}
        five, hour = _cache_writes(
            split.get("ephemeral_5m_input_tokens"),
            split.get("ephemeral_1h_input_tokens"),
            usage.get("cache_creation_input_tokens"),
        )
        return cls(
            int(usage.get("input_tokens") or 0),
            int(usage.get("output_tokens") or 0),
            five,
            hour,
            int(usage.get("cache_read_input_tokens") or 0),
        )


def _cache_writes(five: Any, hour: Any, total: Any) -> tuple[int, int]:
    """5-minute and 1-hour cache writes; what the split does not account for of the total
    (an API that reports no split) is counted as 5-minute writes, the default TTL."""
    five_minutes, one_hour = int(five or 0), int(hour or 0)
    return max(five_minutes, int(total or 0) - one_hour), one_hour


_REGION = re.compile(r"^(?:[a-z]{2,6}\.)?anthropic\.")
_SUFFIXES = re.compile(r"(?:-v\d+(?::\d+)?)?$")
_DATE = re.compile(r"-\d{8}$")


def catalog_family(provider_model: str, catalog: Iterable[CatalogModel]) -> CatalogModel | None:
    """For a model the catalog does not list: the catalog model of its family (the
    longest catalog id the served name, without region, date and version, starts with)."""
    name = _DATE.sub("", _SUFFIXES.sub("", _REGION.sub("", provider_model)))
    family = [m for m in catalog if name == m.model_id or name.startswith(f"{m.model_id}-")]
    return max(family, key=lambda m: len(m.model_id), default=None)


def catalog_match(
    provider_model: str, entry: dict[str, Any], catalog: Iterable[CatalogModel]
) -> CatalogModel | None:
    """The catalog model a provider's model name (or the CLI's canonical name) is."""
    names = {provider_model, str(entry.get("canonicalModel") or "")}
    for model in catalog:
        if names & {model.model_id, model.anthropic_model_id, model.bedrock_model_id}:
            return model
    return None
