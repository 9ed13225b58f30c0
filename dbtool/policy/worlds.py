"""A small chat world for probes: users, identities, two threads, guest links and some messages.

Created inside the caller's transaction by a role that bypasses RLS (postgres on Supabase,
supabase_admin locally) and rolled back by the caller, so probing a staging database
leaves nothing behind. Ids are random, so they cannot collide with real data.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from dbtool.supabase import personas
from dbtool.supabase.personas import Persona


@dataclass(frozen=True)
class Member:
    name: str
    uid: str
    mongo_id: str
    email: str

    @property
    def persona(self) -> Persona:
        return personas.user(self.name, self.uid, self.email)


@dataclass(frozen=True)
class Guest:
    """An anonymous user (signInAnonymously): no identity, no Mongo id."""

    name: str
    uid: str

    @property
    def persona(self) -> Persona:
        return personas.anonymous(self.name, self.uid)


@dataclass(frozen=True)
class Guests:
    """Guest links (DESIGN §8). dave hosts `link` (5 guests at most, `token` known): gina is
    its active guest (thread `active_thread`), enid a guest whose session dave ended
    (`ended_thread`, closed), paul a permanent user with an identity who redeemed it
    (`permanent_thread`). erin hosts `other_link`, redeemed by otto (`other_thread`). lou is
    an anonymous user without a link."""

    link_id: str
    token: str
    other_link_id: str
    active: Guest
    other: Guest
    ended: Guest
    lurker: Guest
    permanent: Member
    active_thread: str
    ended_thread: str
    permanent_thread: str
    other_thread: str


def thread_id(a: str, b: str) -> str:
    """The contract's thread id: lower(min) || '_' || lower(max)."""
    low, high = sorted((a.lower(), b.lower()))
    return f"{low}_{high}"


@dataclass(frozen=True)
class World:
    """alice and bob share thread ab; carol and dave share cd; erin has an identity but no
    thread; `unregistered_mongo_id` has no identity; `missing_thread` does not exist.
    Receipts: bob received ab up to its second message and read its first; dave read cd's
    first; alice and carol have none yet."""

    alice: Member
    bob: Member
    carol: Member
    dave: Member
    erin: Member
    frank_uid: str  # a signed-up user without a chat identity
    unregistered_mongo_id: str
    custom_role: str  # a role a JWT may carry besides anon/authenticated (see add_custom_role)
    guests: Guests
    messages: dict[str, list[int]] = field(default_factory=dict)

    @property
    def thread_ab(self) -> str:
        return thread_id(self.alice.mongo_id, self.bob.mongo_id)

    @property
    def thread_cd(self) -> str:
        return thread_id(self.carol.mongo_id, self.dave.mongo_id)

    @property
    def missing_thread(self) -> str:
        return thread_id(self.alice.mongo_id, self.unregistered_mongo_id)

    @property
    def members(self) -> list[Member]:
        return [self.alice, self.bob, self.carol, self.dave, self.erin]


def _member(name: str) -> Member:
    uid = str(uuid.uuid4())
    return Member(name, uid, secrets.token_hex(12), f"{name}.{uid[:8]}@probe.chat-db.invalid")


def insert_thread(conn: psycopg.Connection[Any], x: Member, y: Member) -> str:
    a, b = sorted((x, y), key=lambda m: m.mongo_id)
    tid = thread_id(a.mongo_id, b.mongo_id)
    conn.execute(
        "insert into public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, "
        "user_b_supabase_id) values (%s, %s, %s, %s, %s)",
        (tid, a.mongo_id, a.uid, b.mongo_id, b.uid),
    )
    return tid


def insert_message(conn: psycopg.Connection[Any], tid: str, sender: Member, recipient: Member, body: str) -> int:
    row = conn.execute(
        "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body) "
        "values (%s, %s, %s, %s, %s) returning id",
        (tid, sender.mongo_id, recipient.mongo_id, sender.uid, body),
    ).fetchone()
    assert row is not None
    return int(row[0])


def insert_link(conn: psycopg.Connection[Any], host: Member, token: str, max_guests: int = 5,
                expires_in: str = "1 day") -> str:
    """A guest link of `host` whose token is `token` (only its SHA-256 is stored)."""
    row = conn.execute(
        "insert into public.chat_links (host_supabase_id, host_mongo_id, token_hash, max_guests, expires_at) "
        "values (%s, %s, sha256(convert_to(%s, 'UTF8')), %s, now() + %s::interval) returning link_id",
        (host.uid, host.mongo_id, token, max_guests, expires_in),
    ).fetchone()
    assert row is not None
    return str(row[0])


def insert_guest_thread(conn: psycopg.Connection[Any], link_id: str, guest_uid: str, name: str | None,
                        ended: bool = False) -> str:
    """A redeemed session of `link_id`, as redeem_chat_link creates it (ended: as end_chat_guest leaves it)."""
    tid = f"g_{secrets.token_hex(16)}"
    conn.execute(
        "insert into public.chat_threads (thread_id, kind, user_a_mongo_id, user_a_supabase_id, guest_link_id, "
        "guest_supabase_id, guest_display_name, guest_expires_at, guest_ended_at) "
        "select %s, 'guest', l.host_mongo_id, l.host_supabase_id, l.link_id, %s, %s, l.expires_at, "
        "case when %s then now() end from public.chat_links l where l.link_id = %s",
        (tid, guest_uid, name, ended, link_id),
    )
    return tid


def insert_guest_message(conn: psycopg.Connection[Any], tid: str, sender_uid: str, sender_mongo_id: str | None,
                         body: str) -> int:
    """A message in a guest thread: the guest's carry no Mongo id, the host's no recipient."""
    row = conn.execute(
        "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body) "
        "values (%s, %s, null, %s, %s) returning id",
        (tid, sender_mongo_id, sender_uid, body),
    ).fetchone()
    assert row is not None
    return int(row[0])


def create(conn: psycopg.Connection[Any]) -> World:
    """Insert a fresh world in the current transaction (caller must bypass RLS)."""
    alice, bob, carol, dave, erin, paul = (_member(n) for n in ("alice", "bob", "carol", "dave", "erin", "paul"))
    frank_uid = str(uuid.uuid4())
    gina, otto, enid, lou = (Guest(n, str(uuid.uuid4())) for n in ("gina", "otto", "enid", "lou"))
    with conn.cursor() as cur:
        cur.executemany(
            "insert into auth.users (id, email, aud, role, created_at, updated_at) "
            "values (%s, %s, 'authenticated', 'authenticated', now(), now())",
            [(m.uid, m.email) for m in (alice, bob, carol, dave, erin, paul)]
            + [(frank_uid, f"frank.{frank_uid[:8]}@probe.invalid")],
        )
        cur.executemany(
            "insert into auth.users (id, aud, role, is_anonymous, created_at, updated_at) "
            "values (%s, 'authenticated', 'authenticated', true, now(), now())",
            [(g.uid,) for g in (gina, otto, enid, lou)],
        )
        cur.executemany(
            "insert into public.chat_identities (supabase_user_id, mongo_id) values (%s, %s)",
            [(m.uid, m.mongo_id) for m in (alice, bob, carol, dave, erin, paul)],
        )
    token = secrets.token_urlsafe(32)
    link_id = insert_link(conn, dave, token)
    other_link_id = insert_link(conn, erin, secrets.token_urlsafe(32))
    guests = Guests(
        link_id, token, other_link_id, gina, otto, enid, lou, paul,
        active_thread=insert_guest_thread(conn, link_id, gina.uid, "Gina"),
        ended_thread=insert_guest_thread(conn, link_id, enid.uid, None, ended=True),
        permanent_thread=insert_guest_thread(conn, link_id, paul.uid, "Paul"),
        other_thread=insert_guest_thread(conn, other_link_id, otto.uid, "Otto"),
    )
    world = World(alice, bob, carol, dave, erin, frank_uid, secrets.token_hex(12), add_custom_role(conn), guests)
    insert_thread(conn, alice, bob)
    insert_thread(conn, carol, dave)
    world.messages["ab"] = [
        insert_message(conn, world.thread_ab, alice, bob, "hi bob"),
        insert_message(conn, world.thread_ab, bob, alice, "hi alice"),
        insert_message(conn, world.thread_ab, alice, bob, "how are you?"),
    ]
    world.messages["cd"] = [
        insert_message(conn, world.thread_cd, carol, dave, "hello dave"),
        insert_message(conn, world.thread_cd, dave, carol, "hello carol"),
    ]
    world.messages["guest"] = [
        insert_guest_message(conn, guests.active_thread, dave.uid, dave.mongo_id, "welcome, Gina"),
        insert_guest_message(conn, guests.active_thread, gina.uid, None, "thanks!"),
    ]
    world.messages["ended"] = [insert_guest_message(conn, guests.ended_thread, enid.uid, None, "bye")]
    world.messages["permanent"] = [insert_guest_message(conn, guests.permanent_thread, paul.uid, None, "hi dave")]
    world.messages["other"] = [insert_guest_message(conn, guests.other_thread, otto.uid, None, "hi erin")]
    insert_receipt(conn, world.thread_ab, bob, delivered=world.messages["ab"][1], read=world.messages["ab"][0])
    insert_receipt(conn, world.thread_cd, dave, delivered=world.messages["cd"][0], read=world.messages["cd"][0])
    return world


def insert_receipt(conn: psycopg.Connection[Any], tid: str, reader: Member, *, delivered: int, read: int) -> None:
    """A participant's cursors, as mark_chat_delivered / mark_chat_read leave them."""
    conn.execute(
        "insert into public.chat_receipts (thread_id, supabase_user_id, delivered_up_to, read_up_to, delivered_at, "
        "read_at) values (%s, %s, %s, %s, now(), now())",
        (tid, reader.uid, delivered, read),
    )


def add_custom_role(conn: psycopg.Connection[Any]) -> str:
    """A role that `authenticator` could switch to for a JWT with a custom `role` claim, as a
    project may add for another feature: it can use the schemas and, where the connection may
    grant it, read and write realtime.messages. Created in the caller's transaction (rolled
    back with the world); needs CREATEROLE, which postgres has on Supabase."""
    name = f"chat_probe_custom_{secrets.token_hex(4)}"
    conn.execute(f"create role {name} nologin")
    conn.execute(f"grant {name} to current_user")
    conn.execute(f"grant usage on schema public, realtime to {name}")
    try:
        with conn.transaction():
            conn.execute(f"grant select, insert on table realtime.messages to {name}")
    except psycopg.errors.InsufficientPrivilege:
        pass  # without the grant option the role simply holds no privilege there
    return name


def isolate_sequences(conn: psycopg.Connection[Any], wait: str = "2s") -> list[str]:
    """Make nextval() on the chat tables' sequences roll back with this transaction.

    Sequence values are not transactional, so probes that insert would advance them; an
    ALTER SEQUENCE ... RESTART gives the sequence a transactional state for the rest of the
    transaction. It locks the sequence against concurrent inserts until the transaction
    ends, so it waits at most `wait`; when it cannot get the lock it changes nothing and
    returns an empty list (the caller reports that sequences may move)."""
    rows = conn.execute(
        """
        select s.oid::regclass::text
        from pg_catalog.pg_class s
        join pg_catalog.pg_depend d on d.objid = s.oid and d.deptype in ('a', 'i')
        join pg_catalog.pg_class t on t.oid = d.refobjid
        where s.relkind = 'S' and t.relnamespace = 'public'::regnamespace and t.relname like 'chat%'
        """
    ).fetchall()
    previous = conn.execute("select current_setting('lock_timeout')").fetchone()
    isolated: list[str] = []
    try:
        with conn.transaction():
            conn.execute("select set_config('lock_timeout', %s, true)", (wait,))
            for (name,) in rows:
                last = conn.execute(f"select last_value + (is_called::int) from {name}").fetchone()
                conn.execute(f"alter sequence {name} restart with {int(last[0]) if last else 1}")
                isolated.append(name)
    except psycopg.errors.LockNotAvailable:
        isolated = []
    conn.execute("select set_config('lock_timeout', %s, true)", (previous[0] if previous else "0",))
    return isolated


@dataclass(frozen=True)
class Session:
    """A fresh world in an open transaction that will be rolled back; `isolated` lists the
    sequences kept still (empty unless asked for, or when their lock was not free)."""

    world: World
    isolated: list[str]


def exact_for(local: bool, exact: bool | None) -> bool:
    """Whether to keep the chat sequences still (`--exact/--no-exact`, the plugin's
    --chat-db-exact): as asked, or when nobody asked, only for a database on this machine,
    since it pauses the application's message inserts until the run ends."""
    return local if exact is None else exact


@contextmanager
def rolled_back(conn: psycopg.Connection[Any], *, exact: bool) -> Iterator[Session]:
    """Create a world in a transaction on `conn` (autocommit) that is always rolled back,
    whatever the block does; `exact` also keeps the chat sequences still (see
    isolate_sequences). Probes run in savepoints inside it."""
    with conn.transaction(force_rollback=True):
        isolated = isolate_sequences(conn) if exact else []
        yield Session(create(conn), isolated)
