"""Planner estimates across RLS (DESIGN §3, Hardening): revision 0005 keeps the values that
name threads, people and texts out of the statistics, and `dbtool clear-stats` removes those
collected before it. Real rows, a real ANALYZE, the estimate PostgREST would answer
`Prefer: count=planned` with."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from dbtool.cli import cli
from dbtool.database import Database
from dbtool.errors import StatsError
from dbtool.ops import migrate, stats
from dbtool.policy import estimates, worlds
from dbtool.supabase import postgrest
from tests.test_migrations import schema_dump as _schema_dump

CHAT_TABLES = "public.chat_identities, public.chat_threads, public.chat_messages"
# The contract's private columns (DESIGN §3): thread ids, Mongo ids, Supabase ids, bodies; and
# chat_messages.created_at, so that prepared history pages keep their generic plan (test_rls_plans).
PRIVATE = {
    "chat_messages": {"thread_id", "sender_mongo_id", "recipient_mongo_id", "sender_supabase_id", "body", "client_id",
                      "created_at"},
    "chat_threads": {"thread_id", "user_a_mongo_id", "user_a_supabase_id", "user_b_mongo_id", "user_b_supabase_id"},
    "chat_identities": {"supabase_user_id", "mongo_id"},
}


def schema_dump(db: Database) -> str:
    """pg_dump --schema-only, with the grouping parentheses of policy expressions left out: a
    policy recreated from its printed expression is stored with an OR chain regrouped
    (`(a OR b) OR c` becomes `a OR b OR c`), the same condition written differently. Every
    name, role, command, operand and operator still has to match."""
    out, policy = [], False
    for line in _schema_dump(db).splitlines():
        policy = line.startswith("CREATE POLICY") or (policy and not line.startswith(("--", "CREATE ", "ALTER ")))
        out.append(line.replace("(", "").replace(")", "") if policy else line)
    return "\n".join(out)


def statistics_targets(conn: psycopg.Connection[Any], target: int) -> None:
    """Set the statistics target of every private column: -1 (the default) is the schema
    before 0005, 0 is 0005's. Later revisions add tables a world needs, so the state before
    0005 is reproduced at head rather than by downgrading."""
    for table, columns in PRIVATE.items():
        conn.execute(f"alter table public.{table} "
                     + ", ".join(f"alter column {c} set statistics {target}" for c in sorted(columns)))


def settings(db: Database) -> migrate.MigrateSettings:
    return migrate.MigrateSettings(db.url)


def committed_world(db: Database) -> worlds.World:
    """A world and a busy thread (dave -> erin), committed, then ANALYZE."""
    with db.connect(admin=True) as conn:
        with conn.transaction():
            world = worlds.create(conn)
            estimates.make_busy(conn, world)
        conn.execute(f"analyze {CHAT_TABLES}")
    return world


def outsider_sees(conn: psycopg.Connection[Any], world: worlds.World) -> dict[str, str]:
    """Each estimate cell for the outsider (carol), described."""
    return {s.label: estimates.describe(estimates.compare(conn, world, world.carol.persona, s))
            for s in estimates.SUBJECTS}


@pytest.fixture
def stale_db(chat_db: Database) -> Iterator[tuple[Database, worlds.World]]:
    """A database analysed before 0005, then migrated: the statistics are still there."""
    with chat_db.connect(admin=True) as conn:
        statistics_targets(conn, -1)
    world = committed_world(chat_db)
    with chat_db.connect(admin=True) as conn:
        statistics_targets(conn, 0)  # what upgrading to 0005 does
    with chat_db.connect() as conn:
        conn.execute(f"analyze {CHAT_TABLES}")
    yield chat_db, world


def test_before_0005_estimates_tell_an_outsider_how_busy_a_thread_a_sender_and_a_text_are(chat_db: Database) -> None:
    """Negative control: the same probe on the schema before 0005 finds every leak."""
    with chat_db.connect(admin=True) as conn, conn.transaction():
        statistics_targets(conn, -1)
        world = worlds.create(conn)
        for subject in estimates.SUBJECTS:
            got = estimates.compare(conn, world, world.carol.persona, subject)
            planned = {r["value"]: r["planned"] for r in got.rows}
            assert estimates.leaks(got) and planned[subject.label] > planned["missing"], (subject.label, planned)
        raise psycopg.Rollback


def test_at_head_every_estimate_cell_is_the_same_for_busy_and_missing_values(chat_db: Database) -> None:
    with chat_db.connect(admin=True) as conn, conn.transaction():
        world = worlds.create(conn)
        for who in (world.carol, world.alice, world.bob):
            for subject in estimates.SUBJECTS:
                got = estimates.compare(conn, world, who.persona, subject)
                assert got.ok and not estimates.leaks(got), (who.name, subject.label, got.rows)
        raise psycopg.Rollback


def test_analyze_keeps_no_value_statistics_on_private_columns(chat_db: Database) -> None:
    committed_world(chat_db)
    with chat_db.connect() as conn:
        rows = conn.execute("select tablename::text, attname::text from pg_stats where schemaname = 'public' "
                            "and tablename like 'chat%'").fetchall()
    kept: dict[str, set[str]] = {}
    for table, column in rows:
        kept.setdefault(table, set()).add(column)
    assert all(not (kept.get(table, set()) & columns) for table, columns in PRIVATE.items()), kept
    assert kept["chat_messages"] == {"id"}  # unique: its statistics say nothing about anyone


def test_statistics_from_before_0005_survive_analyze_until_clear_stats(
        stale_db: tuple[Database, worlds.World]) -> None:
    db, world = stale_db
    with db.connect() as conn:
        stale = {c.name for c in stats.stale(conn)}
    assert stale == {f"public.{t}.{c}" for t, columns in PRIVATE.items() for c in columns}
    with db.connect(admin=True) as conn, conn.transaction():
        leaked = outsider_sees(conn, world)
        raise psycopg.Rollback
    assert all(text != estimates.SAME for text in leaked.values()), leaked

    schema = schema_dump(db)
    with db.connect() as conn:
        result = stats.clear(conn)
        assert set(result.columns) == stale and result.remaining == []
        assert result.indexes == ["public.chat_messages_sender_supabase_id_client_id_key"]  # rebuilt, not locked
        assert stats.stale(conn) == [] and stats.plan(conn).empty
        unvalidated = conn.execute("select count(*) from pg_constraint where not convalidated").fetchone()
    assert unvalidated == (0,)
    assert schema_dump(db) == schema  # policies, constraints, comments, grants: all as they were
    with db.connect(admin=True) as conn, conn.transaction():
        assert set(outsider_sees(conn, world).values()) == {estimates.SAME}
        raise psycopg.Rollback


def test_clear_stats_keeps_the_rules_it_recreates(stale_db: tuple[Database, worlds.World]) -> None:
    """The policies and CHECK constraints dropped for a moment hold again afterwards."""
    db, world = stale_db
    with db.connect() as conn:
        stats.clear(conn)
    with db.connect(admin=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, "
                         "sender_supabase_id, body) values (%s, %s, %s, %s, ' ')",
                         (world.thread_ab, world.alice.mongo_id, world.bob.mongo_id, world.alice.uid))
        seen = postgrest.run(conn, world.carol.persona, "select thread_id from public.chat_messages")
    assert {r["thread_id"] for r in seen.rows} == {world.thread_cd}


def test_clear_stats_gives_up_after_lock_timeout_and_a_later_run_finishes(
        stale_db: tuple[Database, worlds.World]) -> None:
    db, _ = stale_db
    schema = schema_dump(db)
    with db.connect() as holder, db.connect() as conn:
        holder.execute("begin")
        holder.execute("select count(*) from public.chat_messages")  # a reader's ACCESS SHARE, held open
        before = stats.stale(conn)
        with pytest.raises(StatsError, match="could not lock") as failed:
            stats.clear(conn, lock_timeout="100ms")
        # the reader also holds up dropping the stand-in built beforehand: it stays, and says so
        assert "__clear_stats" in str(failed.value)
        assert stats.stale(conn) == before
        holder.execute("rollback")
        done = stats.clear(conn)
    assert done.finished and done.remaining == [] and done.indexes
    assert schema_dump(db) == schema


def test_a_run_stopped_after_the_commit_is_finished_by_the_next(stale_db: tuple[Database, worlds.World]) -> None:
    """Between the commit and the concurrent rebuild a stand-in carries the unique rule (and
    the original's definition); sends stay idempotent, and the next run restores the index."""
    db, world = stale_db
    schema = schema_dump(db)
    with db.connect() as conn:
        found = stats.plan(conn)
        (swap,) = found.swaps
        for statement in [*swap.build_stand_in(), f"drop index {swap.index}"]:  # as if stopped after the commit
            conn.execute(statement)  # type: ignore[arg-type]
    with db.connect(admin=True) as conn:
        send = {"_thread_id": world.thread_ab, "_sender_mongo_id": world.alice.mongo_id,
                "_recipient_mongo_id": world.bob.mongo_id, "_body": "once", "_client_id": str(uuid.uuid4())}
        first, again = (postgrest.call(conn, world.alice.persona, "insert_chat_message", send, commit=True,
                                       types={"_client_id": "uuid"}) for _ in range(2))
        assert first.ok and again.ok and first.rows[0]["id"] == again.rows[0]["id"]
    with db.connect() as conn:
        assert stats.plan(conn).unfinished == [swap.restore, f"drop index concurrently {swap.stand_in}"]
        done = stats.clear(conn)
    assert done.finished == [swap.restore, f"drop index concurrently {swap.stand_in}"] and done.remaining == []
    assert schema_dump(db) == schema


def test_clear_stats_waits_for_a_reader_then_finishes(stale_db: tuple[Database, worlds.World]) -> None:
    db, _ = stale_db
    with db.connect() as holder, db.connect() as conn:
        holder.execute("begin")
        holder.execute("select count(*) from public.chat_messages")
        done: list[stats.Cleared] = []
        worker = threading.Thread(target=lambda: done.append(stats.clear(conn, lock_timeout="30s")))
        worker.start()
        waiting = conn.info.backend_pid
        with db.connect(admin=True) as observer:
            while worker.is_alive() and observer.execute(
                    "select wait_event_type is distinct from 'Lock' from pg_stat_activity where pid = %s",
                    (waiting,)).fetchone() != (False,):
                time.sleep(0.01)
        holder.execute("rollback")
        worker.join()
    assert done and done[0].remaining == [] and done[0].columns


def test_clear_stats_validates_a_constraint_an_interrupted_run_left_not_valid(chat_db: Database) -> None:
    with chat_db.connect() as conn:
        conn.execute("alter table public.chat_messages drop constraint chat_messages_parties_check, "
                     "add constraint chat_messages_parties_check check (sender_mongo_id <> recipient_mongo_id) not valid")
        result = stats.clear(conn)
        state = conn.execute("select convalidated from pg_constraint where conname = 'chat_messages_parties_check'")
        assert state.fetchone() == (True,)
    assert result.columns == [] and result.validated == ["chat_messages_parties_check on public.chat_messages"]


def test_clear_stats_command_and_the_audit_finding(stale_db: tuple[Database, worlds.World]) -> None:
    db, _ = stale_db
    runner = CliRunner()

    def audit_codes() -> list[str]:
        done = runner.invoke(cli, ["audit", "--database-url", db.url, "--no-matrix", "--format", "json"])
        return [f["code"] for f in json.loads(done.output)["findings"]]

    assert audit_codes().count("stale_statistics") == 3  # identities, threads, messages
    dry = runner.invoke(cli, ["clear-stats", "--dry-run", "--database-url", db.url])
    assert dry.exit_code == 0, dry.output
    with db.connect() as conn:
        locks = ", ".join(stats.plan(conn).locks)
    assert set(locks.split(", ")) >= {"public.chat_identities", "public.chat_messages", "public.chat_threads"}
    assert f"lock table {locks} in access exclusive mode;" \
        in dry.output
    assert "type text" in dry.output and "not valid" in dry.output and "validate constraint" in dry.output
    with db.connect() as conn:
        assert stats.stale(conn)  # a dry run changes nothing

    done = runner.invoke(cli, ["clear-stats", "--database-url", db.url, "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output[done.output.index("{"):])
    assert report["columns"] and report["remaining"] == [] and report["lock_held_ms"] > 0
    assert "stale_statistics" not in audit_codes()

    again = runner.invoke(cli, ["clear-stats", "--database-url", db.url])
    assert again.exit_code == 0 and "nothing to clear" in again.output


def test_clear_stats_reports_a_lock_it_cannot_get(stale_db: tuple[Database, worlds.World]) -> None:
    db, _ = stale_db
    with db.connect() as conn:
        locks = ", ".join(stats.plan(conn).locks)
    with db.connect() as holder:
        holder.execute("begin")
        holder.execute("lock table public.chat_threads in access share mode")
        done = CliRunner().invoke(cli, ["clear-stats", "--database-url", db.url, "--lock-timeout", "50ms"])
        holder.execute("rollback")
    assert done.exit_code == 1
    assert f"Error: could not lock {locks}" in done.output
