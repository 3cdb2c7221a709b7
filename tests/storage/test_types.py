from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from aigw_proxy.storage import rfc3339
from aigw_proxy.storage.ids import new_id
from aigw_proxy.storage.schema.tables import UTCDateTime

_meta = sa.MetaData()
_times = sa.Table("times", _meta, sa.Column("n", sa.Integer, primary_key=True), sa.Column("at", UTCDateTime))

aware = st.builds(
    lambda dt, minutes: dt.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)


@settings(max_examples=50, deadline=None)
@given(st.lists(aware, min_size=1, max_size=30))
def test_utc_datetime_round_trips_and_orders_as_instants(values: list[datetime]) -> None:
    engine = sa.create_engine("sqlite://")
    _meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(_times), [{"n": n, "at": v} for n, v in enumerate(values)])
        rows = conn.execute(sa.select(_times.c.n, _times.c.at).order_by(_times.c.at, _times.c.n)).all()
        after = conn.execute(sa.select(sa.func.count()).where(_times.c.at >= values[0])).scalar()
    engine.dispose()
    assert [r.at for r in rows] == sorted(v.astimezone(UTC) for v in values)
    assert all(r.at.tzinfo is UTC and r.at == values[r.n] for r in rows)
    assert after == sum(v >= values[0] for v in values)


def test_naive_datetimes_are_refused() -> None:
    engine = sa.create_engine("sqlite://")
    _meta.create_all(engine)
    with engine.begin() as conn, pytest.raises(sa.exc.StatementError, match="naive datetime"):
        conn.execute(sa.insert(_times), {"n": 1, "at": datetime(2025, 1, 1)})
    engine.dispose()


def test_rfc3339() -> None:
    assert rfc3339(datetime(2025, 1, 2, 3, 4, 5, 60, tzinfo=UTC)) == "2025-01-02T03:04:05.000060Z"
    assert rfc3339(datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))) == "2025-01-02T01:04:05.000000Z"
    assert rfc3339(None) is None


def test_ids_are_uuid7_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[:100])
    assert all(str(uuid.UUID(i)) == i for i in ids[:100])  # the canonical text form


# The child only makes ids and writes them to a pipe, so the other threads of the test process (which fork warns
# about: a lock one of them holds stays held in the child) cannot touch it.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_a_forked_process_never_repeats_its_parents_ids() -> None:
    """Ids draw on a buffer of random bytes: a forked worker must not inherit it (it would make the same ids)."""
    new_id()  # the buffer is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out
        os.close(read)
        os.write(write, "\n".join(new_id() for _ in range(200)).encode())
        os._exit(0)
    os.close(write)
    mine = {new_id() for _ in range(200)}
    with os.fdopen(read) as pipe:
        theirs = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    assert len(theirs) == 200 and not mine & theirs
    random_part = {i[-12:] for i in mine}  # 48 of the random bits: the same bytes drawn would show here
    assert not random_part & {i[-12:] for i in theirs}
