"""`dbtool reset`: fast when nothing changed, a rebuild otherwise, safe against the wrong target."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner

from dbtool.cli import cli
from dbtool.database import Database
from dbtool.errors import SupabaseDetected, UnsafeTarget
from dbtool.ops import build, reset, seed, standin
from dbtool.server.embedded import Server


@pytest.fixture
def target(chat_db_server: Server, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A database on the test server, addressed like the local server: owner + superuser URLs."""
    name = f"chat_db_reset_{abs(hash(request.node.nodeid)) % 10**8}"
    db = chat_db_server.database(name)
    try:
        yield Database(db.url, db.admin_url, "test", True)
    finally:
        build.drop_database(db.admin_url, name)


def database_oid(tgt: Database) -> int:
    with psycopg.connect(tgt.admin_url.rsplit("/", 1)[0] + "/postgres") as conn:
        row = conn.execute("select oid from pg_database where datname = %s", (tgt.url.rsplit("/", 1)[1],)).fetchone()
    assert row is not None
    return int(row[0])


def test_first_reset_builds_then_repeats_are_fast_and_keep_the_database(target: Database) -> None:
    first = reset.reset(target)
    assert (first.mode, first.reason) == ("full", "the database does not exist yet")
    oid = database_oid(target)
    with psycopg.connect(target.admin_url, autocommit=True) as conn:
        built_limits = limits_of(conn)
        conn.execute("insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, "
                     "sender_supabase_id, body) values (%s, %s, %s, %s, 'scratch')",
                     (seed.DEMO_THREAD, seed.BOB.mongo_id, seed.ALICE.mongo_id, seed.BOB.uid))
        conn.execute("update public.chat_rate_limits set burst = burst + 1, enabled = false")
        conn.execute("insert into chat_private.chat_rate_limit_buckets values ('messages_per_sender', 'k', now(), 1, '1s')")
    second = reset.reset(target)
    assert (second.mode, second.reason, second.wipe_method) == ("fast", "stand-in and migrations unchanged", "delete")
    assert database_oid(target) == oid
    assert second.wiped == ["chat_private.chat_rate_limit_buckets", "chat_private.chat_thread_activity",
                            "public.chat_rate_limits", "realtime.messages",
                            "public.chat_receipts", "public.chat_messages", "public.chat_threads", "public.chat_links",
                            "public.chat_identities", "auth.users"]
    with psycopg.connect(target.admin_url) as conn:
        bodies = [r[0] for r in conn.execute("select body from public.chat_messages order by id")]
        ids = [r[0] for r in conn.execute("select id from public.chat_messages order by id")]
        people = conn.execute("select count(*) from auth.users").fetchone()
        after_limits = limits_of(conn)
        buckets = conn.execute("select count(*) from chat_private.chat_rate_limit_buckets").fetchone()
    assert bodies == [body for _, _, body in seed.CONVERSATION] + [body for _, body in seed.GUEST_CONVERSATION]
    assert ids == list(range(1, len(bodies) + 1))  # identities restart
    assert people == (4,)
    assert after_limits == built_limits and len(built_limits) >= 2  # the migrations' settings, not the edits
    assert buckets == (0,)


def limits_of(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    return [tuple(r) for r in conn.execute("select * from public.chat_rate_limits order by limit_name")]


def test_changed_migrations_rebuild(target: Database) -> None:
    reset.reset(target)
    with psycopg.connect(target.admin_url, autocommit=True) as conn:
        conn.execute("update _dbtool.state set value = 'older files' where key = %s", (reset.FINGERPRINT_KEY,))
    again = reset.reset(target)
    assert (again.mode, again.reason) == ("full", "the migrations changed since the last reset")
    assert reset.reset(target).mode == "fast"


def test_changed_standin_rebuilds(target: Database) -> None:
    reset.reset(target)
    with psycopg.connect(target.admin_url, autocommit=True) as conn:
        conn.execute("update _dbtool.state set value = 'older' where key = %s", (standin.STATE_KEY,))
    assert reset.reset(target).reason == "the Supabase stand-in changed"


def test_a_database_moved_off_head_rebuilds(target: Database) -> None:
    from dbtool.ops import migrate

    reset.reset(target)
    migrate.downgrade(migrate.MigrateSettings(target.url), "0002")
    again = reset.reset(target)
    assert again.mode == "full" and again.reason.startswith("the database is at revision 0002")
    assert migrate.current(target.url) == migrate.heads()[0]


def test_full_forces_a_rebuild(target: Database) -> None:
    reset.reset(target)
    oid = database_oid(target)
    assert reset.reset(target, full=True).mode == "full"
    assert database_oid(target) != oid


def test_large_data_is_wiped_too(target: Database) -> None:
    reset.reset(target)
    with psycopg.connect(target.admin_url, autocommit=True) as conn:
        seed.load(conn, users=300, threads=400, messages=200_000, seed=3)
    again = reset.reset(target)
    assert (again.mode, again.wipe_method) == ("fast", "truncate")
    with psycopg.connect(target.admin_url) as conn:
        assert conn.execute("select count(*) from public.chat_messages").fetchone() == (
            len(seed.CONVERSATION) + len(seed.GUEST_CONVERSATION),)


def test_refuses_a_remote_database_without_force() -> None:
    remote = Database("postgresql://postgres:x@db.example.com:5432/postgres",
                    "postgresql://postgres:x@db.example.com:5432/postgres", "--database-url", False)
    with pytest.raises(UnsafeTarget, match=r"refusing to reset postgresql://postgres:\*\*\*@db.example.com"):
        reset.reset(remote)


def test_never_drops_a_supabase_database_even_with_force(chat_db: Database) -> None:
    name = "chat_db_supabase_like"
    build.create_database(chat_db.admin_url, name)
    url = chat_db.admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create schema auth authorization supabase_auth_admin")
            conn.execute("create table auth.precious (id int)")
        with pytest.raises(SupabaseDetected):
            reset.reset(Database(url, url, "--database-url", False), force=True)
        with psycopg.connect(url) as conn:
            assert conn.execute("select to_regclass('auth.precious') is not null").fetchone() == (True,)
    finally:
        build.drop_database(chat_db.admin_url, name)


def test_cli_reset_reports_and_refuses(target: Database) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["reset", "--database-url", target.admin_url, "--json"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["mode"] == "full" and report["seeded"]["thread_id"] == seed.DEMO_THREAD
    text = runner.invoke(cli, ["reset", "--database-url", target.admin_url])
    assert text.exit_code == 0
    assert text.stdout.startswith("reset in ") and "kept the database and wiped its data" in text.stdout
    assert seed.ALICE.uid in text.stdout and seed.DEMO_THREAD in text.stdout
    remote = runner.invoke(cli, ["reset", "--database-url", "postgresql://postgres:x@db.example.com/postgres"])
    assert remote.exit_code == 1 and "pass --force" in remote.output
