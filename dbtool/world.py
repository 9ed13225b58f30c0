"""A small chat world for probes: users, identities, two threads and some messages.

Created inside the caller's transaction by a role that bypasses RLS (postgres on Supabase,
supabase_admin locally) and rolled back by the caller, so probing a staging database
leaves nothing behind. Ids are random, so they cannot collide with real data.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

from dbtool import personas
from dbtool.personas import Persona


@dataclass(frozen=True)
class Member:
    name: str
    uid: str
    mongo_id: str
    email: str

    @property
    def persona(self) -> Persona:
        return personas.user(self.name, self.uid, self.email)


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


def create(conn: psycopg.Connection[Any]) -> World:
    """Insert a fresh world in the current transaction (caller must bypass RLS)."""
    alice, bob, carol, dave, erin = (_member(n) for n in ("alice", "bob", "carol", "dave", "erin"))
    frank_uid = str(uuid.uuid4())
    with conn.cursor() as cur:
        cur.executemany(
            "insert into auth.users (id, email, aud, role, created_at, updated_at) "
            "values (%s, %s, 'authenticated', 'authenticated', now(), now())",
            [(m.uid, m.email) for m in (alice, bob, carol, dave, erin)] + [(frank_uid, f"frank.{frank_uid[:8]}@probe.invalid")],
        )
        cur.executemany(
            "insert into public.chat_identities (supabase_user_id, mongo_id) values (%s, %s)",
            [(m.uid, m.mongo_id) for m in (alice, bob, carol, dave, erin)],
        )
    world = World(alice, bob, carol, dave, erin, frank_uid, secrets.token_hex(12), add_custom_role(conn))
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
