"""Storage on SQLite or PostgreSQL (SQLAlchemy Core, async): the storage package's public surface. The proxy, the
admin API, the CLI and telemetry import from here, never from the modules below.

* `database`: opening the database (a writer and a reader engine), `dialects/`: what differs between SQLite and
  PostgreSQL, `schema/`: tables, migrations and the summary tables the database keeps itself; `users`: users and
  proxy tokens; `controls`: groups, budgets, spend totals;
* `write/`: the batched record writer fed by the proxy;
* `read/`: the interceptions and sessions lists, one session in detail, counts, distinct values, the spend
  report;
* `reprice`: recomputing the stored prices of a window on purpose;
* `retention`: the retention window and the purge.
"""

from aigw_proxy.storage.controls import (
    ControlsData,
    ControlsStore,
    GroupExistsError,
    GroupNotFoundError,
    InvalidGroupNameError,
    SpendTotals,
    spend_totals,
)
from aigw_proxy.storage.database import Database, DatabaseConfig, open_database
from aigw_proxy.storage.errors import (
    InvalidCursor,
    InvalidUsernameError,
    SchemaTooNewError,
    StorageError,
    TokenNotFoundError,
    UserExistsError,
    UserNotFoundError,
)
from aigw_proxy.storage.read.capture import get_capture
from aigw_proxy.storage.read.catalog import distinct_values
from aigw_proxy.storage.read.counts import count_interceptions
from aigw_proxy.storage.read.filters import InterceptionFilter
from aigw_proxy.storage.read.interceptions import list_interceptions
from aigw_proxy.storage.read.session_detail import DEFAULT_THREADS, MAX_THREADS, get_session
from aigw_proxy.storage.read.session_list import SessionCursorNotFound, list_sessions, sessions_page
from aigw_proxy.storage.read.spend import GROUPINGS as SPEND_GROUPINGS
from aigw_proxy.storage.read.spend import spend_report
from aigw_proxy.storage.reprice import RepriceResult, reprice
from aigw_proxy.storage.retention import PurgeResult, RetentionLoop, parse_retention, purge_interceptions, purge_now
from aigw_proxy.storage.schema.migrations import LATEST_VERSION, current_version, migrate
from aigw_proxy.storage.schema.tables import error_type_for_status
from aigw_proxy.storage.timefmt import rfc3339
from aigw_proxy.storage.users import UserStore
from aigw_proxy.storage.write.writer import DANGLING_MESSAGE, RECENT_WINDOW, RecordWriter, WriterHealth

__all__ = [
    "DANGLING_MESSAGE",
    "DEFAULT_THREADS",
    "LATEST_VERSION",
    "MAX_THREADS",
    "RECENT_WINDOW",
    "SPEND_GROUPINGS",
    "ControlsData",
    "ControlsStore",
    "Database",
    "DatabaseConfig",
    "GroupExistsError",
    "GroupNotFoundError",
    "InterceptionFilter",
    "InvalidCursor",
    "InvalidGroupNameError",
    "InvalidUsernameError",
    "PurgeResult",
    "RecordWriter",
    "RepriceResult",
    "RetentionLoop",
    "SchemaTooNewError",
    "SessionCursorNotFound",
    "SpendTotals",
    "StorageError",
    "TokenNotFoundError",
    "UserExistsError",
    "UserNotFoundError",
    "UserStore",
    "WriterHealth",
    "count_interceptions",
    "current_version",
    "distinct_values",
    "error_type_for_status",
    "get_capture",
    "get_session",
    "list_interceptions",
    "list_sessions",
    "migrate",
    "open_database",
    "parse_retention",
    "purge_interceptions",
    "purge_now",
    "reprice",
    "rfc3339",
    "sessions_page",
    "spend_report",
    "spend_totals",
]
