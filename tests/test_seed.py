"""`dbtool seed`: demo personas, and a deterministic bulk load that restores every constraint."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from dbtool.cli import cli
from dbtool.database import Database
from dbtool.errors import SeedError
from dbtool.ops import seed
from dbtool.supabase import personas, postgrest, realtime


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


def test_demo_is_idempotent(chat_db: Database) -> None:
    with chat_db.connect(admin=True) as conn:
        first = seed.demo(conn)
        counts = conn.execute("select (select count(*) from auth.users), (select count(*) from public.chat_messages)").fetchone()
        seed.demo(conn)
        again = conn.execute("select (select count(*) from auth.users), (select count(*) from public.chat_messages)").fetchone()
    assert counts == again == (4, len(seed.CONVERSATION) + len(seed.GUEST_CONVERSATION))
    assert [p.name for p in first.personas] == ["alice", "bob", "carol", "dave"]


def test_demo_guest_links(chat_db: Database) -> None:
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


def test_demo_receipts_show_in_both_inboxes(chat_db: Database) -> None:
    """bob has read up to alice's second message: one unread for him (her last), and alice's
    ticks (bob's cursors) at that message; she has not read bob's two messages."""
    with chat_db.connect(admin=True) as conn:
        seed.demo(conn)
        ids = [r[0] for r in conn.execute("select id from public.chat_messages where thread_id = %s "
                                          "order by created_at, id", (seed.DEMO_THREAD,))]
        rows = {p.name: postgrest.call(conn, personas.user(p.name, p.uid), "chat_inbox", {}, volatile=False).rows
                for p in (seed.ALICE, seed.BOB, seed.CAROL)}
        guest_ids = [r[0] for r in conn.execute("select id from public.chat_messages where thread_id = %s "
                                                "order by created_at, id", (seed.GUEST_THREAD,))]
    seen = {name: [(r["thread_id"], r["unread"], r["delivered_up_to"], r["read_up_to"], r["last_message_id"])
                   for r in found] for name, found in rows.items()}
    bob_read = ids[seed.BOB_READ_UP_TO]
    assert seed.CONVERSATION[seed.BOB_READ_UP_TO][0] is seed.ALICE
    # alice also hosts dave's guest thread, whose last message is the newer: dave's messages
    # are unread for her, and dave (a guest) has sent no receipt.
    from_dave = sum(1 for sender, _ in seed.GUEST_CONVERSATION if sender is seed.DAVE)
    assert seen == {"alice": [(seed.GUEST_THREAD, from_dave, 0, 0, guest_ids[-1]),
                              (seed.DEMO_THREAD, 2, bob_read, bob_read, ids[-1])],
                    "bob": [(seed.DEMO_THREAD, 1, 0, 0, ids[-1])], "carol": []}


def test_load_gives_threads_their_last_message_and_realistic_receipts(chat_db: Database) -> None:
    with chat_db.connect(admin=True) as conn:
        seed.load(conn, users=60, threads=200, messages=20_000, seed=3)
        stale = conn.execute(
            "select count(*) from public.chat_threads t "
            "left join chat_private.chat_thread_activity a on a.thread_id = t.thread_id "
            "left join lateral (select m.id, m.created_at "
            "from public.chat_messages m where m.thread_id = t.thread_id order by m.created_at desc, m.id desc limit 1) m "
            "on true where (a.last_message_id, a.activity_at) is distinct from (m.id, coalesce(m.created_at, t.created_at))"
        ).fetchone()
        unread = [r[0] for r in conn.execute(
            """
            select count(m.id) from public.chat_threads t
            cross join lateral (values (t.user_a_supabase_id), (t.user_b_supabase_id)) p(uid)
            left join public.chat_receipts r on r.thread_id = t.thread_id and r.supabase_user_id = p.uid
            left join public.chat_messages m on m.thread_id = t.thread_id and m.id > coalesce(r.read_up_to, 0)
                                             and m.sender_supabase_id <> p.uid
            group by t.thread_id, p.uid
            """)]
        bad = conn.execute("select count(*) from public.chat_receipts r where not exists ("
                           "select from public.chat_messages m where m.id = r.read_up_to and m.thread_id = r.thread_id)"
                           ).fetchone()
    assert stale == (0,)
    assert bad == (0,)  # every read cursor is a message of its thread
    assert len(unread) == 400
    # most participants have a few unread, some none, some never opened the thread (all unread)
    assert sum(1 for n in unread if n == 0) > 20
    assert sum(1 for n in unread if 0 < n < 12) > 150
    assert sum(1 for n in unread if n >= 12) > 20


def test_load_is_deterministic_and_restores_the_schema(chat_db: Database) -> None:
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
def test_load_rejects_impossible_profiles(chat_db: Database, kwargs: dict[str, int], message: str) -> None:
    with chat_db.connect(admin=True) as conn, pytest.raises(SeedError, match=message):
        seed.load(conn, **kwargs)


def test_load_twice_with_the_same_seed_is_refused(chat_db: Database) -> None:
    with chat_db.connect(admin=True) as conn:
        seed.load(conn, users=10, threads=10, messages=100, seed=5)
        with pytest.raises(SeedError, match="already present; run `dbtool reset` first"):
            seed.load(conn, users=10, threads=10, messages=100, seed=5)


def test_cli_seed(chat_db: Database) -> None:
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


def test_demo_without_triggers_still_fills_the_inbox(chat_db: Database) -> None:
    """`dbtool reset` seeds the demo with triggers off (session_replication_role = replica):
    the seed writes the threads' activity rows itself, so alice's inbox lists both threads
    with their last messages."""
    with chat_db.connect(admin=True) as conn:
        with conn.transaction():
            conn.execute("set local session_replication_role = replica")
            seed.demo(conn)
        last = dict(conn.execute(
            "select distinct on (thread_id) thread_id, id from public.chat_messages where thread_id = any(%s) "
            "order by thread_id, created_at desc, id desc", ([seed.DEMO_THREAD, seed.GUEST_THREAD],)).fetchall())
        rows = postgrest.call(conn, personas.user(seed.ALICE.name, seed.ALICE.uid), "chat_inbox", {},
                              volatile=False).rows
    assert [(r["thread_id"], r["last_message_id"]) for r in rows] == [
        (seed.GUEST_THREAD, last[seed.GUEST_THREAD]), (seed.DEMO_THREAD, last[seed.DEMO_THREAD])]
