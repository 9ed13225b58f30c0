"""One error root for the library; only the CLI turns these into `Error: ...` lines."""

from __future__ import annotations


class DbtoolError(Exception):
    """Base of every error dbtool reports to a user (exit status 1).

    The message says what failed, why, and what to do about it.
    """


class ConfigError(DbtoolError):
    """A setting (flag, environment variable, file) is missing or malformed."""


class BinariesNotFound(DbtoolError):
    """No usable PostgreSQL server binaries were found."""


class PortInUse(DbtoolError):
    """The TCP port chosen for the local server is already taken."""


class DataDirMismatch(DbtoolError):
    """The data directory was created by another PostgreSQL major version."""


class ServerStartFailed(DbtoolError):
    """The local server did not come up; the message carries the log tail."""


class NotRunning(DbtoolError):
    """An operation needs the local server, and it is not running."""


class SupabaseDetected(DbtoolError):
    """The target already holds Supabase's own objects; the stand-in must not touch it."""


class MigrationError(DbtoolError):
    """A migration failed or could not start (lock, timeout, bad revision)."""


class UnsafeTarget(DbtoolError):
    """A destructive command was pointed at a non-local database without --force."""


class SeedError(DbtoolError):
    """Seeding could not run (schema missing, bad profile arguments)."""


class VerifyError(DbtoolError):
    """The policy check could not run to the end, or its report could not be written."""


class AuditError(DbtoolError):
    """The audit could not run or a snapshot file is unreadable."""


class SchemaMissing(DbtoolError):
    """The database lacks the objects a command works on (the stand-in or the chat schema)."""


class StatsError(DbtoolError):
    """Clearing planner statistics could not run or did not finish."""
