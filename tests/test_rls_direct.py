"""Direct table writes through PostgREST (POST /chat_threads, /chat_messages): the RPCs
are SECURITY INVOKER, so constraints, foreign keys and policies alone must keep every row in
the form the RPCs create, with a clear SQLSTATE and nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from dbtool.policy.worlds import Member
from dbtool.supabase import postgrest
from tests.helpers import WorldDb

INSERT_THREAD = ("insert into public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, "
                 "user_b_supabase_id) values (%s, %s, %s, %s, %s)")
INSERT_MESSAGE = ("insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
                  "body) values (%s, %s, %s, %s, %s)")


def post(wdb: WorldDb, who: Member, query: str, params: tuple[Any, ...]) -> postgrest.Outcome:
    before = wdb.counts()
    with wdb.db.connect() as conn:
        got = postgrest.run(conn, who.persona, query, params, method="POST", commit=True)
    if not got.ok:
        assert wdb.counts() == before
    return got


def thread_row(a: Member, b: Member) -> tuple[str, str, str, str, str]:
    low, high = sorted((a, b), key=lambda m: m.mongo_id)
    return f"{low.mongo_id}_{high.mongo_id}", low.mongo_id, low.uid, high.mongo_id, high.uid


def test_a_participant_may_create_their_thread_in_the_canonical_form(world_db: WorldDb) -> None:
    w = world_db.world
    assert post(world_db, w.alice, INSERT_THREAD, thread_row(w.alice, w.erin)).ok


@pytest.mark.parametrize(("change", "sqlstate", "constraint"), [
    ("thread id not derived from the pair", "23514", "chat_threads_thread_id_check"),
    ("pair in the wrong order", "23514", "chat_threads_pair_order_check"),
    ("partner's Supabase id does not match the identity map", "23503", "chat_threads_user_"),
    ("partner's Mongo id has no identity", "23503", "chat_threads_user_"),
])
def test_malformed_threads_are_refused(world_db: WorldDb, change: str, sqlstate: str, constraint: str) -> None:
    w = world_db.world
    tid, a_m, a_u, b_m, b_u = thread_row(w.alice, w.erin)
    row = {
        "thread id not derived from the pair": (tid.upper(), a_m, a_u, b_m, b_u),
        "pair in the wrong order": (f"{b_m}_{a_m}", b_m, b_u, a_m, a_u),
        "partner's Supabase id does not match the identity map": (
            tid, a_m, a_u if a_u == w.alice.uid else w.frank_uid, b_m, b_u if b_u == w.alice.uid else w.frank_uid),
        "partner's Mongo id has no identity": thread_row(w.alice, Member("x", w.frank_uid, w.unregistered_mongo_id, "")),
    }[change]
    with world_db.db.connect() as conn:
        before = world_db.counts()
        got = postgrest.run(conn, w.alice.persona, INSERT_THREAD, row, method="POST", commit=True)
        assert world_db.counts() == before
    assert (got.ok, got.sqlstate) == (False, sqlstate), got.describe()
    assert constraint in (got.message or ""), got.message


@pytest.mark.parametrize(("body", "constraint"), [
    ("", "chat_messages_body_blank_check"),  # breaks both; PostgreSQL reports the first by name
    ("x" * 4001, "chat_messages_body_length_check"),
    ("   ", "chat_messages_body_blank_check"),
    ("\u3000\u200b", "chat_messages_body_blank_check"),
])
def test_direct_messages_obey_the_body_rule(world_db: WorldDb, body: str, constraint: str) -> None:
    w = world_db.world
    got = post(world_db, w.alice, INSERT_MESSAGE, (w.thread_ab, w.alice.mongo_id, w.bob.mongo_id, w.alice.uid, body))
    assert (got.ok, got.sqlstate) == (False, "23514")
    assert f'violates check constraint "{constraint}"' in (got.message or "")


BODIES = ["", " ", "x", " x ", "\t\n", "\u00a0", "a\u00a0", "\u2000\u200a", "\u200b", "\u2060x", "\ufeff",
          "\u3000", "\u0085", "\u180e", "\u202f\u205f", "x" * 4000, "x" * 4001, "é" * 4000, "é" * 4001,
          "🙂", " 🙂 ", "\u2028\u2029", "line\nbreak", "\r\n"]


def test_table_checks_and_rpc_rule_agree(world_db: WorldDb) -> None:
    """The inline table constraints and chat_private.chat_body_problem (used by the RPC for its
    messages) are two statements of one rule: they must accept and refuse the same bodies."""
    checks = [r[0] for r in world_db.admin.execute(
        "select pg_get_expr(conbin, conrelid) from pg_constraint "
        "where conrelid = 'public.chat_messages'::regclass and conname like 'chat\\_messages\\_body\\_%'")]
    assert len(checks) == 2
    for body in BODIES:
        by_table = world_db.admin.execute(
            f"select {' and '.join(checks)} from (select %s::text as body) t", (body,)).fetchone()
        by_rule = world_db.admin.execute("select chat_private.chat_body_problem(%s) is null", (body,)).fetchone()
        assert by_table == by_rule, f"the two rules disagree on {body!r}"


def test_direct_message_to_the_wrong_recipient_is_refused(world_db: WorldDb) -> None:
    w = world_db.world
    got = post(world_db, w.alice, INSERT_MESSAGE, (w.thread_ab, w.alice.mongo_id, w.carol.mongo_id, w.alice.uid, "hi"))
    assert (got.ok, got.sqlstate) == (False, "42501")
    assert got.message == 'new row violates row-level security policy for table "chat_messages"'


def test_direct_message_is_broadcast_like_any_other(world_db: WorldDb) -> None:
    w = world_db.world
    before = world_db.counts()["realtime.messages"]
    assert post(world_db, w.bob, INSERT_MESSAGE, (w.thread_ab, w.bob.mongo_id, w.alice.mongo_id, w.bob.uid, "direct")).ok
    assert world_db.counts()["realtime.messages"] == before + 1
