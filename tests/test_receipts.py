"""Receipts and the inbox (DESIGN §9) through PostgREST-style requests that really commit:
every error (exact SQLSTATE and message, nothing written), monotonic cursors, reading
implies delivered, the DELIVERED/READ events on the thread's topic, the inbox's rows, and
guest threads on the same code path."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from dbtool.policy.worlds import Member
from dbtool.supabase import personas, postgrest, realtime
from dbtool.supabase.personas import Persona
from dbtool.supabase.postgrest import Outcome
from tests.helpers import WorldDb

TYPES = {"_up_to_id": "bigint", "_limit": "int", "_before_activity_at": "timestamptz", "_ttl": "interval", "_link_id": "uuid",
         "_max_guests": "int"}
READ_ONLY = {"chat_inbox", "chat_history"}


def call(wdb: WorldDb, who: Persona, function: str, args: dict[str, Any], notices: list[str] | None = None) -> Outcome:
    with wdb.db.connect() as conn:
        if notices is not None:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        return postgrest.call(conn, who, function, args, volatile=function not in READ_ONLY, commit=True, types=TYPES)


def ok(got: Outcome) -> list[dict[str, Any]]:
    assert got.ok, got.describe()
    return got.rows


def mark(wdb: WorldDb, who: Member | Persona, function: str, up_to: int, thread: str | None = None,
         notices: list[str] | None = None) -> dict[str, Any]:
    persona = who.persona if isinstance(who, Member) else who
    rows = ok(call(wdb, persona, function, {"_thread_id": thread or wdb.world.thread_ab, "_up_to_id": up_to}, notices))
    assert len(rows) == 1
    return rows[0]


def cursors(row: dict[str, Any]) -> tuple[int, int]:
    return row["delivered_up_to"], row["read_up_to"]


def receipt_rows(wdb: WorldDb) -> list[tuple[Any, ...]]:
    return wdb.admin.execute("select * from public.chat_receipts order by thread_id, supabase_user_id").fetchall()


def events(wdb: WorldDb, thread: str) -> list[tuple[str, dict[str, Any]]]:
    rows = wdb.admin.execute(
        "select event, payload from realtime.messages where topic = %s and event in ('DELIVERED', 'READ') "
        "order by inserted_at, (payload ->> 'up_to_id')::bigint", (f"chat:{thread}",)).fetchall()
    return [(e, p) for e, p in rows]


def send(wdb: WorldDb, sender: Member, recipient: Member, body: str, thread: str | None = None) -> int:
    got = call(wdb, sender.persona, "insert_chat_message",
               {"_thread_id": thread or wdb.world.thread_ab, "_sender_mongo_id": sender.mongo_id,
                "_recipient_mongo_id": recipient.mongo_id, "_body": body})
    return int(ok(got)[0]["id"])


def assert_refused(wdb: WorldDb, who: Persona, function: str, args: dict[str, Any], sqlstate: str, message: str) -> None:
    before = wdb.counts()
    got = call(wdb, who, function, args)
    assert not got.ok, f"expected {sqlstate} {message}, got {got.describe()}"
    assert (got.sqlstate, (got.message or "")[: len(message)]) == (sqlstate, message), got.describe()
    assert wdb.counts() == before, "a refused call wrote something"


# --- errors -------------------------------------------------------------------------------

MARKS = ["mark_chat_delivered", "mark_chat_read"]


def rpc_args(wdb: WorldDb, function: str) -> dict[str, Any]:
    if function == "chat_inbox":
        return {}
    return {"_thread_id": wdb.world.thread_ab, "_up_to_id": wdb.world.messages["ab"][0]}


@pytest.mark.parametrize("function", [*MARKS, "chat_inbox"])
def test_no_session_and_anon(world_db: WorldDb, function: str) -> None:
    args = rpc_args(world_db, function)
    assert_refused(world_db, personas.authenticated_without_sub(), function, args, "42501", "not authenticated")
    assert_refused(world_db, personas.service(), function, args, "42501", "not authenticated")
    assert_refused(world_db, personas.anon(), function, args, "42501", f"permission denied for function {function}")


@pytest.mark.parametrize("function", MARKS)
@pytest.mark.parametrize("which", ["outsider", "missing", "upper-case outsider"])
def test_invisible_and_missing_threads_give_one_answer(world_db: WorldDb, function: str, which: str) -> None:
    w = world_db.world
    thread = {"outsider": w.thread_ab, "missing": w.missing_thread, "upper-case outsider": w.thread_ab.upper()}[which]
    # carol passes a real message id of ab: still no hint that the thread exists
    assert_refused(world_db, w.carol.persona, function, {"_thread_id": thread, "_up_to_id": w.messages["ab"][0]},
                   "P0002", "thread not found")


@pytest.mark.parametrize("function", MARKS)
@pytest.mark.parametrize(("args", "message"), [
    ({"_thread_id": None}, "_thread_id must look like"),
    ({"_thread_id": "not-a-thread"}, "_thread_id must look like"),
    ({"_up_to_id": None}, "_up_to_id must be the id of a message"),
    ({"_up_to_id": 0}, "_up_to_id must be the id of a message"),
    ({"_up_to_id": -5}, "_up_to_id must be the id of a message"),
    ({"_up_to_id": "cd"}, "_up_to_id is not a message of this thread"),
    ({"_up_to_id": "missing"}, "_up_to_id is not a message of this thread"),
])
def test_invalid_arguments(world_db: WorldDb, function: str, args: dict[str, Any], message: str) -> None:
    w = world_db.world
    up_to = {"cd": w.messages["cd"][0], "missing": max(w.messages["cd"]) + 1000}.get(args.get("_up_to_id"),  # type: ignore[arg-type]
                                                                                     args.get("_up_to_id"))
    full = {"_thread_id": w.thread_ab, "_up_to_id": w.messages["ab"][0], **args}
    if "_up_to_id" in args:
        full["_up_to_id"] = up_to
    assert_refused(world_db, w.alice.persona, function, full, "22023", message)


THREAD_ID = r"^(?:[0-9a-f]{24}_[0-9a-f]{24}|g_[0-9a-f]{32})$"  # DESIGN §3 and §8, as 0008 wrote it
HEX24 = "0123456789abcdef01234567"
TRICKY_THREAD_IDS = [
    f"{HEX24}_{HEX24}", f"{HEX24.upper()}_{HEX24}", "g_" + "ab" * 16, "G_" + "ab" * 16,
    f"{HEX24}_{HEX24}0", f"{HEX24[:-1]}_{HEX24}0", f"{HEX24}__{HEX24[1:]}", f"{HEX24}-{HEX24}", f"{HEX24}_{HEX24[:-1]}g",
    f"{HEX24}_{HEX24[:-1]}\n", f" {HEX24}_{HEX24[1:]}", "g_" + "ab" * 15 + "a", "g_" + "ab" * 16 + "a",
    "g__" + "ab" * 15 + "a", "g_" + "ab" * 15 + "a_", "gg" + "ab" * 16, "g_" + "ａ" * 32, f"{HEX24}_{HEX24[:-1]}é",
    "", "_", "g_", f"{HEX24}_",
]


@pytest.mark.parametrize("function", MARKS)
def test_the_thread_id_check_is_the_regular_expression(world_db: WorldDb, function: str) -> None:
    """0009 checks _thread_id with string functions; they accept exactly what 0008's regular
    expression accepted (after lower())."""
    w = world_db.world
    for thread in TRICKY_THREAD_IDS:
        expected = world_db.admin.execute("select lower(%s) ~ %s", (thread, THREAD_ID)).fetchone()
        got = call(world_db, w.alice.persona, function, {"_thread_id": thread, "_up_to_id": w.messages["ab"][0]})
        assert not got.ok, thread
        shape_refused = got.sqlstate == "22023" and (got.message or "").startswith("_thread_id must look like")
        assert expected is not None and shape_refused == (not expected[0]), (thread, got.describe())
        if expected[0]:
            assert (got.sqlstate, got.message) == ("P0002", "thread not found"), thread


@pytest.mark.parametrize(("args", "message"), [
    ({"_limit": 0}, "_limit must be between 1 and 100"),
    ({"_limit": 101}, "_limit must be between 1 and 100"),
    ({"_limit": None}, "_limit must be between 1 and 100"),
    ({"_before_activity_at": "2026-01-01T00:00:00Z"}, "_before_thread_id is required"),
    ({"_before_thread_id": "x"}, "_before_activity_at is required"),
])
def test_inbox_invalid_arguments(world_db: WorldDb, args: dict[str, Any], message: str) -> None:
    assert_refused(world_db, world_db.world.alice.persona, "chat_inbox", args, "22023", message)


def test_inbox_runs_in_a_read_only_transaction(world_db: WorldDb) -> None:
    got = call(world_db, world_db.world.alice.persona, "chat_inbox", {"_limit": 100})
    assert [r["thread_id"] for r in ok(got)] == [world_db.world.thread_ab]


# --- cursors --------------------------------------------------------------------------------


def test_cursors_only_move_forward_and_a_lower_id_writes_nothing(world_db: WorldDb) -> None:
    w = world_db.world
    m1, m2, m3 = w.messages["ab"]
    assert cursors(mark(world_db, w.alice, "mark_chat_delivered", m2)) == (m2, 0)
    assert cursors(mark(world_db, w.alice, "mark_chat_read", m1)) == (m2, m1)
    state = receipt_rows(world_db)
    sent = events(world_db, w.thread_ab)
    for function, up_to in (("mark_chat_delivered", m1), ("mark_chat_delivered", m2), ("mark_chat_read", m1)):
        assert cursors(mark(world_db, w.alice, function, up_to)) == (m2, m1)
    assert receipt_rows(world_db) == state, "a call that moves nothing wrote"
    assert events(world_db, w.thread_ab) == sent, "a call that moves nothing broadcast"
    assert cursors(mark(world_db, w.alice, "mark_chat_read", m3)) == (m3, m3)  # reading implies delivered
    assert cursors(mark(world_db, w.alice, "mark_chat_delivered", m2)) == (m3, m3)


def test_reading_below_the_delivered_cursor_keeps_it(world_db: WorldDb) -> None:
    w = world_db.world
    m1, _, m3 = w.messages["ab"]
    assert cursors(mark(world_db, w.bob, "mark_chat_delivered", m3)) == (m3, m1)  # bob: delivered m2, read m1
    row = world_db.admin.execute("select delivered_at from public.chat_receipts where supabase_user_id = %s",
                                 (w.bob.uid,)).fetchone()
    assert cursors(mark(world_db, w.bob, "mark_chat_read", w.messages["ab"][1])) == (m3, w.messages["ab"][1])
    assert world_db.admin.execute("select delivered_at from public.chat_receipts where supabase_user_id = %s",
                                  (w.bob.uid,)).fetchone() == row


def test_cursors_are_per_participant(world_db: WorldDb) -> None:
    w = world_db.world
    mark(world_db, w.alice, "mark_chat_read", w.messages["ab"][2])
    rows = {r[1]: (r[2], r[3]) for r in receipt_rows(world_db) if r[0] == w.thread_ab}
    assert rows == {uuid.UUID(w.alice.uid): (w.messages["ab"][2], w.messages["ab"][2]),
                    uuid.UUID(w.bob.uid): (w.messages["ab"][1], w.messages["ab"][0])}


def test_participants_read_the_cursors_of_their_threads_only(world_db: WorldDb) -> None:
    w = world_db.world
    with world_db.db.connect() as conn:
        seen = {name: {(r["thread_id"], str(r["supabase_user_id"])) for r in ok(postgrest.run(
            conn, m.persona, "select thread_id, supabase_user_id from public.chat_receipts"))}
            for name, m in (("alice", w.alice), ("carol", w.carol), ("erin", w.erin))}
        update = postgrest.run(conn, w.bob.persona, "update public.chat_receipts set read_up_to = 0", method="PATCH")
    assert seen == {"alice": {(w.thread_ab, w.bob.uid)}, "carol": {(w.thread_cd, w.dave.uid)}, "erin": set()}
    assert (update.sqlstate, update.message) == ("42501", "permission denied for table chat_receipts")


# --- events -----------------------------------------------------------------------------------


def test_a_move_broadcasts_one_event_the_other_participant_receives(world_db: WorldDb) -> None:
    w = world_db.world
    m3 = w.messages["ab"][2]
    row = mark(world_db, w.bob, "mark_chat_read", m3)
    assert cursors(row) == (m3, m3)
    topic = f"chat:{w.thread_ab}"
    sent = world_db.admin.execute(
        "select id, event, extension, private, payload from realtime.messages where topic = %s and event = 'READ'",
        (topic,)).fetchall()
    assert len(sent) == 1
    event_id, event, extension, private, payload = sent[0]
    at = world_db.admin.execute("select read_at from public.chat_receipts where supabase_user_id = %s",
                                (w.bob.uid,)).fetchone()
    assert (event, extension, private) == ("READ", "broadcast", True)
    # realtime.send adds the message id (as Supabase's does)
    assert set(payload) == {"thread_id", "reader_supabase_id", "up_to_id", "at", "id"}
    assert payload["id"] == str(event_id)
    assert (payload["thread_id"], payload["reader_supabase_id"], payload["up_to_id"]) == (w.thread_ab, w.bob.uid, m3)
    assert at is not None
    with world_db.db.connect(admin=True) as conn:
        assert conn.execute("select %s::timestamptz = %s", (payload["at"], at[0])).fetchone() == (True,)
        # Realtime authorises alice's channel and shows her the event row; not carol.
        assert realtime.read_check(conn, w.alice.persona, topic).can_join
        assert realtime.visible(conn, w.alice.persona, topic, [event_id]) == {event_id}
        assert realtime.visible(conn, w.carol.persona, topic, [event_id]) == set()
        assert not realtime.read_check(conn, w.carol.persona, topic).can_join


def test_delivered_events_and_no_event_without_a_move(world_db: WorldDb) -> None:
    w = world_db.world
    m1, m2, m3 = w.messages["ab"]
    mark(world_db, w.alice, "mark_chat_delivered", m2)
    mark(world_db, w.alice, "mark_chat_delivered", m1)  # no move
    mark(world_db, w.alice, "mark_chat_read", m1)
    mark(world_db, w.alice, "mark_chat_read", m1)  # no move
    mark(world_db, w.alice, "mark_chat_delivered", m3)
    got = [(e, p["up_to_id"], p["reader_supabase_id"]) for e, p in events(world_db, w.thread_ab)]
    assert got == [("DELIVERED", m2, w.alice.uid), ("READ", m1, w.alice.uid), ("DELIVERED", m3, w.alice.uid)]


def test_clients_cannot_broadcast_receipt_events(world_db: WorldDb) -> None:
    """Only the database broadcasts DELIVERED/READ: a client's Realtime write of these events
    on a chat topic is refused, for participants and outsiders alike."""
    w = world_db.world
    topic = f"chat:{w.thread_ab}"
    refused = {}
    with world_db.db.connect() as conn:
        for who in (w.alice, w.bob, w.carol):
            for event in ("DELIVERED", "READ"):
                try:
                    with conn.transaction(force_rollback=True):
                        conn.execute(
                            "select set_config('role', 'authenticated', true), set_config('realtime.topic', %s, true), "
                            "set_config('request.jwt.claims', %s, true), set_config('request.jwt.claim.sub', %s, true)",
                            (topic, postgrest.claims_json(who.persona), who.uid))
                        conn.execute(
                            "insert into realtime.messages (topic, extension, event, payload, private) "
                            "values (%s, 'broadcast', %s, %s, true)",
                            (topic, event, psycopg.types.json.Jsonb(
                                {"thread_id": w.thread_ab, "reader_supabase_id": w.bob.uid,
                                 "up_to_id": w.messages["ab"][2], "at": "2026-01-01T00:00:00Z"})))
                    refused[(who.name, event)] = None
                except psycopg.errors.InsufficientPrivilege as exc:
                    refused[(who.name, event)] = exc.diag.message_primary
    assert all(m and m.startswith("new row violates row-level security policy") for m in refused.values()), refused


def test_a_broken_realtime_function_never_fails_the_cursor(world_db: WorldDb) -> None:
    w = world_db.world
    world_db.admin.execute("alter function realtime.send(jsonb, text, text, boolean) rename to send_moved")
    notices: list[str] = []
    assert cursors(mark(world_db, w.alice, "mark_chat_read", w.messages["ab"][1], notices=notices)) == (
        w.messages["ab"][1], w.messages["ab"][1])
    assert len(notices) == 1
    assert notices[0].startswith(f"chat receipt READ up to {w.messages['ab'][1]} saved but not broadcast to "
                                 f"chat:{w.thread_ab}")


def test_a_mark_behind_a_realtime_table_lock_keeps_the_cursor(world_db: WorldDb) -> None:
    w = world_db.world
    notices: list[str] = []
    with world_db.db.connect(admin=True) as holder, holder.transaction(force_rollback=True):
        holder.execute("lock table realtime.messages in access exclusive mode")
        row = mark(world_db, w.alice, "mark_chat_delivered", w.messages["ab"][2], notices=notices)
    assert cursors(row) == (w.messages["ab"][2], 0)
    assert len(notices) == 1 and "lock timeout" in notices[0]
    assert events(world_db, w.thread_ab) == []
    assert world_db.admin.execute("select delivered_up_to from public.chat_receipts where supabase_user_id = %s",
                                  (w.alice.uid,)).fetchone() == (w.messages["ab"][2],)


def test_the_broadcast_leaves_no_channel_setting_behind(world_db: WorldDb) -> None:
    w = world_db.world
    with world_db.db.connect() as conn, postgrest.request(conn, w.alice.persona, method="POST"):
        before = conn.execute("select current_setting('lock_timeout')").fetchone()
        conn.execute("select * from public.mark_chat_read(%s, %s)", (w.thread_ab, w.messages["ab"][2]))
        assert conn.execute("select realtime.topic()").fetchone() == (None,)
        assert conn.execute("select current_setting('lock_timeout')").fetchone() == before


# --- the inbox --------------------------------------------------------------------------------


def test_inbox_rows_for_both_participants(world_db: WorldDb) -> None:
    w = world_db.world
    long_body = "x" * 150 + "é" * 100  # 250 characters, multi-byte: cut by characters
    last = send(world_db, w.bob, w.alice, long_body)
    (alice_row,) = ok(call(world_db, w.alice.persona, "chat_inbox", {}))
    (bob_row,) = ok(call(world_db, w.bob.persona, "chat_inbox", {}))
    created = world_db.admin.execute("select created_at from public.chat_messages where id = %s", (last,)).fetchone()
    assert created is not None
    common = {"thread_id": w.thread_ab, "kind": "direct", "other_display_name": None, "last_message_id": last,
              "last_sender_supabase_id": uuid.UUID(w.bob.uid), "last_message_at": created[0],
              "last_body": long_body[:200], "activity_at": created[0], "guest_status": None}
    # alice: bob's "hi alice" and the long one are unread; bob's cursors are his (m2, m1)
    assert alice_row == {**common, "other_mongo_id": w.bob.mongo_id, "unread": 2,
                         "delivered_up_to": w.messages["ab"][1], "read_up_to": w.messages["ab"][0]}
    # bob read up to m1: alice's m3 is unread; alice has no receipt yet
    assert bob_row == {**common, "other_mongo_id": w.alice.mongo_id, "unread": 1, "delivered_up_to": 0,
                       "read_up_to": 0}
    mark(world_db, w.alice, "mark_chat_read", w.messages["ab"][1])
    (alice_row,) = ok(call(world_db, w.alice.persona, "chat_inbox", {}))
    (bob_row,) = ok(call(world_db, w.bob.persona, "chat_inbox", {}))
    assert alice_row["unread"] == 1
    assert (bob_row["delivered_up_to"], bob_row["read_up_to"]) == (w.messages["ab"][1], w.messages["ab"][1])


def test_inbox_orders_by_activity_and_pages_by_keyset(world_db: WorldDb) -> None:
    """Threads without messages sort by creation; equal activity times tie by thread_id."""
    w = world_db.world
    for partner in (w.alice, w.bob, w.carol, w.dave):
        ok(call(world_db, w.erin.persona, "ensure_chat_thread",
                {"_user_a_mongo_id": w.erin.mongo_id, "_user_b_mongo_id": partner.mongo_id}))
    threads = {r["thread_id"] for r in ok(call(world_db, w.erin.persona, "chat_inbox", {"_limit": 100}))}
    # erin also hosts the world's other guest link: otto's thread, with his message, made before the rest
    assert threads - {w.guests.other_thread} == {_tid(w.erin, p) for p in (w.alice, w.bob, w.carol, w.dave)}
    # one message in two threads, in one transaction: the same created_at
    with world_db.admin.transaction():
        for partner in (w.alice, w.carol):
            world_db.admin.execute(
                "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
                "body) values (%s, %s, %s, %s, 'same second')",
                (_tid(w.erin, partner), partner.mongo_id, w.erin.mongo_id, partner.uid))
    everything = ok(call(world_db, w.erin.persona, "chat_inbox", {"_limit": 100}))
    keys = [(r["activity_at"], r["thread_id"]) for r in everything]
    assert keys == sorted(keys, reverse=True)
    assert everything[0]["activity_at"] == everything[1]["activity_at"]
    assert {everything[0]["thread_id"], everything[1]["thread_id"]} == {_tid(w.erin, w.alice), _tid(w.erin, w.carol)}
    assert [r["unread"] for r in everything] == [1, 1, 0, 0, 1]
    assert everything[-1]["thread_id"] == w.guests.other_thread
    paged: list[dict[str, Any]] = []
    args: dict[str, Any] = {"_limit": 1}
    while True:
        page = ok(call(world_db, w.erin.persona, "chat_inbox", args))
        if not page:
            break
        paged += page
        args = {"_limit": 1, "_before_activity_at": page[-1]["activity_at"], "_before_thread_id": page[-1]["thread_id"]}
    assert paged == everything


def _tid(x: Member, y: Member) -> str:
    low, high = sorted((x.mongo_id, y.mongo_id))
    return f"{low}_{high}"


# --- guest threads -----------------------------------------------------------------------------


def _guest(wdb: WorldDb, name: str = "Dave guest") -> tuple[Persona, str]:
    """An anonymous user who redeemed a link of alice's: (their persona, the guest thread)."""
    uid = str(uuid.uuid4())
    wdb.admin.execute("insert into auth.users (id, is_anonymous) values (%s, true)", (uid,))
    token = ok(call(wdb, wdb.world.alice.persona, "create_chat_link", {}))[0]["token"]
    guest = personas.anonymous("guest", uid)
    thread = ok(call(wdb, guest, "redeem_chat_link", {"_token": token, "_display_name": name}))[0]["thread_id"]
    return guest, thread


def test_guest_threads_take_the_same_path(world_db: WorldDb) -> None:
    w = world_db.world
    guest, thread = _guest(world_db)
    sent = ok(call(world_db, guest, "insert_chat_message",
                   {"_thread_id": thread, "_sender_mongo_id": None, "_recipient_mongo_id": None, "_body": "hello host"}))
    guest_message = int(sent[0]["id"])
    host_rows = {r["thread_id"]: r for r in ok(call(world_db, w.alice.persona, "chat_inbox", {}))}
    assert set(host_rows) == {thread, w.thread_ab}
    assert next(iter(host_rows)) == thread  # the newest activity first
    row = host_rows[thread]
    assert (row["kind"], row["other_mongo_id"], row["other_display_name"], row["guest_status"], row["unread"],
            row["last_body"], row["last_sender_supabase_id"]) == (
        "guest", None, "Dave guest", "active", 1, "hello host", uuid.UUID(guest.sub or ""))
    (guest_row,) = ok(call(world_db, guest, "chat_inbox", {}))
    assert (guest_row["thread_id"], guest_row["kind"], guest_row["other_mongo_id"], guest_row["other_display_name"],
            guest_row["unread"], guest_row["guest_status"]) == (thread, "guest", w.alice.mongo_id, None, 0, "active")

    assert cursors(mark(world_db, w.alice, "mark_chat_read", guest_message, thread=thread)) == (guest_message,) * 2
    assert cursors(mark(world_db, guest, "mark_chat_delivered", guest_message, thread=thread)) == (guest_message, 0)
    (guest_row,) = ok(call(world_db, guest, "chat_inbox", {}))
    assert (guest_row["delivered_up_to"], guest_row["read_up_to"]) == (guest_message, guest_message)
    assert [(e, p["reader_supabase_id"]) for e, p in events(world_db, thread)] == [
        ("READ", w.alice.uid), ("DELIVERED", guest.sub)]
    assert_refused(world_db, w.bob.persona, "mark_chat_read", {"_thread_id": thread, "_up_to_id": guest_message},
                   "P0002", "thread not found")

    # The host ends the session: the guest sees nothing, the host keeps the thread.
    ok(call(world_db, w.alice.persona, "end_chat_guest", {"_thread_id": thread}))
    for function in MARKS:
        assert_refused(world_db, guest, function, {"_thread_id": thread, "_up_to_id": guest_message},
                       "P0002", "thread not found")
    assert ok(call(world_db, guest, "chat_inbox", {})) == []
    row = {r["thread_id"]: r for r in ok(call(world_db, w.alice.persona, "chat_inbox", {}))}[thread]
    assert row["guest_status"] == "ended"
    with world_db.db.connect() as conn:
        assert ok(postgrest.run(conn, guest, "select * from public.chat_receipts")) == []
        assert len(ok(postgrest.run(conn, w.alice.persona, "select * from public.chat_receipts where thread_id = %s",
                                    (thread,)))) == 2


@pytest.mark.parametrize("how", ["expired", "link revoked"])
def test_a_guest_whose_session_is_over_gets_thread_not_found(world_db: WorldDb, how: str) -> None:
    w = world_db.world
    guest, thread = _guest(world_db)
    sent = ok(call(world_db, w.alice.persona, "insert_chat_message",
                   {"_thread_id": thread, "_sender_mongo_id": w.alice.mongo_id, "_recipient_mongo_id": None,
                    "_body": "welcome"}))
    message = int(sent[0]["id"])
    if how == "expired":
        world_db.admin.execute("update public.chat_threads set guest_expires_at = now() - interval '1 second' "
                               "where thread_id = %s", (thread,))
    else:
        link = world_db.admin.execute("select guest_link_id from public.chat_threads where thread_id = %s",
                                      (thread,)).fetchone()
        assert link is not None
        ok(call(world_db, w.alice.persona, "revoke_chat_link", {"_link_id": str(link[0])}))
    for function in MARKS:
        assert_refused(world_db, guest, function, {"_thread_id": thread, "_up_to_id": message},
                       "P0002", "thread not found")
    assert ok(call(world_db, guest, "chat_inbox", {})) == []
    row = {r["thread_id"]: r for r in ok(call(world_db, w.alice.persona, "chat_inbox", {}))}[thread]
    assert (row["guest_status"], row["other_display_name"], row["last_message_id"]) == ("ended", "Dave guest", message)
