"""The migration chain: one head, working downgrades, no drift after a round trip, offline
SQL, `alembic upgrade head` on its own, and no touching of Supabase's objects."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg

from dbtool import paths
from dbtool.database import Database
from dbtool.ops import migrate
from dbtool.urls import with_database

ROOT = Path(__file__).resolve().parent.parent


def schema_dump(db: Database) -> str:
    pg_dump = str(Path(find_pg_dump()))
    out = subprocess.run([pg_dump, "--schema-only", "--dbname", db.admin_url],
                         capture_output=True, text=True, check=True).stdout
    # pg_dump prints a random restrict key in PostgreSQL >= 17.6; it is not schema.
    return re.sub(r"^\\(un)?restrict \S+$", "", out, flags=re.M)


def find_pg_dump() -> str:
    from dbtool.server.pgbin import find_binaries

    return find_binaries(None).tool("pg_dump")


def settings(db: Database) -> migrate.MigrateSettings:
    return migrate.MigrateSettings(db.url)


def test_single_head() -> None:
    assert len(migrate.heads()) == 1


def test_revisions_form_one_line() -> None:
    history = migrate.history()
    assert history[0][1] is None
    assert [down for _, down, _ in history[1:]] == [rev for rev, _, _ in history[:-1]]


def test_round_trip_leaves_an_identical_schema(bare: Database) -> None:
    migrate.upgrade(settings(bare), "head")
    first = schema_dump(bare)
    migrate.downgrade(settings(bare), "base")
    migrate.upgrade(settings(bare), "head")
    assert schema_dump(bare) == first


def test_each_downgrade_restores_the_previous_schema(bare: Database) -> None:
    revisions = [rev for rev, _, _ in migrate.history()]
    migrate.upgrade(settings(bare), revisions[0])  # base = after the version table exists
    migrate.downgrade(settings(bare), "base")
    dumps = {"base": schema_dump(bare)}
    for rev in revisions:
        migrate.upgrade(settings(bare), rev)
        dumps[rev] = schema_dump(bare)
    for previous, rev in reversed(list(zip(["base", *revisions], revisions, strict=False))):
        result = migrate.downgrade(settings(bare), previous)
        assert result.after == (None if previous == "base" else previous)
        assert schema_dump(bare) == dumps[previous], f"downgrade of {rev} did not restore {previous}"


def test_downgrade_to_base_removes_only_what_we_added(bare: Database) -> None:
    migrate.upgrade(settings(bare), "head")
    migrate.downgrade(settings(bare), "base")
    with bare.connect() as conn:
        leftovers = conn.execute(
            """
            select 'relation ' || oid::regclass from pg_class
             where relnamespace in ('public'::regnamespace) and relname like 'chat%'
            union all select 'schema chat_private' from pg_namespace where nspname = 'chat_private'
            union all select 'policy ' || polname from pg_policy where polname like 'chat%'
            union all select 'function ' || oid::regprocedure from pg_proc where proname like '%chat%'
            union all select 'publication member' from pg_publication_tables where tablename = 'chat_messages'
            """
        ).fetchall()
        kept = conn.execute(
            "select to_regclass('realtime.messages') is not null, to_regclass('auth.users') is not null, "
            "exists (select from pg_publication where pubname = 'supabase_realtime')"
        ).fetchone()
    assert leftovers == []
    assert kept == (True, True, True)


def test_upgrade_without_the_publication(bare: Database) -> None:
    with bare.connect(admin=True) as conn:
        conn.execute("drop publication supabase_realtime")
    migrate.upgrade(settings(bare), "head")
    migrate.downgrade(settings(bare), "base")


def test_offline_sql_renders_every_revision_verbatim() -> None:
    up = migrate.offline_sql("head")
    down = migrate.offline_sql("head:base", down=True)
    for path in sorted((paths.migrations_dir() / "versions").glob("[0-9]*.py")):
        namespace: dict[str, object] = {}
        exec(compile(path.read_text(), str(path), "exec"), namespace)
        assert str(namespace["UPGRADE"]).strip() in up
        assert str(namespace["DOWNGRADE"]).strip() in down
    assert "set lock_timeout = '5s'" in up
    assert "pg_advisory_lock" in up


def test_alembic_upgrade_head_on_its_own(bare: Database) -> None:
    env = {**os.environ, "DATABASE_URL": bare.url}
    alembic = str(Path(sys.executable).parent / "alembic")
    done = subprocess.run([alembic, "-c", str(ROOT / "alembic.ini"), "upgrade", "head"], cwd="/", env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Running upgrade 0002 -> 0003" in done.stderr
    assert migrate.current(bare.url) == migrate.heads()[0]


def test_alembic_offline_needs_no_database() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    alembic = str(Path(sys.executable).parent / "alembic")
    done = subprocess.run([alembic, "-c", str(ROOT / "alembic.ini"), "upgrade", "head", "--sql"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "create table public.chat_messages" in done.stdout


def test_database_url_is_taken_as_libpq_writes_it(bare: Database) -> None:
    url = bare.url + "?sslmode=disable&application_name=ci"
    for scheme in ("postgresql://", "postgres://"):
        db = scheme + url.split("://", 1)[1]
        migrate.upgrade(migrate.MigrateSettings(db), "head")
        assert migrate.current(db) == migrate.heads()[0]


def test_postgres_changes_is_opt_in(bare: Database) -> None:
    """0003 published chat_messages for Postgres Changes; 0004 takes it out (DESIGN §3)."""
    query = ("select count(*) from pg_publication_tables "
             "where pubname = 'supabase_realtime' and tablename = 'chat_messages'")
    migrate.upgrade(settings(bare), "0003")
    with bare.connect() as conn:
        assert conn.execute(query).fetchone() == (1,)
    migrate.upgrade(settings(bare), "head")
    with bare.connect() as conn:
        assert conn.execute(query).fetchone() == (0,)
        # A project opts in by hand; later revisions leave its choice alone.
        conn.execute("alter publication supabase_realtime add table public.chat_messages")
        assert conn.execute(query).fetchone() == (1,)


def test_migration_role_owns_nothing_in_supabase_schemas(chat_db: Database) -> None:
    with chat_db.connect() as conn:
        owned = conn.execute(
            """
            select c.oid::regclass::text from pg_class c
            where c.relnamespace in ('auth'::regnamespace, 'realtime'::regnamespace)
              and pg_get_userbyid(c.relowner) = 'postgres'
            union all
            select p.oid::regprocedure::text from pg_proc p
            where p.pronamespace in ('auth'::regnamespace, 'realtime'::regnamespace)
              and pg_get_userbyid(p.proowner) = 'postgres'
            """
        ).fetchall()
    assert owned == []


def test_version_table_is_not_exposed(chat_db: Database) -> None:
    with chat_db.connect() as conn:
        row = conn.execute(
            "select has_schema_privilege('anon', 'chat_migrations', 'usage'), "
            "has_schema_privilege('authenticated', 'chat_migrations', 'usage'), "
            "to_regclass('public.alembic_version')"
        ).fetchone()
    assert row == (False, False, None)


def test_current_and_with_database_helpers(chat_db: Database) -> None:
    assert migrate.current(chat_db.url) == migrate.heads()[0]
    other = with_database(chat_db.url, "postgres")
    with psycopg.connect(other) as conn:
        assert conn.execute("select current_database()").fetchone() == ("postgres",)
