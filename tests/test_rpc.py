"""The three RPCs through PostgREST-style requests that really commit: every row of the
error table of DESIGN §3 (exact SQLSTATE and message, nothing written), idempotency,
argument normalisation, and the absence of an existence oracle."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from dbtool.supabase import personas, postgrest
from dbtool.supabase.personas import Persona
from dbtool.supabase.postgrest import Outcome
from tests.helpers import WorldDb

SEND_TYPES = {"_client_id": "uuid"}
HISTORY_TYPES = {"_before_created_at": "timestamptz", "_before_id": "bigint", "_limit": "int"}


def call(wdb: WorldDb, who: Persona, function: str, args: dict[str, Any]) -> Outcome:
    types = {**SEND_TYPES, **HISTORY_TYPES}
    with wdb.db.connect() as conn:
        return postgrest.call(conn, who, function, args, volatile=function != "chat_history", commit=True, types=types)


def send_args(wdb: WorldDb, **overrides: Any) -> dict[str, Any]:
    w = wdb.world
    return {"_thread_id": w.thread_ab, "_sender_mongo_id": w.alice.mongo_id,
            "_recipient_mongo_id": w.bob.mongo_id, "_body": "hello", **overrides}


def assert_refused(wdb: WorldDb, who: Persona, function: str, args: dict[str, Any], sqlstate: str, message: str) -> None:
    before = wdb.counts()
    got = call(wdb, who, function, args)
    assert not got.ok, f"expected {sqlstate} {message}, got {got.describe()}"
    assert got.sqlstate == sqlstate, got.describe()
    assert got.message is not None and got.message.startswith(message), got.message
    assert wdb.counts() == before, "a refused call wrote something"


# --- no session -------------------------------------------------------------------------

RPCS = ["ensure_chat_thread", "insert_chat_message", "chat_history"]


def rpc_args(wdb: WorldDb, function: str) -> dict[str, Any]:
    w = wdb.world
    return {
        "ensure_chat_thread": {"_user_a_mongo_id": w.alice.mongo_id, "_user_b_mongo_id": w.bob.mongo_id},
        "insert_chat_message": send_args(wdb),
        "chat_history": {"_thread_id": w.thread_ab},
    }[function]


@pytest.mark.parametrize("function", RPCS)
def test_no_sub_is_not_authenticated(world_db: WorldDb, function: str) -> None:
    assert_refused(world_db, personas.authenticated_without_sub(), function, rpc_args(world_db, function),
                   "42501", "not authenticated")


@pytest.mark.parametrize("function", RPCS)
def test_service_role_without_user_is_not_authenticated(world_db: WorldDb, function: str) -> None:
    assert_refused(world_db, personas.service(), function, rpc_args(world_db, function), "42501", "not authenticated")


@pytest.mark.parametrize("function", RPCS)
def test_anon_may_not_execute(world_db: WorldDb, function: str) -> None:
    assert_refused(world_db, personas.anon(), function, rpc_args(world_db, function),
                   "42501", f"permission denied for function {function}")


# --- ensure_chat_thread ---------------------------------------------------------------------


def test_ensure_by_someone_outside_the_pair(world_db: WorldDb) -> None:
    w = world_db.world
    assert_refused(world_db, w.carol.persona, "ensure_chat_thread",
                   {"_user_a_mongo_id": w.alice.mongo_id, "_user_b_mongo_id": w.erin.mongo_id},
                   "42501", "not a participant")


def test_ensure_by_a_user_without_identity(world_db: WorldDb) -> None:
    w = world_db.world
    frank = personas.user("frank", w.frank_uid)
    assert_refused(world_db, frank, "ensure_chat_thread",
                   {"_user_a_mongo_id": w.alice.mongo_id, "_user_b_mongo_id": w.unregistered_mongo_id},
                   "42501", "not a participant")


@pytest.mark.parametrize(("a", "b", "message"), [
    ("not-a-mongo-id", "alice", "_user_a_mongo_id"),
    ("alice", "1234", "_user_b_mongo_id"),
    ("alice", None, "_user_b_mongo_id"),
    (None, "alice", "_user_a_mongo_id"),
    ("alice", "zz" * 12, "_user_b_mongo_id"),
    ("alice", "alice", "_user_b_mongo_id must differ"),
    ("alice", "ALICE", "_user_b_mongo_id must differ"),
    ("alice", "unregistered", "_user_b_mongo_id has no chat identity yet"),
    ("unregistered", "alice", "_user_a_mongo_id has no chat identity yet"),
])
def test_ensure_invalid_arguments(world_db: WorldDb, a: str | None, b: str | None, message: str) -> None:
    w = world_db.world
    ids = {"alice": w.alice.mongo_id, "ALICE": w.alice.mongo_id.upper(), "unregistered": w.unregistered_mongo_id}
    assert_refused(world_db, w.alice.persona, "ensure_chat_thread",
                   {"_user_a_mongo_id": ids.get(a, a) if a else None, "_user_b_mongo_id": ids.get(b, b) if b else None},
                   "22023", message)


def test_ensure_creates_once_in_any_order_and_case(world_db: WorldDb) -> None:
    w = world_db.world
    before = world_db.counts()["public.chat_threads"]
    first = call(world_db, w.alice.persona, "ensure_chat_thread",
                 {"_user_a_mongo_id": w.alice.mongo_id, "_user_b_mongo_id": w.erin.mongo_id.upper()})
    second = call(world_db, w.erin.persona, "ensure_chat_thread",
                  {"_user_a_mongo_id": w.erin.mongo_id, "_user_b_mongo_id": w.alice.mongo_id})
    assert first.ok and second.ok
    assert first.rows == second.rows
    row = first.rows[0]
    low, high = sorted((w.alice, w.erin), key=lambda m: m.mongo_id)
    assert row["thread_id"] == f"{low.mongo_id}_{high.mongo_id}"
    assert (row["user_a_mongo_id"], str(row["user_a_supabase_id"])) == (low.mongo_id, low.uid)
    assert (row["user_b_mongo_id"], str(row["user_b_supabase_id"])) == (high.mongo_id, high.uid)
    assert world_db.counts()["public.chat_threads"] == before + 1


def test_ensure_returns_an_existing_thread_unchanged(world_db: WorldDb) -> None:
    w = world_db.world
    created = world_db.admin.execute("select created_at from public.chat_threads where thread_id = %s",
                                     (w.thread_ab,)).fetchone()
    got = call(world_db, w.bob.persona, "ensure_chat_thread",
               {"_user_a_mongo_id": w.alice.mongo_id, "_user_b_mongo_id": w.bob.mongo_id})
    assert got.ok and got.rows[0]["thread_id"] == w.thread_ab
    assert created is not None and got.rows[0]["created_at"] == created[0]


# --- insert_chat_message --------------------------------------------------------------------


def test_send_as_someone_else(world_db: WorldDb) -> None:
    w = world_db.world
    assert_refused(world_db, w.alice.persona, "insert_chat_message",
                   send_args(world_db, _sender_mongo_id=w.bob.mongo_id, _recipient_mongo_id=w.alice.mongo_id),
                   "42501", "sender does not match caller")


def test_send_by_a_user_without_identity(world_db: WorldDb) -> None:
    assert_refused(world_db, personas.user("frank", world_db.world.frank_uid), "insert_chat_message",
                   send_args(world_db), "42501", "sender does not match caller")


@pytest.mark.parametrize("which", ["existing thread of others", "missing thread"])
def test_send_to_an_invisible_thread(world_db: WorldDb, which: str) -> None:
    w = world_db.world
    tid = w.thread_ab if which == "existing thread of others" else w.missing_thread
    assert_refused(world_db, w.carol.persona, "insert_chat_message",
                   send_args(world_db, _thread_id=tid, _sender_mongo_id=w.carol.mongo_id), "P0002", "thread not found")


@pytest.mark.parametrize(("override", "message"), [
    ({"_thread_id": "nope"}, "_thread_id"),
    ({"_thread_id": None}, "_thread_id"),
    ({"_sender_mongo_id": "xyz"}, "_sender_mongo_id"),
    ({"_recipient_mongo_id": "1" * 23}, "_recipient_mongo_id"),
    ({"_recipient_mongo_id": None}, "_recipient_mongo_id"),
    ({"_recipient_mongo_id": "alice"}, "_recipient_mongo_id must differ from _sender_mongo_id"),
    ({"_recipient_mongo_id": "carol"}, "_recipient_mongo_id is not the other participant"),
])
def test_send_invalid_arguments(world_db: WorldDb, override: dict[str, Any], message: str) -> None:
    w = world_db.world
    names = {"alice": w.alice.mongo_id, "carol": w.carol.mongo_id}
    args = send_args(world_db, **{k: names.get(v, v) if isinstance(v, str) else v for k, v in override.items()})
    assert_refused(world_db, w.alice.persona, "insert_chat_message", args, "22023", message)


@pytest.mark.parametrize(("body", "message"), [
    ("", "body must not be empty"),
    (None, "body must not be empty"),
    ("   \t\n  ", "body must not be only whitespace"),
    ("\u00a0\u2003\u3000\u200b\ufeff", "body must not be only whitespace"),
    ("x" * 4001, "body must be at most 4000 characters (got 4001)"),
    ("é" * 4001, "body must be at most 4000 characters (got 4001)"),
])
def test_send_invalid_body(world_db: WorldDb, body: str | None, message: str) -> None:
    assert_refused(world_db, world_db.world.alice.persona, "insert_chat_message", send_args(world_db, _body=body),
                   "22023", message)


@pytest.mark.parametrize("body", ["x" * 4000, " padded ", "a\u00a0b", "🙂" * 4000])
def test_send_accepts_bodies_at_the_limits(world_db: WorldDb, body: str) -> None:
    got = call(world_db, world_db.world.alice.persona, "insert_chat_message", send_args(world_db, _body=body))
    assert got.ok, got.describe()
    assert got.rows[0]["body"] == body


def test_send_fills_in_the_server_side_fields(world_db: WorldDb) -> None:
    w = world_db.world
    got = call(world_db, w.bob.persona, "insert_chat_message",
               send_args(world_db, _sender_mongo_id=w.bob.mongo_id.upper(), _recipient_mongo_id=w.alice.mongo_id))
    assert got.ok, got.describe()
    row = got.rows[0]
    assert (row["thread_id"], row["sender_mongo_id"], row["recipient_mongo_id"], str(row["sender_supabase_id"])) == (
        w.thread_ab, w.bob.mongo_id, w.alice.mongo_id, w.bob.uid)
    assert row["client_id"] is None and row["id"] > max(w.messages["ab"])


def test_retry_with_the_same_client_id_returns_the_first_row(world_db: WorldDb) -> None:
    key = str(uuid.uuid4())
    first = call(world_db, world_db.world.alice.persona, "insert_chat_message", send_args(world_db, _client_id=key))
    counts = world_db.counts()
    retry = call(world_db, world_db.world.alice.persona, "insert_chat_message",
                 send_args(world_db, _client_id=key, _body="hello (retry)"))
    assert first.ok and retry.ok
    assert retry.rows == first.rows
    assert world_db.counts() == counts, "a retry inserted or broadcast again"


def test_client_ids_are_per_sender(world_db: WorldDb) -> None:
    w = world_db.world
    key = str(uuid.uuid4())
    mine = call(world_db, w.alice.persona, "insert_chat_message", send_args(world_db, _client_id=key))
    theirs = call(world_db, w.bob.persona, "insert_chat_message",
                  send_args(world_db, _client_id=key, _sender_mongo_id=w.bob.mongo_id, _recipient_mongo_id=w.alice.mongo_id))
    assert mine.ok and theirs.ok and mine.rows[0]["id"] != theirs.rows[0]["id"]


def test_a_client_id_reused_in_another_thread_is_refused(world_db: WorldDb) -> None:
    w = world_db.world
    key = str(uuid.uuid4())
    assert call(world_db, w.alice.persona, "insert_chat_message", send_args(world_db, _client_id=key)).ok
    erin_thread = call(world_db, w.alice.persona, "ensure_chat_thread",
                       {"_user_a_mongo_id": w.alice.mongo_id, "_user_b_mongo_id": w.erin.mongo_id}).rows[0]["thread_id"]
    assert_refused(world_db, w.alice.persona, "insert_chat_message",
                   send_args(world_db, _thread_id=erin_thread, _recipient_mongo_id=w.erin.mongo_id, _client_id=key),
                   "22023", "_client_id was already used")


# --- chat_history -----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["existing thread of others", "missing thread"])
def test_history_of_an_invisible_thread(world_db: WorldDb, which: str) -> None:
    w = world_db.world
    tid = w.thread_ab if which == "existing thread of others" else w.missing_thread
    assert_refused(world_db, w.carol.persona, "chat_history", {"_thread_id": tid}, "P0002", "thread not found")


@pytest.mark.parametrize(("args", "message"), [
    ({"_limit": 0}, "_limit must be between 1 and 200"),
    ({"_limit": 201}, "_limit must be between 1 and 200"),
    ({"_limit": -5}, "_limit must be between 1 and 200"),
    ({"_limit": None}, "_limit must be between 1 and 200"),
    ({"_thread_id": "abc"}, "_thread_id"),
    ({"_before_id": 5}, "_before_created_at is required with _before_id"),
    ({"_before_created_at": "2026-01-01T00:00:00Z"}, "_before_id is required with _before_created_at"),
])
def test_history_invalid_arguments(world_db: WorldDb, args: dict[str, Any], message: str) -> None:
    w = world_db.world
    assert_refused(world_db, w.alice.persona, "chat_history", {"_thread_id": w.thread_ab, **args}, "22023", message)


def test_history_runs_in_a_read_only_transaction(world_db: WorldDb) -> None:
    # STABLE: PostgREST runs it READ ONLY, as GET requests.
    got = call(world_db, world_db.world.bob.persona, "chat_history", {"_thread_id": world_db.world.thread_ab, "_limit": 2})
    assert got.ok and [r["id"] for r in got.rows] == world_db.world.messages["ab"][:0:-1]


def test_no_existence_oracle(world_db: WorldDb) -> None:
    """An outsider cannot tell an existing thread from a missing one (thread ids are guessable)."""
    w = world_db.world
    answers = set()
    for tid in (w.thread_ab, w.missing_thread):
        for function, args in (("chat_history", {"_thread_id": tid}),
                               ("insert_chat_message", send_args(world_db, _thread_id=tid, _sender_mongo_id=w.carol.mongo_id))):
            got = call(world_db, w.carol.persona, function, args)
            answers.add((function, got.sqlstate, got.message))
    assert answers == {("chat_history", "P0002", "thread not found"), ("insert_chat_message", "P0002", "thread not found")}


@pytest.mark.parametrize("path", ["direct", "direct with a client id", "guest", "host to a guest"])
def test_the_returned_row_is_the_stored_row(world_db: WorldDb, path: str) -> None:
    """insert_chat_message builds the row it returns from what it inserted (no RETURNING,
    0010): every column equals the stored row's, the id and created_at included."""
    w = world_db.world
    g = w.guests
    who, args = {
        "direct": (w.alice.persona, send_args(world_db)),
        "direct with a client id": (w.alice.persona, send_args(world_db, _client_id=str(uuid.uuid4()))),
        "guest": (g.active.persona, {"_thread_id": g.active_thread, "_sender_mongo_id": None,
                                     "_recipient_mongo_id": None, "_body": "hello host"}),
        "host to a guest": (w.dave.persona, {"_thread_id": g.active_thread, "_sender_mongo_id": w.dave.mongo_id,
                                             "_recipient_mongo_id": None, "_body": "hello guest"}),
    }[path]
    got = call(world_db, who, "insert_chat_message", args)
    assert got.ok, got.describe()
    stored = call(world_db, who, "chat_history", {"_thread_id": args["_thread_id"], "_limit": 1})
    assert stored.ok and stored.rows[0]["body"] == args["_body"], stored.describe()
    assert got.rows == stored.rows, "the send returned another row than the one stored"
    key = args.get("_client_id")
    assert stored.rows[0]["client_id"] == (uuid.UUID(key) if key else None)
