"""Thread lineage: which earlier interception a new one continues.

A request that answers a tool call (`correlating_tool_call_id`) continues the interception that issued the call;
otherwise one that names a `previous_response_id` continues the interception that produced that response. The
writer keeps the recent tool call ids and response ids in memory (bounded: a tool result usually follows its call
within seconds, so a few thousand cover it) and asks the database only on a miss.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.recording.records import InterceptionEnded, InterceptionStarted
from aigw_proxy.storage.schema.tables import interceptions, token_usages, tool_usages, user_prompts

# Recent tool call ids / response ids kept in memory; older ones are found in the database. Small keeps memory flat.
LINK_CAP: Final = 4096


@dataclass(frozen=True, slots=True)
class Link:
    """A possible thread parent: the interception that issued a tool call or produced a response."""

    interception_id: str
    root_id: str  # COALESCE(its thread_root_id, its id)
    initiator_id: str


@dataclass(slots=True)
class Links:
    """Tool call ids and response ids → the interception they came from."""

    tool_calls: dict[str, Link] = field(default_factory=dict)
    responses: dict[str, Link] = field(default_factory=dict)

    def update(self, other: Links) -> None:
        self.tool_calls.update(other.tool_calls)
        self.responses.update(other.responses)


def links_of(ev: InterceptionEnded, root_id: str | None, initiator_id: str) -> Links:
    """What an ended interception can be the parent of: its tool calls and the responses it produced (the
    prompt's response id only where no token usage named it)."""
    link = Link(ev.id, root_id or ev.id, initiator_id)
    links = Links()
    for call in ev.tool_calls:
        if call.call_id:
            links.tool_calls[call.call_id] = link
    for usage in ev.token_usages:
        if usage.provider_response_id:
            links.responses[usage.provider_response_id] = link
    if ev.prompt and ev.prompt_response_id:
        links.responses.setdefault(ev.prompt_response_id, link)
    return links


def remember[V](memory: dict[str, V], new: dict[str, V], cap: int) -> None:
    """Merge `new` into an insertion-ordered map (newest last) and evict the oldest entries beyond `cap`."""
    for key, value in new.items():
        memory.pop(key, None)
        memory[key] = value
    while len(memory) > cap:
        del memory[next(iter(memory))]


class Lineage:
    """The writer's memory of recent links, and the parent lookup."""

    def __init__(self, cap: int = LINK_CAP) -> None:
        self._cap = cap
        self.links = Links()

    def remember(self, new: Links) -> None:
        """Keep the links of committed interceptions (the most recent `cap` of each kind)."""
        remember(self.links.tool_calls, new.tool_calls, self._cap)
        remember(self.links.responses, new.responses, self._cap)

    async def parent(
        self,
        conn: AsyncConnection,
        ev: InterceptionStarted,
        batch: Links,
        before_query: Callable[[], Awaitable[None]],
    ) -> Link | None:
        """The interception that issued the tool call this request answers, else the one that produced
        `previous_response_id`; the most recent one, and only among the same user's interceptions (tool call ids
        are not globally unique with every provider). `batch` (the links of the batch being written, not yet
        committed) and memory first; on a miss `before_query()` runs (the batch's queued writes must be visible
        to the lookup), then the database is asked."""
        who = ev.initiator.user_id
        lookups: list[tuple[str, dict[str, Link], dict[str, Link], tuple[sa.Select[Any], ...]]] = []
        if ev.correlating_tool_call_id:
            lookups.append((ev.correlating_tool_call_id, batch.tool_calls, self.links.tool_calls, _BY_TOOL_CALL))
        if ev.previous_response_id:
            lookups.append((ev.previous_response_id, batch.responses, self.links.responses, _BY_RESPONSE))
        for key, batch_links, links, queries in lookups:
            link = batch_links.get(key) or links.get(key)
            if link is not None and link.initiator_id == who:
                return link
            await before_query()
            for query in queries:
                row = (await conn.execute(query, {"key": key, "who": who})).first()
                if row is not None:
                    return Link(row.id, row.root_id, who)
        return None


_i = interceptions.c


def _parent_query(child: sa.Table, key: sa.Column[Any]) -> sa.Select[Any]:
    """The most recent interception of user `:who` with a `child` row whose `key` is `:key`."""
    return (
        sa.select(_i.id, sa.func.coalesce(_i.thread_root_id, _i.id).label("root_id"))
        .select_from(child.join(interceptions, _i.id == child.c.interception_id))
        .where(key == sa.bindparam("key"), _i.initiator_id == sa.bindparam("who"))
        .order_by(child.c.created_at.desc(), child.c.id.desc())
        .limit(1)
    )


_BY_TOOL_CALL = (_parent_query(tool_usages, tool_usages.c.provider_tool_call_id),)
_BY_RESPONSE = (
    _parent_query(token_usages, token_usages.c.provider_response_id),
    _parent_query(user_prompts, user_prompts.c.provider_response_id),
)
