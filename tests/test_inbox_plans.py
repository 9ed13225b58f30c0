"""The inbox's plan shape (deterministic, not timings) under custom and generic plans.

chat_inbox must be flat in the number of threads a user has: the first page reads at most
_limit thread rows per participant column (index range scans in activity order, no sort of
all the user's threads), then per page row one lookup of the last message, the cursors and
an unread count bounded by the unread messages. Proven from the executed plans (auto_explain
with row counts) for a user in 100 threads and one in 1,000: the same rows read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from dbtool.database import Database
from dbtool.ops import seed
from dbtool.policy import plans, worlds
from dbtool.server.embedded import Server
from dbtool.supabase import postgrest
from dbtool.supabase.personas import Persona
from dbtool.testing.plugin import clone

ACTIVITY_INDEXES = {"chat_thread_activity_user_a_idx", "chat_thread_activity_user_b_idx",
                    "chat_thread_activity_guest_idx"}
SIZES = {"alice": 100, "erin": 1000}


@pytest.fixture(scope="module")
def loaded(chat_db_server: Server, chat_db_template: Database) -> Iterator[tuple[Database, worlds.World]]:
    """alice in 100 threads, erin in 1,000; half as user a, half as user b; 5 messages each,
    and receipts that leave some unread."""
    with clone(chat_db_server, chat_db_template, "chat_db_inbox_plans") as db, db.connect(admin=True) as conn:
        with conn.transaction():
            world = worlds.create(conn)
            conn.execute("set local session_replication_role = replica")  # bulk data: no broadcasts, no triggers
            for name, count in SIZES.items():
                owner = getattr(world, name)
                params = {"name": name, "count": count, "offset": 1_000_000 * (1 + list(SIZES).index(name)),
                          "mongo": owner.mongo_id, "uid": owner.uid}
                conn.execute(
                    """
                    insert into auth.users (id, email)
                    select gen_random_uuid(), %(name)s || '-partner' || g || '@example.invalid'
                    from generate_series(1, %(count)s) g
                    """, params)
                conn.execute(
                    """
                    insert into public.chat_identities (supabase_user_id, mongo_id)
                    select u.id, case when n %% 2 = 0 then '0' else 'f' end
                                 || lpad(to_hex(n + %(offset)s), 23, '0')
                    from (select id, row_number() over (order by email) as n from auth.users
                          where email like %(name)s || '-partner%%') u
                    """, params)
                conn.execute(
                    """
                    insert into public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id,
                                                     user_b_supabase_id, created_at)
                    select least(i.mongo_id, %(mongo)s) || '_' || greatest(i.mongo_id, %(mongo)s),
                           least(i.mongo_id, %(mongo)s),
                           case when i.mongo_id < %(mongo)s then i.supabase_user_id else %(uid)s::uuid end,
                           greatest(i.mongo_id, %(mongo)s),
                           case when i.mongo_id < %(mongo)s then %(uid)s::uuid else i.supabase_user_id end,
                           now() - interval '30 days'
                    from public.chat_identities i join auth.users u on u.id = i.supabase_user_id
                    where u.email like %(name)s || '-partner%%'
                    """, params)
            conn.execute(
                """
                insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id,
                                                  body, created_at)
                select t.thread_id, s.sm, s.rm, s.su, 'message ' || g, now() - make_interval(mins => g * 7 + h)
                from (select t.*, abs(hashtext(t.thread_id)) % 5000 as h from public.chat_threads t
                      where t.kind = 'direct') t
                cross join generate_series(1, 5) g
                cross join lateral (select case when g % 2 = 0 then t.user_a_mongo_id else t.user_b_mongo_id end sm,
                                           case when g % 2 = 0 then t.user_b_mongo_id else t.user_a_mongo_id end rm,
                                           case when g % 2 = 0 then t.user_a_supabase_id
                                                else t.user_b_supabase_id end su) s;
                """)
            # the threads' activity rows, as the seed writes them with triggers off
            conn.execute(seed.THREAD_ACTIVITY,
                         {"threads": [r[0] for r in conn.execute("select thread_id from public.chat_threads")]})
            conn.execute(
                """
                insert into public.chat_receipts (thread_id, supabase_user_id, delivered_up_to, read_up_to)
                select t.thread_id, p.uid, greatest(a.last_message_id, m.id), m.id
                from public.chat_threads t
                join chat_private.chat_thread_activity a on a.thread_id = t.thread_id
                cross join lateral (values (t.user_a_supabase_id), (t.user_b_supabase_id)) p(uid)
                cross join lateral (select id from public.chat_messages m where m.thread_id = t.thread_id
                                    order by id offset 2 limit 1) m
                where t.kind = 'direct'
                on conflict do nothing;
                """)
        conn.execute("analyze public.chat_threads, public.chat_messages, public.chat_receipts, public.chat_identities, "
                     "chat_private.chat_thread_activity")
        conn.execute("vacuum public.chat_messages, public.chat_threads, public.chat_receipts, "
                     "chat_private.chat_thread_activity")
        yield db, world


def inbox_plans(db: Database, who: Persona, args: dict[str, Any], generic: bool) -> list[dict[str, Any]]:
    """Executed plans (with row counts) of the statements chat_inbox runs inside."""
    with db.connect(admin=True) as conn:
        found = plans.nested_plans(
            conn, who, "select * from public.chat_inbox(_limit := 30, _before_activity_at := %s, _before_thread_id := %s)",
            (args.get("_before_activity_at"), args.get("_before_thread_id")), generic=generic, analyze=True)
    return [p for p in found if "chat_threads" in json.dumps(p) and "chat_messages" in json.dumps(p)]


def relation_scans(plan: dict[str, Any], relation: str) -> list[dict[str, Any]]:
    return [n for n, _ in plans.walk(plan["Plan"]) if n.get("Relation Name") == relation]


def rows_read(nodes: list[dict[str, Any]]) -> int:
    return sum(int(n.get("Actual Rows", 0)) * int(n.get("Actual Loops", 1)) for n in nodes)


def page_shape(db: Database, world: worlds.World, name: str, generic: bool, paged: bool) -> dict[str, Any]:
    who = getattr(world, name).persona
    args: dict[str, Any] = {}
    if paged:
        with db.connect() as conn:
            first = postgrest.call(conn, who, "chat_inbox", {"_limit": 30}, volatile=False, types={"_limit": "int"})
        assert first.ok and len(first.rows) == 30
        args = {"_before_activity_at": first.rows[-1]["activity_at"], "_before_thread_id": first.rows[-1]["thread_id"]}
    found = inbox_plans(db, who, args, generic)
    assert len(found) == 1, f"expected the inbox query among the nested plans, got {len(found)}"
    plan = found[0]
    activity = relation_scans(plan, "chat_thread_activity")
    threads = relation_scans(plan, "chat_threads")
    return {
        "plan": plan,
        "activity_nodes": [n["Node Type"] for n in activity],
        "activity_indexes": {n.get("Index Name") for n in activity},
        "activity_read": rows_read(activity),
        "thread_nodes": [n["Node Type"] for n in threads],
        "thread_indexes": {n.get("Index Name") for n in threads},
        "threads_loops": max(int(n.get("Actual Loops", 1)) for n in threads),
        "messages_loops": max(int(n.get("Actual Loops", 1)) for n in relation_scans(plan, "chat_messages")),
        "sorted_rows": max([int(n.get("Actual Rows", 0)) for n, _ in plans.walk(plan["Plan"])
                            if n["Node Type"] == "Sort"], default=0),
        "nodes": plans.shape(plan).node_types,
        "returned": int(plan["Plan"].get("Actual Rows", 0)),
    }


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("paged", [False, True], ids=["first page", "next page"])
def test_inbox_reads_a_page_not_every_thread(loaded: tuple[Database, worlds.World], generic: bool,
                                             paged: bool) -> None:
    db, world = loaded
    shapes = {name: page_shape(db, world, name, generic, paged) for name in SIZES}
    for name, shape in shapes.items():
        assert shape["returned"] == 30
        assert set(shape["activity_nodes"]) <= {"Index Scan", "Index Only Scan"}, shape["activity_nodes"]
        assert shape["activity_indexes"] <= ACTIVITY_INDEXES, shape["activity_indexes"]
        # the merge stops after the page: 30 rows plus at most one look-ahead per participant
        # column, at 100 threads as at 1,000 (flat)
        assert 30 <= shape["activity_read"] <= 30 + 3, (name, shape["activity_read"])
        # the thread rows: one primary-key lookup per page row
        assert shape["thread_nodes"] and set(shape["thread_nodes"]) <= {"Index Scan"}, shape["thread_nodes"]
        assert shape["thread_indexes"] <= {"chat_threads_pkey"}, shape["thread_indexes"]
        assert shape["threads_loops"] <= 30, (name, shape["threads_loops"])
        # per-row lookups run once per page row, not once per thread of the user
        assert shape["messages_loops"] <= 30, (name, shape["messages_loops"])
        assert shape["sorted_rows"] <= 3 * 30
        assert "Seq Scan" not in shape["nodes"]
        assert plans.shape(shape["plan"]).uid_per_row == []


def test_the_inbox_data_match_the_threads(loaded: tuple[Database, worlds.World]) -> None:
    """The loaded data behave: erin's pages cover her 1,000 threads exactly once."""
    db, world = loaded
    seen: list[str] = []
    args: dict[str, Any] = {"_limit": 100}
    types = {"_limit": "int", "_before_activity_at": "timestamptz"}
    with db.connect() as conn:
        while True:
            page = postgrest.call(conn, world.erin.persona, "chat_inbox", args, volatile=False, types=types)
            assert page.ok, page.describe()
            if not page.rows:
                break
            seen += [r["thread_id"] for r in page.rows]
            args = {"_limit": 100, "_before_activity_at": page.rows[-1]["activity_at"],
                    "_before_thread_id": page.rows[-1]["thread_id"]}
    with db.connect(admin=True) as admin:  # her 1,000 loaded threads, and the world's guest thread she hosts
        row = admin.execute("select count(*) from public.chat_threads where %s in (user_a_supabase_id, user_b_supabase_id)",
                            (world.erin.uid,)).fetchone()
    assert row is not None and row[0] == SIZES["erin"] + 1
    assert len(seen) == len(set(seen)) == row[0]


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_a_send_reads_as_few_thread_rows_whatever_the_senders_thread_count(
        loaded: tuple[Database, worlds.World], generic: bool) -> None:
    """insert_chat_message looks its thread up by primary key (its own check, the insert's
    WITH CHECK, the foreign key): the same few rows for alice in 100 threads as for erin in
    1,000. It inserts without RETURNING, which would check the row against the select
    policy, whose InitPlan reads every thread of the sender (0010)."""
    db, world = loaded
    read = {}
    for name in SIZES:
        member = getattr(world, name)
        with db.connect(admin=True) as conn:
            thread, partner = conn.execute(
                "select thread_id, case when user_a_supabase_id = %(uid)s then user_b_mongo_id else user_a_mongo_id end "
                "from public.chat_threads where %(uid)s in (user_a_supabase_id, user_b_supabase_id) and kind = 'direct' "
                "order by thread_id limit 1", {"uid": member.uid}).fetchone()  # type: ignore[misc]
            found = plans.nested_plans(
                conn, member.persona, "select * from public.insert_chat_message(%s, %s, %s, 'plan probe')",
                (thread, member.mongo_id, partner), generic=generic, analyze=True, read_only=False)
        assert any(n.get("Operation") == "Insert" for p in found for n, _ in plans.walk(p["Plan"])), \
            "the send's insert must be among the nested plans"
        read[name] = sum(rows_read(relation_scans(p, "chat_threads")) for p in found)
    assert read["alice"] == read["erin"] <= 3, read


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_a_history_page_reads_as_few_thread_rows_whatever_the_readers_thread_count(
        loaded: tuple[Database, worlds.World], generic: bool) -> None:
    """chat_history checks the thread by primary key and reads its page with the owner's
    rights (0010): through the messages policy, every thread of the reader was listed and
    each row compared with that list, 100 rows read for alice and 1,000 for erin."""
    db, world = loaded
    read = {}
    for name in SIZES:
        member = getattr(world, name)
        with db.connect(admin=True) as conn:
            row = conn.execute(
                "select thread_id from public.chat_threads where %(uid)s in (user_a_supabase_id, user_b_supabase_id) "
                "and kind = 'direct' order by thread_id limit 1", {"uid": member.uid}).fetchone()
            assert row is not None
            found = plans.nested_plans(conn, member.persona, "select * from public.chat_history(%s)", (row[0],),
                                       generic=generic, analyze=True)
        pages = [p for p in found if relation_scans(p, "chat_messages")]
        assert pages and max(int(p["Plan"].get("Actual Rows", 0)) for p in pages) == 5, "the thread's 5 messages"
        read[name] = sum(rows_read(relation_scans(p, "chat_threads")) for p in found)
    assert read["alice"] == read["erin"] <= 2, read
