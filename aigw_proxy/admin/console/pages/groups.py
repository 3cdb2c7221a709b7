"""Groups and budgets (admins only): groups and their members, and the budgets set at run time (per group, per
user, the default; daily and/or monthly USD limits), through the same controls store the CLI (`aigw-proxy
groups …`, `aigw-proxy budgets …`) and the REST API use; the proxy enforces a change within about a second.
Each group's spend (the calls charged to it) and each budgeted user's own spend today and this month (UTC) stand
beside their limits. Every change is written to the audit log. The config file's `[[budgets]]` are shown too,
read-only: a budget set here replaces the file's for its scope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from aigw_proxy.admin.console.auth import PATH, Viewer
from aigw_proxy.admin.console.core import Console
from aigw_proxy.spend.budgets import Budget, BudgetError, Scope, Spent, format_usd, utc_day
from aigw_proxy.storage import StorageError
from aigw_proxy.storage.controls import spend_totals

USERNAME_HINTS = 500  # at most this many usernames offered as the member box's suggestions


@dataclass(frozen=True, slots=True)
class BudgetRow:
    scope: Scope
    budget: Budget | None
    spent: Spent | None = None  # None for the default (each user on their own spend)
    overridden: Budget | None = None  # the config file's budget of the scope, replaced by the database's

    @property
    def daily_used(self) -> bool:
        return bool(self.budget and self.spent and self.budget.daily_micros is not None
                    and self.spent.daily_micros >= self.budget.daily_micros)

    @property
    def monthly_used(self) -> bool:
        return bool(self.budget and self.spent and self.budget.monthly_micros is not None
                    and self.spent.monthly_micros >= self.budget.monthly_micros)


async def groups_page(console: Console, request: Request, viewer: Viewer) -> Response:
    error = None
    status = 200
    if request.method == "POST":
        try:
            anchor = await _action(console, request, viewer, request.state.form)
        except (StorageError, ValueError) as exc:
            error, status = str(exc), 400
        else:
            return RedirectResponse(PATH + "/groups" + (f"#{anchor}" if anchor else ""), 303)
    return console.render(request, viewer, "groups.html", {**await _state(console), "error": error}, status)


async def _state(console: Console) -> dict[str, Any]:
    snap = await console.controls.snapshot()
    listed = await console.controls.list_groups()
    stored = {b.scope: b for b in snap.budgets}
    config = {b.scope: b for b in console.config_budgets()}
    user_ids = snap.user_ids

    def row(scope: Scope, spent: Spent | None) -> BudgetRow:
        db_budget = stored.get(scope)
        return BudgetRow(scope, db_budget or config.get(scope), spent,
                         config.get(scope) if db_budget is not None else None)

    today = utc_day(datetime.now(UTC))
    user_scopes = sorted({s for s in (*stored, *config) if s.kind == "user" and s.name in user_ids},
                         key=lambda s: s.name)
    spent = await spend_totals(console.db, user_ids=[user_ids[s.name] for s in user_scopes],
                               group_ids=[g["id"] for g in listed], day=today)
    groups = [{**g, "budget": row(Scope("group", g["name"]), spent.groups[g["id"]])} for g in listed]
    users = [{"user_id": user_ids[s.name], "username": s.name, "budget": row(s, spent.users[user_ids[s.name]])}
             for s in user_scopes]
    names = sorted(user_ids)
    group_names = {g["name"] for g in listed}
    unknown = sorted(str(s) for s in config if (s.kind == "group" and s.name not in group_names)
                     or (s.kind == "user" and s.name not in user_ids))
    return {"groups": groups, "user_budgets": users, "default": row(Scope("default"), None), "today": today,
            "usernames": names if len(names) <= USERNAME_HINTS else [], "unknown": unknown}


def _text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _amount(form: FormData, key: str) -> str | None:
    return _text(form, key) or None


async def _group_name(console: Console, group_id: str) -> str:
    for g in await console.controls.list_groups():
        if g["id"] == group_id:
            return str(g["name"])
    raise ValueError("no such group (deleted meanwhile?)")


async def _scope(console: Console, form: FormData) -> tuple[Scope, str | None]:
    """The budget form's scope and the user it names (for the audit log)."""
    kind = _text(form, "kind")
    if kind == "default":
        return Scope("default"), None
    if kind == "group":
        return Scope("group", await _group_name(console, _text(form, "group_id"))), None
    if kind == "user":
        username = _text(form, "username")
        if not username:
            raise ValueError("name the user the budget is for")
        uid = (await console.controls.snapshot()).user_ids.get(username)
        if uid is None:
            raise ValueError(f"user {username!r} not found")
        return Scope("user", username), uid
    raise ValueError(f"unknown budget kind {kind!r}")


def _anchor(scope: Scope) -> str:
    return "budget-default" if scope.kind == "default" else f"{scope.kind}-{scope.name}"


async def _action(console: Console, request: Request, viewer: Viewer, form: FormData) -> str | None:
    """One form's change, audited; returns the page anchor to go back to."""
    controls = console.controls
    action = _text(form, "action")
    if action == "create":
        group = await controls.create_group(_text(form, "name"))
        await console.audit(request, viewer, "group.create", target=group["name"], detail={"group_id": group["id"]})
        return f"group-{group['name']}"
    if action == "rename":
        renamed = await controls.rename_group(_text(form, "group_id"), _text(form, "name"))
        await console.audit(request, viewer, "group.rename", target=renamed["name"],
                            detail={"group_id": renamed["id"], "from": renamed["old_name"], "to": renamed["name"]})
        return f"group-{renamed['name']}"
    if action == "delete":
        gid = _text(form, "group_id")
        name = await _group_name(console, gid)
        await controls.delete_group(gid)
        await console.audit(request, viewer, "group.delete", target=name, detail={"group_id": gid})
        return None
    if action in ("add_member", "remove_member"):
        gid = _text(form, "group_id")
        name = await _group_name(console, gid)
        who = _text(form, "username") or _text(form, "user_id")
        if not who:
            raise ValueError("name the user to add")
        snap = await controls.snapshot()
        uid = who if who in snap.users else snap.user_ids.get(who)
        if uid is None:
            raise ValueError(f"user {who!r} not found")
        username = snap.users[uid][0]
        if action == "add_member":
            changed = await controls.add_member(gid, uid)
            what = "group.member_add"
        else:
            changed = await controls.remove_member(gid, uid)
            what = "group.member_remove"
        if changed:
            await console.audit(request, viewer, what, target=name, target_user_id=uid,
                                detail={"group_id": gid, "user": username})
        return f"group-{name}"
    if action == "set_budget":
        scope, uid = await _scope(console, form)
        try:
            budget = Budget.build(scope, daily=_amount(form, "daily"), monthly=_amount(form, "monthly"),
                                  soft_fraction=_amount(form, "soft_fraction"), source="database")
        except BudgetError as exc:
            raise ValueError(str(exc)) from None
        await controls.set_budget(budget)
        await console.audit(request, viewer, "budget.set", target=str(scope), target_user_id=uid, detail={
            "daily": None if budget.daily_micros is None else format_usd(budget.daily_micros),
            "monthly": None if budget.monthly_micros is None else format_usd(budget.monthly_micros),
            "soft_fraction": budget.soft_fraction})
        return _anchor(scope)
    if action == "clear_budget":
        scope, uid = await _scope(console, form)
        if await controls.clear_budget(scope):
            await console.audit(request, viewer, "budget.clear", target=str(scope), target_user_id=uid)
        return _anchor(scope)
    raise ValueError(f"unknown action {action!r}")
