"""The broadcast trigger and the chat policies on realtime.messages, beyond the matrix."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from dbtool.supabase import personas, postgrest, realtime
from tests.helpers import WorldDb


def send(wdb: WorldDb, body: str = "hi") -> tuple[dict[str, Any], list[str]]:
    w = wdb.world
    warnings: list[str] = []
    with wdb.db.connect() as conn:
        conn.add_notice_handler(lambda d: warnings.append(d.message_primary or ""))
        got = postgrest.call(conn, w.alice.persona, "insert_chat_message",
                             {"_thread_id": w.thread_ab, "_sender_mongo_id": w.alice.mongo_id,
                              "_recipient_mongo_id": w.bob.mongo_id, "_body": body}, commit=True)
    assert got.ok, got.describe()
    return got.rows[0], warnings


def test_each_message_is_broadcast_to_its_private_topic(world_db: WorldDb) -> None:
    row, warnings = send(world_db, "payload check")
    broadcast = world_db.admin.execute(
        "select topic, event, extension, private, payload from realtime.messages "
        "where payload -> 'record' ->> 'id' = %s", (str(row["id"]),)
    ).fetchall()
    assert warnings == []
    assert len(broadcast) == 1
    topic, event, extension, private, payload = broadcast[0]
    assert (topic, event, extension, private) == (f"chat:{world_db.world.thread_ab}", "INSERT", "broadcast", True)
    assert (payload["operation"], payload["table"], payload["schema"], payload["old_record"]) == (
        "INSERT", "chat_messages", "public", None)
    record = payload["record"]
    assert record["id"] == row["id"] and record["body"] == "payload check"
    assert record["sender_supabase_id"] == world_db.world.alice.uid
    assert set(record) == {"id", "thread_id", "sender_mongo_id", "recipient_mongo_id", "sender_supabase_id", "body",
                           "created_at", "client_id"}


def test_broadcast_happens_although_the_sender_may_not_write_broadcasts(world_db: WorldDb) -> None:
    # Participants may not write broadcast on chat topics themselves (checked here), yet
    # their messages are broadcast: the trigger runs with the owner's rights.
    w = world_db.world
    with world_db.db.connect() as conn:
        assert realtime.write_check(conn, w.alice.persona, f"chat:{w.thread_ab}").allowed == {
            "broadcast": False, "presence": True}
    row, _ = send(world_db)
    assert world_db.admin.execute(
        "select count(*) from realtime.messages where payload -> 'record' ->> 'id' = %s", (str(row["id"]),)
    ).fetchone() == (1,)


def test_a_missing_partition_loses_no_message(world_db: WorldDb) -> None:
    today = datetime.now(UTC).strftime("%Y_%m_%d")
    world_db.admin.execute(f"drop table realtime.messages_{today}")
    row, warnings = send(world_db, "kept without broadcast")
    assert world_db.admin.execute("select body from public.chat_messages where id = %s", (row["id"],)).fetchone() == (
        "kept without broadcast",)
    assert len(warnings) == 1 and "no partition of relation" in warnings[0]


def test_a_broken_realtime_function_loses_no_message(world_db: WorldDb) -> None:
    # Should Supabase change realtime.send, messages must still be saved.
    world_db.admin.execute("alter function realtime.send(jsonb, text, text, boolean) rename to send_moved")
    row, warnings = send(world_db, "kept anyway")
    assert world_db.admin.execute("select count(*) from public.chat_messages where id = %s", (row["id"],)).fetchone() == (1,)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"chat message {row['id']} saved but not broadcast to chat:{world_db.world.thread_ab}")


def test_guards_hold_against_another_features_wide_policies(world_db: WorldDb) -> None:
    """Other features may open realtime.messages widely; chat topics stay closed to
    non-participants and to client broadcasts, and the other topics get what those
    policies give (we do not narrow them)."""
    w = world_db.world
    for name, command in (("other_read", "select"), ("other_write", "insert")):
        clause = "using (true)" if command == "select" else "with check (true)"
        world_db.admin.execute(f"create policy {name} on realtime.messages for {command} to anon, authenticated {clause}")
    ab = f"chat:{w.thread_ab}"
    with world_db.db.connect(admin=True) as conn:
        outsider_read = realtime.read_check(conn, w.carol.persona, ab).allowed
        outsider_write = realtime.write_check(conn, w.carol.persona, ab).allowed
        anon_read = realtime.read_check(conn, personas.anon(), ab).allowed
        participant_write = realtime.write_check(conn, w.alice.persona, ab).allowed
        participant_read = realtime.read_check(conn, w.alice.persona, ab).allowed
        lobby = realtime.write_check(conn, w.carol.persona, "room:lobby").allowed
        lobby_anon = realtime.read_check(conn, personas.anon(), "room:lobby").allowed
    assert outsider_read == {"broadcast": False, "presence": False}
    assert outsider_write == {"broadcast": False, "presence": False}
    assert anon_read == {"broadcast": False, "presence": False}
    assert participant_write == {"broadcast": False, "presence": True}
    assert participant_read == {"broadcast": True, "presence": True}
    assert lobby == {"broadcast": True, "presence": True}
    assert lobby_anon == {"broadcast": True, "presence": True}


def test_reading_realtime_messages_outside_a_channel_check_shows_nothing(world_db: WorldDb) -> None:
    # Without realtime.topic set (no channel being authorised) participants see no rows.
    send(world_db)
    with world_db.db.connect() as conn:
        got = postgrest.run(conn, world_db.world.alice.persona, "select id from realtime.messages")
    assert got.ok and got.rows == []


@pytest.mark.parametrize("persona_name", ["alice", "carol"])
def test_join_check_evaluates_membership_once_per_statement(world_db: WorldDb, persona_name: str) -> None:
    """The Realtime read check's select: the membership test is an InitPlan, never a SubPlan."""
    w = world_db.world
    member = getattr(w, persona_name)
    topic = f"chat:{w.thread_ab}"
    with world_db.db.connect(admin=True) as conn, conn.transaction():
        conn.execute("select set_config('role', 'authenticated', true), set_config('realtime.topic', %s, true), "
                     "set_config('request.jwt.claims', %s, true)",
                     (topic, f'{{"sub": "{member.uid}", "role": "authenticated"}}'))
        plan = conn.execute(
            "explain (format json) select id from realtime.messages where id = any(%s)",
            ([world_db.world.alice.uid],),
        ).fetchone()[0]  # type: ignore[index]
        raise psycopg.Rollback
    text = str(plan)
    assert "SubPlan" not in text
    assert "InitPlan" in text


def test_the_broadcast_leaves_no_channel_setting_behind(world_db: WorldDb) -> None:
    """realtime.send sets realtime.topic; the rest of the sender's transaction must not look
    like a Realtime channel check for the thread's topic."""
    w = world_db.world
    with world_db.db.connect() as conn, postgrest.request(conn, w.alice.persona, method="POST"):
        conn.execute("select * from public.insert_chat_message(%s, %s, %s, 'hi')",
                     (w.thread_ab, w.alice.mongo_id, w.bob.mongo_id))
        topic = conn.execute("select realtime.topic()").fetchone()
        visible = conn.execute("select count(*) from realtime.messages").fetchone()
    assert topic == (None,)
    assert visible == (0,)


def test_a_send_behind_a_realtime_table_lock_keeps_the_message(world_db: WorldDb) -> None:
    """Partition maintenance and policy DDL hold ACCESS EXCLUSIVE on realtime.messages; a
    send waits briefly, then commits the message without its broadcast (a WARNING), instead
    of running into authenticated's statement_timeout and losing the message."""
    with world_db.db.connect(admin=True) as holder, holder.transaction(force_rollback=True):
        holder.execute("lock table realtime.messages in access exclusive mode")
        row, warnings = send(world_db, "sent while realtime.messages was locked")
        saved = holder.execute("select body from public.chat_messages where id = %s", (row["id"],)).fetchone()
    assert saved == ("sent while realtime.messages was locked",)
    assert len(warnings) == 1 and "lock timeout" in warnings[0]
    assert world_db.admin.execute(
        "select count(*) from realtime.messages where payload -> 'record' ->> 'id' = %s", (str(row["id"]),)
    ).fetchone() == (0,)


def test_the_lock_wait_bound_does_not_outlive_the_broadcast(world_db: WorldDb) -> None:
    w = world_db.world
    with world_db.db.connect() as conn, postgrest.request(conn, w.alice.persona, method="POST"):
        before = conn.execute("select current_setting('lock_timeout')").fetchone()
        conn.execute("select * from public.insert_chat_message(%s, %s, %s, 'hi')",
                     (w.thread_ab, w.alice.mongo_id, w.bob.mongo_id))
        after = conn.execute("select current_setting('lock_timeout')").fetchone()
    assert before == after


@pytest.fixture
def custom_role(world_db: WorldDb) -> Any:
    """A role a JWT may carry besides anon/authenticated (authenticator can become it), with
    table privileges on realtime.messages and another feature's wide-open policies."""
    name = f"chat_custom_{secrets.token_hex(4)}"
    admin = world_db.admin
    admin.execute(f"create role {name} nologin")
    admin.execute(f"grant {name} to authenticator, postgres")
    admin.execute(f"grant usage on schema realtime to {name}")
    admin.execute(f"grant select, insert on realtime.messages to {name}")
    admin.execute(f"create policy other_{name} on realtime.messages for all to {name} using (true) with check (true)")
    try:
        yield name
    finally:
        admin.execute(f"drop policy other_{name} on realtime.messages")
        admin.execute(f"drop owned by {name}")
        admin.execute(f"drop role {name}")


def test_guards_hold_for_every_role(world_db: WorldDb, custom_role: str) -> None:
    """A custom JWT role plus a permissive `using (true)` policy never reads a chat topic nor
    forges a broadcast there, even with a participant's `sub`; other topics keep what the
    other policy gives them."""
    w = world_db.world
    persona = personas.Persona("custom", custom_role, {**w.alice.persona.claims, "role": custom_role})
    ab = f"chat:{w.thread_ab}"
    with world_db.db.connect() as conn:
        chat_read = realtime.read_check(conn, persona, ab).allowed
        chat_write = realtime.write_check(conn, persona, ab).allowed
        lobby_read = realtime.read_check(conn, persona, "room:lobby").allowed
        lobby_write = realtime.write_check(conn, persona, "room:lobby").allowed
    assert chat_read == {"broadcast": False, "presence": False}
    assert chat_write == {"broadcast": False, "presence": False}
    assert lobby_read == {"broadcast": True, "presence": True}
    assert lobby_write == {"broadcast": True, "presence": True}
