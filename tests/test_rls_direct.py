"""Direct table writes through PostgREST (POST /chat_threads, /chat_messages): the RPCs
are SECURITY INVOKER, so constraints, foreign keys and policies alone must keep every row in
the form the RPCs create, with a clear SQLSTATE and nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from dbtool import postgrest
from dbtool.world import Member
from tests.conftest import WorldDb

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


@pytest.mark.parametrize(("body", "sqlstate"), [("", "23514"), ("   ", "23514"), ("x" * 4001, "23514")])
def test_direct_messages_obey_the_body_rule(world_db: WorldDb, body: str, sqlstate: str) -> None:
    w = world_db.world
    got = post(world_db, w.alice, INSERT_MESSAGE, (w.thread_ab, w.alice.mongo_id, w.bob.mongo_id, w.alice.uid, body))
    assert (got.ok, got.sqlstate) == (False, sqlstate)
    assert 'violates check constraint "chat_messages_body_check"' in (got.message or "")


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
