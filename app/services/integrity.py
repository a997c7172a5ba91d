"""Turn constraint violations met on flush into the API errors they mean.

A pre-check (does the tenant exist? is the model free?) answers the common case; the
database constraint answers the race, and this maps it by constraint name."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import AppError


def violated_constraint(exc: IntegrityError) -> str | None:
    cause = exc.orig.__cause__ if exc.orig is not None else None
    name = getattr(cause, "constraint_name", None)
    return name if isinstance(name, str) else None


async def flush_mapping_violations(
    session: AsyncSession, errors: Mapping[str, Callable[[], AppError]]
) -> None:
    """Flush; a violation of a constraint named in `errors` raises that error instead."""
    try:
        await session.flush()
    except IntegrityError as exc:
        make_error = errors.get(violated_constraint(exc) or "")
        if make_error is None:
            raise
        raise make_error() from exc
