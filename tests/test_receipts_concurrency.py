"""Receipts and the inbox with real parallel connections: both participants marking at
once, first receipts racing, the thread's last message under concurrent sends, and inbox
paging and unread counts while messages keep arriving."""

from __future__ import annotations

import random
import threading
import uuid
from typing import Any

from dbtool.ops import limits
from dbtool.policy import worlds
from dbtool.policy.worlds import Member
from dbtool.supabase import personas
from dbtool.supabase.postgrest import Outcome
from tests.helpers import WorldDb
from tests.test_concurrency import in_parallel
from tests.test_receipts import call, ok


def mark(wdb: WorldDb, who: Member, function: str, up_to: int, thread: str) -> Outcome:
    return call(wdb, who.persona, function, {"_thread_id": thread, "_up_to_id": up_to})


def test_both_participants_mark_at_once(world_db: WorldDb) -> None:
    """8 workers (4 as alice, 4 as bob) each mark 25 random messages delivered or read. The
    cursors end at the highest id each reader asked for (read, and delivered >= read), every
    answer is a state the cursor really had, and each move broadcast exactly one event."""
    w = world_db.world
    with world_db.admin.transaction():
        ids = [worlds.insert_message(world_db.admin, w.thread_ab, *(w.alice, w.bob) if n % 2 else (w.bob, w.alice),
                                     f"m{n}") for n in range(30)]
        # alice starts without a receipt row, so her first ones race to insert it
        world_db.admin.execute("delete from public.chat_receipts where thread_id = %s", (w.thread_ab,))
    plan = {i: [(random.Random(i * 100 + n).choice(["mark_chat_delivered", "mark_chat_read"]),
                 random.Random(i * 1000 + n).choice(ids)) for n in range(25)] for i in range(8)}

    def worker(i: int) -> list[tuple[str, int, Outcome]]:
        who = w.alice if i % 2 else w.bob
        return [(function, up_to, mark(world_db, who, function, up_to, w.thread_ab)) for function, up_to in plan[i]]

    results = in_parallel(8, worker)
    for i, done in enumerate(results):
        for function, up_to, got in done:
            assert got.ok, got.describe()
            (row,) = got.rows
            assert row["read_up_to"] <= row["delivered_up_to"]
            moved = row["read_up_to"] if function == "mark_chat_read" else row["delivered_up_to"]
            assert moved >= up_to, f"worker {i}: {function}({up_to}) answered {row}"
    for who, workers in ((w.alice, [1, 3, 5, 7]), (w.bob, [0, 2, 4, 6])):
        asked = [(f, up) for i in workers for f, up in plan[i]]
        want_read = max((up for f, up in asked if f == "mark_chat_read"), default=0)
        want_delivered = max([want_read] + [up for f, up in asked if f == "mark_chat_delivered"])
        final = world_db.admin.execute(
            "select delivered_up_to, read_up_to from public.chat_receipts where thread_id = %s and supabase_user_id = %s",
            (w.thread_ab, who.uid)).fetchone()
        assert final == (want_delivered, want_read)
        sent = world_db.admin.execute(
            "select event, (payload ->> 'up_to_id')::bigint from realtime.messages where topic = %s "
            "and event in ('DELIVERED', 'READ') and payload ->> 'reader_supabase_id' = %s",
            (f"chat:{w.thread_ab}", who.uid)).fetchall()
        reads = [up for e, up in sent if e == "READ"]
        delivered = [up for e, up in sent if e == "DELIVERED"]
        # one event per move: a cursor passes each id at most once
        assert len(reads) == len(set(reads)) and max(reads, default=0) == want_read
        assert len(delivered) == len(set(delivered))
        assert set(reads) <= {up for f, up in asked if f == "mark_chat_read"}
        assert set(delivered) <= {up for f, up in asked if f == "mark_chat_delivered"}


def unlimited(wdb: WorldDb) -> None:
    """These tests send and mark as fast as they can, not as a user may (DESIGN §10)."""
    for name in (limits.MESSAGES, limits.RECEIPTS):
        limits.configure(wdb.admin, name, burst=1_000_000)


def test_concurrent_sends_leave_the_newest_message_on_the_thread(world_db: WorldDb) -> None:
    w = world_db.world
    unlimited(world_db)

    def sender(i: int) -> None:
        me, other = (w.alice, w.bob) if i % 2 else (w.bob, w.alice)
        for n in range(20):
            got = call(world_db, me.persona, "insert_chat_message",
                       {"_thread_id": w.thread_ab, "_sender_mongo_id": me.mongo_id,
                        "_recipient_mongo_id": other.mongo_id, "_body": f"{i}/{n}"})
            ok(got)

    in_parallel(6, sender)
    newest = world_db.admin.execute(
        "select id, created_at from public.chat_messages where thread_id = %s order by created_at desc, id desc limit 1",
        (w.thread_ab,)).fetchone()
    assert world_db.admin.execute(
        "select last_message_id, activity_at from chat_private.chat_thread_activity where thread_id = %s",
        (w.thread_ab,)).fetchone() == newest


def _partners(wdb: WorldDb, owner: Member, count: int) -> list[tuple[Member, str]]:
    """`count` new users, each with a thread with `owner` and one message in it."""
    made = []
    with wdb.admin.transaction():
        for n in range(count):
            uid = str(uuid.uuid4())
            member = Member(f"p{n}", uid, f"{n + 1:024x}", f"p{n}.{uid[:8]}@probe.invalid")
            wdb.admin.execute("insert into auth.users (id, email) values (%s, %s)", (uid, member.email))
            wdb.admin.execute("insert into public.chat_identities (supabase_user_id, mongo_id) values (%s, %s)",
                              (uid, member.mongo_id))
            thread = worlds.insert_thread(wdb.admin, owner, member)
            worlds.insert_message(wdb.admin, thread, member, owner, f"hello from {n}")
            made.append((member, thread))
    return made


def _unread_by_hand(wdb: WorldDb, reader: Member) -> dict[str, int]:
    rows = wdb.admin.execute(
        """
        select t.thread_id, count(m.id)::int
        from public.chat_threads t
        left join public.chat_receipts r on r.thread_id = t.thread_id and r.supabase_user_id = %s
        left join public.chat_messages m on m.thread_id = t.thread_id and m.id > coalesce(r.read_up_to, 0)
                                         and m.sender_supabase_id <> %s
        where %s in (t.user_a_supabase_id, t.user_b_supabase_id)
        group by t.thread_id
        """, (reader.uid, reader.uid, reader.uid)).fetchall()
    return dict(rows)


def test_inbox_paging_and_unread_while_messages_arrive(world_db: WorldDb) -> None:
    """erin pages through 40 threads 7 at a time while partners keep sending and erin keeps
    reading in other connections. No thread comes twice in a pass; a thread missing from the
    pass is one that got a message during it (it moved above the pass's start: the next
    first page shows it). Once the writers stop, every unread count is exact."""
    w = world_db.world
    unlimited(world_db)
    erin = w.erin
    partners = _partners(world_db, erin, 40)
    stop = threading.Event()
    errors: list[str] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            member, thread = rng.choice(partners)
            got = call(world_db, member.persona, "insert_chat_message",
                       {"_thread_id": thread, "_sender_mongo_id": member.mongo_id,
                        "_recipient_mongo_id": erin.mongo_id, "_body": "news"})
            if not got.ok:
                errors.append(got.describe())
                continue
            if rng.random() < 0.3:  # erin reads a thread up to what she has
                got = mark(world_db, erin, "mark_chat_read", int(got.rows[0]["id"]), thread)
                if not got.ok:
                    errors.append(got.describe())

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in writers:
        t.start()
    passes: list[tuple[list[dict[str, Any]], int]] = []
    try:
        for _ in range(3):
            started = int(world_db.admin.execute("select max(id) from public.chat_messages").fetchone()[0])  # type: ignore[index]
            rows: list[dict[str, Any]] = []
            args: dict[str, Any] = {"_limit": 7}
            while True:
                page = ok(call(world_db, erin.persona, "chat_inbox", args))
                rows += page
                if len(page) < 7:
                    break
                args = {"_limit": 7, "_before_activity_at": page[-1]["activity_at"],
                        "_before_thread_id": page[-1]["thread_id"]}
            passes.append((rows, started))
    finally:
        stop.set()
        for t in writers:
            t.join()
    assert errors == []
    everyone = {thread for _, thread in partners} | {w.guests.other_thread}  # erin hosts the world's other link
    for rows, started in passes:
        seen = [r["thread_id"] for r in rows]
        assert len(seen) == len(set(seen)), "a thread came twice in one pass"
        assert set(seen) <= everyone
        for missing in everyone - set(seen):
            newest = world_db.admin.execute(
                "select last_message_id from chat_private.chat_thread_activity where thread_id = %s",
                (missing,)).fetchone()
            assert newest is not None and newest[0] > started, f"{missing} skipped without new activity"
        keys = [(r["activity_at"], r["thread_id"]) for r in rows]
        assert keys == sorted(keys, reverse=True)

    # quiet now: one pass sees every thread once, with exact unread counts
    rows = ok(call(world_db, erin.persona, "chat_inbox", {"_limit": 100}))
    assert {r["thread_id"] for r in rows} == everyone
    assert {r["thread_id"]: r["unread"] for r in rows} == _unread_by_hand(world_db, erin)


def test_an_anonymous_reader_with_no_thread_sees_an_empty_inbox(world_db: WorldDb) -> None:
    uid = str(uuid.uuid4())
    world_db.admin.execute("insert into auth.users (id, is_anonymous) values (%s, true)", (uid,))
    assert ok(call(world_db, personas.anonymous("nobody", uid), "chat_inbox", {})) == []
