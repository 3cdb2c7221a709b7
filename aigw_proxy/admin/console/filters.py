"""The filter form of the list pages (sessions, request log): the `q` search box parsed into an
InterceptionFilter for the viewer, its terms as removable chips, and the keyset pager's `after` cursor.
One builder for every list page; the template side is `macros.html`'s `search` and `pager`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from aigw_proxy.admin.api.search import Search, SearchError, parse_search
from aigw_proxy.admin.console.auth import Viewer
from aigw_proxy.storage import InterceptionFilter


@dataclass(slots=True)
class FilterForm:
    q: str
    filter: InterceptionFilter
    error: str | None = None  # the search box's error, shown under it (nothing is listed then)
    chips: list[dict[str, str]] = field(default_factory=list)
    after: str | None = None  # the keyset cursor: the last row id of the previous page

    @classmethod
    def from_request(cls, request: Request, viewer: Viewer) -> FilterForm:
        q = (request.query_params.get("q") or "").strip()
        after = request.query_params.get("after") or None
        try:
            search = parse_search(q)
        except SearchError as exc:
            return cls(q, InterceptionFilter(visible_to=viewer.visible_to), str(exc), [], after)
        terms = dict(search.terms)
        chips = _chips(search)
        if terms.get("initiator") == "me":
            terms["initiator"] = viewer.user_id
        flt = InterceptionFilter(**terms, started_after=search.started_after, started_before=search.started_before,
                                 visible_to=viewer.visible_to)
        return cls(q, flt, None, chips, after)

    def context(self, rows: list[dict[str, Any]], page: int) -> dict[str, Any]:
        """What the list templates need: the form's state, the rows, and the next page's cursor (a full page has
        one)."""
        return {"q": self.q, "error": self.error, "chips": self.chips, "paged": self.after is not None,
                "rows": rows, "next": rows[-1]["id"] if len(rows) == page else None}


def _chips(search: Search) -> list[dict[str, str]]:
    """The search's terms as removable chips: each with the query without it."""
    terms = dict(search.terms)
    if search.started_after is not None:
        terms["started_after"] = search.started_after.isoformat().replace("+00:00", "Z")
    if search.started_before is not None:
        terms["started_before"] = search.started_before.isoformat().replace("+00:00", "Z")

    def render(items: dict[str, str]) -> str:
        return " ".join(f'{k}:"{v}"' if " " in v else f"{k}:{v}" for k, v in items.items())

    return [{"key": k, "value": v, "without": render({a: b for a, b in terms.items() if a != k})}
            for k, v in terms.items()]
