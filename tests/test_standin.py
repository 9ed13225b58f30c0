"""The local Supabase stand-in behaves like Supabase on every point our schema touches.

Each test would fail on a kinder stand-in (no default grants, a `send` that aborts or
runs with definer rights, a different claim precedence, ...).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from dbtool.database import Database
from dbtool.errors import ConfigError, SupabaseDetected
from dbtool.ops import build, standin
from dbtool.supabase import personas, postgrest, realtime

ALICE = "a11ce000-0000-4000-8000-000000000001"
OTHER = "0be00000-0000-4000-8000-000000000002"


def claim_readers(conn: psycopg.Connection[Any], **settings: str) -> tuple[Any, ...]:
    """auth.uid(), role(), email(), jwt() under the given (transaction-local) settings."""
    with conn.transaction():
        for name, value in settings.items():
            conn.execute("select set_config(%s, %s, true)", (name.replace("__", "."), value))
        row = conn.execute("select auth.uid()::text, auth.role(), auth.email(), auth.jwt()").fetchone()
    assert row is not None
    return tuple(row)


class TestClaims:
    """auth.*() read `request.jwt.claim.<x>` first, then `request.jwt.claims`; '' is unset."""

    def test_claims_json_alone(self, chat_db: Database) -> None:
        with chat_db.connect(admin=True) as conn:
            claims = json.dumps({"sub": ALICE, "role": "authenticated", "email": "a@x.test"})
            uid, role, email, jwt = claim_readers(conn, request__jwt__claims=claims)
        assert (uid, role, email) == (ALICE, "authenticated", "a@x.test")
        assert jwt == {"sub": ALICE, "role": "authenticated", "email": "a@x.test"}

    def test_legacy_per_claim_settings_win(self, chat_db: Database) -> None:
        with chat_db.connect(admin=True) as conn:
            claims = json.dumps({"sub": ALICE, "role": "authenticated", "email": "a@x.test"})
            uid, role, email, jwt = claim_readers(
                conn,
                request__jwt__claims=claims,
                request__jwt__claim__sub=OTHER,
                request__jwt__claim__role="service_role",
                request__jwt__claim__email="o@x.test",
                request__jwt__claim=json.dumps({"sub": OTHER}),
            )
        assert (uid, role, email, jwt) == (OTHER, "service_role", "o@x.test", {"sub": OTHER})

    def test_empty_per_claim_setting_counts_as_unset(self, chat_db: Database) -> None:
        # Realtime sets request.jwt.claim.sub to '' for a token without sub.
        with chat_db.connect(admin=True) as conn:
            claims = json.dumps({"sub": ALICE, "role": "authenticated"})
            uid, role, _, _ = claim_readers(
                conn, request__jwt__claims=claims, request__jwt__claim__sub="", request__jwt__claim__role=""
            )
        assert (uid, role) == (ALICE, "authenticated")

    def test_nothing_set_or_empty_is_null(self, chat_db: Database) -> None:
        with chat_db.connect(admin=True) as conn:
            assert claim_readers(conn) == (None, None, None, None)
            assert claim_readers(conn, request__jwt__claims="", request__jwt__claim__sub="") == (None, None, None, None)

    def test_claims_without_sub(self, chat_db: Database) -> None:
        with chat_db.connect(admin=True) as conn:
            uid, role, _, _ = claim_readers(conn, request__jwt__claims=json.dumps({"role": "authenticated"}))
        assert (uid, role) == (None, "authenticated")

    def test_empty_sub_inside_claims_is_an_error_as_on_supabase(self, chat_db: Database) -> None:
        # Only empty *settings* count as unset; a JWT with "sub": "" makes auth.uid() fail.
        with chat_db.connect(admin=True) as conn, pytest.raises(psycopg.errors.InvalidTextRepresentation):
            claim_readers(conn, request__jwt__claims=json.dumps({"sub": "", "role": "authenticated"}))

    def test_postgrest_request_sets_role_claims_and_request_settings(self, chat_db: Database) -> None:
        user = personas.user("alice", ALICE, "a@x.test")
        with chat_db.connect(admin=True) as conn:
            got = postgrest.run(
                conn,
                user,
                "select auth.uid()::text as uid, current_user as who, current_setting('request.method') as method,"
                " current_setting('request.path') as path, current_setting('request.headers')::jsonb ? 'authorization'"
                " as has_auth, current_setting('statement_timeout') as timeout,"
                " current_setting('transaction_read_only') as ro",
                path="/chat_messages",
            )
        assert got.ok
        assert got.rows == [
            {"uid": ALICE, "who": "authenticated", "method": "GET", "path": "/chat_messages", "has_auth": True,
             "timeout": "8s", "ro": "on"}
        ]

    def test_postgrest_settings_do_not_outlive_the_request(self, chat_db: Database) -> None:
        with chat_db.connect(admin=True) as conn:
            postgrest.run(conn, personas.user("alice", ALICE), "select 1")
            row = conn.execute("select current_user, auth.uid()").fetchone()
        assert row == ("supabase_admin", None)


class TestDefaultPrivileges:
    """Supabase grants whatever postgres creates in public to the API roles."""

    def test_new_table_sequence_and_function_are_granted_to_anon(self, chat_db: Database) -> None:
        with chat_db.connect() as conn:  # as postgres, the migration role
            conn.execute("create table public.dp_probe (id bigint generated always as identity, note text)")
            conn.execute("create function public.dp_fn() returns int language sql as 'select 1'")
            privileges = conn.execute(
                """
                select has_table_privilege('anon', 'public.dp_probe', 'select,insert,update,delete'),
                       has_table_privilege('authenticated', 'public.dp_probe', 'select,insert,update,delete,truncate'),
                       has_sequence_privilege('anon', 'public.dp_probe_id_seq', 'usage'),
                       has_function_privilege('anon', 'public.dp_fn()', 'execute'),
                       exists (select from pg_proc p, aclexplode(p.proacl) a
                               where p.oid = 'public.dp_fn()'::regprocedure and a.grantee = 0
                                 and a.privilege_type = 'EXECUTE')
                """
            ).fetchone()
        assert privileges == (True, True, True, True, True)

    def test_anon_can_really_read_a_new_table(self, chat_db: Database) -> None:
        with chat_db.connect() as conn:
            conn.execute("create table public.dp_open (note text)")
            conn.execute("insert into public.dp_open values ('visible to anon')")
            got = postgrest.run(conn, personas.anon(), "select note from public.dp_open")
        assert got.rows == [{"note": "visible to anon"}]

    def test_migration_role_is_not_superuser_but_bypasses_rls(self, chat_db: Database) -> None:
        with chat_db.connect() as conn:
            row = conn.execute(
                "select rolsuper, rolbypassrls, rolcreaterole, rolcreatedb from pg_roles where rolname = current_user"
            ).fetchone()
        assert row == (False, True, True, True)


class TestRoles:
    def test_role_attributes_match_supabase(self, chat_db: Database) -> None:
        expected = {
            # role: (login, inherit, superuser, bypassrls)
            "anon": (False, True, False, False),
            "authenticated": (False, True, False, False),
            "service_role": (False, True, False, True),
            "authenticator": (True, False, False, False),
            "postgres": (True, True, False, True),
            "supabase_admin": (True, True, True, True),
        }
        with chat_db.connect() as conn:
            rows = conn.execute(
                "select rolname, rolcanlogin, rolinherit, rolsuper, rolbypassrls from pg_roles where rolname = any(%s)",
                (list(expected),),
            ).fetchall()
        assert {r[0]: tuple(r[1:]) for r in rows} == expected

    def test_authenticator_and_postgres_can_become_the_api_roles(self, chat_db: Database) -> None:
        with chat_db.connect() as conn:
            rows = conn.execute(
                """
                select member.rolname, role.rolname
                from pg_auth_members m join pg_roles role on role.oid = m.roleid
                join pg_roles member on member.oid = m.member
                where member.rolname in ('authenticator', 'postgres')
                  and role.rolname in ('anon', 'authenticated', 'service_role')
                """
            ).fetchall()
        assert sorted(rows) == sorted(
            (m, r) for m in ("authenticator", "postgres") for r in ("anon", "authenticated", "service_role")
        )

    def test_service_role_bypasses_rls_and_others_see_nothing(self, chat_db: Database) -> None:
        with chat_db.connect() as conn:
            conn.execute("create table public.rls_probe (note text)")
            conn.execute("alter table public.rls_probe enable row level security")
            conn.execute("insert into public.rls_probe values ('a'), ('b')")
            service = postgrest.run(conn, personas.service(), "select note from public.rls_probe order by note")
            user = postgrest.run(conn, personas.user("alice", ALICE), "select note from public.rls_probe")
            anon = postgrest.run(conn, personas.anon(), "select note from public.rls_probe")
        assert service.rows == [{"note": "a"}, {"note": "b"}]
        assert user.ok and user.rows == []
        assert anon.ok and anon.rows == []


class TestRealtime:
    def test_messages_table_shape(self, chat_db: Database) -> None:
        with chat_db.connect() as conn:
            shape = conn.execute(
                """
                select c.relkind, pg_get_partkeydef(c.oid), c.relrowsecurity,
                       (select count(*) from pg_policy where polrelid = c.oid and polname not like 'chat!_%' escape '!'),
                       (select pg_get_constraintdef(oid) from pg_constraint where conrelid = c.oid and contype = 'p'),
                       pg_get_userbyid(c.relowner)
                from pg_class c where c.oid = 'realtime.messages'::regclass
                """
            ).fetchone()
            columns = conn.execute(
                """
                select attname, format_type(atttypid, atttypmod), attnotnull, pg_get_expr(d.adbin, d.adrelid)
                from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
                where attrelid = 'realtime.messages'::regclass and attnum > 0 and not attisdropped
                """
            ).fetchall()
            grants = conn.execute(
                """
                select r, string_agg(p, ',' order by p) from unnest(array['anon', 'authenticated', 'service_role']) r,
                  unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p
                where has_table_privilege(r, 'realtime.messages', p) group by r order by r
                """
            ).fetchall()
        assert shape == ("p", "RANGE (inserted_at)", True, 0, "PRIMARY KEY (id, inserted_at)", "supabase_realtime_admin")
        cols = {name: (typ, notnull, default) for name, typ, notnull, default in columns}
        assert cols["id"] == ("uuid", True, "gen_random_uuid()")
        assert cols["topic"][:2] == ("text", True)
        assert cols["extension"][:2] == ("text", True)
        assert cols["payload"][0] == "jsonb"
        assert cols["event"][0] == "text"
        assert cols["private"] == ("boolean", False, "false")
        assert cols["inserted_at"] == ("timestamp without time zone", True, "now()")
        assert cols["updated_at"] == ("timestamp without time zone", True, "now()")
        assert grants == [(r, "INSERT,SELECT,UPDATE") for r in ("anon", "authenticated", "service_role")]

    def test_daily_partitions_yesterday_to_today_plus_three(self, chat_db: Database) -> None:
        today = datetime.now(UTC).date()
        wanted = [f"messages_{(today + timedelta(days=d)).strftime('%Y_%m_%d')}" for d in range(-1, 4)]
        with chat_db.connect() as conn:
            names = [r[0] for r in conn.execute(
                "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
                "where i.inhparent = 'realtime.messages'::regclass order by 1"
            ).fetchall()]
        assert set(wanted) <= set(names)

    def test_topic_reads_the_setting_and_treats_empty_as_null(self, chat_db: Database) -> None:
        with chat_db.connect(admin=True) as conn:
            assert conn.execute("select realtime.topic()").fetchone() == (None,)
            with conn.transaction():
                conn.execute("select set_config('realtime.topic', '', true)")
                assert conn.execute("select realtime.topic()").fetchone() == (None,)
                conn.execute("select set_config('realtime.topic', 'chat:x', true)")
                assert conn.execute("select realtime.topic()").fetchone() == ("chat:x",)

    def test_send_runs_as_caller_warns_and_the_transaction_commits(self, chat_db: Database) -> None:
        warnings: list[str] = []
        with chat_db.connect() as conn:
            conn.execute("create table public.send_probe (note text)")
            conn.add_notice_handler(lambda d: warnings.append(f"{d.severity}: {d.message_primary}"))
            with postgrest.request(conn, personas.user("alice", ALICE), method="POST", commit=True):
                conn.execute("insert into public.send_probe values ('kept')")
                conn.execute("select realtime.send('{\"hello\": 1}'::jsonb, 'ping', 'room:1', true)")
            kept = conn.execute("select count(*) from public.send_probe").fetchone()
            sent = conn.execute("select count(*) from realtime.messages where topic = 'room:1'").fetchone()
        assert warnings == [
            'WARNING: WarnSendingBroadcastMessage: new row violates row-level security policy for table "messages"'
        ]
        assert kept == (1,)
        assert sent == (0,)

    def test_send_inserts_a_private_broadcast_when_allowed(self, chat_db: Database) -> None:
        with chat_db.connect() as conn:
            with postgrest.request(conn, personas.service(), method="POST", commit=True):
                conn.execute("select realtime.send('{\"hello\": 1}'::jsonb, 'ping', 'room:2')")
                topic = conn.execute("select current_setting('realtime.topic', true)").fetchone()
            row = conn.execute(
                "select extension, event, private, payload - 'id', payload ? 'id' from realtime.messages "
                "where topic = 'room:2'"
            ).fetchone()
        assert topic == ("room:2",)
        assert row == ("broadcast", "ping", True, {"hello": 1}, True)

    def test_missing_partition_is_a_warning_not_an_abort(self, chat_db: Database) -> None:
        today = datetime.now(UTC).strftime("%Y_%m_%d")
        warnings: list[str] = []
        with chat_db.connect(admin=True) as conn:
            conn.execute(f"drop table realtime.messages_{today}")
            conn.execute("create table public.partition_probe (note text)")
            conn.add_notice_handler(lambda d: warnings.append(d.message_primary or ""))
            with postgrest.request(conn, personas.service(), method="POST", commit=True):
                conn.execute("insert into public.partition_probe values ('kept')")
                conn.execute("select realtime.send('{}'::jsonb, 'ping', 'room:3')")
            kept = conn.execute("select count(*) from public.partition_probe").fetchone()
        assert kept == (1,)
        assert len(warnings) == 1 and warnings[0].startswith("WarnSendingBroadcastMessage: no partition of relation")

    def test_broadcast_changes_payload_shape(self, chat_db: Database) -> None:
        with chat_db.connect() as conn:
            conn.execute("create table public.bc_probe (id int primary key, body text)")
            conn.execute(
                """
                create function public.bc_probe_broadcast() returns trigger language plpgsql as $$
                begin
                  perform realtime.broadcast_changes('probe:' || new.id, tg_op, tg_op, tg_table_name,
                                                     tg_table_schema, new, old);
                  return null;
                end $$
                """
            )
            conn.execute(
                "create trigger bc after insert on public.bc_probe for each row execute function public.bc_probe_broadcast()"
            )
            conn.execute("insert into public.bc_probe values (7, 'hi')")
            row = conn.execute(
                "select topic, event, extension, private, payload from realtime.messages where topic = 'probe:7'"
            ).fetchone()
        assert row is not None
        topic, event, extension, private, payload = row
        assert (topic, event, extension, private) == ("probe:7", "INSERT", "broadcast", True)
        assert set(payload) == {"record", "old_record", "operation", "table", "schema", "id"}
        assert payload["record"] == {"id": 7, "body": "hi"}
        assert (payload["old_record"], payload["operation"], payload["table"], payload["schema"]) == (
            None, "INSERT", "bc_probe", "public")

    def test_broadcast_changes_refuses_statement_level(self, chat_db: Database) -> None:
        with chat_db.connect() as conn, pytest.raises(psycopg.errors.RaiseException, match="Failed to process the row"):
            conn.execute(
                "select realtime.broadcast_changes('t', 'e', 'INSERT', 'x', 'public', null::record, null::record, 'STATEMENT')"
            )

    def test_private_channels_are_closed_without_policies(self, chat_db: Database) -> None:
        user = personas.user("alice", ALICE)
        with chat_db.connect(admin=True) as conn:
            assert realtime.read_check(conn, user, "room:1").allowed == {"broadcast": False, "presence": False}
            assert realtime.write_check(conn, user, "room:1").allowed == {"broadcast": False, "presence": False}
            assert realtime.read_check(conn, personas.anon(), "room:1").can_join is False
            # service_role bypasses RLS, as on Supabase.
            assert realtime.read_check(conn, personas.service(), "room:1").allowed == {"broadcast": True, "presence": True}

    def test_publication_exists_owned_by_postgres(self, chat_db: Database) -> None:
        with chat_db.connect() as conn:
            row = conn.execute(
                "select pg_get_userbyid(pubowner), puballtables from pg_publication where pubname = 'supabase_realtime'"
            ).fetchone()
        assert row == ("postgres", False)


class TestInstall:
    def test_install_is_idempotent(self, chat_db: Database) -> None:
        with chat_db.connect(admin=True) as conn:
            again = standin.install(conn)
            version = standin.installed_fingerprint(conn)
        assert again.already_current
        assert version == standin.fingerprint()

    def test_install_updates_a_changed_object(self, chat_db: Database) -> None:
        with chat_db.connect(admin=True) as conn:
            conn.execute("create or replace function realtime.topic() returns text language sql as 'select null::text'")
            conn.execute("update _dbtool.state set value = 'old' where key = 'standin_sha256'")
            result = standin.install(conn)
            with conn.transaction():
                conn.execute("select set_config('realtime.topic', 'chat:x', true)")
                topic = conn.execute("select realtime.topic()").fetchone()
        assert not result.already_current
        assert topic == ("chat:x",)

    def test_refuses_a_supabase_database(self, chat_db: Database) -> None:
        fresh = "standin_supabase_like"
        build.create_database(chat_db.admin_url, fresh)
        url = chat_db.admin_url.rsplit("/", 1)[0] + "/" + fresh
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("create schema auth authorization supabase_auth_admin")
                conn.execute("create table auth.schema_migrations (version text)")
                with pytest.raises(SupabaseDetected, match=r"schema auth \(owner supabase_auth_admin\).*looks like a Supabase"):
                    standin.install(conn)
                assert conn.execute("select to_regclass('_dbtool.state')").fetchone() == (None,)
        finally:
            build.drop_database(chat_db.admin_url, fresh)

    def test_refuses_a_non_superuser(self, chat_db: Database) -> None:
        with chat_db.connect() as conn, pytest.raises(ConfigError, match="needs a superuser"):
            standin.install(conn)
