"""Real parallel connections: idempotent thread creation, concurrent senders and retries,
and keyset paging that neither skips nor repeats while messages keep arriving."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from dbtool.ops import limits
from dbtool.policy import worlds
from dbtool.policy.worlds import Member
from dbtool.supabase import postgrest
from dbtool.supabase.personas import Persona
from dbtool.supabase.postgrest import Outcome
from tests.helpers import WorldDb

T = TypeVar("T")
HISTORY_TYPES = {"_before_created_at": "timestamptz", "_before_id": "bigint", "_limit": "int", "_client_id": "uuid"}


def in_parallel(count: int, work: Callable[[int], T]) -> list[T]:
    """Run `work(i)` on `count` threads released at the same moment."""
    start = threading.Barrier(count)

    def run(i: int) -> T:
        start.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def rpc(wdb: WorldDb, who: Persona, function: str, args: dict[str, Any]) -> Outcome:
    with wdb.db.connect() as conn:
        return postgrest.call(conn, who, function, args, volatile=function != "chat_history", commit=True,
                              types=HISTORY_TYPES)


def send(wdb: WorldDb, sender: Member, recipient: Member, body: str, client_id: str | None = None) -> Outcome:
    return rpc(wdb, sender.persona, "insert_chat_message",
               {"_thread_id": wdb.world.thread_ab, "_sender_mongo_id": sender.mongo_id,
                "_recipient_mongo_id": recipient.mongo_id, "_body": body, "_client_id": client_id})


def test_concurrent_ensure_gives_one_row_to_everyone(world_db: WorldDb) -> None:
    w = world_db.world

    def ensure(i: int) -> Outcome:
        me, other = (w.alice, w.erin) if i % 2 else (w.erin, w.alice)
        a, b = (me.mongo_id, other.mongo_id) if i % 4 < 2 else (other.mongo_id.upper(), me.mongo_id)
        return rpc(world_db, me.persona, "ensure_chat_thread", {"_user_a_mongo_id": a, "_user_b_mongo_id": b})

    results = in_parallel(16, ensure)
    assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]
    rows = {(r.rows[0]["thread_id"], r.rows[0]["created_at"]) for r in results}
    assert len(rows) == 1
    thread = rows.pop()[0]
    assert world_db.admin.execute("select count(*) from public.chat_threads where thread_id = %s", (thread,)).fetchone() == (1,)


def unlimited(wdb: WorldDb) -> None:
    """These tests send far faster than the abuse limits allow; the limits are not their subject."""
    limits.configure(wdb.admin, limits.MESSAGES, burst=1_000_000, refill_every="1 millisecond")


def test_concurrent_senders_lose_nothing(world_db: WorldDb) -> None:
    w = world_db.world
    unlimited(world_db)
    before = world_db.counts()

    def sender(i: int) -> list[int]:
        me, other = (w.alice, w.bob) if i % 2 else (w.bob, w.alice)
        ids = []
        for n in range(25):
            got = send(world_db, me, other, f"worker {i} message {n}")
            assert got.ok, got.describe()
            ids.append(got.rows[0]["id"])
        return ids

    ids = [i for batch in in_parallel(8, sender) for i in batch]
    assert len(ids) == len(set(ids)) == 200
    after = world_db.counts()
    assert after["public.chat_messages"] == before["public.chat_messages"] + 200
    assert after["realtime.messages"] == before["realtime.messages"] + 200  # one broadcast each
    stored = world_db.admin.execute("select count(*) from public.chat_messages where id = any(%s)", (ids,)).fetchone()
    assert stored == (200,)


def test_concurrent_retries_insert_once(world_db: WorldDb) -> None:
    w = world_db.world
    key = str(uuid.uuid4())
    before = world_db.counts()["public.chat_messages"]
    results = in_parallel(8, lambda i: send(world_db, w.alice, w.bob, f"attempt {i}", key))
    assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]
    assert len({r.rows[0]["id"] for r in results}) == 1
    assert world_db.counts()["public.chat_messages"] == before + 1


def newest_first(wdb: WorldDb) -> list[int]:
    """Every message id of thread ab, in history order."""
    return [r[0] for r in wdb.admin.execute(
        "select id from public.chat_messages where thread_id = %s order by created_at desc, id desc",
        (wdb.world.thread_ab,))]


def page_through(wdb: WorldDb, reader: Member, limit: int, between: Callable[[int], None]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor: dict[str, Any] = {}
    page = 0
    while True:
        got = rpc(wdb, reader.persona, "chat_history", {"_thread_id": wdb.world.thread_ab, "_limit": limit, **cursor})
        assert got.ok, got.describe()
        if not got.rows:
            return seen
        seen.extend(got.rows)
        last = got.rows[-1]
        cursor = {"_before_created_at": last["created_at"], "_before_id": last["id"]}
        between(page)
        page += 1


def test_paging_neither_skips_nor_repeats_with_equal_timestamps_and_inserts_between_pages(world_db: WorldDb) -> None:
    w = world_db.world
    unlimited(world_db)
    # 30 more messages sharing one created_at (one transaction), after the world's 3 (another one).
    with world_db.admin.transaction():
        for n in range(30):
            worlds.insert_message(world_db.admin, w.thread_ab, w.alice, w.bob, f"same time {n}")
    expected = newest_first(world_db)
    assert len(expected) == 33
    same_time = world_db.admin.execute(
        "select count(distinct created_at) from public.chat_messages where thread_id = %s", (w.thread_ab,)).fetchone()
    assert same_time == (2,)

    arrived: list[int] = []

    def newer_messages_arrive(page: int) -> None:
        for n in range(2):  # committed by the other participant between two page requests
            got = send(world_db, w.bob, w.alice, f"arrived after page {page} ({n})")
            assert got.ok
            arrived.append(got.rows[0]["id"])

    rows = page_through(world_db, w.alice, 4, newer_messages_arrive)
    ids = [r["id"] for r in rows]
    assert ids == expected, "pages skipped, repeated or reordered messages"
    keys = [(r["created_at"], r["id"]) for r in rows]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)
    assert len(arrived) == 2 * 9 and not set(arrived) & set(ids)  # newer ones come through Realtime, not older pages


def test_paging_while_a_writer_runs_concurrently(world_db: WorldDb) -> None:
    w = world_db.world
    unlimited(world_db)
    with world_db.admin.transaction():
        for n in range(40):
            worlds.insert_message(world_db.admin, w.thread_ab, w.bob, w.alice, f"m{n}")
    expected = newest_first(world_db)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            assert send(world_db, w.alice, w.bob, "concurrent").ok

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        rows = page_through(world_db, w.bob, 6, lambda page: None)
    finally:
        stop.set()
        thread.join()
    ids = [r["id"] for r in rows]
    assert ids[-len(expected):] == expected  # every older message exactly once, in order
    assert len(ids) == len(set(ids))


def test_one_client_id_for_two_threads_at_once_gives_one_message(world_db: WorldDb) -> None:
    """Racing calls reusing a _client_id in two threads: one message, and the other call is
    refused rather than handed the first thread's message."""
    w = world_db.world
    other = rpc(world_db, w.alice.persona, "ensure_chat_thread",
                {"_user_a_mongo_id": w.alice.mongo_id, "_user_b_mongo_id": w.erin.mongo_id}).rows[0]["thread_id"]
    key = str(uuid.uuid4())
    targets = [(w.thread_ab, w.bob), (other, w.erin)]

    def send_to(i: int) -> Outcome:
        thread, recipient = targets[i % 2]
        return rpc(world_db, w.alice.persona, "insert_chat_message",
                   {"_thread_id": thread, "_sender_mongo_id": w.alice.mongo_id,
                    "_recipient_mongo_id": recipient.mongo_id, "_body": "once", "_client_id": key})

    for _ in range(5):
        key = str(uuid.uuid4())
        results = in_parallel(2, send_to)
        assert sorted((r.ok, r.sqlstate) for r in results) == [(False, "22023"), (True, None)]
        refused = next(r for r in results if not r.ok)
        assert refused.message == "_client_id was already used for a message in another thread"
        assert world_db.admin.execute("select count(*) from public.chat_messages where client_id = %s",
                                      (key,)).fetchone() == (1,)
