"""Seed data: the demo personas, and a deterministic load profile streamed through COPY.

The load drops chat_messages' indexes and constraints, COPYs into the bare table and
rebuilds them afterwards from their own catalog definitions (so nothing here restates the
migrations), all in one transaction: measured here, COPY into an indexed table ran at about
58k rows/s and into a bare one with indexes built afterwards at about 198k rows/s. The
broadcast trigger is disabled during the load: load data is history, and realtime.messages
is a short-lived queue (Realtime drops it after a few days), so broadcasting a million old
messages would only fill it. The trigger that keeps each thread's last message is off too:
the threads' last messages are set once, per thread, after the load, and so are the
participants' receipts (realistic unread counts for the inbox).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from dbtool.errors import SeedError
from dbtool.ops.schema import require_chat_schema

if TYPE_CHECKING:
    from dbtool.database import Database

# --- demo personas -----------------------------------------------------------------------


@dataclass(frozen=True)
class DemoPersona:
    name: str
    uid: str
    mongo_id: str | None  # None: an anonymous user (a guest), who has no Mongo id
    email: str | None


ALICE = DemoPersona("alice", "a11ce000-0000-4000-8000-000000000001", "6560a11ce000000000000001", "alice@example.com")
BOB = DemoPersona("bob", "b0b00000-0000-4000-8000-000000000002", "6560b0b00000000000000002", "bob@example.com")
CAROL = DemoPersona("carol", "ca201000-0000-4000-8000-000000000003", "6560ca201000000000000003", "carol@example.com")
DAVE = DemoPersona("dave", "da7e0000-0000-4000-8000-000000000004", None, None)  # anonymous: a guest of alice
DEMO_THREAD = f"{ALICE.mongo_id}_{BOB.mongo_id}"
CONVERSATION = [
    (ALICE, BOB, "Hi Bob! Is the flat still available?"),
    (BOB, ALICE, "Hi Alice, yes it is."),
    (ALICE, BOB, "Great. Could I see it on Saturday?"),
    (BOB, ALICE, "Saturday 10:00 works for me."),
    (ALICE, BOB, "Perfect, see you then 🙂"),
]
BOB_READ_UP_TO = 2  # bob has read up to alice's second message (CONVERSATION[2])


# Guest links of alice (DESIGN §8): one dave redeemed, one expired, one revoked. The active
# link's token is fixed so that a developer can redeem it locally (only its SHA-256 is stored).
GUEST_LINK = "11c00000-0000-4000-8000-00000000000a"
GUEST_TOKEN = "demo-guest-link-of-alice-000000000000000000"  # 43 URL-safe characters, like a real token
EXPIRED_LINK = "11c00000-0000-4000-8000-00000000000b"
REVOKED_LINK = "11c00000-0000-4000-8000-00000000000c"
GUEST_THREAD = "g_da7e0000000040008000000000000004"
GUEST_CONVERSATION = [
    (DAVE, "Hi! I found your link on the listing. Is the flat still available?"),
    (ALICE, "Hi Dave, it is. Would you like to see it?"),
    (DAVE, "Yes please, Saturday afternoon?"),
]


@dataclass(frozen=True)
class DemoLink:
    link_id: str
    status: str
    token: str | None = None  # known for the demo's active link only
    guest_thread: str | None = None


@dataclass(frozen=True)
class DemoData:
    personas: list[DemoPersona]
    thread_id: str
    messages: int
    outsider: str
    links: list[DemoLink]

    def as_dict(self) -> dict[str, object]:
        return {"personas": [p.__dict__ for p in self.personas], "thread_id": self.thread_id,
                "messages": self.messages, "outsider": self.outsider, "links": [k.__dict__ for k in self.links]}


def _demo_links(cur: psycopg.Cursor[Any]) -> list[DemoLink]:
    """alice's guest links and dave's guest thread, as create_chat_link and redeem_chat_link leave them."""
    cur.execute(
        "insert into auth.users (id, aud, role, is_anonymous, created_at, updated_at) "
        "values (%s, 'authenticated', 'authenticated', true, now(), now()) on conflict (id) do nothing", (DAVE.uid,))
    cur.executemany(
        "insert into public.chat_links (link_id, host_supabase_id, host_mongo_id, token_hash, label, max_guests, "
        "created_at, expires_at, revoked_at) values (%s, %s, %s, sha256(convert_to(%s, 'UTF8')), %s, %s, "
        "now() - %s::interval, now() + %s::interval, case when %s then now() end) on conflict do nothing",
        [(GUEST_LINK, ALICE.uid, ALICE.mongo_id, GUEST_TOKEN, "flat viewing", 3, "1 hour", "7 days", False),
         (EXPIRED_LINK, ALICE.uid, ALICE.mongo_id, "demo-expired-" + EXPIRED_LINK, "last week's viewing", 1,
          "8 days", "-1 day", False),
         (REVOKED_LINK, ALICE.uid, ALICE.mongo_id, "demo-revoked-" + REVOKED_LINK, "open house", 10, "2 hours",
          "1 day", True)],
    )
    cur.execute(
        "insert into public.chat_threads (thread_id, kind, user_a_mongo_id, user_a_supabase_id, guest_link_id, "
        "guest_supabase_id, guest_display_name, guest_expires_at) select %s, 'guest', l.host_mongo_id, "
        "l.host_supabase_id, l.link_id, %s, 'Dave', l.expires_at from public.chat_links l where l.link_id = %s "
        "on conflict do nothing", (GUEST_THREAD, DAVE.uid, GUEST_LINK))
    existing = cur.execute("select count(*) from public.chat_messages where thread_id = %s", (GUEST_THREAD,)).fetchone()
    if existing == (0,):
        start = datetime.now(UTC) - timedelta(minutes=len(GUEST_CONVERSATION))
        cur.executemany(
            "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
            "body, created_at) values (%s, %s, null, %s, %s, %s)",
            [(GUEST_THREAD, s.mongo_id, s.uid, body, start + timedelta(minutes=n))
             for n, (s, body) in enumerate(GUEST_CONVERSATION)],
        )
    return [DemoLink(GUEST_LINK, "active", GUEST_TOKEN, GUEST_THREAD), DemoLink(EXPIRED_LINK, "expired"),
            DemoLink(REVOKED_LINK, "revoked")]


def demo(conn: psycopg.Connection) -> DemoData:
    """alice and bob share a thread with a short conversation; carol is an outsider; dave is
    an anonymous guest who redeemed alice's guest link (alice also has an expired and a
    revoked link). Idempotent; run by a role that bypasses RLS (the migration role or a superuser)."""
    people = [ALICE, BOB, CAROL]
    with conn.cursor() as cur:
        cur.executemany(
            "insert into auth.users (id, email, aud, role, email_confirmed_at, created_at, updated_at, "
            "raw_user_meta_data) values (%s, %s, 'authenticated', 'authenticated', now(), now(), now(), "
            "jsonb_build_object('name', %s::text)) on conflict (id) do nothing",
            [(p.uid, p.email, p.name) for p in people],
        )
        cur.executemany(
            "insert into public.chat_identities (supabase_user_id, mongo_id) values (%s, %s) on conflict do nothing",
            [(p.uid, p.mongo_id) for p in people],
        )
        cur.execute(
            "insert into public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, "
            "user_b_supabase_id) values (%s, %s, %s, %s, %s) on conflict do nothing",
            (DEMO_THREAD, ALICE.mongo_id, ALICE.uid, BOB.mongo_id, BOB.uid),
        )
        existing = cur.execute("select count(*) from public.chat_messages where thread_id = %s", (DEMO_THREAD,)).fetchone()
        if existing == (0,):
            start = datetime.now(UTC) - timedelta(minutes=len(CONVERSATION))
            cur.executemany(
                "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
                "body, created_at) values (%s, %s, %s, %s, %s, %s)",
                [(DEMO_THREAD, s.mongo_id, r.mongo_id, s.uid, body, start + timedelta(minutes=n))
                 for n, (s, r, body) in enumerate(CONVERSATION)],
            )
        # bob's client received and he read up to alice's second message: his inbox shows one
        # unread, alice's ticks show "read" up to there.
        cur.execute(
            "insert into public.chat_receipts (thread_id, supabase_user_id, delivered_up_to, read_up_to, delivered_at, "
            "read_at) select thread_id, %s, id, id, created_at, created_at from public.chat_messages "
            "where thread_id = %s order by created_at, id offset %s limit 1 on conflict do nothing",
            (BOB.uid, DEMO_THREAD, BOB_READ_UP_TO),
        )
        links = _demo_links(cur)
        cur.execute(THREAD_ACTIVITY, {"threads": [DEMO_THREAD, GUEST_THREAD]})
    return DemoData([*people, DAVE], DEMO_THREAD, len(CONVERSATION), CAROL.name, links)


# --- load profile --------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    users: int
    threads: int
    messages: int
    seed: int
    seconds: float
    copy_seconds: float
    index_seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "messages_per_second": round(self.rate)}


PHRASES = ["hi", "hello there", "are you around?", "sounds good", "see you tomorrow", "thanks!", "on my way",
           "can we move it to 5pm?", "sure", "let me check and get back to you", "ok 👍", "what time works?"]
CHUNK = 20_000
EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)
LOAD_END = datetime(2026, 1, 1, tzinfo=UTC)  # load messages span the 90 days before: same seed, same rows


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def check_load(users: int, threads: int, messages: int) -> None:
    """Refuse a load profile that cannot be built (before anything connects)."""
    if users < 2:
        raise SeedError(f"--users must be at least 2 (got {users})")
    if threads < 1 or threads > users * (users - 1) // 2:
        raise SeedError(f"--threads must be between 1 and {users * (users - 1) // 2} for {users} users (got {threads})")
    if messages < 0:
        raise SeedError(f"--messages must not be negative (got {messages})")


def _message_lines(
    rng: random.Random, pairs: list[tuple[str, str, str, str, str]], first_id: int, count: int, start_s: int
) -> Iterator[bytes]:
    """COPY text rows for chat_messages, CHUNK at a time, over 90 days: timestamps rise with
    the id, in whole seconds, so busy seconds hold several messages (as real traffic does)."""
    span_s = 90 * 86_400
    clock = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
    # Per thread and direction, the constant middle of a row: thread, sender, recipient, sender uid.
    middles = []
    for tid, a_m, a_u, b_m, b_u in pairs:
        middles += [f"\t{tid}\t{a_m}\t{b_m}\t{a_u}\t", f"\t{tid}\t{b_m}\t{a_m}\t{b_u}\t"]
    n = len(middles)
    pick = rng.random
    days: dict[int, str] = {}
    lines: list[str] = []
    for i in range(count):
        day, second = divmod(start_s + i * span_s // max(count, 1), 86_400)
        date = days.get(day)
        if date is None:
            date = days[day] = (EPOCH_2000 + timedelta(days=day)).strftime("%Y-%m-%d ")
        lines.append(f"{first_id + i}{middles[int(pick() * n)]}{PHRASES[i % 12]} #{i}\t{date}{clock[second]}+00\n")
        if len(lines) == CHUNK:
            yield "".join(lines).encode()
            lines = []
    if lines:
        yield "".join(lines).encode()


def _detach(conn: psycopg.Connection) -> tuple[list[str], list[str]]:
    """Drop chat_messages' constraints and indexes; return the statements that restore them."""
    constraints = conn.execute(
        "select conname, pg_get_constraintdef(oid), contype from pg_constraint "
        "where conrelid = 'public.chat_messages'::regclass order by contype = 'f', conname"
    ).fetchall()
    indexes = conn.execute(
        "select c.relname, pg_get_indexdef(i.indexrelid) from pg_index i join pg_class c on c.oid = i.indexrelid "
        "where i.indrelid = 'public.chat_messages'::regclass "
        "and not exists (select from pg_constraint k where k.conindid = i.indexrelid) order by 1"
    ).fetchall()
    for name, _, _ in sorted(constraints, key=lambda c: c[2] != "f"):  # foreign keys first
        conn.execute(sql.SQL("alter table public.chat_messages drop constraint {}").format(sql.Identifier(name)))
    for name, _ in indexes:
        conn.execute(sql.SQL("drop index public.{}").format(sql.Identifier(name)))
    local = [sql.SQL("add constraint {} {}").format(sql.Identifier(n), sql.SQL(d)) for n, d, t in constraints if t != "f"]
    restore = []
    if local:  # one ALTER: the primary key's index build and one scan validating every check
        restore.append(sql.SQL("alter table public.chat_messages ").as_string(conn)
                       + sql.SQL(", ").join(local).as_string(conn))
    restore += [d for _, d in indexes]
    restore += [sql.SQL("alter table public.chat_messages add constraint {} {}").format(
        sql.Identifier(n), sql.SQL(d)).as_string(conn) for n, d, t in constraints if t == "f"]
    return restore, [n for n, _, _ in constraints] + [n for n, _ in indexes]


# The activity rows of these threads, from their data (what chat_threads__activity and
# chat_messages__touch_thread keep live; seeding may run with triggers off).
THREAD_ACTIVITY = """
    insert into chat_private.chat_thread_activity as a (thread_id, user_a_supabase_id, user_b_supabase_id,
                                                        guest_supabase_id, activity_at, last_message_id)
    select t.thread_id, t.user_a_supabase_id, t.user_b_supabase_id, t.guest_supabase_id,
           coalesce(l.created_at, t.created_at), l.id
    from public.chat_threads t
    left join lateral (select m.id, m.created_at from public.chat_messages m
                       where m.thread_id = t.thread_id order by m.created_at desc, m.id desc limit 1) l on true
    where t.thread_id = any(%(threads)s)
    on conflict (thread_id) do update set activity_at = excluded.activity_at, last_message_id = excluded.last_message_id
"""


def _inbox_state(conn: psycopg.Connection, threads: list[str]) -> None:
    """Each loaded thread's activity row with its last message (what chat_threads__activity
    and chat_messages__touch_thread keep live), and receipts: per participant, a hash of the
    thread picks how far they read (all, or the k newest messages left unread, k < 12) and one
    in eight never opened the thread (no receipt: everything from the other party is unread);
    delivered is the newest message."""
    conn.execute(THREAD_ACTIVITY, {"threads": threads})
    conn.execute(
        """
        insert into public.chat_receipts (thread_id, supabase_user_id, delivered_up_to, read_up_to, delivered_at, read_at)
        select t.thread_id, p.uid, greatest(a.last_message_id, r.id), r.id, a.activity_at, a.activity_at
        from public.chat_threads t
        join chat_private.chat_thread_activity a on a.thread_id = t.thread_id
        cross join lateral (values (t.user_a_supabase_id, abs(hashtext(t.thread_id || 'a'))),
                                   (t.user_b_supabase_id, abs(hashtext(t.thread_id || 'b')))) p(uid, h)
        cross join lateral (select m.id from public.chat_messages m where m.thread_id = t.thread_id
                            order by m.id desc offset p.h %% 12 limit 1) r
        where t.thread_id = any(%(threads)s) and p.h %% 8 <> 0
        """, {"threads": threads})


def load(
    conn: psycopg.Connection,
    *,
    users: int = 5_000,
    threads: int = 10_000,
    messages: int = 1_000_000,
    seed: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> LoadResult:
    """Deterministic bulk data (same seed, same rows). Needs a superuser or the table owner."""
    check_load(users, threads, messages)
    rng = random.Random(seed)
    began = time.monotonic()
    people = [(_uid(rng), f"{rng.getrandbits(96):024x}") for _ in range(users)]
    if len({m for _, m in people}) != users:
        raise SeedError("generated Mongo ids collided; choose another --seed")
    if conn.execute("select exists (select from auth.users where id = %s)", (people[0][0],)).fetchone() == (True,):
        raise SeedError(f"load data for --seed {seed} is already present; run `dbtool reset` first or pick another --seed")
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < threads:
        a, b = rng.sample(range(users), 2)
        chosen.add((min(a, b), max(a, b)))
    pairs = []
    for a, b in sorted(chosen):
        (ua, ma), (ub, mb) = sorted([people[a][::-1], people[b][::-1]])
        pairs.append((f"{ua}_{ub}", ua, ma, ub, mb))
    with conn.transaction():
        conn.execute("set local maintenance_work_mem = '1GB'")
        conn.execute("set local max_parallel_maintenance_workers = 2")
        conn.execute("alter table public.chat_messages disable trigger chat_messages__broadcast")
        conn.execute("alter table public.chat_messages disable trigger chat_messages__touch_thread")
        conn.execute("alter table public.chat_threads disable trigger chat_threads__activity")
        restore, _ = _detach(conn)
        first_id = conn.execute("select coalesce(max(id), 0) + 1 from public.chat_messages").fetchone()[0]  # type: ignore[index]
        with conn.cursor() as cur:
            with cur.copy("copy auth.users (id, email, aud, role, created_at, updated_at) from stdin") as copy:
                for n, (uid, _) in enumerate(people):
                    copy.write_row((uid, f"load{seed}-{n}@example.invalid", "authenticated", "authenticated",
                                    EPOCH_2000, EPOCH_2000))
            began_at = LOAD_END - timedelta(days=91)
            with cur.copy("copy public.chat_identities (supabase_user_id, mongo_id, created_at) from stdin") as copy:
                for uid, mongo in people:
                    copy.write_row((uid, mongo, began_at))
            with cur.copy("copy public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, "
                          "user_b_supabase_id, created_at) from stdin") as copy:
                for row in pairs:
                    copy.write_row((*row, began_at))
            start_s = int((LOAD_END - timedelta(days=90) - EPOCH_2000).total_seconds())
            done = 0
            # The queued writer sends from a thread: the server parses while Python generates.
            with cur.copy("copy public.chat_messages (id, thread_id, sender_mongo_id, recipient_mongo_id, "
                          "sender_supabase_id, body, created_at) from stdin", writer=QueuedLibpqWriter(cur)) as copy:
                for chunk in _message_lines(rng, pairs, first_id, messages, start_s):
                    copy.write(chunk)
                    done = min(done + CHUNK, messages)
                    if progress:
                        progress(done, messages)
        copied = time.monotonic()
        for statement in restore:
            conn.execute(statement.encode())
        conn.execute("select setval(pg_get_serial_sequence('public.chat_messages', 'id'), "
                     "greatest((select max(id) from public.chat_messages), 1))")
        _inbox_state(conn, [p[0] for p in pairs])
        conn.execute("alter table public.chat_threads enable trigger chat_threads__activity")
        conn.execute("alter table public.chat_messages enable trigger chat_messages__touch_thread")
        conn.execute("alter table public.chat_messages enable trigger chat_messages__broadcast")
    indexed = time.monotonic()
    conn.execute("analyze public.chat_identities, public.chat_threads, public.chat_messages, public.chat_receipts, "
                 "chat_private.chat_thread_activity, auth.users")
    return LoadResult(users, threads, messages, seed, time.monotonic() - began, copied - began, indexed - copied)


# --- on a database the CLI names ------------------------------------------------------------


def demo_in(db: Database, *, force: bool = False) -> DemoData:
    """`dbtool seed --profile demo`: the demo data in one transaction; refuses a database that
    is not on this machine unless forced, and one without the chat schema."""
    db.require_local(force, "seed")
    with db.connect(admin=True) as conn:
        require_chat_schema(conn, "seed")
        with conn.transaction():
            return demo(conn)


def load_in(db: Database, *, users: int, threads: int, messages: int, seed: int, force: bool = False,
            progress: Callable[[int, int], None] | None = None) -> LoadResult:
    """`dbtool seed --profile load`: `load` with the same checks as `demo_in`."""
    check_load(users, threads, messages)
    db.require_local(force, "seed")
    with db.connect(admin=True) as conn:
        require_chat_schema(conn, "seed")
        return load(conn, users=users, threads=threads, messages=messages, seed=seed, progress=progress)
