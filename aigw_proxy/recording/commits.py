"""What the record writer reports once an event is committed: the facts it resolved on the way (thread lineage,
session id, error type), which the event alone does not carry. Logs, spans and metrics read them from here, so
they show what was stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aigw_proxy.recording.records import RecordEvent
from aigw_proxy.spend.pricing import Price


@dataclass(frozen=True, slots=True)
class SpendKey:
    """What an interception's token usage is priced and reported by (its start's, the model as stored)."""

    provider: str  # provider type
    provider_name: str
    model: str
    client: str
    initiator_id: str
    api_equivalent: bool  # a subscription call (credential_kind oauth): its cost is API-equivalent value


@dataclass(frozen=True, slots=True)
class Spend:
    """An ended interception's token-usage prices as stored: one per token usage of the event, in its order
    (None = unpriced: no price for the model)."""

    key: SpendKey
    prices: tuple[Price | None, ...]

    def price(self, index: int) -> Price | None:
        """The price of the event's `index`th token usage (None: unpriced)."""
        return self.prices[index] if index < len(self.prices) else None


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """What the writer resolved for a committed event (given to listeners).

    Starts: the thread lineage and session id. Ends: the same (from the start) plus the derived error type and
    the token usages' prices (`spend`; None when the event has no token usage).
    """

    thread_parent_id: str | None = None
    thread_root_id: str | None = None
    session_id: str | None = None
    error_type: str | None = None
    spend: Spend | None = None


# Called by the writer after each committed event (`RecordWriter.add_listener`).
CommitListener = Callable[[RecordEvent, CommitInfo], None]
