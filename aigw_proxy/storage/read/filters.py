"""What a listing of interceptions or sessions selects: `InterceptionFilter` and its SQL conditions on the
interceptions table, shared by the interception and session lists, their counts and the slice reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

import sqlalchemy as sa

from aigw_proxy.storage.schema.tables import interceptions, users

DEFAULT_LIMIT: Final = 100  # rows in a page when the caller asks for none (limit 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class InterceptionFilter:
    """All fields optional; set fields are ANDed. Times must be timezone-aware."""

    initiator: str | None = None  # user id or username
    provider: str | None = None  # provider type (anthropic | openai | copilot)
    provider_name: str | None = None
    model: str | None = None
    client: str | None = None
    session_id: str | None = None
    started_after: datetime | None = None  # inclusive
    started_before: datetime | None = None  # inclusive
    visible_to: str | None = None  # a member's user id: only their own records (API roles); None: everything

    @property
    def by_user(self) -> bool:
        """Narrowed to one user's or one session's rows: small enough to count and group directly."""
        return self.initiator is not None or self.visible_to is not None or self.session_id is not None

    @property
    def by_attribute(self) -> bool:
        """Narrowed by time or by what was called (needs the per-interception rows, not the summaries)."""
        return any(
            v is not None
            for v in (self.provider, self.provider_name, self.model, self.client, self.started_after,
                      self.started_before)
        )


def initiator_ids(value: str) -> sa.CompoundSelect[str]:
    """The user ids `value` may name: itself (an id, possibly of a deleted user) or a username's id."""
    return sa.select(sa.literal(value, sa.String)).union(sa.select(users.c.id).where(users.c.username == value))


def filter_conditions(flt: InterceptionFilter) -> list[sa.ColumnElement[bool]]:
    """The conditions on `interceptions` for the ended interceptions `flt` selects."""
    i = interceptions.c
    cond: list[sa.ColumnElement[bool]] = [i.ended_at.is_not(None)]
    if flt.visible_to is not None:
        cond.append(i.initiator_id == flt.visible_to)
    if flt.initiator is not None:
        cond.append(i.initiator_id.in_(initiator_ids(flt.initiator)))
    if flt.provider is not None:
        cond.append(i.provider == flt.provider)
    if flt.provider_name is not None:
        cond.append(i.provider_name == flt.provider_name)
    if flt.model is not None:
        cond.append(i.model == flt.model)
    if flt.client is not None:
        cond.append(sa.func.coalesce(i.client, "Unknown") == flt.client)
    if flt.session_id is not None:
        cond.append(i.session_id == flt.session_id)
    if flt.started_after is not None:
        cond.append(i.started_at >= flt.started_after)
    if flt.started_before is not None:
        cond.append(i.started_at <= flt.started_before)
    return cond
