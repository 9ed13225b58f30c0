"""Every (object x operation) a caller can attempt, run as each persona exactly as Supabase's
servers would run it (PostgREST requests, Realtime channel checks).

dbtool.policy.contract says what each cell must give (`dbtool verify` and the policy suite check
it); `dbtool audit` runs the same probes to measure the effective access matrix. Probes run
in savepoints of the world's transaction and never leave anything behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from dbtool.ops import limits
from dbtool.policy import estimates
from dbtool.policy.worlds import Member, World, thread_id
from dbtool.supabase import personas, postgrest, realtime
from dbtool.supabase.personas import Persona
from dbtool.supabase.postgrest import Outcome

PERSONAS = ("anon", "no_sub", "outsider", "participant_a", "participant_b", "custom_role", "service_role",
            # guest links (DESIGN §8): the host of a link and the guests of world.guests
            "host", "guest", "other_guest", "ended_guest", "anonymous", "permanent_guest")
PERSONA_LABELS = {
    "anon": "anon",
    "no_sub": "authenticated, no sub",
    "outsider": "outsider",
    "participant_a": "participant A",
    "participant_b": "participant B",
    "custom_role": "custom role",
    "service_role": "service_role",
    "host": "host",
    "guest": "guest",
    "other_guest": "guest of another link",
    "ended_guest": "ended guest",
    "anonymous": "anonymous, no link",
    "permanent_guest": "permanent user as guest",
}


@dataclass(frozen=True)
class Caller:
    """Who runs a probe: the JWT (persona) and whose ids it uses in the request (actor);
    `partner` is the other participant of thread ab from the actor's point of view."""

    key: str
    label: str
    persona: Persona
    actor: Member
    partner: Member


def caller(world: World, key: str) -> Caller:
    """One of the standard personas. Callers without an identity of their own (anon, no sub,
    service_role, anonymous users) act with alice's ids, i.e. they try to act as a participant."""
    guests = world.guests
    fixed = {"anon": personas.anon(), "no_sub": personas.authenticated_without_sub(), "service_role": personas.service(),
             # a custom JWT role carrying participant A's `sub`: the guards must still hold
             "custom_role": personas.Persona("custom role", world.custom_role,
                                             {**world.alice.persona.claims, "role": world.custom_role}),
             "guest": guests.active.persona, "other_guest": guests.other.persona,
             "ended_guest": guests.ended.persona, "anonymous": guests.lurker.persona}
    members = {"outsider": world.carol, "participant_a": world.alice, "participant_b": world.bob, "host": world.dave,
               "permanent_guest": guests.permanent}
    who = fixed[key] if key in fixed else members[key].persona
    actor = {"outsider": world.carol, "participant_b": world.bob, "host": world.dave,
             "permanent_guest": guests.permanent}.get(key, world.alice)
    partner = world.alice if actor is world.bob else world.bob
    return Caller(key, PERSONA_LABELS[key], who, actor, partner)


def callers(world: World) -> list[Caller]:
    return [caller(world, key) for key in PERSONAS]


def custom_caller(world: World, name: str, role: str, acts_as: str | None, claims: dict[str, Any]) -> Caller:
    """A persona from an audit config: a role, extra claims, and optionally a world member's
    identity (its uid becomes `sub`); without one it has no `sub` and acts with alice's ids."""
    member: Member | None = getattr(world, acts_as) if acts_as else None
    base = member.persona.claims if member else personas.claims(role)
    who = personas.Persona(name, role, {**base, "role": role, **claims})
    actor = member or world.alice
    partner = world.alice if actor is world.bob else world.bob
    return Caller(name, name, who, actor, partner)


@dataclass(frozen=True)
class Probe:
    object: str
    operation: str
    kind: str  # table | estimate | rpc | realtime
    run: Callable[[psycopg.Connection[Any], World, Caller], Outcome]

    @property
    def key(self) -> str:
        return f"{self.object} {self.operation}"


def _sql(method: str, query: str, params: Callable[[World, Caller], tuple[Any, ...]]) -> Callable[..., Outcome]:
    path = "/" + query.split("public.")[1].split()[0] if "public." in query else "/"

    def run(conn: psycopg.Connection[Any], world: World, who: Caller) -> Outcome:
        return postgrest.run(conn, who.persona, query, params(world, who), method=method, path=path)

    return run


def _rpc(
    function: str, args: Callable[[World, Caller], dict[str, Any]], types: dict[str, str], volatile: bool
) -> Callable[..., Outcome]:
    def run(conn: psycopg.Connection[Any], world: World, who: Caller) -> Outcome:
        return postgrest.call(conn, who.persona, function, args(world, who), volatile=volatile, types=types)

    return run


def _channel(check: str, extension: str, topic: Callable[[World], str]) -> Callable[..., Outcome]:
    def run(conn: psycopg.Connection[Any], world: World, who: Caller) -> Outcome:
        fn = realtime.read_check if check == "read" else realtime.write_check
        access = fn(conn, who.persona, topic(world), (extension,))
        return Outcome(access.allowed[extension], [])

    return run


def _estimate(subject: estimates.Subject) -> Callable[..., Outcome]:
    def run(conn: psycopg.Connection[Any], world: World, who: Caller) -> Outcome:
        return estimates.compare(conn, world, who.persona, subject)

    return run


def _no_params(world: World, who: Caller) -> tuple[Any, ...]:
    return ()


_insert_own_thread = _sql(
    "POST", "insert into public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, "
    "user_b_supabase_id) values (%s, %s, %s, %s, %s)",
    lambda w, c: _thread_row(c.actor, w.erin))
_insert_as_self = _sql(
    "POST", "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
    "body) values (%s, %s, %s, %s, 'hello')",
    lambda w, c: (w.thread_ab, c.actor.mongo_id, c.partner.mongo_id, c.actor.uid))

TABLE_PROBES = [
    Probe("chat_identities", "select", "table", _sql("GET", "select * from public.chat_identities", _no_params)),
    Probe("chat_identities", "insert", "table", _sql(
        "POST", "insert into public.chat_identities (supabase_user_id, mongo_id) values (%s, %s)",
        lambda w, c: (w.frank_uid, w.unregistered_mongo_id))),
    Probe("chat_identities", "update", "table", _sql(
        "PATCH", "update public.chat_identities set created_at = created_at where supabase_user_id = %s",
        lambda w, c: (c.actor.uid,))),
    Probe("chat_identities", "delete", "table", _sql(
        "DELETE", "delete from public.chat_identities where supabase_user_id = %s", lambda w, c: (c.actor.uid,))),
    Probe("chat_threads", "select", "table", _sql("GET", "select * from public.chat_threads", _no_params)),
    Probe("chat_threads", "insert own thread", "table", _insert_own_thread),
    Probe("chat_threads", "insert others' thread", "table", _sql(
        "POST", "insert into public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, "
        "user_b_supabase_id) values (%s, %s, %s, %s, %s)",
        lambda w, c: _thread_row(w.bob if c.actor is w.alice else w.alice, w.erin))),
    Probe("chat_threads", "update", "table", _sql(
        "PATCH", "update public.chat_threads set created_at = created_at where thread_id = %s",
        lambda w, c: (w.thread_ab,))),
    Probe("chat_threads", "delete", "table", _sql(
        "DELETE", "delete from public.chat_threads where thread_id = %s", lambda w, c: (w.thread_ab,))),
    Probe("chat_messages", "select", "table", _sql(
        "GET", "select * from public.chat_messages order by created_at desc, id desc limit 50", _no_params)),
    Probe("chat_messages", "insert as self", "table", _insert_as_self),
    Probe("chat_messages", "insert as the other participant", "table", _sql(
        "POST", "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
        "body) values (%s, %s, %s, %s, 'forged')",
        lambda w, c: (w.thread_ab, c.partner.mongo_id, c.actor.mongo_id, c.partner.uid))),
    Probe("chat_messages", "insert with created_at", "table", _sql(
        "POST", "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
        "body, created_at) values (%s, %s, %s, %s, 'backdated', now() - interval '1 year')",
        lambda w, c: (w.thread_ab, c.actor.mongo_id, c.partner.mongo_id, c.actor.uid))),
    Probe("chat_messages", "update", "table", _sql(
        "PATCH", "update public.chat_messages set body = 'edited' where thread_id = %s", lambda w, c: (w.thread_ab,))),
    Probe("chat_messages", "delete", "table", _sql(
        "DELETE", "delete from public.chat_messages where thread_id = %s", lambda w, c: (w.thread_ab,))),
    Probe("chat_rate_limits", "select", "table", _sql("GET", "select * from public.chat_rate_limits", _no_params)),
    Probe("chat_rate_limits", "update", "table", _sql(
        "PATCH", "update public.chat_rate_limits set burst = burst where limit_name = %s",
        lambda w, c: (limits.MESSAGES,))),
]


def _sub(world: World, who: Caller) -> str:
    """The caller's own user id; callers without one write as the active guest."""
    return who.persona.sub or world.guests.active.uid


GUEST_TABLE_PROBES = [
    Probe("chat_links", "select", "table", _sql(
        "GET", "select link_id, host_supabase_id, label, max_guests, created_at, expires_at, revoked_at "
        "from public.chat_links", _no_params)),
    Probe("chat_links", "select token_hash", "table", _sql(
        "GET", "select link_id, token_hash from public.chat_links", _no_params)),
    Probe("chat_links", "insert", "table", _sql(
        "POST", "insert into public.chat_links (host_supabase_id, host_mongo_id, token_hash, max_guests, expires_at) "
        "values (%s, %s, sha256('chosen token'::bytea), 1, now() + interval '1 day')",
        lambda w, c: (c.actor.uid, c.actor.mongo_id))),
    Probe("chat_links", "update", "table", _sql(
        "PATCH", "update public.chat_links set expires_at = created_at + interval '30 days' where link_id = %s",
        lambda w, c: (w.guests.link_id,))),
    Probe("chat_links", "delete", "table", _sql(
        "DELETE", "delete from public.chat_links where link_id = %s", lambda w, c: (w.guests.link_id,))),
    Probe("chat_threads", "reopen a guest session", "table", _sql(
        "PATCH", "update public.chat_threads set guest_ended_at = null where thread_id = %s",
        lambda w, c: (w.guests.ended_thread,))),
    Probe("chat_messages", "insert as a guest (guest thread)", "table", _sql(
        "POST", "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
        "body) values (%s, null, null, %s, 'hello')",
        lambda w, c: (w.guests.active_thread, _sub(w, c)))),
    Probe("chat_messages", "insert as a guest (closed thread)", "table", _sql(
        "POST", "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
        "body) values (%s, null, null, %s, 'hello')",
        lambda w, c: (w.guests.ended_thread, _sub(w, c)))),
    Probe("chat_receipts", "select", "table", _sql("GET", "select * from public.chat_receipts", _no_params)),
    Probe("chat_receipts", "insert own cursor", "table", _sql(
        "POST", "insert into public.chat_receipts (thread_id, supabase_user_id, delivered_up_to, read_up_to) "
        "values (%s, %s, %s, %s)",
        lambda w, c: (w.thread_ab, c.actor.uid, w.messages["ab"][2], w.messages["ab"][2]))),
    Probe("chat_receipts", "update", "table", _sql(
        "PATCH", "update public.chat_receipts set read_up_to = delivered_up_to where thread_id = %s",
        lambda w, c: (w.thread_ab,))),
    Probe("chat_receipts", "delete", "table", _sql(
        "DELETE", "delete from public.chat_receipts where thread_id = %s", lambda w, c: (w.thread_ab,))),
]


def _thread_row(x: Member, y: Member) -> tuple[str, str, str, str, str]:
    a, b = sorted((x, y), key=lambda m: m.mongo_id)
    return thread_id(a.mongo_id, b.mongo_id), a.mongo_id, a.uid, b.mongo_id, b.uid


# Prefer: count=planned for a value of a thread the caller is not in vs one that does not exist.
ESTIMATE_PROBES = [
    Probe("chat_messages", f"planned count: {s.label} vs missing", "estimate", _estimate(s)) for s in estimates.SUBJECTS
]

_ensure_ab = _rpc("ensure_chat_thread",
                  lambda w, c: {"_user_a_mongo_id": w.alice.mongo_id, "_user_b_mongo_id": w.bob.mongo_id},
                  {}, volatile=True)
_send_ab = _rpc("insert_chat_message",
                lambda w, c: {"_thread_id": w.thread_ab, "_sender_mongo_id": c.actor.mongo_id,
                              "_recipient_mongo_id": c.partner.mongo_id, "_body": "hello"},
                {}, volatile=True)

RPC_PROBES = [
    Probe("ensure_chat_thread()", "call (alice, bob)", "rpc", _ensure_ab),
    Probe("insert_chat_message()", "call (thread ab, self -> other)", "rpc", _send_ab),
    Probe("chat_history()", "call (thread ab)", "rpc", _rpc(
        "chat_history", lambda w, c: {"_thread_id": w.thread_ab}, {}, volatile=False)),
    Probe("mark_chat_delivered()", "call (thread ab, its last message)", "rpc", _rpc(
        "mark_chat_delivered", lambda w, c: {"_thread_id": w.thread_ab, "_up_to_id": w.messages["ab"][2]},
        {"_up_to_id": "bigint"}, volatile=True)),
    Probe("mark_chat_read()", "call (thread ab, its second message)", "rpc", _rpc(
        "mark_chat_read", lambda w, c: {"_thread_id": w.thread_ab, "_up_to_id": w.messages["ab"][1]},
        {"_up_to_id": "bigint"}, volatile=True)),
    Probe("mark_chat_read()", "call (thread ab, a message of cd)", "rpc", _rpc(
        "mark_chat_read", lambda w, c: {"_thread_id": w.thread_ab, "_up_to_id": w.messages["cd"][0]},
        {"_up_to_id": "bigint"}, volatile=True)),
    Probe("chat_inbox()", "call", "rpc", _rpc("chat_inbox", lambda w, c: {}, {}, volatile=False)),
]

def _used_up(limit: str, run: Callable[..., Outcome]) -> Callable[..., Outcome]:
    """The probe `run` with the caller's bucket of `limit` empty (keyed by its `sub`, else the
    actor's; emptied as the owner, in a savepoint rolled back with the probe)."""

    def probe(conn: psycopg.Connection[Any], world: World, who: Caller) -> Outcome:
        with conn.transaction(force_rollback=True):
            limits.use_up(conn, limit, who.persona.sub or who.actor.uid)
            return run(conn, world, who)

    return probe


# The abuse limits (DESIGN §10) hold on every path an API role can write through, and the
# roles that bypass RLS (service_role) are exempt; returning an existing thread is free.
LIMIT_PROBES = [
    Probe("chat_messages", f"insert as self, {limits.MESSAGES} used up", "table",
          _used_up(limits.MESSAGES, _insert_as_self)),
    Probe("insert_chat_message()", f"call (thread ab, self -> other), {limits.MESSAGES} used up", "rpc",
          _used_up(limits.MESSAGES, _send_ab)),
    Probe("chat_threads", f"insert own thread, {limits.THREADS} used up", "table",
          _used_up(limits.THREADS, _insert_own_thread)),
    Probe("ensure_chat_thread()", f"call (self, erin), {limits.THREADS} used up", "rpc", _used_up(limits.THREADS, _rpc(
        "ensure_chat_thread", lambda w, c: {"_user_a_mongo_id": c.actor.mongo_id, "_user_b_mongo_id": w.erin.mongo_id},
        {}, volatile=True))),
    Probe("ensure_chat_thread()", f"call (alice, bob), {limits.THREADS} used up", "rpc",
          _used_up(limits.THREADS, _ensure_ab)),
]


def _guest_send(thread: Callable[[World], str], as_host: bool) -> Callable[..., Outcome]:
    """insert_chat_message into a guest thread: as its guest (no Mongo ids) or as its host
    (the caller's acting Mongo id as sender, no recipient)."""
    return _rpc("insert_chat_message",
                lambda w, c: {"_thread_id": thread(w), "_sender_mongo_id": c.actor.mongo_id if as_host else None,
                              "_recipient_mongo_id": None, "_body": "hello"},
                {}, volatile=True)


GUEST_RPC_PROBES = [
    Probe("create_chat_link()", "call (defaults)", "rpc", _rpc("create_chat_link", lambda w, c: {}, {}, volatile=True)),
    Probe("redeem_chat_link()", "call (host's link)", "rpc", _rpc(
        "redeem_chat_link", lambda w, c: {"_token": w.guests.token, "_display_name": "Probe"}, {}, volatile=True)),
    Probe("revoke_chat_link()", "call (host's link)", "rpc", _rpc(
        "revoke_chat_link", lambda w, c: {"_link_id": w.guests.link_id}, {"_link_id": "uuid"}, volatile=True)),
    Probe("end_chat_guest()", "call (guest's session)", "rpc", _rpc(
        "end_chat_guest", lambda w, c: {"_thread_id": w.guests.active_thread}, {}, volatile=True)),
    Probe("list_chat_links()", "call", "rpc", _rpc("list_chat_links", lambda w, c: {}, {}, volatile=False)),
    Probe("insert_chat_message()", "call (guest thread, no Mongo ids)", "rpc",
          _guest_send(lambda w: w.guests.active_thread, as_host=False)),
    Probe("insert_chat_message()", "call (guest thread, own Mongo id)", "rpc",
          _guest_send(lambda w: w.guests.active_thread, as_host=True)),
    Probe("insert_chat_message()", "call (closed thread, no Mongo ids)", "rpc",
          _guest_send(lambda w: w.guests.ended_thread, as_host=False)),
    Probe("insert_chat_message()", "call (closed thread, own Mongo id)", "rpc",
          _guest_send(lambda w: w.guests.ended_thread, as_host=True)),
    Probe("chat_history()", "call (guest thread)", "rpc", _rpc(
        "chat_history", lambda w, c: {"_thread_id": w.guests.active_thread}, {}, volatile=False)),
    Probe("chat_history()", "call (closed thread)", "rpc", _rpc(
        "chat_history", lambda w, c: {"_thread_id": w.guests.ended_thread}, {}, volatile=False)),
]

# Topics as columns: ab is A and B's thread, cd is the outsider's own thread with dave (the
# host); <guest> is the host's thread with the active guest, <closed guest> with the ended one.
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
    ("chat:<guest>", lambda w: f"chat:{w.guests.active_thread}"),
    ("chat:<closed guest>", lambda w: f"chat:{w.guests.ended_thread}"),
]

REALTIME_PROBES = [
    Probe(f"realtime {label}", f"{check} {ext}", "realtime", _channel(check, ext, topic))
    for label, topic in TOPICS
    for check in ("read", "write")
    for ext in ("broadcast", "presence")
]

ALL_PROBES = (TABLE_PROBES + GUEST_TABLE_PROBES + ESTIMATE_PROBES + RPC_PROBES + GUEST_RPC_PROBES + LIMIT_PROBES
              + REALTIME_PROBES)
