"""The record writer's file guard: the database file is checked before every write and every `check_interval`
seconds when idle; deleted or replaced under the running proxy, it is reopened (`Database.reopen`: a deleted one
is restored from the handle still open on it) and the interceptions in flight are carried over to a replacement,
so records keep reaching the file the path names.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from aigw_proxy.storage.schema.tables import interceptions, token_usages, user_prompts
from aigw_proxy.storage.write.batch import describe
from aigw_proxy.storage.write.core import WriterState

log = logging.getLogger("aigw_proxy.storage")


class FileGuard(WriterState):
    async def _check_file(self) -> None:
        problem = self._wdb.file_problem()
        if problem is not None:
            await self._reopen(problem)

    async def _reopen(self, problem: str) -> bool:
        """The database file was deleted or replaced: switch to what the path names now."""
        path = self._wdb.path
        self.database_problem = f"the database file {path} was {problem} while the proxy had it open"
        self._log_limited("reopen", logging.ERROR, "%s: reopening it; records wait in the backlog meanwhile",
                          self.database_problem)
        carry = await self._on_db(self._open_rows()) if problem == "replaced" else None
        try:
            reopened = await self._on_db(self._wdb.reopen())
        except Exception as exc:
            self._failed(exc)
            return False
        if not reopened.same_contents:  # the rows of the calls in flight are not in the file at the path now
            try:
                if carry is None:
                    raise RuntimeError("nothing to carry over")
                await self._on_db(self._insert_rows(carry))
            except Exception as exc:
                log.error("the interceptions in flight were not carried over to %s (%s): their ends are dropped "
                          "as unknown", path, describe(exc))
                self._batches.forget_inflight()
        log.warning("the database file %s was %s: %s; recording continues there", path, problem, reopened.what)
        self.database_problem = None
        self._last_log.pop("reopen", None)
        return True

    async def _open_rows(self) -> dict[str, list[dict[str, Any]]] | None:
        """The in-flight interceptions (and their prompts and token rows so far) in the old file, read through
        the writer's connection still open on it."""
        if not self._wdb.writer_connected():
            return None  # a new connection would open the new file
        try:
            async with self._wdb.writer.connect() as conn:
                await conn.execution_options(**self._wdb.backend.read_only)
                columns = [c for c in interceptions.c if c.name != "session_id"]  # computed
                rows = (await conn.execute(sa.select(*columns).where(interceptions.c.ended_at.is_(None)))).mappings()
                out: dict[str, list[dict[str, Any]]] = {interceptions.name: [dict(r) for r in rows]}
                ids = [r["id"] for r in out[interceptions.name]]
                for table in (user_prompts, token_usages):
                    out[table.name] = []
                    for i in range(0, len(ids), 500):
                        part = ids[i:i + 500]
                        found = await conn.execute(sa.select(table).where(table.c.interception_id.in_(part)))
                        out[table.name] += [dict(r) for r in found.mappings()]
                return out
        except Exception as exc:
            log.error("could not read the interceptions in flight from the replaced database: %s", describe(exc))
            return None

    async def _insert_rows(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        ix = rows[interceptions.name]
        if not ix:
            return
        async with self._wdb.writer.begin() as conn:
            ids = [r["id"] for r in ix]
            existing: set[str] = set()
            for i in range(0, len(ids), 500):
                found = await conn.execute(sa.select(interceptions.c.id).where(interceptions.c.id.in_(ids[i:i + 500])))
                existing |= {r[0] for r in found}
            new = [r for r in ix if r["id"] not in existing]
            if not new:
                return
            await conn.execute(sa.insert(interceptions), new)
            keep = {r["id"] for r in new}
            for table in (user_prompts, token_usages):
                children = [r for r in rows[table.name] if r["interception_id"] in keep]
                if children:
                    await conn.execute(sa.insert(table), children)
        log.warning("carried %d interceptions in flight over to the new database file", len(new))
