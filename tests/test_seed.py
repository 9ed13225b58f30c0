"""`dbtool seed`: demo personas, and a deterministic bulk load that restores every constraint."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from dbtool import personas, postgrest, realtime, seed
from dbtool.cli import cli
from dbtool.errors import SeedError
from dbtool.pytest_plugin import ChatDatabase


def catalog(conn: psycopg.Connection[Any]) -> list[tuple[str, ...]]:
    """chat_messages' constraints, indexes and triggers, as the server renders them."""
    rows = conn.execute(
        """
        select 'constraint', conname, pg_get_constraintdef(oid), convalidated::text from pg_constraint
         where conrelid = 'public.chat_messages'::regclass
        union all
        select 'index', c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid::text
          from pg_index i join pg_class c on c.oid = i.indexrelid where i.indrelid = 'public.chat_messages'::regclass
        union all
        select 'trigger', tgname, pg_get_triggerdef(oid), tgenabled::text from pg_trigger
         where tgrelid = 'public.chat_messages'::regclass and not tgisinternal
        order by 1, 2
        """
    ).fetchall()
    return [tuple(r) for r in rows]


def content(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(
        "select (select md5(string_agg(t::text, '|' order by id)) from public.chat_messages t), "
        "(select md5(string_agg(t::text, '|' order by thread_id)) from public.chat_threads t), "
        "(select md5(string_agg(t::text, '|' order by mongo_id)) from public.chat_identities t)"
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_demo_is_idempotent(chat_db: ChatDatabase) -> None:
    with chat_db.connect(admin=True) as conn:
        first = seed.demo(conn)
        counts = conn.execute("select (select count(*) from auth.users), (select count(*) from public.chat_messages)").fetchone()
        seed.demo(conn)
        again = conn.execute("select (select count(*) from auth.users), (select count(*) from public.chat_messages)").fetchone()
    assert counts == again == (4, len(seed.CONVERSATION) + len(seed.GUEST_CONVERSATION))
    assert [p.name for p in first.personas] == ["alice", "bob", "carol", "dave"]


def test_demo_guest_links(chat_db: ChatDatabase) -> None:
    """dave, an anonymous guest, redeemed alice's link; alice also has an expired and a revoked one."""
    with chat_db.connect(admin=True) as conn:
        data = seed.demo(conn)
    dave = personas.anonymous("dave", seed.DAVE.uid)
    alice = personas.user("alice", seed.ALICE.uid)
    with chat_db.connect() as conn:
        links = postgrest.call(conn, alice, "list_chat_links", {}, volatile=False)
        history = postgrest.call(conn, dave, "chat_history", {"_thread_id": seed.GUEST_THREAD}, volatile=False)
        again = postgrest.call(conn, dave, "redeem_chat_link", {"_token": seed.GUEST_TOKEN})
        can_join = realtime.read_check(conn, dave, f"chat:{seed.GUEST_THREAD}").can_join
    assert {str(r["link_id"]): r["status"] for r in links.rows} == {k.link_id: k.status for k in data.links}
    assert {k.status for k in data.links} == {"active", "expired", "revoked"}
    assert [r["body"] for r in history.rows][::-1] == [body for _, body in seed.GUEST_CONVERSATION]
    assert again.rows[0]["thread_id"] == seed.GUEST_THREAD and can_join


def test_load_is_deterministic_and_restores_the_schema(chat_db: ChatDatabase) -> None:
    progress: list[tuple[int, int]] = []
    with chat_db.connect(admin=True) as conn:
        before = catalog(conn)
        broadcasts = conn.execute("select count(*) from realtime.messages").fetchone()
        result = seed.load(conn, users=120, threads=300, messages=45_000, seed=11,
                           progress=lambda done, total: progress.append((done, total)))
        first = content(conn)
        after = catalog(conn)
        stats = conn.execute(
            "select count(*), count(distinct thread_id), min(id), max(id), "
            "count(*) filter (where created_at > now()) from public.chat_messages").fetchone()
        next_id = conn.execute(
            "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body)"
            " select thread_id, user_a_mongo_id, user_b_mongo_id, user_a_supabase_id, 'after load' "
            "from public.chat_threads limit 1 returning id").fetchone()
        broadcast_after = conn.execute("select count(*) from realtime.messages").fetchone()
        conn.execute("truncate auth.users, public.chat_identities, public.chat_threads, public.chat_messages "
                     "restart identity cascade")
        seed.load(conn, users=120, threads=300, messages=45_000, seed=11)
        assert content(conn) == first  # same seed, same data
        conn.execute("truncate auth.users, public.chat_identities, public.chat_threads, public.chat_messages "
                     "restart identity cascade")
        seed.load(conn, users=120, threads=300, messages=45_000, seed=12)
        assert content(conn) != first
    assert after == before  # every constraint, index and trigger back, validated and enabled
    assert (result.users, result.threads, result.messages) == (120, 300, 45_000)
    assert stats == (45_000, 300, 1, 45_000, 0)
    assert next_id == (45_001,)
    assert broadcast_after == (broadcasts[0] + 1,)  # none for the load, one for the live insert
    assert progress[-1] == (45_000, 45_000) and [d for d, _ in progress] == sorted(d for d, _ in progress)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"users": 1}, "--users must be at least 2"),
    ({"users": 3, "threads": 4}, "--threads must be between 1 and 3 for 3 users"),
    ({"messages": -1}, "--messages must not be negative"),
])
def test_load_rejects_impossible_profiles(chat_db: ChatDatabase, kwargs: dict[str, int], message: str) -> None:
    with chat_db.connect(admin=True) as conn, pytest.raises(SeedError, match=message):
        seed.load(conn, **kwargs)


def test_load_twice_with_the_same_seed_is_refused(chat_db: ChatDatabase) -> None:
    with chat_db.connect(admin=True) as conn:
        seed.load(conn, users=10, threads=10, messages=100, seed=5)
        with pytest.raises(SeedError, match="already present; run `dbtool reset` first"):
            seed.load(conn, users=10, threads=10, messages=100, seed=5)


def test_cli_seed(chat_db: ChatDatabase) -> None:
    runner = CliRunner()
    demo = runner.invoke(cli, ["seed", "--database-url", chat_db.admin_url])
    assert demo.exit_code == 0 and "carol is an outsider" in demo.stdout
    load = runner.invoke(cli, ["seed", "--profile", "load", "--users", "50", "--threads", "60", "--messages", "3000",
                               "--seed", "9", "--database-url", chat_db.admin_url, "--json"])
    assert load.exit_code == 0, load.output
    report = json.loads(load.stdout)
    assert report["messages"] == 3000 and report["messages_per_second"] > 0
    assert "messages" in load.stderr  # the progress bar
    remote = runner.invoke(cli, ["seed", "--profile", "load", "--database-url", "postgresql://u:p@db.example.com/x"])
    assert remote.exit_code == 1 and "refusing to seed" in remote.output
