"""The abuse limits of DESIGN §10 (migration 0006): exact at their edges on every path,
under real concurrent connections, with nothing counted for refused or failed writes.

Time never comes from the wall clock here. Either the whole test runs in one transaction,
where now() stands still (the `chat_world` fixture: requests in savepoints, buckets set as
the owner), or the limit refills so slowly (one token a week) that the seconds a test takes
cannot earn one, and the owner moves a bucket's clock to let a refill happen.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from dbtool.ops import limits
from dbtool.ops.limits import MESSAGES, THREADS
from dbtool.policy import worlds
from dbtool.policy.worlds import Member, World
from dbtool.supabase import personas, postgrest
from dbtool.supabase.personas import Persona
from dbtool.supabase.postgrest import Outcome
from dbtool.testing.plugin import WorldSession
from tests.helpers import WorldDb
from tests.test_concurrency import in_parallel

MESSAGE_COLUMNS = {"thread_id": "text", "sender_mongo_id": "text", "recipient_mongo_id": "text",
                   "sender_supabase_id": "uuid", "body": "text", "client_id": "uuid"}
SLOW = "7 days"  # no test earns a token by waiting


def rows(w: World, sender: Member, recipient: Member, count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"thread_id": w.thread_ab, "sender_mongo_id": sender.mongo_id, "recipient_mongo_id": recipient.mongo_id,
             "sender_supabase_id": sender.uid, "body": f"message {n}", **extra} for n in range(count)]


def post(conn: psycopg.Connection[Any], who: Persona, body: list[dict[str, Any]], commit: bool = False) -> Outcome:
    """POST /rest/v1/chat_messages with a JSON array, as PostgREST runs it."""
    return postgrest.run(conn, who, postgrest.insert_query("chat_messages", MESSAGE_COLUMNS), [json.dumps(body)],
                         method="POST", path="/chat_messages", commit=commit)


def inserted(got: Outcome) -> int:
    """Rows a PostgREST POST wrote (its page_total)."""
    assert got.ok, got.describe()
    return int(got.rows[0]["page_total"])


def rpc(conn: psycopg.Connection[Any], who: Persona, function: str, args: dict[str, Any],
        commit: bool = False) -> Outcome:
    return postgrest.call(conn, who, function, args, commit=commit, types={"_client_id": "uuid"})


def send_args(w: World, sender: Member, recipient: Member, body: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"_thread_id": w.thread_ab, "_sender_mongo_id": sender.mongo_id, "_recipient_mongo_id": recipient.mongo_id,
            "_body": body, **extra}


def refused(got: Outcome, limit: str) -> int:
    """Assert the contract's refusal (PT429, the limit named) and return the hint's seconds."""
    assert (got.ok, got.sqlstate) == (False, "PT429"), got.describe()
    assert got.message is not None and got.message.startswith("rate limit exceeded") and limit in got.message
    return hint_seconds(got)


def hint_seconds(got: Outcome) -> int:
    match = re.fullmatch(r"retry after (\d+) s", got.hint or "")
    assert match, got.hint
    return int(match.group(1))


# --- the defaults, exact at the edge (one transaction: now() stands still) ------------------------


def test_the_defaults_are_the_contracts(chat_world: WorldSession) -> None:
    got = {n: (s.burst, s.refill_every, s.enabled) for n, s in limits.settings(chat_world.conn).items()}
    assert got[MESSAGES] == (20, timedelta(seconds=1), True)  # a burst of 20, then 1 per second
    assert got[THREADS] == (30, timedelta(minutes=2), True)  # 30 per hour


def test_a_bulk_insert_of_burst_rows_passes_and_burst_plus_one_is_refused_whole(chat_world: WorldSession) -> None:
    conn, w = chat_world.conn, chat_world.world
    burst = limits.settings(conn)[MESSAGES].burst
    assert inserted(post(conn, w.alice.persona, rows(w, w.alice, w.bob, burst))) == burst
    got = post(conn, w.alice.persona, rows(w, w.alice, w.bob, burst + 1))
    assert refused(got, MESSAGES) == 1  # the default refills one token a second
    assert got.rows == []


@pytest.mark.parametrize("path", ["rpc", "table"])
def test_the_last_token_then_the_refusal_then_one_refill(chat_world: WorldSession, path: str) -> None:
    conn, w = chat_world.conn, chat_world.world

    def send() -> Outcome:
        if path == "rpc":
            return rpc(conn, w.alice.persona, "insert_chat_message", send_args(w, w.alice, w.bob))
        return post(conn, w.alice.persona, rows(w, w.alice, w.bob, 1))

    limits.set_tokens(conn, MESSAGES, w.alice.uid, 1)
    assert send().ok
    limits.use_up(conn, MESSAGES, w.alice.uid)
    assert refused(send(), MESSAGES) == 1
    limits.pass_time(conn, MESSAGES, w.alice.uid, 1)  # one second later
    assert send().ok


def test_the_hint_says_when_the_next_token_is_back(chat_world: WorldSession) -> None:
    conn, w = chat_world.conn, chat_world.world
    limits.configure(conn, MESSAGES, refill_every="2.5 seconds")
    limits.use_up(conn, MESSAGES, w.alice.uid)
    assert hint_seconds(post(conn, w.alice.persona, rows(w, w.alice, w.bob, 1))) == 3  # 2.5 s, rounded up
    conn.execute("update chat_private.chat_rate_limit_buckets set full_at = full_at - interval '1 second' "
                 "where key = %s", (w.alice.uid,))
    assert hint_seconds(post(conn, w.alice.persona, rows(w, w.alice, w.bob, 1))) == 2  # 1 s of 2.5 already passed
    # A bulk request is refused at its first row over the limit; the hint is for that row.
    limits.set_tokens(conn, MESSAGES, w.alice.uid, 2)
    assert hint_seconds(post(conn, w.alice.persona, rows(w, w.alice, w.bob, 4))) == 3


def test_threads_created_count_returning_one_is_free(chat_world: WorldSession) -> None:
    conn, w = chat_world.conn, chat_world.world
    limits.use_up(conn, THREADS, w.alice.uid)
    existing = rpc(conn, w.alice.persona, "ensure_chat_thread",
                   {"_user_a_mongo_id": w.bob.mongo_id, "_user_b_mongo_id": w.alice.mongo_id})
    assert existing.ok and existing.rows[0]["thread_id"] == w.thread_ab
    new = rpc(conn, w.alice.persona, "ensure_chat_thread",
              {"_user_a_mongo_id": w.alice.mongo_id, "_user_b_mongo_id": w.erin.mongo_id})
    assert refused(new, THREADS) == 120  # two minutes for the next of 30 per hour
    limits.set_tokens(conn, THREADS, w.alice.uid, 1)
    created = rpc(conn, w.alice.persona, "ensure_chat_thread",
                  {"_user_a_mongo_id": w.alice.mongo_id, "_user_b_mongo_id": w.erin.mongo_id})
    assert created.ok


def test_the_limit_is_the_callers_a_forged_row_never_touches_another_bucket(chat_world: WorldSession) -> None:
    conn, w = chat_world.conn, chat_world.world
    limits.use_up(conn, MESSAGES, w.bob.uid)
    got = post(conn, w.alice.persona, rows(w, w.bob, w.alice, 1))  # alice claims to be bob
    assert (got.sqlstate, got.message) == ("42501", 'new row violates row-level security policy for table '
                                                    '"chat_messages"')  # not bob's PT429: nothing to learn


# --- real transactions, real concurrency ------------------------------------------------------------


def slow(wdb: WorldDb, name: str = MESSAGES) -> int:
    limits.configure(wdb.admin, name, refill_every=SLOW)
    return limits.settings(wdb.admin)[name].burst


def send_committed(wdb: WorldDb, sender: Member, recipient: Member, path: str, **extra: Any) -> Outcome:
    with wdb.db.connect() as conn:
        if path == "rpc":
            return rpc(conn, sender.persona, "insert_chat_message", send_args(wdb.world, sender, recipient, **extra),
                       commit=True)
        return post(conn, sender.persona, rows(wdb.world, sender, recipient, 1), commit=True)


def test_sequential_sends_are_counted_exactly_and_a_refill_gives_exactly_one(world_db: WorldDb) -> None:
    w = world_db.world
    burst = slow(world_db)
    before = world_db.counts()
    assert all(send_committed(world_db, w.alice, w.bob, "rpc" if n % 2 else "table").ok for n in range(burst))
    assert limits.tokens_left(world_db.admin, MESSAGES, w.alice.uid) == 0
    assert 0 < refused(send_committed(world_db, w.alice, w.bob, "rpc"), MESSAGES) <= 7 * 86_400
    assert refused(send_committed(world_db, w.alice, w.bob, "table"), MESSAGES)
    limits.pass_time(world_db.admin, MESSAGES, w.alice.uid, 1)
    assert send_committed(world_db, w.alice, w.bob, "rpc").ok
    assert refused(send_committed(world_db, w.alice, w.bob, "table"), MESSAGES)
    after = world_db.counts()
    assert after["public.chat_messages"] - before["public.chat_messages"] == burst + 1
    assert after["realtime.messages"] - before["realtime.messages"] == burst + 1  # no broadcast for a refusal
    assert send_committed(world_db, w.bob, w.alice, "rpc").ok  # bob has a bucket of his own


def test_parallel_senders_on_one_key_never_exceed_the_burst(world_db: WorldDb) -> None:
    w = world_db.world
    burst = slow(world_db)
    before = world_db.counts()["public.chat_messages"]
    results = in_parallel(burst + 12, lambda i: send_committed(world_db, w.alice, w.bob, ("rpc", "table")[i % 2]))
    assert sum(r.ok for r in results) == burst
    for r in results:
        if not r.ok:
            refused(r, MESSAGES)
    assert world_db.counts()["public.chat_messages"] == before + burst
    limits.pass_time(world_db.admin, MESSAGES, w.alice.uid, 1)
    again = in_parallel(8, lambda i: send_committed(world_db, w.alice, w.bob, ("rpc", "table")[i % 2]))
    assert sum(r.ok for r in again) == 1
    assert world_db.counts()["public.chat_messages"] == before + burst + 1


def test_failed_writes_are_not_counted(world_db: WorldDb) -> None:
    w = world_db.world
    burst = slow(world_db)
    calls = [
        (send_args(w, w.alice, w.bob, body="   "), "22023"),
        (send_args(w, w.alice, w.erin), "22023"),  # not the other participant
        ({**send_args(w, w.alice, w.bob), "_thread_id": w.thread_cd}, "P0002"),
    ]
    posts = [
        (rows(w, w.bob, w.alice, 1), "42501"),  # as someone else
        (rows(w, w.alice, w.bob, 1, body="x" * 4001), "23514"),
        (rows(w, w.alice, w.bob, 3) + rows(w, w.alice, w.erin, 1), "42501"),  # one bad row fails them all
    ]
    before = world_db.counts()
    with world_db.db.connect() as conn:
        for args, sqlstate in calls:
            got = rpc(conn, w.alice.persona, "insert_chat_message", args, commit=True)
            assert got.sqlstate == sqlstate, got.describe()
        for body, sqlstate in posts:
            got = post(conn, w.alice.persona, body, commit=True)
            assert got.sqlstate == sqlstate, got.describe()
    assert world_db.counts() == before
    assert limits.tokens_left(world_db.admin, MESSAGES, w.alice.uid) == burst
    limits.use_up(world_db.admin, MESSAGES, w.alice.uid)
    bucket = world_db.admin.execute("select full_at from chat_private.chat_rate_limit_buckets where key = %s",
                                    (w.alice.uid,)).fetchone()
    refused(send_committed(world_db, w.alice, w.bob, "rpc"), MESSAGES)
    assert world_db.admin.execute("select full_at from chat_private.chat_rate_limit_buckets where key = %s",
                                  (w.alice.uid,)).fetchone() == bucket  # a refusal takes nothing either


def test_a_bulk_insert_of_burst_plus_one_rows_is_refused_whole(world_db: WorldDb) -> None:
    w = world_db.world
    burst = slow(world_db)
    before = world_db.counts()
    with world_db.db.connect() as conn:
        refused(post(conn, w.alice.persona, rows(w, w.alice, w.bob, burst + 1), commit=True), MESSAGES)
        assert world_db.counts() == before
        assert limits.tokens_left(world_db.admin, MESSAGES, w.alice.uid) == burst
        assert inserted(post(conn, w.alice.persona, rows(w, w.alice, w.bob, burst), commit=True)) == burst
        refused(post(conn, w.alice.persona, rows(w, w.alice, w.bob, 1), commit=True), MESSAGES)
    after = world_db.counts()
    assert after["public.chat_messages"] == before["public.chat_messages"] + burst
    assert after["realtime.messages"] == before["realtime.messages"] + burst


def test_twenty_thousand_rows_in_one_request_are_refused_and_write_nothing(world_db: WorldDb) -> None:
    w = world_db.world
    before = world_db.counts()
    with world_db.db.connect() as conn:
        got = post(conn, w.alice.persona, rows(w, w.alice, w.bob, 20_000), commit=True)
    refused(got, MESSAGES)
    assert world_db.counts() == before
    assert limits.tokens_left(world_db.admin, MESSAGES, w.alice.uid) == limits.settings(world_db.admin)[MESSAGES].burst


def test_service_role_and_the_owner_are_exempt(world_db: WorldDb) -> None:
    w = world_db.world
    burst = limits.settings(world_db.admin)[MESSAGES].burst
    limits.use_up(world_db.admin, MESSAGES, w.alice.uid)
    bucket = limits.tokens_left(world_db.admin, MESSAGES, w.alice.uid)
    before = world_db.counts()["public.chat_messages"]
    with world_db.db.connect() as conn:  # as postgres, the owner
        assert inserted(post(conn, personas.service(), rows(w, w.alice, w.bob, burst + 5), commit=True)) == burst + 5
        conn.execute("insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, "
                     "sender_supabase_id, body) select %s, %s, %s, %s, 'owner' from generate_series(1, %s)",
                     (w.thread_ab, w.alice.mongo_id, w.bob.mongo_id, w.alice.uid, burst + 5))
    assert world_db.counts()["public.chat_messages"] == before + 2 * (burst + 5)
    assert limits.tokens_left(world_db.admin, MESSAGES, w.alice.uid) == bucket == 0


def test_a_retry_with_the_same_client_id_costs_nothing(world_db: WorldDb) -> None:
    w = world_db.world
    burst = slow(world_db)
    key = str(uuid.uuid4())
    results = in_parallel(8, lambda i: send_committed(world_db, w.alice, w.bob, "rpc", _client_id=key))
    assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]
    assert len({r.rows[0]["id"] for r in results}) == 1
    assert limits.tokens_left(world_db.admin, MESSAGES, w.alice.uid) == burst - 1  # one message, one token
    limits.use_up(world_db.admin, MESSAGES, w.alice.uid)
    retry = send_committed(world_db, w.alice, w.bob, "rpc", _client_id=key)
    assert retry.ok and retry.rows[0]["id"] == results[0].rows[0]["id"]  # the first row, even with no token left
    limits.set_tokens(world_db.admin, MESSAGES, w.alice.uid, 1)
    with world_db.db.connect() as conn:
        duplicate = post(conn, w.alice.persona, rows(w, w.alice, w.bob, 1, client_id=key), commit=True)
    assert duplicate.sqlstate == "23505"
    assert limits.tokens_left(world_db.admin, MESSAGES, w.alice.uid) == 1


def test_switched_off_the_limit_counts_nothing(world_db: WorldDb) -> None:
    w = world_db.world
    burst = slow(world_db)
    limits.configure(world_db.admin, MESSAGES, enabled=False)
    with world_db.db.connect() as conn:
        assert inserted(post(conn, w.alice.persona, rows(w, w.alice, w.bob, burst + 5), commit=True)) == burst + 5
    assert world_db.admin.execute("select count(*) from chat_private.chat_rate_limit_buckets").fetchone() == (0,)
    limits.configure(world_db.admin, MESSAGES, enabled=True)
    with world_db.db.connect() as conn:
        refused(post(conn, w.alice.persona, rows(w, w.alice, w.bob, burst + 1), commit=True), MESSAGES)


# --- new threads per user -------------------------------------------------------------------------------


def members(wdb: WorldDb, count: int) -> list[Member]:
    """More users with identities, committed."""
    extra = [Member(f"user{n}", str(uuid.uuid4()), secrets.token_hex(12), f"user{n}.{secrets.token_hex(4)}@probe.invalid")
             for n in range(count)]
    with wdb.admin.transaction(), wdb.admin.cursor() as cur:
        cur.executemany("insert into auth.users (id, email, aud, role, created_at, updated_at) "
                        "values (%s, %s, 'authenticated', 'authenticated', now(), now())", [(m.uid, m.email) for m in extra])
        cur.executemany("insert into public.chat_identities (supabase_user_id, mongo_id) values (%s, %s)",
                        [(m.uid, m.mongo_id) for m in extra])
    return extra


def ensure(wdb: WorldDb, caller: Member, other: Member) -> Outcome:
    with wdb.db.connect() as conn:
        return rpc(conn, caller.persona, "ensure_chat_thread",
                   {"_user_a_mongo_id": caller.mongo_id, "_user_b_mongo_id": other.mongo_id}, commit=True)


def test_parallel_thread_creation_stops_exactly_at_the_burst(world_db: WorldDb) -> None:
    w = world_db.world
    burst = slow(world_db, THREADS)
    partners = members(world_db, burst + 6)
    before = world_db.counts()["public.chat_threads"]
    results = in_parallel(len(partners), lambda i: ensure(world_db, w.alice, partners[i]))
    assert sum(r.ok for r in results) == burst
    for r in results:
        if not r.ok:
            refused(r, THREADS)
    assert world_db.counts()["public.chat_threads"] == before + burst
    # Every thread that exists comes back for free, from either side, with no token left.
    again = in_parallel(len(partners), lambda i: ensure(world_db, w.alice, partners[i]))
    assert [r.ok for r in again] == [r.ok for r in results]
    assert limits.tokens_left(world_db.admin, THREADS, w.alice.uid) == 0


def test_two_participants_racing_for_one_new_thread_pay_one_token(world_db: WorldDb) -> None:
    burst = slow(world_db, THREADS)
    for _ in range(3):
        pair = members(world_db, 2)
        results = in_parallel(8, lambda i, pair=pair: ensure(world_db, pair[i % 2], pair[1 - i % 2]))
        assert all(r.ok for r in results) and len({r.rows[0]["thread_id"] for r in results}) == 1
        spent = [burst - limits.tokens_left(world_db.admin, THREADS, m.uid) for m in pair]
        assert sorted(spent) == [0, 1]


def test_a_thread_inserted_through_the_table_counts(world_db: WorldDb) -> None:
    w = world_db.world
    burst = slow(world_db, THREADS)
    low, high = sorted((w.alice, w.erin), key=lambda m: m.mongo_id)
    insert = ("insert into public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, "
              "user_b_supabase_id) values (%s, %s, %s, %s, %s)")
    values = (worlds.thread_id(low.mongo_id, high.mongo_id), low.mongo_id, low.uid, high.mongo_id, high.uid)
    with world_db.db.connect() as conn:
        assert postgrest.run(conn, w.alice.persona, insert, values, method="POST", commit=True).ok
    assert limits.tokens_left(world_db.admin, THREADS, w.alice.uid) == burst - 1
    assert limits.tokens_left(world_db.admin, THREADS, w.erin.uid) == burst


# --- tuning -----------------------------------------------------------------------------------------------


def test_a_change_of_a_limit_applies_at_once_from_a_full_bucket(chat_world: WorldSession) -> None:
    conn, w = chat_world.conn, chat_world.world
    limits.use_up(conn, MESSAGES, w.alice.uid)
    limits.use_up(conn, THREADS, w.alice.uid)
    limits.configure(conn, MESSAGES, burst=3)
    assert limits.tokens_left(conn, MESSAGES, w.alice.uid) == 3
    assert limits.tokens_left(conn, THREADS, w.alice.uid) == 0  # other limits keep their buckets
    assert inserted(post(conn, w.alice.persona, rows(w, w.alice, w.bob, 3))) == 3
    refused(post(conn, w.alice.persona, rows(w, w.alice, w.bob, 4)), MESSAGES)


def test_a_new_bucket_never_keeps_values_of_a_limit_being_changed(world_db: WorldDb) -> None:
    """The first take of a key and a change of its limit wait for each other."""
    w = world_db.world
    with world_db.db.connect(admin=True, autocommit=False) as tuner:
        limits.configure(tuner, MESSAGES, burst=3)  # not committed yet
        first = in_background(lambda: send_committed(world_db, w.alice, w.bob, "rpc"))
        wait_until_blocked(world_db.admin, "chat_rate_limits")
        tuner.commit()
    assert first.result().ok
    assert limits.tokens_left(world_db.admin, MESSAGES, w.alice.uid) == 2  # 3 - 1: the new values


def in_background(work: Callable[[], Outcome]) -> Future[Outcome]:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(work)
    pool.shutdown(wait=False)
    return future


def wait_until_blocked(admin: psycopg.Connection[Any], relation: str) -> None:
    """Until some session waits for a lock held on a row of `relation`."""
    while admin.execute(
        "select not exists (select from pg_stat_activity a where a.wait_event_type = 'Lock' "
        "and a.datname = current_database() and a.pid <> pg_backend_pid())").fetchone() == (True,):
        admin.execute("select pg_sleep(0.01)")


def patch(conn: psycopg.Connection[Any], who: Persona, changes: dict[str, Any]) -> Outcome:
    """PATCH /rest/v1/chat_rate_limits?limit_name=eq.messages_per_sender"""
    assignments = ", ".join(f'"{k}" = %s' for k in changes)
    return postgrest.run(conn, who, f'update "public"."chat_rate_limits" set {assignments} where limit_name = %s '
                         "returning burst, refill_every", [*changes.values(), MESSAGES], method="PATCH",
                         path="/chat_rate_limits")


def test_service_role_tunes_the_limits_and_no_user_sees_them(chat_world: WorldSession) -> None:
    conn, w = chat_world.conn, chat_world.world
    tuned = patch(conn, personas.service(), {"burst": 40, "refill_every": "500 milliseconds", "enabled": True})
    assert tuned.rows == [{"burst": 40, "refill_every": timedelta(milliseconds=500)}]
    for field in ("description", "limit_name"):
        got = patch(conn, personas.service(), {field: "x"})
        assert (got.sqlstate, got.message) == ("42501", "permission denied for table chat_rate_limits")
    got = patch(conn, w.alice.persona, {"burst": 1000})
    assert (got.sqlstate, got.message) == ("42501", "permission denied for table chat_rate_limits")
    read = postgrest.run(conn, personas.service(), "select limit_name, burst from public.chat_rate_limits")
    assert read.ok and {r["limit_name"] for r in read.rows} >= {MESSAGES, THREADS}
    for who in (w.alice.persona, personas.anon()):
        got = postgrest.run(conn, who, "select * from public.chat_rate_limits")
        assert (got.sqlstate, got.message) == ("42501", "permission denied for table chat_rate_limits")


@pytest.mark.parametrize(("changes", "constraint"), [
    ({"burst": 0}, "chat_rate_limits_burst_1_to_1000000_check"),
    ({"burst": 1_000_001}, "chat_rate_limits_burst_1_to_1000000_check"),
    ({"refill_every": "0"}, "chat_rate_limits_refill_every_1ms_to_7days_check"),
    ({"refill_every": "-1 second"}, "chat_rate_limits_refill_every_1ms_to_7days_check"),
    ({"refill_every": "1 month"}, "chat_rate_limits_refill_every_1ms_to_7days_check"),
])
def test_bad_values_are_refused_with_a_clear_error(chat_world: WorldSession, changes: dict[str, Any],
                                                   constraint: str) -> None:
    got = patch(chat_world.conn, personas.service(), changes)
    assert (got.sqlstate, got.message) == (
        "23514", f'new row for relation "chat_rate_limits" violates check constraint "{constraint}"')


def test_a_new_limit_is_one_row_and_one_call(chat_world: WorldSession) -> None:
    conn = chat_world.conn
    conn.execute("insert into public.chat_rate_limits (limit_name, burst, refill_every, description) "
                 "values ('reports_per_user', 2, '3 minutes', 'abuse reports a user files')")

    def take(n: int = 1, key: str = "host") -> Any:
        with conn.transaction():
            return conn.execute("select chat_private.take_tokens('reports_per_user', %s, %s)", (key, n)).fetchone()

    assert [take(), take()] == [(1,), (0,)]
    with pytest.raises(psycopg.Error) as over:
        take()
    assert over.value.diag.sqlstate == "PT429"
    assert over.value.diag.message_primary == "rate limit exceeded: reports_per_user allows a burst of 2, then 1 every 180 s"
    assert over.value.diag.message_hint == "retry after 180 s"
    assert take(-1) == (1,)  # given back
    assert take(2, "other host") == (0,)
    with pytest.raises(psycopg.Error) as never:
        take(3, "third host")  # more than a burst at once
    assert never.value.diag.sqlstate == "PT429"
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        take(0)
    with pytest.raises(psycopg.errors.UndefinedObject, match="rate limit no_such_limit is not defined"):
        conn.execute("select chat_private.take_tokens('no_such_limit', 'k')")


def test_no_api_role_may_call_the_counter_itself(chat_world: WorldSession) -> None:
    conn = chat_world.conn
    for who in (personas.anon(), chat_world.world.alice.persona, personas.service()):
        got = postgrest.run(conn, who, "select chat_private.take_tokens('messages_per_sender', 'someone else', 20)",
                            method="POST")
        assert got.sqlstate == "42501", got.describe()


# --- the buckets themselves ---------------------------------------------------------------------------------


def test_every_take_is_a_hot_update(chat_world: WorldSession) -> None:
    conn, w = chat_world.conn, chat_world.world
    table = "chat_private.chat_rate_limit_buckets"
    with conn.transaction():
        conn.execute("select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                     (postgrest.claims_json(w.alice.persona),))
        conn.execute(postgrest.insert_query("chat_messages", MESSAGE_COLUMNS), [json.dumps(rows(w, w.alice, w.bob, 8))])
        conn.execute("select set_config('role', 'none', true)")
        for _ in range(5):
            conn.execute("select chat_private.take_tokens('threads_per_user', 'someone', 1)")
        updated, hot = conn.execute(f"select pg_stat_get_xact_tuples_updated('{table}'::regclass), "
                                    f"pg_stat_get_xact_tuples_hot_updated('{table}'::regclass)").fetchone()  # type: ignore[misc]
        raise psycopg.Rollback
    assert updated == hot == 7 + 4  # every take after a bucket's first


def spread_keys(prefix: str, count: int) -> list[str]:
    """Deterministic keys spread like user ids."""
    return [str(uuid.UUID(hashlib.md5(f"{prefix}{n}".encode()).hexdigest())) for n in range(count)]


def test_buckets_full_for_an_hour_are_swept_as_new_keys_arrive(world_db: WorldDb) -> None:
    admin = world_db.admin
    stale, fresh = spread_keys("stale", 1000), spread_keys("fresh", 1000)
    admin.execute("insert into chat_private.chat_rate_limit_buckets "
                  "select l.limit_name, k, now() - interval '2 hours', l.burst, l.refill_every "
                  "from public.chat_rate_limits l, unnest(%s::text[]) k where l.limit_name = %s", (stale, MESSAGES))
    # Someone is using the stale bucket right after the first new key: the sweep skips it, never waits.
    in_use = min(k for k in stale if k > fresh[0])
    with world_db.db.connect(admin=True, autocommit=False) as holder, admin.transaction():
        holder.execute("select from chat_private.chat_rate_limit_buckets where key = %s for update", (in_use,))
        admin.execute("set local lock_timeout = '1ms'")
        for key in fresh:
            admin.execute("select chat_private.take_tokens(%s, %s)", (MESSAGES, key))
        holder.rollback()
    left, total = admin.execute("select count(*) filter (where key = any(%s)), count(*) "
                                "from chat_private.chat_rate_limit_buckets", (stale,)).fetchone()  # type: ignore[misc]
    assert left < 20 and total == len(fresh) + left  # the table holds the live keys, not every key ever seen
    assert admin.execute("select count(*) from chat_private.chat_rate_limit_buckets where key = %s",
                         (in_use,)).fetchone() == (1,)
