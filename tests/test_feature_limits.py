"""The abuse limits of guest links and receipts (DESIGN §10), each exact at its edge:
messages per guest session, link creation per host (and active links), redemptions per
caller, cursor moves per user."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dbtool.ops import limits
from dbtool.supabase import postgrest
from tests.helpers import WorldDb
from tests.test_guests import add_anonymous, create_link, guest_send, redeem, refused


@pytest.fixture
def session(world_db: WorldDb) -> dict[str, Any]:
    """alice's fresh link, redeemed by a new anonymous guest."""
    link = create_link(world_db)
    guest = add_anonymous(world_db)
    got = redeem(world_db, guest.persona, link["token"], "Gina")
    assert got.ok, got.describe()
    return {"link": link, "guest": guest, "thread": got.rows[0]["thread_id"]}


def test_a_guest_session_sends_its_burst_then_is_refused(world_db: WorldDb, session: dict[str, Any]) -> None:
    guest, thread = session["guest"].persona, session["thread"]
    burst = limits.settings(world_db.admin)[limits.GUEST_MESSAGES].burst
    for n in range(burst):
        assert guest_send(world_db, guest, thread, f"guest {n}").ok
    got = refused(world_db, guest, "insert_chat_message",
                  {"_thread_id": thread, "_sender_mongo_id": None, "_recipient_mongo_id": None, "_body": "one more"},
                  "PT429", "rate limit exceeded: messages_per_guest_session")
    assert got.hint and got.hint.startswith("retry after ")
    # The host's messages in the same thread do not count against the guest's session.
    assert guest_send(world_db, world_db.world.alice.persona, thread, "host",
                      sender=world_db.world.alice.mongo_id).ok
    # Refill: one token back lets exactly one more through.
    limits.pass_time(world_db.admin, limits.GUEST_MESSAGES, thread)
    assert guest_send(world_db, guest, thread, "after a while").ok
    assert not guest_send(world_db, guest, thread, "too soon").ok


def test_the_guest_session_limit_holds_on_the_table_endpoint(world_db: WorldDb, session: dict[str, Any]) -> None:
    guest, thread = session["guest"], session["thread"]
    limits.use_up(world_db.admin, limits.GUEST_MESSAGES, thread)
    body = [{"thread_id": thread, "sender_supabase_id": guest.uid, "body": "bulk"}]
    with world_db.db.connect() as conn:
        got = postgrest.run(conn, guest.persona, postgrest.insert_query(
            "chat_messages", {"thread_id": "text", "sender_supabase_id": "uuid", "body": "text"}),
            [json.dumps(body)], method="POST", path="/chat_messages", commit=True)
    assert got.sqlstate == "PT429"
    assert (got.message or "").startswith("rate limit exceeded: messages_per_guest_session")


def test_link_creation_per_host_is_bounded(world_db: WorldDb) -> None:
    alice = world_db.world.alice.persona
    burst = limits.settings(world_db.admin)[limits.LINKS].burst
    for _ in range(burst):
        create_link(world_db)
    refused(world_db, alice, "create_chat_link", {}, "PT429", "rate limit exceeded: links_per_host")
    # Another host has a bucket of their own.
    assert create_link(world_db, world_db.world.bob.persona)["token"]


def test_a_host_has_at_most_50_active_links(world_db: WorldDb) -> None:
    limits.configure(world_db.admin, limits.LINKS, burst=1000)
    alice = world_db.world.alice.persona
    links = [create_link(world_db) for _ in range(50)]
    got = refused(world_db, alice, "create_chat_link", {}, "PT429", "too many active links")
    assert got.hint and got.hint.startswith("retry after ")
    # Revoking one frees its place.
    with world_db.db.connect() as conn:
        assert postgrest.call(conn, alice, "revoke_chat_link", {"_link_id": links[0]["link_id"]},
                              types={"_link_id": "uuid"}, commit=True).ok
    assert create_link(world_db)["token"]


def test_redemptions_per_caller_count_only_successes(world_db: WorldDb) -> None:
    guest = add_anonymous(world_db)
    burst = limits.settings(world_db.admin)[limits.REDEMPTIONS].burst
    limits.configure(world_db.admin, limits.LINKS, burst=burst + 5)
    tokens = [create_link(world_db)["token"] for _ in range(burst + 1)]
    for _ in range(3):  # misses write nothing, so they cost nothing
        assert redeem(world_db, guest.persona, "A" * 43).sqlstate == "P0002"
    for token in tokens[:burst]:
        assert redeem(world_db, guest.persona, token).ok
    # Redeeming a link again returns the same session and is free.
    assert redeem(world_db, guest.persona, tokens[0]).ok
    refused(world_db, guest.persona, "redeem_chat_link", {"_token": tokens[burst]}, "PT429",
            "rate limit exceeded: redemptions_per_caller")


def test_receipts_count_only_cursor_moves(world_db: WorldDb) -> None:
    w = world_db.world
    limits.configure(world_db.admin, limits.RECEIPTS, burst=3)
    ab = w.messages["ab"]  # alice has no receipt in thread ab yet

    def mark(function: str, up_to: int) -> Any:
        with world_db.db.connect() as conn:
            return postgrest.call(conn, w.alice.persona, function, {"_thread_id": w.thread_ab, "_up_to_id": up_to},
                                  types={"_up_to_id": "bigint"}, commit=True)

    for up_to in ab:  # three moves: the burst
        assert mark("mark_chat_delivered", up_to).ok
    assert mark("mark_chat_delivered", ab[0]).ok  # moves nothing: free
    got = refused(world_db, w.alice.persona, "mark_chat_read", {"_thread_id": w.thread_ab, "_up_to_id": ab[0]},
                  "PT429", "rate limit exceeded: receipts_per_user")
    assert got.hint and got.hint.startswith("retry after ")
    cursor = world_db.admin.execute(
        "select delivered_up_to, read_up_to from public.chat_receipts where thread_id = %s and supabase_user_id = %s",
        (w.thread_ab, w.alice.uid)).fetchone()
    assert cursor == (ab[2], 0)
