"""The persona x object x operation matrix of DESIGN §3, asserted cell by cell.

Each cell runs one probe (dbtool.probes) as one persona inside the rolled-back world of
the `chat_world` fixture, and checks the contract: which rows are allowed, or the exact
rejection (SQLSTATE and message). Safe on any database with the schema (`dbtool verify`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from dbtool.matrix import cell
from dbtool.postgrest import Outcome
from dbtool.probes import ALL_PROBES, PERSONAS, REALTIME_PROBES, Probe, caller
from dbtool.pytest_plugin import WorldSession
from dbtool.world import World


@dataclass(frozen=True)
class Expect:
    """What the contract says one cell must give."""

    allowed: bool
    sqlstate: str | None = None
    message: str | None = None  # the rejection message must start with this
    rows: Callable[[World, Outcome], Any] | None = None  # returns what `expected` must equal
    expected: Callable[[World], Any] | None = None
    rowcount: int | None = None

    def check(self, world: World, got: Outcome) -> None:
        if not self.allowed:
            assert not got.ok, f"expected a refusal ({self.sqlstate} {self.message}), got {got.describe()}"
            assert (got.sqlstate, got.message and got.message[: len(self.message or "")]) == (
                self.sqlstate, self.message), f"wrong refusal: {got.sqlstate} {got.message}"
            return
        assert got.ok, f"expected allowed, got {got.sqlstate} {got.message}"
        if self.rows is not None and self.expected is not None:
            assert self.rows(world, got) == self.expected(world)
        if self.rowcount is not None:
            assert got.rowcount == self.rowcount


def denied(sqlstate: str, message: str) -> Expect:
    return Expect(False, sqlstate, message)


def no_privilege(kind: str, name: str) -> Expect:
    return denied("42501", f"permission denied for {kind} {name}")


def rls(table: str) -> Expect:
    return denied("42501", f'new row violates row-level security policy for table "{table}"')


ALLOWED = Expect(True)
NOT_AUTHENTICATED = denied("42501", "not authenticated")
THREAD_NOT_FOUND = denied("P0002", "thread not found")


def column_set(column: str) -> Callable[[World, Outcome], set[Any]]:
    return lambda w, got: {str(r[column]) for r in got.rows}


def exactly(column: str, values: Callable[[World], set[Any]]) -> Expect:
    return Expect(True, rows=column_set(column), expected=values)


def some_rows() -> Expect:
    # service_role on a real database sees real rows too: only "allowed and not empty".
    return Expect(True, rows=lambda w, got: len(got.rows) > 0, expected=lambda w: True)


def affected(count: int) -> Expect:
    return Expect(True, rowcount=count)


def per_persona(anon: Expect, no_sub: Expect, outsider: Expect, a: Expect, b: Expect, service: Expect,
                custom: Expect | None = None) -> dict[str, Expect]:
    """One expectation per persona. A custom JWT role holds no privilege on chat objects, so
    unless said otherwise it gets what anon gets (the same "permission denied")."""
    by_key = {"anon": anon, "no_sub": no_sub, "outsider": outsider, "participant_a": a, "participant_b": b,
              "custom_role": custom or anon, "service_role": service}
    assert set(by_key) == set(PERSONAS)
    return by_key


def users(expect: Expect, service: Expect) -> dict[str, Expect]:
    """The same for anon and every authenticated persona; service_role differs."""
    return per_persona(expect, expect, expect, expect, expect, service)


def cursors(expected: Callable[[World], list[tuple[str, int, int]]]) -> Expect:
    """A receipt RPC's answer: (thread_id, delivered_up_to, read_up_to)."""
    return Expect(True, rows=lambda w, got: [(r["thread_id"], r["delivered_up_to"], r["read_up_to"]) for r in got.rows],
                  expected=expected)


def inbox(expected: Callable[[World], list[tuple[str, int, int, int]]]) -> Expect:
    """chat_inbox rows: (thread_id, unread, the other party's delivered_up_to and read_up_to)."""
    return Expect(True, rows=lambda w, got: [(r["thread_id"], r["unread"], r["delivered_up_to"], r["read_up_to"])
                                             for r in got.rows], expected=expected)


T, F, M = "table", "function", None  # readability of the table below

ab_messages = exactly("id", lambda w: {str(i) for i in w.messages["ab"]})
EXPECT: dict[str, dict[str, Expect]] = {
    "chat_identities select": per_persona(
        no_privilege(T, "chat_identities"), exactly("supabase_user_id", lambda w: set()),
        exactly("supabase_user_id", lambda w: {w.carol.uid}), exactly("supabase_user_id", lambda w: {w.alice.uid}),
        exactly("supabase_user_id", lambda w: {w.bob.uid}), some_rows()),
    "chat_identities insert": users(no_privilege(T, "chat_identities"), affected(1)),
    "chat_identities update": users(no_privilege(T, "chat_identities"), affected(1)),
    "chat_identities delete": users(no_privilege(T, "chat_identities"), affected(1)),
    "chat_threads select": per_persona(
        no_privilege(T, "chat_threads"), exactly("thread_id", lambda w: set()),
        exactly("thread_id", lambda w: {w.thread_cd}), exactly("thread_id", lambda w: {w.thread_ab}),
        exactly("thread_id", lambda w: {w.thread_ab}), some_rows()),
    "chat_threads insert own thread": per_persona(
        no_privilege(T, "chat_threads"), rls("chat_threads"), affected(1), affected(1), affected(1), affected(1)),
    "chat_threads insert others' thread": per_persona(
        no_privilege(T, "chat_threads"), rls("chat_threads"), rls("chat_threads"), rls("chat_threads"),
        rls("chat_threads"), affected(1)),
    "chat_threads update": users(no_privilege(T, "chat_threads"), affected(1)),
    "chat_threads delete": users(no_privilege(T, "chat_threads"), affected(1)),
    "chat_messages select": per_persona(
        no_privilege(T, "chat_messages"), exactly("id", lambda w: set()),
        exactly("id", lambda w: {str(i) for i in w.messages["cd"]}), ab_messages, ab_messages, some_rows()),
    "chat_messages insert as self": per_persona(
        no_privilege(T, "chat_messages"), rls("chat_messages"), rls("chat_messages"), affected(1), affected(1),
        affected(1)),
    "chat_messages insert as the other participant": per_persona(
        no_privilege(T, "chat_messages"), rls("chat_messages"), rls("chat_messages"), rls("chat_messages"),
        rls("chat_messages"), affected(1)),
    "chat_messages insert with created_at": users(no_privilege(T, "chat_messages"), affected(1)),
    "chat_messages update": users(no_privilege(T, "chat_messages"), affected(3)),
    "chat_messages delete": users(no_privilege(T, "chat_messages"), affected(3)),
    "ensure_chat_thread() call (alice, bob)": per_persona(
        no_privilege(F, "ensure_chat_thread"), NOT_AUTHENTICATED, denied("42501", "not a participant"),
        exactly("thread_id", lambda w: {w.thread_ab}), exactly("thread_id", lambda w: {w.thread_ab}),
        NOT_AUTHENTICATED),
    "insert_chat_message() call (thread ab, self -> other)": per_persona(
        no_privilege(F, "insert_chat_message"), NOT_AUTHENTICATED, THREAD_NOT_FOUND,
        Expect(True, rows=lambda w, got: [(r["sender_supabase_id"], r["recipient_mongo_id"], r["body"]) for r in got.rows],
               expected=lambda w: [(_uuid(w.alice.uid), w.bob.mongo_id, "hello")]),
        Expect(True, rows=lambda w, got: [(r["sender_supabase_id"], r["recipient_mongo_id"], r["body"]) for r in got.rows],
               expected=lambda w: [(_uuid(w.bob.uid), w.alice.mongo_id, "hello")]),
        NOT_AUTHENTICATED),
    "chat_history() call (thread ab)": per_persona(
        no_privilege(F, "chat_history"), NOT_AUTHENTICATED, THREAD_NOT_FOUND,
        Expect(True, rows=lambda w, got: [r["id"] for r in got.rows], expected=lambda w: w.messages["ab"][::-1]),
        Expect(True, rows=lambda w, got: [r["id"] for r in got.rows], expected=lambda w: w.messages["ab"][::-1]),
        NOT_AUTHENTICATED),
    "chat_receipts select": per_persona(
        no_privilege(T, "chat_receipts"), exactly("supabase_user_id", lambda w: set()),
        exactly("supabase_user_id", lambda w: {w.dave.uid}), exactly("supabase_user_id", lambda w: {w.bob.uid}),
        exactly("supabase_user_id", lambda w: {w.bob.uid}), some_rows()),
    "chat_receipts insert own cursor": users(no_privilege(T, "chat_receipts"), affected(1)),
    "chat_receipts update": users(no_privilege(T, "chat_receipts"), affected(1)),
    "chat_receipts delete": users(no_privilege(T, "chat_receipts"), affected(1)),
    "mark_chat_delivered() call (thread ab, its last message)": per_persona(
        no_privilege(F, "mark_chat_delivered"), NOT_AUTHENTICATED, THREAD_NOT_FOUND,
        cursors(lambda w: [(w.thread_ab, w.messages["ab"][2], 0)]),
        cursors(lambda w: [(w.thread_ab, w.messages["ab"][2], w.messages["ab"][0])]), NOT_AUTHENTICATED),
    "mark_chat_read() call (thread ab, its second message)": per_persona(
        no_privilege(F, "mark_chat_read"), NOT_AUTHENTICATED, THREAD_NOT_FOUND,
        cursors(lambda w: [(w.thread_ab, w.messages["ab"][1], w.messages["ab"][1])]),
        cursors(lambda w: [(w.thread_ab, w.messages["ab"][1], w.messages["ab"][1])]), NOT_AUTHENTICATED),
    "mark_chat_read() call (thread ab, a message of cd)": per_persona(
        no_privilege(F, "mark_chat_read"), NOT_AUTHENTICATED, THREAD_NOT_FOUND,
        denied("22023", "_up_to_id is not a message of this thread"),
        denied("22023", "_up_to_id is not a message of this thread"), NOT_AUTHENTICATED),
    # (thread, unread, the other party's delivered and read cursors) of each inbox row
    "chat_inbox() call": per_persona(
        no_privilege(F, "chat_inbox"), NOT_AUTHENTICATED,
        inbox(lambda w: [(w.thread_cd, 1, w.messages["cd"][0], w.messages["cd"][0])]),
        inbox(lambda w: [(w.thread_ab, 1, w.messages["ab"][1], w.messages["ab"][0])]),
        inbox(lambda w: [(w.thread_ab, 1, 0, 0)]), NOT_AUTHENTICATED),
}


def _uuid(value: str) -> Any:
    import uuid

    return uuid.UUID(value)


@dataclass(frozen=True)
class ChannelExpect:
    """A Realtime check answers yes or no (a refused write is SQLSTATE 42501, taken as no)."""

    allowed: bool

    def check(self, world: World, got: Outcome) -> None:
        assert got.ok == self.allowed, f"expected {'allowed' if self.allowed else 'denied'}, got the opposite"


def _realtime_expectation(probe: Probe, persona: str) -> ChannelExpect:
    """Participants read broadcast+presence and write presence on their own chat topic;
    nobody else gets anything on chat topics; other topics have no policies (closed);
    service_role bypasses RLS (the backend's key, not a client)."""
    topic = probe.object.removeprefix("realtime ")
    check, extension = probe.operation.split()
    own = {"participant_a": "chat:<ab>", "participant_b": "chat:<ab>", "outsider": "chat:<cd>"}.get(persona)
    allowed = persona == "service_role" or (topic == own and (check == "read" or extension == "presence"))
    return ChannelExpect(allowed)


def expectation(probe: Probe, persona: str) -> Expect | ChannelExpect:
    if probe.kind == "realtime":
        return _realtime_expectation(probe, persona)
    return EXPECT[probe.key][persona]


CELLS = [(probe, persona) for probe in ALL_PROBES for persona in PERSONAS]


def _cell_id(cell: Any) -> str:
    return cell.key if isinstance(cell, Probe) else str(cell)


def test_every_table_and_rpc_probe_has_an_expectation_per_persona() -> None:
    keys = {p.key for p in ALL_PROBES if p.kind != "realtime"}
    assert keys == set(EXPECT)
    assert all(set(cells) == set(PERSONAS) for cells in EXPECT.values())
    assert len(REALTIME_PROBES) == 9 * 4


@pytest.mark.parametrize(("probe", "persona"), CELLS, ids=[f"{pe}|{pr.key}" for pr, pe in CELLS])
def test_cell(chat_world_shared: WorldSession, probe: Probe, persona: str,
              record_property: Callable[[str, Any], None]) -> None:
    # Every probe runs in a savepoint that is rolled back: cells cannot see each other's effects.
    chat_world = chat_world_shared
    who = caller(chat_world.world, persona)
    got = probe.run(chat_world.conn, chat_world.world, who)
    record_property("chat_db_cell", cell(probe, who, got).__dict__)
    expectation(probe, persona).check(chat_world.world, got)
