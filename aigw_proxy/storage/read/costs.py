"""Cost as the API, the CLI and the spend report show it: one shape for an interception, a thread, a session and
a spend group, summed from the stored token-usage prices (never recomputed on read).

    "cost": {"priced": true, "unpriced_records": 0,
             "cost_micros": 48073, "cost_usd": 0.048073,                  # API calls: billed per token
             "api_equivalent_micros": 0, "api_equivalent_usd": 0.0}      # subscription calls at API list price

Subscription calls (credential_kind `oauth`: Claude plan, ChatGPT-plan Codex, Copilot) are priced at the API
list price but kept apart as API-equivalent value: the company pays a seat, not per token. A token-usage row
with no price is unpriced, never $0: `priced` is false when any row is, `unpriced_records` counts them, and a
figure is null when every row it would sum is unpriced (otherwise it sums the priced rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.storage.dialects import backend_of
from aigw_proxy.storage.schema.tables import interceptions, token_usages

MICROS_PER_USD = 1_000_000


def usd(micros: int | None) -> float | None:
    return None if micros is None else round(micros / MICROS_PER_USD, 6)


@dataclass(slots=True)
class CostSums:
    """Token-usage rows summed by kind (API or API-equivalent): rows, unpriced rows, micro-dollars."""

    api_records: int = 0
    api_unpriced: int = 0
    api_micros: int = 0
    equivalent_records: int = 0
    equivalent_unpriced: int = 0
    equivalent_micros: int = 0

    def add(self, api_equivalent: bool, records: int, unpriced: int, micros: int) -> None:
        """Add `records` rows of one kind, `unpriced` of them without a price, costing `micros` together."""
        if api_equivalent:
            self.equivalent_records += records
            self.equivalent_unpriced += unpriced
            self.equivalent_micros += micros
        else:
            self.api_records += records
            self.api_unpriced += unpriced
            self.api_micros += micros

    def add_row(self, cost_micros: int | None, api_equivalent: bool) -> None:
        self.add(api_equivalent, 1, cost_micros is None, cost_micros or 0)

    def merge(self, other: CostSums) -> None:
        self.add(False, other.api_records, other.api_unpriced, other.api_micros)
        self.add(True, other.equivalent_records, other.equivalent_unpriced, other.equivalent_micros)

    @property
    def records(self) -> int:
        return self.api_records + self.equivalent_records

    @property
    def unpriced(self) -> int:
        return self.api_unpriced + self.equivalent_unpriced

    def json(self) -> dict[str, Any]:
        api = None if self.api_records and self.api_unpriced == self.api_records else self.api_micros
        equivalent = (None if self.equivalent_records and self.equivalent_unpriced == self.equivalent_records
                      else self.equivalent_micros)
        return {
            "priced": self.unpriced == 0,
            "unpriced_records": self.unpriced,
            "cost_micros": api,
            "cost_usd": usd(api),
            "api_equivalent_micros": equivalent,
            "api_equivalent_usd": usd(equivalent),
        }


def cost_of_rows(token_rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The cost of token-usage rows as the API shows them (`token_usages[]` items)."""
    sums = CostSums()
    for t in token_rows:
        sums.add_row(t["cost_micros"], bool(t["api_equivalent"]))
    return sums.json()


# The price columns of a token-usage row in the API, in the order `token_price_json` takes them.
TOKEN_PRICE_FIELDS = (
    "input_price_micros",
    "output_price_micros",
    "cache_read_price_micros",
    "cache_write_price_micros",
    "other_price_micros",
    "cost_micros",
    "price_source",
    "price_version",
    "price_ref",
    "api_equivalent",
    "effective_group_id",
)


def token_price_json(values: tuple[Any, ...]) -> dict[str, Any]:
    """A token-usage row's price fields from its TOKEN_PRICE_FIELDS columns (nulls when unpriced)."""
    out = dict(zip(TOKEN_PRICE_FIELDS, values, strict=True))
    out["api_equivalent"] = bool(out["api_equivalent"])
    out["priced"] = out["cost_micros"] is not None
    return out


async def session_costs(conn: AsyncConnection, sessions: list[tuple[str, Any, Any]],
                        initiator_id: str | None = None) -> dict[tuple[str, str], CostSums]:
    """The cost of whole sessions (every ended interception's token rows), by (session_id, initiator_id): read
    through the session index and each interception's token rows, for a page of `sessions` (session id, first
    start, last end as the session summary has them; a session summary of cost would have to be kept on every
    write and purge; a page's rows are few). With `initiator_id`, only that user's."""
    out: dict[tuple[str, str], CostSums] = {}
    if not sessions:
        return out
    backend = backend_of(conn)
    sql = ("SELECT i.session_id, i.initiator_id, t.api_equivalent, count(*), count(*) - count(t.cost_micros), "
           "COALESCE(sum(t.cost_micros), 0) "
           f"FROM {interceptions.name} i JOIN {token_usages.name} t ON {backend.child_join('t', 'i')} "
           "WHERE i.ended_at IS NOT NULL AND SESSIONS(i) "
           "GROUP BY i.session_id, i.initiator_id, t.api_equivalent")
    for sid, uid, equivalent, records, unpriced, micros in await backend.rows_of_sessions(conn, sql, sessions):
        if initiator_id is None or uid == initiator_id:
            out.setdefault((sid, uid), CostSums()).add(bool(equivalent), int(records), int(unpriced), int(micros))
    return out
