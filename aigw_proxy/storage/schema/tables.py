"""Tables: users and proxy tokens, plus the interception tables modelled on Coder's `aibridge_*` tables.

Portable SQLAlchemy Core: JSON maps to jsonb and `UTCDateTime` to timestamptz on PostgreSQL. Ids are text.
Children reference their interception with ON DELETE CASCADE on SQLite (retention deletes children explicitly
anyway); `initiator_id` has no foreign key, as in Coder ("FK is elided for performance"). Each child row also
carries its interception's start (`interception_started_at`, schema v10): PostgreSQL partitions the six tables
by it (storage/dialects/postgresql.py), which also drops the children's foreign key there.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

ROLES = ("member", "admin")
STATUSES = ("completed", "failed")
# Coder's `aibridge_interception_error_type`: what schema v1 allowed.
ERROR_TYPES_V1 = ("bad_request", "unauthorized", "rate_limited", "overloaded", "server_error", "timeout", "unknown")

# Token-usage price components (micro-dollars) and their sum, in this order. `other`: per-search fees (web search).
PRICE_COLUMNS = (
    "input_price_micros",
    "output_price_micros",
    "cache_read_price_micros",
    "cache_write_price_micros",
    "other_price_micros",
    "cost_micros",
)
# Ours, not Coder's (schema v5 allows them all): the true cause of a call cut mid-way, which its status cannot
# tell, and the refusals the proxy makes itself (budgets and model policy: spend/).
ERROR_TYPES = (*ERROR_TYPES_V1, "client_disconnected", "upstream_reset", "budget_exceeded", "model_denied")

CLIENT_MAX = 64
CLIENT_SESSION_ID_MAX = 256
CREDENTIAL_HINT_MAX = 32
ERROR_MESSAGE_MAX = 1024


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware datetimes in, timezone-aware UTC datetimes out.

    SQLite stores fixed-width UTC text (`YYYY-MM-DD HH:MM:SS.ffffff`), which orders correctly as text;
    PostgreSQL gets `timestamptz`. Naive datetimes are refused rather than guessed.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(sa.DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: timestamps must carry a timezone")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], datetime | None] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        generic = super().result_processor(dialect, coltype)

        # An API page reads thousands of timestamps: one C call per stored text instead of the DateTime
        # processor followed by this decorator's.
        def process(value: Any) -> datetime | None:
            if isinstance(value, str):
                return datetime.fromisoformat(value).replace(tzinfo=UTC)  # stored as naive UTC text
            return generic(value) if generic is not None else value

        return process


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def error_type_for_status(upstream_status: int | None) -> str:
    """Coder's `aibridge_interception_error_type` for a failed interception, from the upstream HTTP status."""
    match upstream_status:
        case 400 | 404 | 413 | 422:
            return "bad_request"
        case 401 | 403:
            return "unauthorized"
        case 429:
            return "rate_limited"
        case 503 | 529:
            return "overloaded"
        case 504 | 408:
            return "timeout"
        case int() if 500 <= upstream_status <= 599:
            return "server_error"
        case _:
            return "unknown"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def error_type_check(values: tuple[str, ...] = ERROR_TYPES) -> str:
    """The text of the `error_type` CHECK constraint allowing `values`."""
    return f"error_type IS NULL OR {_in('error_type', values)}"


metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False, server_default="member"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("deleted_at", UTCDateTime, nullable=True),
    sa.CheckConstraint(_in("role", ROLES), name="ck_users_role"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),  # sha256 hex of the plaintext
    sa.Column("hint", sa.String(32), nullable=False),
    sa.Column("name", sa.String(128), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Index("idx_api_tokens_user_id", "user_id"),
)

interceptions = sa.Table(
    "aibridge_interceptions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("initiator_id", sa.String(36), nullable=False),
    sa.Column("api_key_id", sa.String(36), nullable=True),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("provider_name", sa.Text, nullable=False, server_default=""),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("client", sa.String(CLIENT_MAX), nullable=True, server_default="Unknown"),
    sa.Column("client_session_id", sa.String(CLIENT_SESSION_ID_MAX), nullable=True),
    sa.Column("thread_parent_id", sa.String(64), nullable=True),
    sa.Column("thread_root_id", sa.String(64), nullable=True),
    sa.Column(
        "session_id",
        sa.Text,
        sa.Computed("COALESCE(client_session_id, thread_root_id, id)", persisted=True),
        nullable=False,
    ),
    sa.Column("correlating_tool_call_id", sa.Text, nullable=True),
    sa.Column("previous_response_id", sa.Text, nullable=True),
    sa.Column("credential_kind", sa.String(32), nullable=False, server_default="api_key"),
    sa.Column("credential_hint", sa.String(CREDENTIAL_HINT_MAX), nullable=False, server_default=""),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("status", sa.String(16), nullable=True),
    sa.Column("upstream_status", sa.Integer, nullable=True),
    sa.Column("error_type", sa.String(16), nullable=True),
    sa.Column("error_message", sa.String(ERROR_MESSAGE_MAX), nullable=True),
    sa.Column("metadata", JSONType, nullable=True),
    # Schema v3: created_at of the interception's newest prompt (the writer sets it when the call ends), so the
    # sessions list groups by it without a per-row prompt lookup. Kept last: v3 adds it to older databases.
    sa.Column("last_prompt_at", UTCDateTime, nullable=True),
    sa.CheckConstraint(f"status IS NULL OR {_in('status', STATUSES)}", name="ck_interceptions_status"),
    sa.CheckConstraint(error_type_check(), name="ck_interceptions_error_type"),
)
_i = interceptions.c
_ended = _i.ended_at.is_not(None)
sa.Index("idx_aibridge_interceptions_started_at_id", _i.started_at.desc(), _i.id.desc())
sa.Index("idx_aibridge_interceptions_initiator_id", _i.initiator_id)
sa.Index("idx_aibridge_interceptions_client", _i.client)
sa.Index("idx_aibridge_interceptions_thread_parent_id", _i.thread_parent_id)
sa.Index("idx_aibridge_interceptions_thread_root_id", _i.thread_root_id)
sa.Index(
    "idx_aibridge_interceptions_session_id",
    _i.session_id,
    sqlite_where=_ended,
    postgresql_where=_ended,
)
sa.Index(
    "idx_aibridge_interceptions_session_latest",
    _i.session_id,
    _i.initiator_id,
    _i.started_at.desc(),
    _i.id.desc(),
    sqlite_where=_ended,
    postgresql_where=_ended,
)
# In-flight interceptions: tiny, lets the writer close the ones a crashed process left open without a scan.
sa.Index(
    "idx_aibridge_interceptions_in_flight",
    _i.started_at,
    sqlite_where=_i.ended_at.is_(None),
    postgresql_where=_i.ended_at.is_(None),
)


def _interception_fk() -> sa.Column[str]:
    return sa.Column(
        "interception_id",
        sa.String(64),
        sa.ForeignKey("aibridge_interceptions.id", ondelete="CASCADE"),
        nullable=False,
    )


def _interception_started_at() -> sa.Column[datetime]:
    """Schema v10: the interception's `started_at` (the partition key on PostgreSQL). Kept last: v10 adds it to
    older SQLite databases, where rows written before are NULL (nothing on SQLite reads it)."""
    return sa.Column("interception_started_at", UTCDateTime, nullable=True)


token_usages = sa.Table(
    "aibridge_token_usages",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    _interception_fk(),
    sa.Column("provider_response_id", sa.Text, nullable=False, server_default=""),
    sa.Column("input_tokens", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("output_tokens", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("cache_read_input_tokens", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("cache_write_input_tokens", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("metadata", JSONType, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # Schema v5: the row's price, fixed when it is written (a later price change never rewrites it; `aigw-proxy
    # reprice` recomputes a window on purpose). Micro-dollars (1 USD = 1,000,000); all NULL = unpriced (no price
    # for the model), never 0. `cost_micros` = the sum of the components. Kept last: v5 adds them to older
    # databases.
    *(sa.Column(name, sa.BigInteger, nullable=True) for name in PRICE_COLUMNS),
    sa.Column("effective_group_id", sa.String(36), nullable=True),  # the group whose budget applies (budgets)
    sa.Column("price_source", sa.String(32), nullable=True),  # "genai-prices" | "config"
    sa.Column("price_version", sa.Text, nullable=True),  # the library version, or the override's identity
    sa.Column("price_ref", sa.Text, nullable=True),  # the price entry: "anthropic/claude-sonnet-4-5"
    # A subscription call (credential_kind oauth): priced at the API list price, reported as API-equivalent value.
    sa.Column("api_equivalent", sa.Boolean, nullable=False, server_default=sa.false()),
    _interception_started_at(),
    sa.Index("idx_aibridge_token_usages_interception_id", "interception_id"),
    sa.Index("idx_aibridge_token_usages_provider_response_id", "provider_response_id"),
)
# Unpriced rows, for `aigw-proxy reprice --unpriced-only` (Coder's index name).
sa.Index(
    "idx_aibridge_token_usages_null_cost",
    token_usages.c.interception_id,
    sqlite_where=token_usages.c.cost_micros.is_(None),
    postgresql_where=token_usages.c.cost_micros.is_(None),
)

user_prompts = sa.Table(
    "aibridge_user_prompts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    _interception_fk(),
    sa.Column("provider_response_id", sa.Text, nullable=False, server_default=""),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("metadata", JSONType, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    _interception_started_at(),
    sa.Index("idx_aibridge_user_prompts_interception_id", "interception_id"),
    sa.Index("idx_aibridge_user_prompts_provider_response_id", "provider_response_id"),
)
sa.Index(
    "idx_aibridge_user_prompts_interception_created",
    user_prompts.c.interception_id,
    user_prompts.c.created_at.desc(),
)

tool_usages = sa.Table(
    "aibridge_tool_usages",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    _interception_fk(),
    sa.Column("provider_response_id", sa.Text, nullable=False, server_default=""),
    sa.Column("provider_tool_call_id", sa.Text, nullable=True),
    sa.Column("provider_item_id", sa.Text, nullable=True),
    sa.Column("tool", sa.Text, nullable=False),
    sa.Column("input", sa.Text, nullable=False),
    sa.Column("server_url", sa.Text, nullable=True),  # NULL: a client-defined tool
    sa.Column("injected", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("invocation_error", sa.Text, nullable=True),
    sa.Column("metadata", JSONType, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    _interception_started_at(),
    sa.Index("idx_aibridge_tool_usages_interception_id", "interception_id"),
    sa.Index("idx_aibridge_tool_usages_provider_response_id", "provider_response_id"),
    sa.Index("idx_aibridge_tool_usages_provider_tool_call_id", "provider_tool_call_id"),
)

model_thoughts = sa.Table(
    "aibridge_model_thoughts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    _interception_fk(),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("metadata", JSONType, nullable=True),  # {"source": "thinking" | "reasoning_summary" | ...}
    sa.Column("created_at", UTCDateTime, nullable=False),
    _interception_started_at(),
    sa.Index("idx_aibridge_model_thoughts_interception_id", "interception_id"),
)

# Schema v11: raw captures (`--capture-bodies`, capture/): one row per captured interception, its bodies redacted,
# cut to --capture-max-bytes and compressed (`encoding`: zstd); sizes are the bodies' as relayed (decoded), in
# bytes. Deleted by retention with its interception.
captures = sa.Table(
    "aibridge_captures",
    metadata,
    sa.Column("interception_id", sa.String(64), sa.ForeignKey("aibridge_interceptions.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("interception_started_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("method", sa.String(16), nullable=False, server_default="POST"),
    sa.Column("route", sa.Text, nullable=False, server_default=""),
    sa.Column("transport", sa.String(16), nullable=False, server_default="http"),
    sa.Column("response_status", sa.Integer, nullable=True),
    sa.Column("streamed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("request_headers", JSONType, nullable=True),
    sa.Column("response_headers", JSONType, nullable=True),
    sa.Column("request_body", sa.LargeBinary, nullable=False),
    sa.Column("request_size", sa.BigInteger, nullable=False),
    sa.Column("request_stored", sa.BigInteger, nullable=False),
    sa.Column("request_truncated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("response_body", sa.LargeBinary, nullable=False),
    sa.Column("response_size", sa.BigInteger, nullable=False),
    sa.Column("response_stored", sa.BigInteger, nullable=False),
    sa.Column("response_truncated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("encoding", sa.String(16), nullable=False, server_default="zstd"),
    sa.Column("redactions", JSONType, nullable=True),
)

CHILD_TABLES = (token_usages, user_prompts, tool_usages, model_thoughts, captures)
