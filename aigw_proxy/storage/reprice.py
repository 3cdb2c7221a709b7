"""`aigw-proxy reprice`: recompute the stored prices of the token-usage rows of a window, on purpose.

A row's price is fixed when it is written (storage/write/rows.py), so a later price change — a newer price
library, a `[[prices]]` override added or changed — never rewrites history by itself. Repricing a window applies
today's prices to it: rows of interceptions started in [since, until), priced at each row's own time (its
`created_at`, as the writer priced it), with the given Pricer. Rows whose price does not change are left alone;
the daily spend summary follows every changed row (its triggers, schema/spend_days.py).

The work is done in batches of interceptions, each its own short write transaction on the writer engine, with a
pause in between (as the retention purge): a running daemon's record writer gets the database between batches.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from aigw_proxy.spend import Figures, Pricer, is_api_equivalent
from aigw_proxy.storage.database import Database
from aigw_proxy.storage.schema.tables import PRICE_COLUMNS, interceptions, token_usages
from aigw_proxy.storage.write.rows import price_columns

log = logging.getLogger("aigw_proxy.storage")

DEFAULT_BATCH = 500  # interceptions per transaction

_STORED = (*PRICE_COLUMNS, "price_source", "price_version", "price_ref", "api_equivalent")


@dataclass(frozen=True, slots=True)
class RepriceResult:
    rows: int  # token-usage rows looked at
    changed: int  # rows whose stored price changed
    priced: int  # rows priced once done
    unpriced: int  # rows left unpriced (no price for their model)
    was_unpriced: int  # rows that had no price before
    batches: int


_i = interceptions.c
_t = token_usages.c
_UPDATE = (
    sa.update(token_usages)
    .where(_t.id == sa.bindparam("b_id", type_=_t.id.type))
    .values({name: sa.bindparam(f"b_{name}", type_=_t[name].type) for name in _STORED})
)


async def reprice(
    db: Database,
    pricer: Pricer,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    unpriced_only: bool = False,
    batch_size: int = DEFAULT_BATCH,
    pause: float = 0.01,
) -> RepriceResult:
    """Reprice the token-usage rows of interceptions started in [since, until) (None: unbounded) with `pricer`;
    `unpriced_only` leaves priced rows as they are (e.g. after adding a price for a model that had none)."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    window: list[sa.ColumnElement[bool]] = []
    if since is not None:
        window.append(_i.started_at >= since)
    if until is not None:
        window.append(_i.started_at < until)
    rows = changed = priced = unpriced = was_unpriced = batches = 0
    cursor: tuple[datetime, str] | None = None
    while True:
        async with db.writer.begin() as conn:
            cond = list(window)
            if cursor is not None:
                cond.append(sa.tuple_(_i.started_at, _i.id) > sa.tuple_(
                    sa.literal(cursor[0], _i.started_at.type), sa.literal(cursor[1], _i.id.type)))
            page = (await conn.execute(
                sa.select(_i.id, _i.started_at, _i.provider, _i.provider_name, _i.model, _i.credential_kind)
                .where(*cond).order_by(_i.started_at, _i.id).limit(batch_size)
            )).all()
            if not page:
                break
            cursor = (page[-1].started_at, page[-1].id)
            calls = {r.id: r for r in page}
            query = sa.select(token_usages).where(_t.interception_id.in_(list(calls)))
            if unpriced_only:
                query = query.where(_t.cost_micros.is_(None))
            updates: list[dict[str, Any]] = []
            for t in (await conn.execute(query)).all():
                call = calls[t.interception_id]
                rows += 1
                was_unpriced += t.cost_micros is None
                figures = Figures(t.input_tokens, t.output_tokens, t.cache_read_input_tokens,
                                  t.cache_write_input_tokens, t._mapping["metadata"] or {})
                price = pricer.price(figures, provider_type=call.provider, provider_name=call.provider_name,
                                     model=call.model, at=t.created_at)
                if price is None:
                    unpriced += 1
                else:
                    priced += 1
                new = price_columns(price, api_equivalent=is_api_equivalent(call.credential_kind))
                if any(new[name] != getattr(t, name) for name in _STORED):
                    updates.append({"b_id": t.id, **{f"b_{name}": new[name] for name in _STORED}})
            if updates:
                await conn.execute(_UPDATE, updates)
                changed += len(updates)
        batches += 1
        if len(page) < batch_size:
            break
        await asyncio.sleep(pause)  # let the record writer have the database between batches
    log.info("reprice: %d token-usage rows looked at, %d changed, %d priced, %d unpriced", rows, changed, priced,
             unpriced)
    return RepriceResult(rows, changed, priced, unpriced, was_unpriced, batches)
