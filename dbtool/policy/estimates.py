"""Do the planner's estimates tell a caller about rows RLS hides from them?

PostgREST answers `Prefer: count=planned` (and `estimated`) with the planner's row estimate
(`postgrest.planned_count`). A caller learns about rows they cannot see when the estimate for
such a value differs from the estimate for a value that does not exist. The matrix's
estimate cells ask exactly that: inside a savepoint that is rolled back at once, dave (whom
no standard persona talks to) sends erin BUSY messages with one and the same text; ANALYZE
looks at the column; then the caller's planned count for that thread, that sender or that
text — and for the value the column's statistics hold as the most common, if it has any
(statistics collected before revision 0005 survive ANALYZE) — is compared with the planned
count for a value that does not exist.

ANALYZE runs inside the probe's transaction, so the statistics it writes roll back with it
(pg_class.reltuples, which it updates in place, is the table's size, visible anyway).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from dbtool.policy.worlds import World, thread_id
from dbtool.supabase import postgrest
from dbtool.supabase.personas import Persona
from dbtool.supabase.postgrest import Outcome

BUSY = 12  # enough to dominate the statistics of a small table (a test database, the demo)


@dataclass(frozen=True)
class Subject:
    """One estimate cell: a column of chat_messages, the busy value and a missing one."""

    label: str
    column: str
    busy: Callable[[World, str], str]  # (world, busy thread id) -> value
    missing: Callable[[World], str]


SUBJECTS = [
    Subject("busy thread", "thread_id", lambda w, tid: tid, lambda w: w.missing_thread),
    Subject("heavy sender", "sender_supabase_id", lambda w, tid: w.dave.uid, lambda w: str(uuid.uuid4())),
    Subject("common body", "body", lambda w, tid: _body(tid), lambda w: f"never sent {secrets.token_hex(8)}"),
]


def _body(thread: str) -> str:
    return f"see you at eight ({thread[-6:]})"


def make_busy(conn: psycopg.Connection[Any], world: World) -> str:
    """dave's busy thread with erin (none of the standard personas sees it); returns its id.
    Run by a role that bypasses RLS, inside a transaction the caller rolls back."""
    a, b = sorted((world.dave, world.erin), key=lambda m: m.mongo_id)
    tid = thread_id(a.mongo_id, b.mongo_id)
    conn.execute(  # it may exist already: a busy thread committed earlier gets busier
        "insert into public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, "
        "user_b_supabase_id) values (%s, %s, %s, %s, %s) on conflict do nothing",
        (tid, a.mongo_id, a.uid, b.mongo_id, b.uid))
    conn.execute(
        "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body) "
        "select %s, %s, %s, %s, %s from generate_series(1, %s)",
        (tid, world.dave.mongo_id, world.erin.mongo_id, world.dave.uid, _body(tid), BUSY),
    )
    return tid


def analyze(conn: psycopg.Connection[Any], table: str, column: str) -> None:
    """ANALYZE one column (skipped, not waited for, if autovacuum holds the table)."""
    conn.execute(sql.SQL("analyze (skip_locked) {}.{} ({})").format(
        sql.Identifier("public"), sql.Identifier(table), sql.Identifier(column)))


def most_common(conn: psycopg.Connection[Any], table: str, column: str) -> str | None:
    """The most common value the column's statistics hold (what the planner knows best)."""
    row = conn.execute(
        "select (most_common_vals::text::text[])[1] from pg_catalog.pg_stats "
        "where schemaname = 'public' and tablename = %s and attname = %s and not inherited",
        (table, column)).fetchone()
    return row[0] if row else None


def planned_counts(conn: psycopg.Connection[Any], persona: Persona, table: str, column: str,
                   values: dict[str, str]) -> Outcome:
    """The caller's planned count for each labelled value: rows [{"value": label, "planned": n}]
    (or the refusal, e.g. no privilege on the table)."""
    rows = []
    for label, value in values.items():
        got = postgrest.planned_count(conn, persona, table, {column: value})
        if not got.ok:
            return got
        rows.append({"value": label, "planned": got.rows[0]["planned"]})
    return Outcome(True, rows, returned=True)


def compare(conn: psycopg.Connection[Any], world: World, persona: Persona, subject: Subject) -> Outcome:
    """The caller's planned counts for a missing value, the busy value and the most common
    one, after ANALYZE has seen the busy thread; nothing of it stays (savepoint rolled back)."""
    with conn.transaction(force_rollback=True):
        tid = make_busy(conn, world)
        analyze(conn, "chat_messages", subject.column)
        values = {"missing": subject.missing(world), subject.label: subject.busy(world, tid)}
        top = most_common(conn, "chat_messages", subject.column)
        if top is not None:
            values["most common"] = top
        return planned_counts(conn, persona, "chat_messages", subject.column, values)


def leaks(got: Outcome) -> bool:
    """True when the estimates differ, i.e. they depend on rows the caller may not see."""
    return got.ok and len({r["planned"] for r in got.rows}) > 1


SAME = "same estimate"


def describe(got: Outcome) -> str:
    """`same estimate` (no number: it follows the table's size), `busy thread 12 vs missing 1`,
    or the refusal."""
    if not got.ok:
        return got.describe()
    by = {r["value"]: r["planned"] for r in got.rows}
    missing = by.pop("missing")
    if all(n == missing for n in by.values()):
        return SAME
    return ", ".join(f"{label} {n}" for label, n in by.items() if n != missing) + f" vs missing {missing}"
