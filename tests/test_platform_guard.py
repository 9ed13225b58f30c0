"""The hosted permission model (DESIGN §2): the migration role may do to Supabase's objects
exactly what a current hosted project lets it do, and fails with the platform's message
otherwise. Each refused statement here is one that a migration could contain by mistake;
on a kinder stand-in (postgres a member of supabase_realtime_admin) every one would pass.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from dbtool.database import Database
from dbtool.ops import migrate


def refused(conn: psycopg.Connection[Any], statement: str) -> tuple[str | None, str]:
    """Run `statement` as the connection's role in a rolled-back transaction; its error."""
    with pytest.raises(psycopg.Error) as caught, conn.transaction():
        conn.execute(statement)
    return caught.value.sqlstate, str(caught.value.diag.message_primary)


def allowed(conn: psycopg.Connection[Any], *statements: str) -> None:
    """Run `statements` as the connection's role; roll them back."""
    try:
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
            raise psycopg.Rollback
    except psycopg.Error as e:  # pragma: no cover - the assertion message is the point
        pytest.fail(f"refused: {e}")


NOT_OWNER = ("42501", "must be owner of table messages")
NO_CREATE = ("42501", "permission denied for schema realtime")

REFUSALS = {
    "alter table": ("alter table realtime.messages disable row level security", NOT_OWNER),
    "alter table add column": ("alter table realtime.messages add column x int", NOT_OWNER),
    "create index": ("create index on realtime.messages (topic)", NOT_OWNER),
    "create table in realtime": ("create table realtime.chat_extra (id int)", NO_CREATE),
    "create view in realtime": ("create view realtime.chat_view as select 1", NO_CREATE),
    "replace a realtime function": (
        "create or replace function realtime.topic() returns text language sql stable as $$ select 'x' $$",
        NO_CREATE),
    "comment on table": ("comment on table realtime.messages is 'x'", NOT_OWNER),
    "alter a realtime function": ("alter function realtime.topic() security definer",
                                  ("42501", "must be owner of function realtime.topic")),
    "alter auth.users": ("alter table auth.users add column chat boolean", ("42501", "must be owner of table users")),
    "replace auth.uid()": ("create or replace function auth.uid() returns uuid language sql as $$ select null::uuid $$",
                           ("42501", "permission denied for schema auth")),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_ddl_on_platform_objects_fails_as_on_supabase(chat_db: Database, case: str) -> None:
    statement, expected = REFUSALS[case]
    with chat_db.connect() as conn:
        assert refused(conn, statement) == expected


def test_create_trigger_on_realtime_messages_fails(chat_db: Database) -> None:
    # PostgreSQL checks the TRIGGER privilege, not ownership: postgres holds ALL on the
    # parent table, but the trigger is cloned onto each daily partition, which the Realtime
    # server creates and owns and grants nobody.
    with chat_db.connect() as conn, conn.transaction(force_rollback=True):
        conn.execute("create function public.guard_probe() returns trigger language plpgsql as $$ begin return new; end $$")
        state, message = refused(conn, "create trigger guard_probe before insert on realtime.messages "
                                       "for each row execute function public.guard_probe()")
        assert state == "42501"
        assert message.startswith("permission denied for table messages_2")


def test_comment_on_policy_fails_as_before_supautils_3_3(chat_db: Database) -> None:
    with chat_db.connect() as conn, conn.transaction(force_rollback=True):
        conn.execute("create policy guard_probe on realtime.messages for select to authenticated using (false)")
        assert refused(conn, "comment on policy guard_probe on realtime.messages is 'x'") == (
            "42501", "must be owner of relation messages")


def test_granting_the_reserved_role_fails(chat_db: Database) -> None:
    # Supabase (supautils) says "role memberships are reserved, only superusers can grant
    # them"; PostgreSQL without supautils refuses with its own text, same SQLSTATE.
    with chat_db.connect() as conn:
        for role in ("supabase_realtime_admin", "supabase_auth_admin"):
            state, message = refused(conn, f"grant {role} to postgres")
            assert (state, message) == ("42501", f'permission denied to grant role "{role}"')


def test_postgres_is_not_a_member_of_the_platform_admin_roles(chat_db: Database) -> None:
    with chat_db.connect() as conn:
        row = conn.execute(
            "select pg_has_role('postgres', 'supabase_realtime_admin', 'member'), "
            "pg_has_role('postgres', 'supabase_auth_admin', 'member'), "
            "has_schema_privilege('postgres', 'realtime', 'create'), has_schema_privilege('postgres', 'realtime', 'usage'), "
            "has_table_privilege('postgres', 'realtime.messages', 'select,insert,update,delete')"
        ).fetchone()
    assert row == (False, False, False, True, True)


def test_policy_ddl_on_listed_tables_is_allowed(chat_db: Database) -> None:
    with chat_db.connect() as conn:
        allowed(conn,
                "create policy guard_probe on realtime.messages for select to authenticated using (false)",
                "alter policy guard_probe on realtime.messages using (topic = 'x')",
                "alter policy guard_probe on realtime.messages rename to guard_probe2",
                "drop policy guard_probe2 on realtime.messages",
                "create policy guard_probe on auth.users for select to authenticated using (false)",
                "drop policy guard_probe on auth.users")


def test_policy_ddl_on_unlisted_platform_tables_is_refused(chat_db: Database) -> None:
    with chat_db.connect() as conn:
        partition = conn.execute(
            "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
            "where i.inhparent = 'realtime.messages'::regclass limit 1"
        ).fetchone()
        assert partition is not None
        assert refused(conn, f"create policy guard_probe on realtime.{partition[0]} using (true)") == (
            "42501", f"must be owner of table {partition[0]}")


def test_dropping_a_policy_on_an_unlisted_platform_table_is_refused(chat_db: Database) -> None:
    with chat_db.connect(admin=True) as admin:
        admin.execute("create table realtime.guard_unlisted (id int)")
        admin.execute("alter table realtime.guard_unlisted owner to supabase_realtime_admin")
        admin.execute("create policy guard_probe on realtime.guard_unlisted using (true)")
    with chat_db.connect() as conn:
        assert refused(conn, "drop policy guard_probe on realtime.guard_unlisted") == (
            "42501", "must be owner of table guard_unlisted")


def test_the_membership_lasts_one_command_only(chat_db: Database) -> None:
    with chat_db.connect() as conn, conn.transaction(force_rollback=True):
        conn.execute("create policy guard_probe on realtime.messages for select to authenticated using (false)")
        assert conn.execute("select pg_has_role('supabase_realtime_admin', 'member')").fetchone() == (False,)
        assert refused(conn, "alter table realtime.messages enable row level security") == NOT_OWNER


def test_policy_ddl_locks_sign_ins_until_commit(chat_db: Database) -> None:
    """supautils holds ACCESS EXCLUSIVE on auth.users and realtime.messages during policy DDL."""
    with chat_db.connect() as ddl, chat_db.connect(admin=True) as reader:
        with ddl.transaction(force_rollback=True):
            ddl.execute("create policy guard_probe on public.chat_threads for select to service_role using (true)")
            reader.execute("set lock_timeout = '50ms'")
            for table in ("auth.users", "realtime.messages"):
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    reader.execute(f"select count(*) from {table}")
        assert reader.execute("select count(*) >= 0 from auth.users").fetchone() == (True,)


def test_migrations_pass_under_the_hosted_model(bare: Database) -> None:
    settings = migrate.MigrateSettings(bare.url)
    migrate.upgrade(settings, "head")
    migrate.downgrade(settings, "base")
    migrate.upgrade(settings, "head")
    assert migrate.current(bare.url) == migrate.heads()[0]

