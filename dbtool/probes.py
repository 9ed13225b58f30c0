"""Every (object x operation) a caller can attempt, run as each persona exactly as Supabase's
servers would run it (PostgREST requests, Realtime channel checks).

The policy suite asserts the contract's expectation for each cell; `dbtool audit` runs the
same probes to measure the effective access matrix. Probes run in savepoints of the world's
transaction and never leave anything behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from dbtool import personas, postgrest, realtime
from dbtool.personas import Persona
from dbtool.postgrest import Outcome
from dbtool.world import Member, World, thread_id

PERSONAS = ("anon", "no_sub", "outsider", "participant_a", "participant_b", "service_role")
PERSONA_LABELS = {
    "anon": "anon",
    "no_sub": "authenticated, no sub",
    "outsider": "outsider",
    "participant_a": "participant A",
    "participant_b": "participant B",
    "service_role": "service_role",
}


def persona(world: World, key: str) -> Persona:
    fixed = {"anon": personas.anon(), "no_sub": personas.authenticated_without_sub(), "service_role": personas.service()}
    members = {"outsider": world.carol, "participant_a": world.alice, "participant_b": world.bob}
    return fixed[key] if key in fixed else members[key].persona


def actor(world: World, key: str) -> Member:
    """Whose ids the persona uses: its own, or alice's for callers without an identity."""
    return {"outsider": world.carol, "participant_b": world.bob}.get(key, world.alice)


def partner(world: World, key: str) -> Member:
    """The other side of thread ab from the actor's point of view (alice for bob, else bob)."""
    return world.alice if key == "participant_b" else world.bob


@dataclass(frozen=True)
class Probe:
    object: str
    operation: str
    kind: str  # table | rpc | realtime
    run: Callable[[psycopg.Connection[Any], World, str], Outcome]

    @property
    def key(self) -> str:
        return f"{self.object} {self.operation}"


def _sql(method: str, query: str, params: Callable[[World, str], tuple[Any, ...]]) -> Callable[..., Outcome]:
    path = "/" + query.split("public.")[1].split()[0] if "public." in query else "/"

    def run(conn: psycopg.Connection[Any], world: World, key: str) -> Outcome:
        return postgrest.run(conn, persona(world, key), query, params(world, key), method=method, path=path)

    return run


def _rpc(
    function: str, args: Callable[[World, str], dict[str, Any]], types: dict[str, str], volatile: bool
) -> Callable[..., Outcome]:
    def run(conn: psycopg.Connection[Any], world: World, key: str) -> Outcome:
        return postgrest.call(conn, persona(world, key), function, args(world, key), volatile=volatile, types=types)

    return run


def _channel(check: str, extension: str, topic: Callable[[World], str]) -> Callable[..., Outcome]:
    def run(conn: psycopg.Connection[Any], world: World, key: str) -> Outcome:
        fn = realtime.read_check if check == "read" else realtime.write_check
        access = fn(conn, persona(world, key), topic(world), (extension,))
        return Outcome(access.allowed[extension], [])

    return run


def _no_params(world: World, key: str) -> tuple[Any, ...]:
    return ()


TABLE_PROBES = [
    Probe("chat_identities", "select", "table", _sql("GET", "select * from public.chat_identities", _no_params)),
    Probe("chat_identities", "insert", "table", _sql(
        "POST", "insert into public.chat_identities (supabase_user_id, mongo_id) values (%s, %s)",
        lambda w, k: (w.frank_uid, w.unregistered_mongo_id))),
    Probe("chat_identities", "update", "table", _sql(
        "PATCH", "update public.chat_identities set created_at = created_at where supabase_user_id = %s",
        lambda w, k: (actor(w, k).uid,))),
    Probe("chat_identities", "delete", "table", _sql(
        "DELETE", "delete from public.chat_identities where supabase_user_id = %s", lambda w, k: (actor(w, k).uid,))),
    Probe("chat_threads", "select", "table", _sql("GET", "select * from public.chat_threads", _no_params)),
    Probe("chat_threads", "insert own thread", "table", _sql(
        "POST", "insert into public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, "
        "user_b_supabase_id) values (%s, %s, %s, %s, %s)",
        lambda w, k: _thread_row(actor(w, k), w.erin))),
    Probe("chat_threads", "insert others' thread", "table", _sql(
        "POST", "insert into public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, "
        "user_b_supabase_id) values (%s, %s, %s, %s, %s)",
        lambda w, k: _thread_row(w.bob if k == "participant_a" else w.alice, w.erin))),
    Probe("chat_threads", "update", "table", _sql(
        "PATCH", "update public.chat_threads set created_at = created_at where thread_id = %s",
        lambda w, k: (w.thread_ab,))),
    Probe("chat_threads", "delete", "table", _sql(
        "DELETE", "delete from public.chat_threads where thread_id = %s", lambda w, k: (w.thread_ab,))),
    Probe("chat_messages", "select", "table", _sql(
        "GET", "select * from public.chat_messages order by created_at desc, id desc limit 50", _no_params)),
    Probe("chat_messages", "insert as self", "table", _sql(
        "POST", "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
        "body) values (%s, %s, %s, %s, 'hello')",
        lambda w, k: (w.thread_ab, actor(w, k).mongo_id, partner(w, k).mongo_id, actor(w, k).uid))),
    Probe("chat_messages", "insert as the other participant", "table", _sql(
        "POST", "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
        "body) values (%s, %s, %s, %s, 'forged')",
        lambda w, k: (w.thread_ab, partner(w, k).mongo_id, actor(w, k).mongo_id, partner(w, k).uid))),
    Probe("chat_messages", "insert with created_at", "table", _sql(
        "POST", "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
        "body, created_at) values (%s, %s, %s, %s, 'backdated', now() - interval '1 year')",
        lambda w, k: (w.thread_ab, actor(w, k).mongo_id, partner(w, k).mongo_id, actor(w, k).uid))),
    Probe("chat_messages", "update", "table", _sql(
        "PATCH", "update public.chat_messages set body = 'edited' where thread_id = %s", lambda w, k: (w.thread_ab,))),
    Probe("chat_messages", "delete", "table", _sql(
        "DELETE", "delete from public.chat_messages where thread_id = %s", lambda w, k: (w.thread_ab,))),
]


def _thread_row(x: Member, y: Member) -> tuple[str, str, str, str, str]:
    a, b = sorted((x, y), key=lambda m: m.mongo_id)
    return thread_id(a.mongo_id, b.mongo_id), a.mongo_id, a.uid, b.mongo_id, b.uid


RPC_PROBES = [
    Probe("ensure_chat_thread()", "call (alice, bob)", "rpc", _rpc(
        "ensure_chat_thread", lambda w, k: {"_user_a_mongo_id": w.alice.mongo_id, "_user_b_mongo_id": w.bob.mongo_id},
        {}, volatile=True)),
    Probe("insert_chat_message()", "call (thread ab, self -> other)", "rpc", _rpc(
        "insert_chat_message",
        lambda w, k: {"_thread_id": w.thread_ab, "_sender_mongo_id": actor(w, k).mongo_id,
                      "_recipient_mongo_id": partner(w, k).mongo_id, "_body": "hello"},
        {}, volatile=True)),
    Probe("chat_history()", "call (thread ab)", "rpc", _rpc(
        "chat_history", lambda w, k: {"_thread_id": w.thread_ab}, {}, volatile=False)),
]

# Topics as columns: ab is A and B's thread, cd is the outsider's own thread with dave.
TOPICS: list[tuple[str, Callable[[World], str]]] = [
    ("chat:<ab>", lambda w: f"chat:{w.thread_ab}"),
    ("chat:<cd>", lambda w: f"chat:{w.thread_cd}"),
    ("chat:", lambda w: "chat:"),
    ("chat:<missing>", lambda w: f"chat:{w.missing_thread}"),
    ("chat:<ab>:x", lambda w: f"chat:{w.thread_ab}:x"),
    ("chat:<AB upper>", lambda w: f"chat:{w.thread_ab.upper()}"),
    ("chat:%", lambda w: "chat:%"),
    ("CHAT:<ab>", lambda w: f"CHAT:{w.thread_ab}"),
    ("room:lobby", lambda w: "room:lobby"),
]

REALTIME_PROBES = [
    Probe(f"realtime {label}", f"{check} {ext}", "realtime", _channel(check, ext, topic))
    for label, topic in TOPICS
    for check in ("read", "write")
    for ext in ("broadcast", "presence")
]

ALL_PROBES = TABLE_PROBES + RPC_PROBES + REALTIME_PROBES
