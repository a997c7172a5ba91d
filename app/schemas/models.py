"""Request and response bodies of the models catalog."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, PlainSerializer, StringConstraints

from app.schemas.common import DecimalText, Name, NoNul, PatchSchema, ReadSchema, Schema

ModelId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,99}$"), NoNul]
ProviderModelId = Annotated[str, StringConstraints(min_length=1, max_length=200), NoNul]
ModelStatus = Literal["active", "deprecated"]
# USD per million tokens, sent and returned as a decimal string.
Price = Annotated[Decimal, DecimalText(places=6, maximum=1_000_000)]
# Prices go out with all six decimal places, whatever form they came in.
PriceOut = Annotated[
    Decimal,
    PlainSerializer(lambda value: str(value.quantize(Decimal("0.000001"))), return_type=str),
]
ContextWindow = Annotated[int, Field(ge=1, le=100_000_000)]


class ModelCreate(Schema):
    model_id: ModelId
    display_name: Name
    bedrock_model_id: ProviderModelId | None = None
    anthropic_model_id: ProviderModelId | None = None
    price_input: Price
    price_output: Price
    price_cache_write_5m: Price
    price_cache_write_1h: Price
    price_cache_read: Price
    context_window: ContextWindow
    status: ModelStatus = "active"


class ModelUpdate(PatchSchema):
    nullable_fields = frozenset({"bedrock_model_id", "anthropic_model_id"})

    display_name: Name | None = None
    bedrock_model_id: ProviderModelId | None = None
    anthropic_model_id: ProviderModelId | None = None
    price_input: Price | None = None
    price_output: Price | None = None
    price_cache_write_5m: Price | None = None
    price_cache_write_1h: Price | None = None
    price_cache_read: Price | None = None
    context_window: ContextWindow | None = None
    status: ModelStatus | None = None


class ModelStatusUpdate(Schema):
    status: ModelStatus


class ModelRead(ReadSchema):
    model_id: str
    display_name: str
    bedrock_model_id: str | None
    anthropic_model_id: str | None
    price_input: PriceOut
    price_output: PriceOut
    price_cache_write_5m: PriceOut
    price_cache_write_1h: PriceOut
    price_cache_read: PriceOut
    context_window: int
    status: ModelStatus
    created_at: datetime
    updated_at: datetime
