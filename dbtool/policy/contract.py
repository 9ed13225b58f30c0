"""The contract of DESIGN §3, §8 and §9 as data: what each persona must get from each probe.

One expectation per cell of the access matrix (a probe of dbtool.policy.probes run as one persona):
allowed, with the rows it must see or the number it must change, or refused with the exact
SQLSTATE and message. `judge` gives a measured cell the contract's verdict; `dbtool verify`
and the policy suite (tests/test_policy_matrix.py) both go through it, while `dbtool audit`
only measures (dbtool.policy.matrix).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from dbtool.ops.limits import MESSAGES, THREADS
from dbtool.policy import estimates
from dbtool.policy.matrix import Cell, cell
from dbtool.policy.probes import ALL_PROBES, PERSONAS, Caller, Probe
from dbtool.policy.worlds import World
from dbtool.supabase.postgrest import Outcome


@dataclass(frozen=True)
class Expect:
    """What the contract says one cell must give."""

    allowed: bool
    sqlstate: str | None = None
    message: str | None = None  # the rejection message must start with this
    rows: Callable[[World, Outcome], Any] | None = None  # returns what `expected` must equal
    expected: Callable[[World], Any] | None = None
    rowcount: int | None = None
    what: str = "rows"  # names what `rows` returns, for the failure text

    def check(self, world: World, got: Outcome) -> str | None:
        """None when `got` is what the contract says; otherwise what was expected and what came."""
        if not self.allowed:
            if got.ok:
                return f"expected a refusal ({self.sqlstate} {self.message}), got {got.describe()}"
            if got.sqlstate != self.sqlstate or got.message is None or not got.message.startswith(self.message or ""):
                return f"wrong refusal: expected {self.sqlstate} {self.message}, got {got.sqlstate} {got.message}"
            return None
        if not got.ok:
            return f"expected allowed, got {got.sqlstate} {got.message}"
        if self.rows is not None and self.expected is not None:
            seen, wanted = self.rows(world, got), self.expected(world)
            if seen != wanted:
                return f"expected {self.what} {_shown(wanted)}, got {_shown(seen)}"
        if self.rowcount is not None and got.rowcount != self.rowcount:
            return f"expected {self.rowcount} row(s) affected, got {got.rowcount}"
        return None


def _shown(value: Any) -> str:
    if isinstance(value, set | frozenset):
        return "{" + ", ".join(sorted(map(str, value), key=lambda v: (len(v), v))) + "}"  # 2 before 10
    return value if isinstance(value, str) else repr(value)


def denied(sqlstate: str, message: str) -> Expect:
    return Expect(False, sqlstate, message)


def no_privilege(kind: str, name: str) -> Expect:
    return denied("42501", f"permission denied for {kind} {name}")


def rls(table: str) -> Expect:
    return denied("42501", f'new row violates row-level security policy for table "{table}"')


ALLOWED = Expect(True)
NOT_AUTHENTICATED = denied("42501", "not authenticated")
THREAD_NOT_FOUND = denied("P0002", "thread not found")
RATE_LIMITED = denied("PT429", "rate limit exceeded")  # PostgREST answers HTTP 429


def column_set(column: str) -> Callable[[World, Outcome], set[Any]]:
    return lambda w, got: {str(r[column]) for r in got.rows}


def exactly(column: str, values: Callable[[World], set[Any]]) -> Expect:
    return Expect(True, rows=column_set(column), expected=values, what=f"the {column}s")


def some_rows() -> Expect:
    # service_role on a real database sees real rows too: only "allowed and not empty".
    return Expect(True, rows=lambda w, got: "some rows" if got.rows else "no rows", expected=lambda w: "some rows",
                  what="")


def affected(count: int) -> Expect:
    return Expect(True, rowcount=count)


GUEST_PERSONAS = ("host", "guest", "other_guest", "ended_guest", "anonymous", "permanent_guest")


def per_persona(anon: Expect, no_sub: Expect, outsider: Expect, a: Expect, b: Expect, service: Expect,
                custom: Expect | None = None, **guests: Expect) -> dict[str, Expect]:
    """One expectation per persona. A custom JWT role holds no privilege on chat objects, so
    unless said otherwise it gets what anon gets (the same "permission denied"). The guest-link
    personas (DESIGN §8) are keyword arguments; `guests=` gives all of them at once."""
    every_guest = guests.pop("guests", None)
    by_key: dict[str, Expect | None] = {
        "anon": anon, "no_sub": no_sub, "outsider": outsider, "participant_a": a, "participant_b": b,
        "custom_role": custom or anon, "service_role": service, **{k: guests.get(k, every_guest) for k in GUEST_PERSONAS}}
    missing = [k for k, v in by_key.items() if v is None]
    if set(by_key) != set(PERSONAS) or missing:
        raise ValueError(f"an expectation per persona is needed; missing: {missing}")
    return {k: v for k, v in by_key.items() if v is not None}


def users(expect: Expect, service: Expect) -> dict[str, Expect]:
    """The same for anon and every authenticated persona; service_role differs."""
    return per_persona(expect, expect, expect, expect, expect, service, guests=expect)


def signed_in(anon: Expect, no_sub: Expect, everyone: Expect, service: Expect, **exceptions: Expect) -> dict[str, Expect]:
    """anon, no sub and service_role as given; every signed-in persona gets `everyone` unless excepted."""
    by_key = {k: exceptions.get(k, everyone) for k in ("outsider", "participant_a", "participant_b", *GUEST_PERSONAS)}
    return per_persona(anon, no_sub, by_key.pop("outsider"), by_key.pop("participant_a"), by_key.pop("participant_b"),
                       service, **by_key)


def cursors(expected: Callable[[World], list[tuple[str, int, int]]]) -> Expect:
    """A receipt RPC's answer: (thread_id, delivered_up_to, read_up_to)."""
    return Expect(True, rows=lambda w, got: [(r["thread_id"], r["delivered_up_to"], r["read_up_to"]) for r in got.rows],
                  expected=expected, what="(thread_id, delivered_up_to, read_up_to)")


def inbox_in_any_order(expected: Callable[[World], list[tuple[str, int, int, int]]]) -> Expect:
    """chat_inbox rows as a set, where threads tie on activity (a world is made in one
    transaction: its messages share one timestamp)."""
    return Expect(True, rows=lambda w, got: sorted((r["thread_id"], r["unread"], r["delivered_up_to"], r["read_up_to"])
                                                   for r in got.rows), expected=lambda w: sorted(expected(w)),
                  what="(thread_id, unread, delivered_up_to, read_up_to), sorted")


def inbox(expected: Callable[[World], list[tuple[str, int, int, int]]]) -> Expect:
    """chat_inbox rows: (thread_id, unread, the other party's delivered_up_to and read_up_to)."""
    return Expect(True, rows=lambda w, got: [(r["thread_id"], r["unread"], r["delivered_up_to"], r["read_up_to"])
                                             for r in got.rows], expected=expected,
                  what="(thread_id, unread, delivered_up_to, read_up_to)")


T, F, M = "table", "function", None  # readability of the table below

NONE = exactly("id", lambda w: set())


def ids(*keys: str) -> Expect:
    return exactly("id", lambda w: {str(i) for k in keys for i in w.messages[k]})


def threads(*names: str) -> Expect:
    return exactly("thread_id", lambda w: {_thread(w, n) for n in names})


def _thread(w: World, name: str) -> str:
    return {"ab": w.thread_ab, "cd": w.thread_cd, "guest": w.guests.active_thread, "ended": w.guests.ended_thread,
            "permanent": w.guests.permanent_thread, "other": w.guests.other_thread}[name]


def history(key: str) -> Expect:
    return Expect(True, rows=lambda w, got: [r["id"] for r in got.rows], expected=lambda w: w.messages[key][::-1],
                  what="message ids, newest first")


def sent(sender: Callable[[World], str], mongo: Callable[[World], str | None],
         recipient: Callable[[World], str | None]) -> Expect:
    return Expect(True, rows=lambda w, got: [(r["sender_supabase_id"], r["sender_mongo_id"], r["recipient_mongo_id"],
                                              r["body"]) for r in got.rows],
                  expected=lambda w: [(uuid.UUID(sender(w)), mongo(w), recipient(w), "hello")],
                  what="(sender_supabase_id, sender_mongo_id, recipient_mongo_id, body)")


def one_row() -> Expect:
    return Expect(True, rows=lambda w, got: len(got.rows), expected=lambda w: 1, what="row count")


def redeemed(thread: Callable[[World], str] | None) -> Expect:
    """A redemption of the host's link: the caller's existing session, or a new g_ thread."""
    return Expect(True, rows=lambda w, got: [(r["thread_id"] if thread else r["thread_id"][:2], r["host_mongo_id"])
                                             for r in got.rows],
                  expected=lambda w: [(thread(w) if thread else "g_", w.dave.mongo_id)],
                  what="(thread_id or its g_ prefix, host_mongo_id)")


ab_messages = ids("ab")
NO_IDENTITY_SENDER = denied("42501", "sender does not match caller")
GUESTS_REFUSED = denied("42501", "guests cannot create links")
LINK_NOT_FOUND = denied("P0002", "link not found")
NEW_LINK = Expect(True, rows=lambda w, got: [len(r["token"]) for r in got.rows], expected=lambda w: [43],
                  what="token lengths")
EXPECT: dict[str, dict[str, Expect]] = {
    "chat_identities select": per_persona(
        no_privilege(T, "chat_identities"), exactly("supabase_user_id", lambda w: set()),
        exactly("supabase_user_id", lambda w: {w.carol.uid}), exactly("supabase_user_id", lambda w: {w.alice.uid}),
        exactly("supabase_user_id", lambda w: {w.bob.uid}), some_rows(),
        guests=exactly("supabase_user_id", lambda w: set()),
        host=exactly("supabase_user_id", lambda w: {w.dave.uid}),
        permanent_guest=exactly("supabase_user_id", lambda w: {w.guests.permanent.uid})),
    "chat_identities insert": users(no_privilege(T, "chat_identities"), affected(1)),
    "chat_identities update": users(no_privilege(T, "chat_identities"), affected(1)),
    "chat_identities delete": users(no_privilege(T, "chat_identities"), affected(1)),
    "chat_threads select": per_persona(
        no_privilege(T, "chat_threads"), exactly("thread_id", lambda w: set()),
        exactly("thread_id", lambda w: {w.thread_cd}), exactly("thread_id", lambda w: {w.thread_ab}),
        exactly("thread_id", lambda w: {w.thread_ab}), some_rows(),
        host=threads("cd", "guest", "ended", "permanent"), guest=threads("guest"), other_guest=threads("other"),
        ended_guest=threads(), anonymous=threads(), permanent_guest=threads("permanent")),
    "chat_threads insert own thread": per_persona(
        no_privilege(T, "chat_threads"), rls("chat_threads"), affected(1), affected(1), affected(1), affected(1),
        guests=rls("chat_threads"), host=affected(1), permanent_guest=affected(1)),
    "chat_threads insert others' thread": per_persona(
        no_privilege(T, "chat_threads"), rls("chat_threads"), rls("chat_threads"), rls("chat_threads"),
        rls("chat_threads"), affected(1), guests=rls("chat_threads")),
    "chat_threads update": users(no_privilege(T, "chat_threads"), affected(1)),
    "chat_threads delete": users(no_privilege(T, "chat_threads"), affected(1)),
    "chat_threads reopen a guest session": users(no_privilege(T, "chat_threads"), affected(1)),
    "chat_messages select": per_persona(
        no_privilege(T, "chat_messages"), NONE, ids("cd"), ab_messages, ab_messages, some_rows(),
        host=ids("cd", "guest", "ended", "permanent"), guest=ids("guest"), other_guest=ids("other"),
        ended_guest=NONE, anonymous=NONE, permanent_guest=ids("permanent")),
    "chat_messages insert as self": per_persona(
        no_privilege(T, "chat_messages"), rls("chat_messages"), rls("chat_messages"), affected(1), affected(1),
        affected(1), guests=rls("chat_messages")),
    "chat_messages insert as the other participant": per_persona(
        no_privilege(T, "chat_messages"), rls("chat_messages"), rls("chat_messages"), rls("chat_messages"),
        rls("chat_messages"), affected(1), guests=rls("chat_messages")),
    "chat_messages insert with created_at": users(no_privilege(T, "chat_messages"), affected(1)),
    "chat_messages update": users(no_privilege(T, "chat_messages"), affected(3)),
    "chat_messages delete": users(no_privilege(T, "chat_messages"), affected(3)),
    "chat_messages insert as a guest (guest thread)": signed_in(
        no_privilege(T, "chat_messages"), rls("chat_messages"), rls("chat_messages"), affected(1),
        guest=affected(1)),
    "chat_messages insert as a guest (closed thread)": signed_in(
        no_privilege(T, "chat_messages"), rls("chat_messages"), rls("chat_messages"), affected(1)),
    "chat_links select": signed_in(
        no_privilege(T, "chat_links"), exactly("link_id", lambda w: set()), exactly("link_id", lambda w: set()),
        some_rows(), host=exactly("link_id", lambda w: {w.guests.link_id})),
    "chat_links select token_hash": signed_in(
        no_privilege(T, "chat_links"), no_privilege(T, "chat_links"), no_privilege(T, "chat_links"), some_rows()),
    "chat_links insert": users(no_privilege(T, "chat_links"), affected(1)),
    "chat_links update": users(no_privilege(T, "chat_links"), affected(1)),
    "chat_links delete": users(no_privilege(T, "chat_links"), affected(1)),
    "ensure_chat_thread() call (alice, bob)": per_persona(
        no_privilege(F, "ensure_chat_thread"), NOT_AUTHENTICATED, denied("42501", "not a participant"),
        exactly("thread_id", lambda w: {w.thread_ab}), exactly("thread_id", lambda w: {w.thread_ab}),
        NOT_AUTHENTICATED, guests=denied("42501", "not a participant")),
    "insert_chat_message() call (thread ab, self -> other)": per_persona(
        no_privilege(F, "insert_chat_message"), NOT_AUTHENTICATED, THREAD_NOT_FOUND,
        sent(lambda w: w.alice.uid, lambda w: w.alice.mongo_id, lambda w: w.bob.mongo_id),
        sent(lambda w: w.bob.uid, lambda w: w.bob.mongo_id, lambda w: w.alice.mongo_id),
        NOT_AUTHENTICATED, guests=NO_IDENTITY_SENDER, host=THREAD_NOT_FOUND, permanent_guest=THREAD_NOT_FOUND),
    "chat_rate_limits select": users(no_privilege(T, "chat_rate_limits"), some_rows()),
    "chat_rate_limits update": users(no_privilege(T, "chat_rate_limits"), affected(1)),
    # The abuse limits, each probe with the caller's bucket used up: refused for every API
    # role on every path (the table's limit is checked before its row policy); service_role
    # is exempt; returning an existing thread costs nothing.
    f"chat_messages insert as self, {MESSAGES} used up": per_persona(
        no_privilege(T, "chat_messages"), rls("chat_messages"), RATE_LIMITED, RATE_LIMITED, RATE_LIMITED,
        affected(1), guests=RATE_LIMITED),
    f"insert_chat_message() call (thread ab, self -> other), {MESSAGES} used up": per_persona(
        no_privilege(F, "insert_chat_message"), NOT_AUTHENTICATED, THREAD_NOT_FOUND, RATE_LIMITED, RATE_LIMITED,
        NOT_AUTHENTICATED, guests=NO_IDENTITY_SENDER, host=THREAD_NOT_FOUND, permanent_guest=THREAD_NOT_FOUND),
    f"chat_threads insert own thread, {THREADS} used up": per_persona(
        no_privilege(T, "chat_threads"), rls("chat_threads"), RATE_LIMITED, RATE_LIMITED, RATE_LIMITED, affected(1),
        guests=rls("chat_threads"), host=RATE_LIMITED, permanent_guest=RATE_LIMITED),
    f"ensure_chat_thread() call (self, erin), {THREADS} used up": per_persona(
        no_privilege(F, "ensure_chat_thread"), NOT_AUTHENTICATED, RATE_LIMITED, RATE_LIMITED, RATE_LIMITED,
        NOT_AUTHENTICATED, guests=denied("42501", "not a participant"), host=RATE_LIMITED, permanent_guest=RATE_LIMITED),
    f"ensure_chat_thread() call (alice, bob), {THREADS} used up": per_persona(
        no_privilege(F, "ensure_chat_thread"), NOT_AUTHENTICATED, denied("42501", "not a participant"),
        exactly("thread_id", lambda w: {w.thread_ab}), exactly("thread_id", lambda w: {w.thread_ab}),
        NOT_AUTHENTICATED, guests=denied("42501", "not a participant")),
    "chat_history() call (thread ab)": per_persona(
        no_privilege(F, "chat_history"), NOT_AUTHENTICATED, THREAD_NOT_FOUND, history("ab"), history("ab"),
        NOT_AUTHENTICATED, guests=THREAD_NOT_FOUND),
    "create_chat_link() call (defaults)": signed_in(
        no_privilege(F, "create_chat_link"), NOT_AUTHENTICATED, NEW_LINK, NOT_AUTHENTICATED,
        guest=GUESTS_REFUSED, other_guest=GUESTS_REFUSED, ended_guest=GUESTS_REFUSED, anonymous=GUESTS_REFUSED),
    "redeem_chat_link() call (host's link)": signed_in(
        no_privilege(F, "redeem_chat_link"), NOT_AUTHENTICATED, redeemed(None), NOT_AUTHENTICATED,
        host=denied("22023", "_token"), guest=redeemed(lambda w: w.guests.active_thread),
        ended_guest=LINK_NOT_FOUND, permanent_guest=redeemed(lambda w: w.guests.permanent_thread)),
    "revoke_chat_link() call (host's link)": signed_in(
        no_privilege(F, "revoke_chat_link"), NOT_AUTHENTICATED, LINK_NOT_FOUND, NOT_AUTHENTICATED, host=one_row()),
    "end_chat_guest() call (guest's session)": signed_in(
        no_privilege(F, "end_chat_guest"), NOT_AUTHENTICATED, THREAD_NOT_FOUND, NOT_AUTHENTICATED, host=one_row()),
    "list_chat_links() call": signed_in(
        no_privilege(F, "list_chat_links"), NOT_AUTHENTICATED, exactly("link_id", lambda w: set()), NOT_AUTHENTICATED,
        host=Expect(True, rows=lambda w, got: [(str(r["link_id"]), r["guests"], r["status"]) for r in got.rows],
                    expected=lambda w: [(w.guests.link_id, 3, "active")], what="(link_id, guests, status)")),
    "insert_chat_message() call (guest thread, no Mongo ids)": signed_in(
        no_privilege(F, "insert_chat_message"), NOT_AUTHENTICATED, THREAD_NOT_FOUND, NOT_AUTHENTICATED,
        host=NO_IDENTITY_SENDER, guest=sent(lambda w: w.guests.active.uid, lambda w: None, lambda w: None)),
    "insert_chat_message() call (guest thread, own Mongo id)": signed_in(
        no_privilege(F, "insert_chat_message"), NOT_AUTHENTICATED, THREAD_NOT_FOUND, NOT_AUTHENTICATED,
        host=sent(lambda w: w.dave.uid, lambda w: w.dave.mongo_id, lambda w: None), guest=NO_IDENTITY_SENDER,
        other_guest=NO_IDENTITY_SENDER, ended_guest=NO_IDENTITY_SENDER, anonymous=NO_IDENTITY_SENDER),
    "insert_chat_message() call (closed thread, no Mongo ids)": signed_in(
        no_privilege(F, "insert_chat_message"), NOT_AUTHENTICATED, THREAD_NOT_FOUND, NOT_AUTHENTICATED,
        host=NO_IDENTITY_SENDER),
    "insert_chat_message() call (closed thread, own Mongo id)": signed_in(
        no_privilege(F, "insert_chat_message"), NOT_AUTHENTICATED, THREAD_NOT_FOUND, NOT_AUTHENTICATED,
        host=denied("22023", "thread is closed"), guest=NO_IDENTITY_SENDER, other_guest=NO_IDENTITY_SENDER,
        ended_guest=NO_IDENTITY_SENDER, anonymous=NO_IDENTITY_SENDER),
    "chat_history() call (guest thread)": signed_in(
        no_privilege(F, "chat_history"), NOT_AUTHENTICATED, THREAD_NOT_FOUND, NOT_AUTHENTICATED,
        host=history("guest"), guest=history("guest")),
    "chat_history() call (closed thread)": signed_in(
        no_privilege(F, "chat_history"), NOT_AUTHENTICATED, THREAD_NOT_FOUND, NOT_AUTHENTICATED,
        host=history("ended")),
    "chat_receipts select": per_persona(
        no_privilege(T, "chat_receipts"), exactly("supabase_user_id", lambda w: set()),
        exactly("supabase_user_id", lambda w: {w.dave.uid}), exactly("supabase_user_id", lambda w: {w.bob.uid}),
        exactly("supabase_user_id", lambda w: {w.bob.uid}), some_rows(),
        guests=exactly("supabase_user_id", lambda w: set()), host=exactly("supabase_user_id", lambda w: {w.dave.uid})),
    "chat_receipts insert own cursor": users(no_privilege(T, "chat_receipts"), affected(1)),
    "chat_receipts update": users(no_privilege(T, "chat_receipts"), affected(1)),
    "chat_receipts delete": users(no_privilege(T, "chat_receipts"), affected(1)),
    "mark_chat_delivered() call (thread ab, its last message)": per_persona(
        no_privilege(F, "mark_chat_delivered"), NOT_AUTHENTICATED, THREAD_NOT_FOUND,
        cursors(lambda w: [(w.thread_ab, w.messages["ab"][2], 0)]),
        cursors(lambda w: [(w.thread_ab, w.messages["ab"][2], w.messages["ab"][0])]), NOT_AUTHENTICATED,
        guests=THREAD_NOT_FOUND),
    "mark_chat_read() call (thread ab, its second message)": per_persona(
        no_privilege(F, "mark_chat_read"), NOT_AUTHENTICATED, THREAD_NOT_FOUND,
        cursors(lambda w: [(w.thread_ab, w.messages["ab"][1], w.messages["ab"][1])]),
        cursors(lambda w: [(w.thread_ab, w.messages["ab"][1], w.messages["ab"][1])]), NOT_AUTHENTICATED,
        guests=THREAD_NOT_FOUND),
    "mark_chat_read() call (thread ab, a message of cd)": per_persona(
        no_privilege(F, "mark_chat_read"), NOT_AUTHENTICATED, THREAD_NOT_FOUND,
        denied("22023", "_up_to_id is not a message of this thread"),
        denied("22023", "_up_to_id is not a message of this thread"), NOT_AUTHENTICATED, guests=THREAD_NOT_FOUND),
    # (thread, unread, the other party's delivered and read cursors) of each inbox row
    "chat_inbox() call": per_persona(
        no_privilege(F, "chat_inbox"), NOT_AUTHENTICATED,
        inbox(lambda w: [(w.thread_cd, 1, w.messages["cd"][0], w.messages["cd"][0])]),
        inbox(lambda w: [(w.thread_ab, 1, w.messages["ab"][1], w.messages["ab"][0])]),
        inbox(lambda w: [(w.thread_ab, 1, 0, 0)]), NOT_AUTHENTICATED,
        # the host: their direct thread with carol and the guest threads they keep (ended included)
        host=inbox_in_any_order(lambda w: [(w.thread_cd, 0, 0, 0), (w.guests.active_thread, 1, 0, 0),
                                           (w.guests.ended_thread, 1, 0, 0), (w.guests.permanent_thread, 1, 0, 0)]),
        guest=inbox(lambda w: [(w.guests.active_thread, 1, 0, 0)]),
        other_guest=inbox(lambda w: [(w.guests.other_thread, 0, 0, 0)]),
        ended_guest=inbox(lambda w: []), anonymous=inbox(lambda w: []),
        permanent_guest=inbox(lambda w: [(w.guests.permanent_thread, 0, 0, 0)])),
}


@dataclass(frozen=True)
class ChannelExpect:
    """A Realtime check answers yes or no (a refused write is SQLSTATE 42501, taken as no)."""

    allowed: bool

    def check(self, world: World, got: Outcome) -> str | None:
        if got.ok == self.allowed:
            return None
        return f"expected {'allowed' if self.allowed else 'denied'}, got {'allowed' if got.ok else 'denied'}"


def _realtime_expectation(probe: Probe, persona: str) -> ChannelExpect:
    """Participants read broadcast+presence and write presence on their own chat topic (a
    guest thread's host always, its guest while the session is active); nobody else gets
    anything on chat topics; other topics have no policies (closed); service_role bypasses
    RLS (the backend's key, not a client)."""
    topic = probe.object.removeprefix("realtime ")
    check, extension = probe.operation.split()
    own = {"participant_a": {"chat:<ab>"}, "participant_b": {"chat:<ab>"}, "outsider": {"chat:<cd>"},
           "host": {"chat:<cd>", "chat:<guest>", "chat:<closed guest>"}, "guest": {"chat:<guest>"}}.get(persona, set())
    allowed = persona == "service_role" or (topic in own and (check == "read" or extension == "presence"))
    return ChannelExpect(allowed)


@dataclass(frozen=True)
class EstimateExpect:
    """Prefer: count=planned as the caller: refused, or the same estimate for the busy value
    (and the statistics' most common one) as for a value that does not exist."""

    refusal: Expect | None = None
    must_match: bool = True  # service_role reads every row anyway: its estimates may follow them

    def check(self, world: World, got: Outcome) -> str | None:
        if self.refusal is not None:
            return self.refusal.check(world, got)
        if not got.ok:
            return f"expected a planned count, got {got.sqlstate} {got.message}"
        if self.must_match and estimates.leaks(got):
            return f"expected the same estimate as for a missing value, got {estimates.describe(got)} (the estimate " \
                   "depends on rows the caller cannot see)"
        return None


SAME_ESTIMATE = EstimateExpect()
NO_ESTIMATE = EstimateExpect(no_privilege(T, "chat_messages"))
ESTIMATE_EXPECT = {"anon": NO_ESTIMATE, "no_sub": SAME_ESTIMATE, "outsider": SAME_ESTIMATE, "participant_a": SAME_ESTIMATE,
                   "participant_b": SAME_ESTIMATE, "custom_role": NO_ESTIMATE, "service_role": EstimateExpect(must_match=False),
                   **{k: SAME_ESTIMATE for k in GUEST_PERSONAS}}


Expectation = Expect | ChannelExpect | EstimateExpect


def expectation(probe: Probe, persona: str) -> Expectation | None:
    """What the contract says `persona` (a key of dbtool.policy.probes.PERSONAS) must get from `probe`;
    None where it says nothing (see `gaps`)."""
    if probe.kind == "realtime":
        return _realtime_expectation(probe, persona)
    if probe.kind == "estimate":
        return ESTIMATE_EXPECT.get(persona)
    return EXPECT.get(probe.key, {}).get(persona)


def gaps() -> list[str]:
    """Where the contract and the probes disagree: a probe or persona with no expectation, or
    an expectation for a probe that does not exist. Empty when every cell is covered."""
    keys = {p.key for p in ALL_PROBES if p.kind in ("table", "rpc")}
    out = [f"the contract has no expectations for the probe {key!r}" for key in sorted(keys - set(EXPECT))]
    out += [f"the contract has expectations for {key!r}, which no probe runs" for key in sorted(set(EXPECT) - keys)]
    out += [f"the contract's expectations for {key!r} name {sorted(by)} instead of every persona"
            for key, by in EXPECT.items() if set(by) != set(PERSONAS)]
    if set(ESTIMATE_EXPECT) != set(PERSONAS):
        out.append(f"the contract's estimate expectations name {sorted(ESTIMATE_EXPECT)} instead of every persona")
    return out


def judge(world: World, probe: Probe, who: Caller, got: Outcome) -> Cell:
    """The measured cell with the contract's verdict: `passed`, and in `failure` what was
    expected and what came instead."""
    measured = cell(probe, who, got)
    expect = expectation(probe, who.key)
    failure: str | None
    if expect is None:
        failure = f"the contract says nothing about {who.key} for {probe.key}"
    else:
        try:
            failure = expect.check(world, got)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            # rows of another shape than the contract reads (a renamed or missing column)
            failure = f"expected other columns, got {got.describe()} ({type(exc).__name__}: {exc})"
    return replace(measured, passed=failure is None, failure=failure)
