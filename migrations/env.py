"""Alembic environment for chat-db: one transaction per revision, an advisory lock so
concurrent runners serialise, and lock/statement timeouts so blocked DDL fails fast.

Works on its own (`alembic upgrade head` with DATABASE_URL) and under `dbtool migrate`,
which passes its settings through `config.attributes`.

Revisions are hand-written SQL, frozen in each revision file (docs/adding-a-migration.md).
There is no SQLAlchemy model of the schema, so autogenerate (`alembic revision
--autogenerate`, `alembic check`) is refused: compared with an empty model, every chat
table would look removed.
"""

from __future__ import annotations

import os
import time
from logging.config import fileConfig
from typing import Any

import psycopg
from alembic import context
from alembic.util import CommandError
from sqlalchemy import MetaData, create_engine, pool, text

from dbtool.config import MigrationConfig, migration_config
from dbtool.errors import ConfigError
from dbtool.urls import resolve

config = context.config
if config.config_file_name and not config.attributes.get("dbtool"):
    fileConfig(config.config_file_name)

VERSION_SCHEMA = "chat_migrations"
# Session advisory lock key serialising migration runners ("chat-db" + 1, as a bigint).
LOCK_KEY = int.from_bytes(b"chat-db\x01", "big")

# Stable constraint names, should a revision ever use SQLAlchemy constructs.
target_metadata = MetaData(
    naming_convention={
        "ix": "%(table_name)s_%(column_0_N_name)s_idx",
        "uq": "%(table_name)s_%(column_0_N_name)s_key",
        "ck": "%(table_name)s_%(constraint_name)s_check",
        "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
        "pk": "%(table_name)s_pkey",
    }
)


def _timeouts() -> MigrationConfig:
    """dbtool resolved and validated them (flag > environment > default); on its own,
    Alembic takes the DBTOOL_* variables through the same validation."""
    given: MigrationConfig | None = config.attributes.get("migration_config")
    if given is not None:
        return given
    try:
        return migration_config()
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


TIMEOUTS = _timeouts()
LOCK_TIMEOUT = TIMEOUTS.lock_timeout
STATEMENT_TIMEOUT = TIMEOUTS.statement_timeout
LOCK_WAIT_S = TIMEOUTS.lock_wait

AUTOGENERATE_REFUSED = (
    "chat-db has no autogenerate support: its revisions are hand-written SQL, frozen in each revision file, and "
    "there is no SQLAlchemy model to compare the database with (compared with an empty one, every chat table would "
    "look removed). To add a migration, run `alembic revision -m \"what it does\" --rev-id NNNN` with the next "
    "number and write its UPGRADE and DOWNGRADE SQL: see docs/adding-a-migration.md"
)


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    return False  # nothing to compare with: reflect nothing


def refuse_autogenerate(migration_context: Any, revision: Any, directives: list[Any]) -> None:
    """Alembic runs this environment for `revision` only with --autogenerate (alembic.ini
    leaves revision_environment off), and for `check`: both are refused before anything is
    rendered or reported."""
    raise CommandError(AUTOGENERATE_REFUSED)


def _autogenerating() -> bool:
    """`alembic revision --autogenerate` or `alembic check` on the command line: refused
    before connecting (called through the API, the hook above refuses them)."""
    options = config.cmd_opts
    command = getattr(options, "cmd", None)
    return bool(getattr(options, "autogenerate", False)) or (command is not None and command[0].__name__ == "check")


if _autogenerating():
    raise CommandError(AUTOGENERATE_REFUSED)


def _conninfo() -> str:
    url = config.attributes.get("url")
    source = "the database URL"
    if not url and os.environ.get("DATABASE_URL"):
        url, source = os.environ["DATABASE_URL"], "DATABASE_URL"
    if not url and config.get_main_option("sqlalchemy.url"):
        url, source = config.get_main_option("sqlalchemy.url"), "sqlalchemy.url"
    if not url:
        raise CommandError(
            "DATABASE_URL is not set: export DATABASE_URL=postgresql://user:pass@host:port/db "
            "(or use `alembic upgrade head --sql` to print the SQL without a database)"
        )
    try:
        return resolve(url, source=source).conninfo
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def _on_version_apply(**kw: Any) -> None:
    callback = config.attributes.get("on_version_apply")
    if callback is not None:
        callback(**kw)


def _common() -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "include_name": include_name,
        "process_revision_directives": refuse_autogenerate,
        "version_table_schema": VERSION_SCHEMA,
        "transaction_per_migration": True,
        "on_version_apply": _on_version_apply,
    }


def run_migrations_offline() -> None:
    """`--sql`: print the SQL a reviewer reads (and psql could run), no database needed.

    For `dbtool export supabase-cli` (attribute `export`) the output has no BEGIN/COMMIT and
    takes the lock for the transaction only: the Supabase CLI runs each file in a transaction
    of its own, and explicit transaction control inside a file breaks its bookkeeping.
    """
    export = bool(config.attributes.get("export"))
    options = {"transactional_ddl": False} if export else {}
    context.configure(dialect_name="postgresql", literal_binds=True, dialect_opts={"paramstyle": "named"},
                      **options, **_common())
    context.execute(f"set lock_timeout = '{LOCK_TIMEOUT}'")
    context.execute(f"set statement_timeout = '{STATEMENT_TIMEOUT}'")
    context.execute(f"select {'pg_advisory_xact_lock' if export else 'pg_advisory_lock'}({LOCK_KEY})")
    context.execute(f"create schema if not exists {VERSION_SCHEMA}")
    context.execute(f"revoke all on schema {VERSION_SCHEMA} from public")
    with context.begin_transaction():
        context.run_migrations()


def _take_lock(connection: Any) -> None:
    """Wait (up to LOCK_WAIT_S) for other runners; report who holds the lock."""
    deadline = time.monotonic() + LOCK_WAIT_S
    reported = False
    while not connection.execute(text("select pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
        if not reported:
            holder = connection.execute(
                text(
                    "select pid from pg_locks where locktype = 'advisory' and granted "
                    "and classid = (:k >> 32)::int::oid and objid = (:k & 4294967295)::bigint::oid"
                ),
                {"k": LOCK_KEY},
            ).scalar()
            notify = config.attributes.get("on_wait")
            if notify is not None:
                notify(holder)
            reported = True
        if time.monotonic() > deadline:
            raise SystemExit(f"another migration runner still holds the migration lock after {LOCK_WAIT_S:.0f}s")
        connection.rollback()
        time.sleep(0.1)
    connection.commit()


def run_migrations_online() -> None:
    # libpq reads the connection string (URL or key=value, service files, PG* variables),
    # exactly as everywhere else in dbtool; SQLAlchemy's own URL parser never sees it.
    conninfo = _conninfo()
    engine = create_engine("postgresql+psycopg://", poolclass=pool.NullPool, creator=lambda: psycopg.connect(conninfo))
    with engine.connect() as connection:
        _take_lock(connection)
        connection.execute(text(f"set lock_timeout = '{LOCK_TIMEOUT}'"))
        connection.execute(text(f"set statement_timeout = '{STATEMENT_TIMEOUT}'"))
        connection.execute(text(f"create schema if not exists {VERSION_SCHEMA}"))
        connection.execute(text(f"revoke all on schema {VERSION_SCHEMA} from public"))
        connection.commit()
        context.configure(connection=connection, **_common())
        try:
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.rollback()
            connection.execute(text("select pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
