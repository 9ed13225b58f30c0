"""Alembic environment for chat-db: one transaction per revision, an advisory lock so
concurrent runners serialise, and lock/statement timeouts so blocked DDL fails fast.

Works on its own (`alembic upgrade head` with DATABASE_URL) and under `dbtool migrate`,
which passes its settings through `config.attributes`.
"""

from __future__ import annotations

import os
import re
import time
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import MetaData, create_engine, pool, text

from dbtool.urls import sqlalchemy_url

config = context.config
if config.config_file_name and not config.attributes.get("dbtool"):
    fileConfig(config.config_file_name)

# Schemas whose contents we own; everything else (auth, realtime, storage, extensions,
# Supabase internals) is skipped by autogenerate/`alembic check`.
OWNED_SCHEMAS = {"public", "chat_private"}
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


def _setting(name: str, env: str, default: Any) -> Any:
    if name in config.attributes:
        return config.attributes[name]
    return os.environ.get(env, default)


def _duration(name: str, env: str, default: str) -> str:
    value = str(_setting(name, env, default)).strip()
    if not re.fullmatch(r"\d+\s*(us|ms|s|min|h|d)?", value):
        raise SystemExit(f"{env} must be a PostgreSQL duration such as 5s, 500ms or 2min, got {value!r}")
    return value


LOCK_TIMEOUT = _duration("lock_timeout", "DBTOOL_LOCK_TIMEOUT", "5s")
STATEMENT_TIMEOUT = _duration("statement_timeout", "DBTOOL_STATEMENT_TIMEOUT", "5min")
LOCK_WAIT_S = float(_setting("lock_wait", "DBTOOL_LOCK_WAIT", "600"))


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    if type_ == "schema":
        return name is None or name in OWNED_SCHEMAS
    return True


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    schema = getattr(obj, "schema", None)
    return schema is None or schema in OWNED_SCHEMAS


def _database_url() -> str:
    url = config.attributes.get("url") or os.environ.get("DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit(
            "DATABASE_URL is not set: export DATABASE_URL=postgresql://user:pass@host:port/db "
            "(or use `alembic upgrade head --sql` to print the SQL without a database)"
        )
    return sqlalchemy_url(url)


def _on_version_apply(**kw: Any) -> None:
    callback = config.attributes.get("on_version_apply")
    if callback is not None:
        callback(**kw)


def _common() -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "include_name": include_name,
        "include_object": include_object,
        "include_schemas": True,
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
    engine = create_engine(_database_url(), poolclass=pool.NullPool)
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
