"""The record writer's start-up clean-up: the interceptions an earlier process left open are closed as failed
(one recording daemon per database).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Final

import sqlalchemy as sa

from aigw_proxy.storage.schema.tables import interceptions
from aigw_proxy.storage.write.batch import is_database_error
from aigw_proxy.storage.write.core import WriterState

log = logging.getLogger("aigw_proxy.storage")

DANGLING_MESSAGE: Final = "proxy stopped before the interception ended"


class DanglingCleanup(WriterState):
    async def _close_dangling(self) -> bool:
        """Close, as failed, the interceptions an earlier process left open. True once done (or given up on as
        a bug); False when the database failed (retried after a pause)."""
        try:
            result = await self._on_db(self._end_dangling())
        except Exception as exc:
            if is_database_error(exc):
                self._failed(exc)
                return False
            log.exception("could not close dangling interceptions")
            return True
        self._succeeded()
        self.closed_dangling = int(result or 0)
        if self.closed_dangling:
            log.warning("closed %d interceptions left open by a previous run", self.closed_dangling)
        return True

    async def _end_dangling(self) -> int:
        async with self._wdb.writer.begin() as conn:
            result = await conn.execute(
                sa.update(interceptions)
                .where(interceptions.c.ended_at.is_(None), interceptions.c.started_at < self._born)
                .values(
                    ended_at=datetime.now(UTC),
                    status="failed",
                    error_type="unknown",
                    error_message=DANGLING_MESSAGE,
                )
            )
        return int(result.rowcount or 0)
