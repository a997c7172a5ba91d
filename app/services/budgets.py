"""Monthly budgets, counted in the tenant's time zone: the tenant's, and each user's (a
default and per-user overrides). A run that would start over one is refused before
anything runs, saying which budget, its limit and when it resets (never what others
spent)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import AppError
from app.models import Run
from app.models.run import ACTIVE_RUN_STATUSES
from app.schemas.tenants import TenantSettings
from app.services.tenants import tenant_settings
from app.utils.zones import zone_named


class BudgetExceededError(AppError):
    status_code = 429
    code = "BUDGET_EXCEEDED"


@dataclass(frozen=True)
class Period:
    time_zone: str
    start: datetime  # UTC
    resets_at: datetime  # UTC


def month_of(time_zone: str, now: datetime) -> Period:
    """The calendar month around `now` in the zone, as UTC instants."""
    zone = zone_named(time_zone) or zone_named("UTC")
    assert zone is not None
    local = now.astimezone(zone)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return Period(time_zone, start.astimezone(UTC), following.astimezone(UTC))


@dataclass(frozen=True)
class BudgetState:
    budget: str  # "tenant" or "user"
    limit_usd: Decimal
    spent_usd: Decimal

    @property
    def remaining_usd(self) -> Decimal:
        return max(self.limit_usd - self.spent_usd, Decimal(0))


async def _spent(
    session: AsyncSession, tenant_id: str, since: datetime, user_id: str | None = None
) -> Decimal:
    """What the period's runs cost, a queued or running run counted at what it holds."""
    held = case(
        (Run.status.in_(ACTIVE_RUN_STATUSES), func.coalesce(Run.reserved_usd, Run.cost_usd)),
        else_=Run.cost_usd,
    )
    query = select(func.coalesce(func.sum(held), 0)).where(
        Run.tenant_id == tenant_id, Run.created_at >= since
    )
    if user_id is not None:
        query = query.where(Run.user_id == user_id)
    return Decimal(await session.scalar(query) or 0)


def user_limit(settings: TenantSettings, user_id: str | None) -> Decimal | None:
    if user_id is None:
        return None
    return settings.user_budgets.get(user_id, settings.user_monthly_budget_usd)


async def budget_states(
    session: AsyncSession, tenant_id: str, user_id: str | None, now: datetime | None = None
) -> tuple[Period, list[BudgetState]]:
    """This month's period, and each budget that applies (tenant, then user)."""
    settings = await tenant_settings(session, tenant_id)
    return await _states(session, tenant_id, settings, user_id, now)


async def _states(
    session: AsyncSession,
    tenant_id: str,
    settings: TenantSettings,
    user_id: str | None,
    now: datetime | None = None,
) -> tuple[Period, list[BudgetState]]:
    period = month_of(settings.time_zone, now or datetime.now(UTC))
    states = []
    if settings.monthly_budget_usd is not None:
        spent = await _spent(session, tenant_id, period.start)
        states.append(BudgetState("tenant", settings.monthly_budget_usd, spent))
    limit = user_limit(settings, user_id)
    if limit is not None:
        spent = await _spent(session, tenant_id, period.start, user_id)
        states.append(BudgetState("user", limit, spent))
    return period, states


WARNING_SHARE = Decimal("0.8")


def crossed_warning(states: list[BudgetState], run_cost: Decimal) -> list[dict[str, str]]:
    """The budgets a run's cost carried past 80 % (what the `budget_warning` event says:
    which budget and its limit, not what was spent)."""
    return [
        {"budget": s.budget, "limit_usd": str(s.limit_usd), "threshold_percent": "80"}
        for s in states
        if s.spent_usd - run_cost < s.limit_usd * WARNING_SHARE <= s.spent_usd
    ]


async def reserve(
    session: AsyncSession, tenant_id: str, user_id: str | None, own_cap: Decimal | None
) -> tuple[Decimal | None, Decimal | None]:
    """For a run about to be queued: what it holds of its budgets, and the most it may
    cost (its own cap, or what its budgets have left). 429 BUDGET_EXCEEDED when a budget
    is spent. The tenant's budgets are checked one request at a time (a transaction lock,
    held until the run is committed), so runs racing for the last of a budget cannot all
    pass."""
    settings = await tenant_settings(session, tenant_id)
    if settings.monthly_budget_usd is None and user_limit(settings, user_id) is None:
        return None, own_cap
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"budget:{tenant_id}"))))
    period, states = await _states(session, tenant_id, settings, user_id)
    _refuse_if_spent(period, states)
    left = min(s.remaining_usd for s in states)
    cap = min(left, own_cap) if own_cap is not None else left
    return min(own_cap or settings.run_reservation_usd, left), cap


def _refuse_if_spent(period: Period, states: list[BudgetState]) -> None:
    for state in states:
        if state.spent_usd >= state.limit_usd:
            who = "The tenant's" if state.budget == "tenant" else "Your"
            retry = max(int((period.resets_at - datetime.now(UTC)).total_seconds()), 1)
            raise BudgetExceededError(
                f"{who} monthly budget of {state.limit_usd} USD is spent; it resets at "
                f"{period.resets_at.isoformat()}",
                details=[
                    {
                        "budget": state.budget,
                        "limit_usd": str(state.limit_usd),
                        "resets_at": period.resets_at.isoformat(),
                    }
                ],
                headers={"Retry-After": str(retry)},
            )
