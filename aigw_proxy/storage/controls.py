"""Spend controls in the database: groups and their members, budgets set at run time, the snapshot the proxy
enforces from, and the spend totals budgets are checked against (schema/controls.py has the tables)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.spend.budgets import Budget, Scope, Spent, month_start
from aigw_proxy.storage.database import Database
from aigw_proxy.storage.errors import StorageError, UserNotFoundError
from aigw_proxy.storage.ids import new_id
from aigw_proxy.storage.schema.controls import GROUP_NAME_MAX, budgets, controls_version, group_members, groups
from aigw_proxy.storage.schema.spend_days import spend_days
from aigw_proxy.storage.schema.tables import users
from aigw_proxy.storage.timefmt import rfc3339

_GROUP_NAME_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{GROUP_NAME_MAX - 1}}}")


class GroupExistsError(StorageError):
    pass


class GroupNotFoundError(StorageError):
    pass


class InvalidGroupNameError(StorageError, ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ControlsData:
    """What the proxy enforces from, read in one go (small tables)."""

    users: dict[str, tuple[str, str]] = field(default_factory=dict)  # live user id → (username, role)
    groups: dict[str, str] = field(default_factory=dict)  # group id → name
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)  # user id → their group ids
    budgets: tuple[Budget, ...] = ()  # the database's budgets, scopes by name
    version: int = -1  # the change counter when read

    @property
    def user_ids(self) -> dict[str, str]:
        return {name: uid for uid, (name, _role) in self.users.items()}

    @property
    def group_ids(self) -> dict[str, str]:
        return {name: gid for gid, name in self.groups.items()}


def _scope_key(kind: str, subject_id: str = "") -> str:
    return "default" if kind == "default" else f"{kind}:{subject_id}"


async def _user_id(conn: AsyncConnection, username_or_id: str) -> str:
    rows = (await conn.execute(sa.select(users.c.id).where(
        sa.or_(users.c.id == username_or_id, users.c.username == username_or_id), users.c.deleted_at.is_(None),
    ))).all()
    if not rows:
        raise UserNotFoundError(f"user {username_or_id!r} not found")
    ids = [r.id for r in rows]
    return username_or_id if username_or_id in ids else ids[0]


async def _group_id(conn: AsyncConnection, name_or_id: str) -> str:
    rows = (await conn.execute(sa.select(groups.c.id).where(
        sa.or_(groups.c.id == name_or_id, groups.c.name == name_or_id)))).all()
    if not rows:
        raise GroupNotFoundError(f"group {name_or_id!r} not found")
    ids = [r.id for r in rows]
    return name_or_id if name_or_id in ids else ids[0]


def _check_group_name(name: str) -> None:
    if not isinstance(name, str) or not _GROUP_NAME_RE.fullmatch(name):
        raise InvalidGroupNameError(
            f"invalid group name {name!r}: use 1-{GROUP_NAME_MAX} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")


_BUMP = sa.update(controls_version).values(version=controls_version.c.version + 1)


class ControlsStore:
    """Groups, members and budgets (CLI, REST API) and the proxy's snapshot of them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- groups ---------------------------------------------------------------------------------------------
    async def create_group(self, name: str) -> dict[str, Any]:
        _check_group_name(name)
        gid, now = new_id(), datetime.now(UTC)
        try:
            async with self._db.writer.begin() as conn:
                await conn.execute(sa.insert(groups).values(id=gid, name=name, created_at=now))
                await conn.execute(_BUMP)
        except sa.exc.IntegrityError as exc:
            raise GroupExistsError(f"group {name!r} already exists") from exc
        return {"id": gid, "name": name, "created_at": rfc3339(now), "members": []}

    async def rename_group(self, name_or_id: str, new_name: str) -> dict[str, str]:
        """Rename a group (its id, members, budget and charged calls stay); returns {"id", "name", "old_name"}."""
        _check_group_name(new_name)
        try:
            async with self._db.writer.begin() as conn:
                gid = await _group_id(conn, name_or_id)
                old = (await conn.execute(sa.select(groups.c.name).where(groups.c.id == gid))).scalar_one()
                if old != new_name:
                    await conn.execute(sa.update(groups).where(groups.c.id == gid).values(name=new_name))
                    await conn.execute(_BUMP)
        except sa.exc.IntegrityError as exc:
            raise GroupExistsError(f"group {new_name!r} already exists") from exc
        return {"id": gid, "name": new_name, "old_name": old}

    async def delete_group(self, name_or_id: str) -> None:
        """Delete a group, its memberships and its budget (calls already charged to it keep its id)."""
        async with self._db.writer.begin() as conn:
            gid = await _group_id(conn, name_or_id)
            await conn.execute(sa.delete(budgets).where(budgets.c.scope == _scope_key("group", gid)))
            await conn.execute(sa.delete(group_members).where(group_members.c.group_id == gid))
            await conn.execute(sa.delete(groups).where(groups.c.id == gid))
            await conn.execute(_BUMP)

    async def add_member(self, group: str, user: str) -> bool:
        """Put a user in a group; False if they were in it already."""
        async with self._db.writer.begin() as conn:
            gid, uid = await _group_id(conn, group), await _user_id(conn, user)
            found = (await conn.execute(sa.select(group_members.c.user_id).where(
                group_members.c.group_id == gid, group_members.c.user_id == uid))).first()
            if found is not None:
                return False
            await conn.execute(sa.insert(group_members).values(group_id=gid, user_id=uid,
                                                               created_at=datetime.now(UTC)))
            await conn.execute(_BUMP)
            return True

    async def remove_member(self, group: str, user: str) -> bool:
        """Take a user out of a group; False if they were not in it."""
        async with self._db.writer.begin() as conn:
            gid, uid = await _group_id(conn, group), await _user_id(conn, user)
            result = await conn.execute(sa.delete(group_members).where(
                group_members.c.group_id == gid, group_members.c.user_id == uid))
            await conn.execute(_BUMP)
            return bool(result.rowcount)

    async def list_groups(self) -> list[dict[str, Any]]:
        """Groups by name with their live members (id, username), JSON-ready."""
        async with self._db.reader.connect() as conn:
            group_rows = (await conn.execute(sa.select(groups).order_by(groups.c.name))).all()
            member_rows = (await conn.execute(
                sa.select(group_members.c.group_id, users.c.id, users.c.username)
                .select_from(group_members.join(users, users.c.id == group_members.c.user_id))
                .where(users.c.deleted_at.is_(None))
                .order_by(users.c.username)
            )).all()
        members: dict[str, list[dict[str, str]]] = {g.id: [] for g in group_rows}
        for m in member_rows:
            members.setdefault(m.group_id, []).append({"id": m.id, "username": m.username})
        return [{"id": g.id, "name": g.name, "created_at": rfc3339(g.created_at), "members": members[g.id]}
                for g in group_rows]

    # -- budgets --------------------------------------------------------------------------------------------
    async def _scope_key_for(self, conn: AsyncConnection, scope: Scope) -> str:
        if scope.kind == "default":
            return "default"
        if scope.kind == "user":
            return _scope_key("user", await _user_id(conn, scope.name))
        return _scope_key("group", await _group_id(conn, scope.name))

    async def set_budget(self, budget: Budget) -> Budget:
        """Create or replace the database budget of `budget.scope` (the user or group must exist)."""
        now = datetime.now(UTC)
        async with self._db.writer.begin() as conn:
            key = await self._scope_key_for(conn, budget.scope)
            values = {"daily_micros": budget.daily_micros, "monthly_micros": budget.monthly_micros,
                      "soft_fraction": budget.soft_fraction, "updated_at": now}
            updated = await conn.execute(sa.update(budgets).where(budgets.c.scope == key).values(**values))
            if not updated.rowcount:
                await conn.execute(sa.insert(budgets).values(scope=key, **values))
            await conn.execute(_BUMP)
        return Budget(budget.scope, budget.daily_micros, budget.monthly_micros, budget.soft_fraction, "database")

    async def clear_budget(self, scope: Scope) -> bool:
        """Delete the database budget of a scope; False if it had none."""
        async with self._db.writer.begin() as conn:
            key = await self._scope_key_for(conn, scope)
            result = await conn.execute(sa.delete(budgets).where(budgets.c.scope == key))
            await conn.execute(_BUMP)
            return bool(result.rowcount)

    async def list_budgets(self) -> list[Budget]:
        return list((await self.snapshot()).budgets)

    # -- what the proxy enforces from -----------------------------------------------------------------------
    async def version(self) -> int:
        """The change counter: it moves whenever groups, members or budgets change."""
        async with self._db.reader.connect() as conn:
            return int((await conn.execute(sa.select(controls_version.c.version))).scalar() or 0)

    async def snapshot(self) -> ControlsData:
        async with self._db.reader.connect() as conn:
            version = int((await conn.execute(sa.select(controls_version.c.version))).scalar() or 0)
            user_rows = (await conn.execute(sa.select(users.c.id, users.c.username, users.c.role)
                                            .where(users.c.deleted_at.is_(None)))).all()
            group_rows = (await conn.execute(sa.select(groups.c.id, groups.c.name))).all()
            member_rows = (await conn.execute(sa.select(group_members.c.user_id, group_members.c.group_id))).all()
            budget_rows = (await conn.execute(sa.select(budgets).order_by(budgets.c.scope))).all()
        user_map = {r.id: (r.username, r.role) for r in user_rows}
        group_map = {r.id: r.name for r in group_rows}
        members: dict[str, list[str]] = {}
        for r in member_rows:
            if r.user_id in user_map:
                members.setdefault(r.user_id, []).append(r.group_id)
        found: list[Budget] = []
        for r in budget_rows:
            kind, _, subject = r.scope.partition(":")
            if kind == "default":
                scope = Scope("default")
            elif kind == "user" and subject in user_map:
                scope = Scope("user", user_map[subject][0])
            elif kind == "group" and subject in group_map:
                scope = Scope("group", group_map[subject])
            else:
                continue  # a deleted user's budget: nothing to enforce
            found.append(Budget(scope, r.daily_micros, r.monthly_micros, r.soft_fraction, "database"))
        return ControlsData(user_map, group_map, {u: tuple(sorted(g)) for u, g in members.items()}, tuple(found),
                            version)


# -- spend ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SpendTotals:
    users: dict[str, Spent]
    groups: dict[str, Spent]


def _sums(key: sa.ColumnElement[str], ids: list[str], month: date, day: date) -> sa.Select[Any]:
    d = spend_days.c
    today = day.isoformat()
    return (sa.select(key, sa.func.coalesce(sa.func.sum(sa.case((d.day == today, d.cost_micros), else_=0)), 0),
                      sa.func.coalesce(sa.func.sum(d.cost_micros), 0))
            .where(key.in_(ids), d.day >= month.isoformat(), d.day <= today, d.api_equivalent == sa.false())
            .group_by(key))


async def spend_totals(db: Database, *, user_ids: Iterable[str], group_ids: Iterable[str], day: date) -> SpendTotals:
    """What each user spent on their own calls and each group was charged (the calls whose token rows carry its
    `effective_group_id`), in `day` and in its month (UTC), by the calls' start: API spend only, subscription
    calls (API-equivalent value) and unpriced rows add nothing. Two indexed reads of the daily spend summary
    (schema/spend_days.py), whatever the number of calls."""
    uids, gids = sorted(set(user_ids)), sorted(set(group_ids))
    month = month_start(day)
    by_user: dict[str, tuple[int, int]] = {}
    by_group: dict[str, tuple[int, int]] = {}
    async with db.reader.connect() as conn:
        if uids:
            by_user = {r[0]: (int(r[1]), int(r[2])) for r in await conn.execute(
                _sums(spend_days.c.initiator_id, uids, month, day))}
        if gids:
            by_group = {r[0]: (int(r[1]), int(r[2])) for r in await conn.execute(
                _sums(spend_days.c.effective_group_id, gids, month, day))}
    return SpendTotals({u: Spent(day, *by_user.get(u, (0, 0))) for u in uids},
                       {g: Spent(day, *by_group.get(g, (0, 0))) for g in gids})
