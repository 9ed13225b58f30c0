"""Guest links under real concurrent connections: exactly max_guests winners, one session
per caller however many requests race, and a revocation racing the guest's sends."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from dbtool.ops import limits
from dbtool.supabase.postgrest import Outcome
from tests.helpers import WorldDb
from tests.test_concurrency import in_parallel
from tests.test_guests import add_anonymous, call, create_link, guest_send, redeem


@pytest.mark.parametrize("max_guests", [1, 5])
def test_exactly_max_guests_distinct_callers_win(world_db: WorldDb, max_guests: int) -> None:
    link = create_link(world_db, _max_guests=max_guests)
    guests = [add_anonymous(world_db, f"racer{i}") for i in range(20)]
    results = in_parallel(20, lambda i: redeem(world_db, guests[i].persona, link["token"]))
    won = [r for r in results if r.ok]
    assert len(won) == max_guests
    assert {(r.sqlstate, r.message) for r in results if not r.ok} == {("P0002", "link not found")}
    threads = world_db.admin.execute(
        "select thread_id, guest_supabase_id::text from public.chat_threads where guest_link_id = %s",
        (link["link_id"],)).fetchall()
    assert sorted(t for t, _ in threads) == sorted(r.rows[0]["thread_id"] for r in won)
    assert len({g for _, g in threads}) == max_guests
    listed = call(world_db, world_db.world.alice.persona, "list_chat_links").rows
    assert [(r["guests"], r["status"]) for r in listed] == [(max_guests, "full")]


def test_one_caller_racing_gets_one_session(world_db: WorldDb) -> None:
    link = create_link(world_db, _max_guests=2)
    guest = add_anonymous(world_db)
    results = in_parallel(8, lambda i: redeem(world_db, guest.persona, link["token"], f"name {i}"))
    assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]
    assert len({(r.rows[0]["thread_id"], r.rows[0]["display_name"]) for r in results}) == 1
    assert world_db.admin.execute("select count(*) from public.chat_threads where guest_link_id = %s",
                                  (link["link_id"],)).fetchone() == (1,)
    # the second slot is still free for someone else
    assert redeem(world_db, add_anonymous(world_db, "second").persona, link["token"]).ok


def test_revoke_while_sending(world_db: WorldDb) -> None:
    """The guest and the host keep sending while the host revokes: every send either commits
    (and is in the thread) or is refused with the contract's error for its side, and once the
    revocation has committed, no send gets through."""
    w = world_db.world
    for name in (limits.MESSAGES, limits.GUEST_MESSAGES):  # sending as fast as possible, not as a user may
        limits.configure(world_db.admin, name, burst=1000)
    link = create_link(world_db, _max_guests=1)
    guest = add_anonymous(world_db)
    thread = redeem(world_db, guest.persona, link["token"]).rows[0]["thread_id"]
    revoked = threading.Event()
    started = threading.Barrier(3)

    def sender(i: int) -> tuple[list[Outcome], list[Outcome]]:
        before: list[Outcome] = []
        after: list[Outcome] = []
        started.wait()
        for n in range(400):
            done = revoked.is_set()
            got = (guest_send(world_db, guest.persona, thread, f"guest {n}") if i == 0 else
                   guest_send(world_db, w.alice.persona, thread, f"host {n}", sender=w.alice.mongo_id))
            (after if done else before).append(got)
            if done and len(after) >= 3:
                break
        return before, after

    def revoker() -> None:
        started.wait()
        while world_db.admin.execute("select count(*) from public.chat_messages where thread_id = %s",
                                     (thread,)).fetchone() < (20,):  # type: ignore[operator]
            pass
        assert call(world_db, w.alice.persona, "revoke_chat_link", {"_link_id": link["link_id"]}).ok
        revoked.set()

    stopper = threading.Thread(target=revoker)
    stopper.start()
    try:
        results = _run(sender)
    finally:
        stopper.join()
    expected = {0: ("P0002", "thread not found"), 1: ("22023", "thread is closed")}
    stored: set[int] = set()
    for side, (before, after) in enumerate(results):
        assert after and all(not r.ok for r in after), f"side {side} sent after the revocation committed"
        for r in before + after:
            if r.ok:
                stored.add(r.rows[0]["id"])
            else:
                assert (r.sqlstate, (r.message or "")[: len(expected[side][1])]) == expected[side], r.describe()
    in_thread = {row[0] for row in world_db.admin.execute(
        "select id from public.chat_messages where thread_id = %s", (thread,)).fetchall()}
    assert in_thread == stored and len(stored) >= 20


def _run(sender: Any) -> list[tuple[list[Outcome], list[Outcome]]]:
    out: list[Any] = [None, None]

    def work(i: int) -> None:
        out[i] = sender(i)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return out
