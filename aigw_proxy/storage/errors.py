"""Exceptions raised by the storage layer; all derive from `StorageError`, so the CLI can catch one."""

from __future__ import annotations


class StorageError(Exception):
    """A storage operation failed; the message is meant for a human."""


class SchemaTooNewError(StorageError):
    """The database was migrated by a newer aigw-proxy than this one."""


class UserExistsError(StorageError):
    pass


class UserNotFoundError(StorageError):
    pass


class TokenNotFoundError(StorageError):
    pass


class InvalidUsernameError(StorageError, ValueError):
    pass


class InvalidCursor(StorageError, ValueError):
    """`after_id` names no listed (ended) interception."""
