"""SQLite storage (SQLAlchemy Core, async): schema and migrations, users and proxy tokens, the batched record
writer fed by the proxy, and the interception queries."""

from aigw_proxy.storage.database import Database, open_database
from aigw_proxy.storage.errors import (
    InvalidCursor,
    InvalidUsernameError,
    SchemaTooNewError,
    StorageError,
    TokenNotFoundError,
    UserExistsError,
    UserNotFoundError,
)
from aigw_proxy.storage.read.interceptions import InterceptionFilter, count_interceptions, list_interceptions
from aigw_proxy.storage.retention import purge_interceptions
from aigw_proxy.storage.schema.migrations import LATEST_VERSION, current_version, migrate
from aigw_proxy.storage.schema.tables import error_type_for_status
from aigw_proxy.storage.timefmt import rfc3339
from aigw_proxy.storage.users import UserStore
from aigw_proxy.storage.write.writer import DANGLING_MESSAGE, RecordWriter

__all__ = [
    "DANGLING_MESSAGE",
    "LATEST_VERSION",
    "Database",
    "InterceptionFilter",
    "InvalidCursor",
    "InvalidUsernameError",
    "RecordWriter",
    "SchemaTooNewError",
    "StorageError",
    "TokenNotFoundError",
    "UserExistsError",
    "UserNotFoundError",
    "UserStore",
    "count_interceptions",
    "current_version",
    "error_type_for_status",
    "list_interceptions",
    "migrate",
    "open_database",
    "purge_interceptions",
    "rfc3339",
]
