"""Guest links (DESIGN §8) through PostgREST-style requests that really commit: every rule
and error of the RPC tables, guests on the message, history and Realtime paths, the
lifetime of a guest session, the identity map, and the properties of link tokens."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from dbtool.ops import limits
from dbtool.policy import worlds
from dbtool.supabase import personas, postgrest, realtime
from dbtool.supabase.personas import Persona
from dbtool.supabase.postgrest import Outcome
from tests.helpers import WorldDb

TYPES = {"_ttl": "interval", "_max_guests": "int", "_link_id": "uuid", "_client_id": "uuid",
         "_before_created_at": "timestamptz", "_before_id": "bigint", "_limit": "int", "_up_to_id": "bigint"}
READ_ONLY = {"chat_history", "list_chat_links"}
TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def call(wdb: WorldDb, who: Persona, function: str, args: dict[str, Any] | None = None) -> Outcome:
    with wdb.db.connect() as conn:
        return postgrest.call(conn, who, function, args or {}, volatile=function not in READ_ONLY, commit=True,
                              types=TYPES)


def state(wdb: WorldDb) -> tuple[Any, ...]:
    """Every row a guest-link call could write (threads and links whole, so updates count)."""
    row = wdb.admin.execute(
        "select (select md5(coalesce(string_agg(t::text, '|' order by thread_id), '')) from public.chat_threads t), "
        "(select md5(coalesce(string_agg(l::text, '|' order by link_id), '')) from public.chat_links l), "
        "(select count(*) from public.chat_messages), (select count(*) from realtime.messages), "
        "(select count(*) from public.chat_identities)").fetchone()
    assert row is not None
    return tuple(row)


def refused(wdb: WorldDb, who: Persona, function: str, args: dict[str, Any] | None, sqlstate: str,
            message: str) -> Outcome:
    before = state(wdb)
    got = call(wdb, who, function, args)
    assert not got.ok, f"expected {sqlstate} {message}, got {got.describe()}"
    assert (got.sqlstate, (got.message or "")[: len(message)]) == (sqlstate, message), got.describe()
    assert state(wdb) == before, "a refused call wrote something"
    return got


def add_anonymous(wdb: WorldDb, name: str = "guest") -> worlds.Guest:
    """A fresh anonymous user, as signInAnonymously() creates one."""
    guest = worlds.Guest(name, str(uuid.uuid4()))
    wdb.admin.execute("insert into auth.users (id, aud, role, is_anonymous) values (%s, 'authenticated', "
                      "'authenticated', true)", (guest.uid,))
    return guest


def create_link(wdb: WorldDb, host: Persona | None = None, **args: Any) -> dict[str, Any]:
    got = call(wdb, host or wdb.world.alice.persona, "create_chat_link", args)
    assert got.ok, got.describe()
    return got.rows[0]


def redeem(wdb: WorldDb, who: Persona, token: str, name: str | None = None) -> Outcome:
    return call(wdb, who, "redeem_chat_link", {"_token": token, "_display_name": name})


def guest_send(wdb: WorldDb, who: Persona, thread: str, body: str = "hello", sender: str | None = None,
               client_id: str | None = None) -> Outcome:
    return call(wdb, who, "insert_chat_message", {"_thread_id": thread, "_sender_mongo_id": sender,
                                                  "_recipient_mongo_id": None, "_body": body, "_client_id": client_id})


def expire(wdb: WorldDb, link_id: str) -> None:
    """Move a link (and its sessions' copy of the expiry) into the past, as time would."""
    wdb.admin.execute("update public.chat_links set created_at = created_at - interval '2 days', "
                      "expires_at = now() - interval '1 second' where link_id = %s", (link_id,))
    wdb.admin.execute("update public.chat_threads set guest_expires_at = now() - interval '1 second' "
                      "where guest_link_id = %s", (link_id,))


@pytest.fixture
def session(world_db: WorldDb) -> dict[str, Any]:
    """alice's fresh link, redeemed by a new anonymous guest."""
    link = create_link(world_db, _max_guests=3, _label="flat viewing")
    guest = add_anonymous(world_db)
    got = redeem(world_db, guest.persona, link["token"], "  Gina  ")
    assert got.ok, got.describe()
    return {"link": link, "guest": guest, "thread": got.rows[0]["thread_id"], "redeemed": got.rows[0]}


# --- create_chat_link -------------------------------------------------------------------------


def test_create_returns_a_token_once_and_stores_only_its_hash(world_db: WorldDb) -> None:
    link = create_link(world_db, _ttl="2 hours", _max_guests=2, _label="viewing")
    assert TOKEN.match(link["token"])
    stored = world_db.admin.execute(
        "select host_supabase_id, host_mongo_id, token_hash, label, max_guests, expires_at - created_at, expires_at "
        "from public.chat_links where link_id = %s", (link["link_id"],)).fetchone()
    assert stored is not None
    w = world_db.world
    assert (str(stored[0]), stored[1], stored[3], stored[4], stored[5], stored[6]) == (
        w.alice.uid, w.alice.mongo_id, "viewing", 2, timedelta(hours=2), link["expires_at"])
    assert bytes(stored[2]) == hashlib.sha256(link["token"].encode()).digest()


def test_no_column_anywhere_holds_a_token(world_db: WorldDb) -> None:
    tokens = [create_link(world_db)["token"] for _ in range(3)]
    columns = world_db.admin.execute(
        """
        select format('%I.%I', c.table_schema, c.table_name), format('%I', c.column_name)
        from information_schema.columns c join pg_catalog.pg_class k on k.oid = format('%I.%I', c.table_schema,
             c.table_name)::regclass
        where c.table_schema not in ('pg_catalog', 'information_schema') and k.relkind in ('r', 'p')
          and not k.relispartition
        """).fetchall()
    assert len(columns) > 20
    for table, column in columns:
        for token in tokens:
            hit = world_db.admin.execute(
                f"select count(*) from {table} where position(%s in {column}::text) > 0 "
                f"or position(%s in encode(convert_to({column}::text, 'UTF8'), 'hex')) > 0",
                (token, token.encode().hex())).fetchone()
            assert hit == (0,), f"{table}.{column} holds a token"


def test_tokens_are_distinct_url_safe_and_carry_enough_entropy(world_db: WorldDb) -> None:
    limits.configure(world_db.admin, limits.LINKS, burst=40)  # 40 links at once: over a host's hourly 20
    tokens = [create_link(world_db)["token"] for _ in range(40)]
    assert len(set(tokens)) == 40 and all(TOKEN.match(t) for t in tokens)
    # 43 base64url characters are 258 bits; the source is 244 random bits (two v4 UUIDs) hashed.
    alphabet = set("".join(tokens))
    assert len(alphabet) > 50 and alphabet <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(("args", "message"), [
    ({"_ttl": "4 minutes 59 seconds"}, "_ttl must be between 5 minutes and 30 days"),
    ({"_ttl": "30 days 1 second"}, "_ttl must be between 5 minutes and 30 days"),
    ({"_ttl": "-1 hour"}, "_ttl must be between 5 minutes and 30 days"),
    ({"_ttl": None}, "_ttl must be between 5 minutes and 30 days"),
    ({"_max_guests": 0}, "_max_guests must be between 1 and 100"),
    ({"_max_guests": 101}, "_max_guests must be between 1 and 100"),
    ({"_max_guests": None}, "_max_guests must be between 1 and 100"),
    ({"_label": "x" * 101}, "_label must be at most 100 characters (got 101)"),
])
def test_create_invalid_arguments(world_db: WorldDb, args: dict[str, Any], message: str) -> None:
    refused(world_db, world_db.world.alice.persona, "create_chat_link", args, "22023", message)


@pytest.mark.parametrize("args", [{"_ttl": "5 minutes"}, {"_ttl": "30 days"}, {"_max_guests": 1},
                                  {"_max_guests": 100}, {"_label": "é" * 100}, {"_label": None}])
def test_create_accepts_the_limits(world_db: WorldDb, args: dict[str, Any]) -> None:
    assert TOKEN.match(create_link(world_db, **args)["token"])


def test_an_anonymous_caller_cannot_create_links(world_db: WorldDb) -> None:
    guest = add_anonymous(world_db)
    refused(world_db, guest.persona, "create_chat_link", {}, "42501", "guests cannot create links")


def test_an_anonymous_user_is_refused_even_without_the_claim(world_db: WorldDb) -> None:
    # auth.users is authoritative: a token without is_anonymous does not make a guest a host.
    guest = add_anonymous(world_db)
    refused(world_db, personas.user("guest", guest.uid), "create_chat_link", {}, "42501", "guests cannot create links")


def test_a_user_without_chat_identity_cannot_create_links(world_db: WorldDb) -> None:
    refused(world_db, personas.user("frank", world_db.world.frank_uid), "create_chat_link", {},
            "42501", "no chat identity")


@pytest.mark.parametrize("function", ["create_chat_link", "redeem_chat_link", "revoke_chat_link", "end_chat_guest",
                                      "list_chat_links"])
def test_guest_link_rpcs_need_a_session(world_db: WorldDb, function: str) -> None:
    args = {"redeem_chat_link": {"_token": "x" * 43}, "revoke_chat_link": {"_link_id": str(uuid.uuid4())},
            "end_chat_guest": {"_thread_id": "g_" + "0" * 32}}.get(function, {})
    refused(world_db, personas.authenticated_without_sub(), function, args, "42501", "not authenticated")
    refused(world_db, personas.service(), function, args, "42501", "not authenticated")
    refused(world_db, personas.anon(), function, args, "42501", f"permission denied for function {function}")


# --- redeem_chat_link -----------------------------------------------------------------------


def test_redeem_creates_a_guest_thread_with_the_host(world_db: WorldDb, session: dict[str, Any]) -> None:
    w = world_db.world
    row = session["redeemed"]
    assert re.fullmatch(r"g_[0-9a-f]{32}", row["thread_id"])
    assert (row["host_mongo_id"], row["display_name"], row["expires_at"]) == (
        w.alice.mongo_id, "Gina", session["link"]["expires_at"])
    thread = world_db.admin.execute(
        "select kind, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, user_b_supabase_id, guest_supabase_id, "
        "guest_link_id from public.chat_threads where thread_id = %s", (row["thread_id"],)).fetchone()
    assert thread is not None
    assert (thread[0], thread[1], str(thread[2]), thread[3], thread[4], str(thread[5]), thread[6]) == (
        "guest", w.alice.mongo_id, w.alice.uid, None, None, session["guest"].uid, session["link"]["link_id"])


def test_redeem_is_idempotent_and_uses_no_second_slot(world_db: WorldDb, session: dict[str, Any]) -> None:
    before = state(world_db)
    again = redeem(world_db, session["guest"].persona, session["link"]["token"], "another name")
    assert again.ok and again.rows == [session["redeemed"]]
    assert state(world_db) == before
    links = call(world_db, world_db.world.alice.persona, "list_chat_links")
    assert [(r["guests"], r["status"]) for r in links.rows] == [(1, "active")]


def test_redeem_returns_the_session_even_once_the_link_is_full(world_db: WorldDb) -> None:
    link = create_link(world_db, _max_guests=1)
    guest = add_anonymous(world_db)
    first = redeem(world_db, guest.persona, link["token"])
    assert first.ok
    assert redeem(world_db, guest.persona, link["token"]).rows == first.rows
    refused(world_db, add_anonymous(world_db, "late").persona, "redeem_chat_link", {"_token": link["token"]},
            "P0002", "link not found")


@pytest.mark.parametrize("why", ["unknown", "expired", "revoked", "full"])
def test_one_answer_for_unknown_expired_revoked_and_full_links(world_db: WorldDb, why: str) -> None:
    link = create_link(world_db, _max_guests=1)
    token = link["token"]
    if why == "unknown":
        token = token[:-1] + ("A" if token[-1] != "A" else "B")
    elif why == "expired":
        expire(world_db, link["link_id"])
    elif why == "revoked":
        assert call(world_db, world_db.world.alice.persona, "revoke_chat_link", {"_link_id": link["link_id"]}).ok
    else:
        assert redeem(world_db, add_anonymous(world_db, "first").persona, token).ok
    refused(world_db, add_anonymous(world_db).persona, "redeem_chat_link", {"_token": token}, "P0002", "link not found")


def test_the_host_cannot_redeem_their_own_link(world_db: WorldDb) -> None:
    link = create_link(world_db)
    refused(world_db, world_db.world.alice.persona, "redeem_chat_link", {"_token": link["token"]}, "22023", "_token")


@pytest.mark.parametrize("token", [None, "", "short", "x" * 44, "+" * 43, "a b" + "c" * 40])
def test_redeem_a_malformed_token(world_db: WorldDb, token: str | None) -> None:
    refused(world_db, add_anonymous(world_db).persona, "redeem_chat_link", {"_token": token}, "22023", "_token")


@pytest.mark.parametrize(("name", "message"), [
    ("", "_display_name must be 1 to 50 characters after trimming"),
    (" \t\u3000 ", "_display_name must be 1 to 50 characters after trimming"),
    ("x" * 51, "_display_name must be 1 to 50 characters after trimming"),
    ("bad\u0007bell", "_display_name must not contain control characters"),
    ("line\nbreak", "_display_name must not contain control characters"),
])
def test_redeem_invalid_display_names(world_db: WorldDb, name: str, message: str) -> None:
    link = create_link(world_db)
    refused(world_db, add_anonymous(world_db).persona, "redeem_chat_link",
            {"_token": link["token"], "_display_name": name}, "22023", message)


@pytest.mark.parametrize(("name", "kept"), [("  Ana  ", "Ana"), ("é" * 50, "é" * 50), (" " + "x" * 50 + " ", "x" * 50),
                                            (None, None)])
def test_redeem_display_names_are_trimmed(world_db: WorldDb, name: str | None, kept: str | None) -> None:
    link = create_link(world_db)
    got = redeem(world_db, add_anonymous(world_db).persona, link["token"], name)
    assert got.ok and got.rows[0]["display_name"] == kept


def test_a_permanent_user_may_redeem_and_chats_as_a_guest(world_db: WorldDb) -> None:
    w = world_db.world
    link = create_link(world_db)
    got = redeem(world_db, w.erin.persona, link["token"], "Erin")
    assert got.ok
    thread = got.rows[0]["thread_id"]
    sent = guest_send(world_db, w.erin.persona, thread)
    assert sent.ok and (sent.rows[0]["sender_mongo_id"], sent.rows[0]["recipient_mongo_id"]) == (None, None)
    refused(world_db, w.erin.persona, "insert_chat_message",
            {"_thread_id": thread, "_sender_mongo_id": w.erin.mongo_id, "_recipient_mongo_id": None, "_body": "x"},
            "42501", "sender does not match caller")


# --- revoke_chat_link, end_chat_guest, list_chat_links -----------------------------------------


def test_revoke_is_host_only_and_idempotent(world_db: WorldDb, session: dict[str, Any]) -> None:
    w = world_db.world
    link_id = session["link"]["link_id"]
    for who in (w.bob.persona, session["guest"].persona):
        refused(world_db, who, "revoke_chat_link", {"_link_id": link_id}, "P0002", "link not found")
    refused(world_db, w.alice.persona, "revoke_chat_link", {"_link_id": str(uuid.uuid4())}, "P0002", "link not found")
    assert call(world_db, w.alice.persona, "revoke_chat_link", {"_link_id": link_id}).ok
    after = state(world_db)
    assert call(world_db, w.alice.persona, "revoke_chat_link", {"_link_id": link_id}).ok
    assert state(world_db) == after


def test_revoke_ends_every_session_of_the_link_at_once(world_db: WorldDb, session: dict[str, Any]) -> None:
    w = world_db.world
    second = add_anonymous(world_db, "second")
    other_thread = redeem(world_db, second.persona, session["link"]["token"]).rows[0]["thread_id"]
    assert call(world_db, w.alice.persona, "revoke_chat_link", {"_link_id": session["link"]["link_id"]}).ok
    for guest, thread in ((session["guest"], session["thread"]), (second, other_thread)):
        refused(world_db, guest.persona, "insert_chat_message",
                {"_thread_id": thread, "_sender_mongo_id": None, "_recipient_mongo_id": None, "_body": "hi"},
                "P0002", "thread not found")
        refused(world_db, w.alice.persona, "insert_chat_message",
                {"_thread_id": thread, "_sender_mongo_id": w.alice.mongo_id, "_recipient_mongo_id": None,
                 "_body": "hi"}, "22023", "thread is closed")


def test_end_is_host_only_and_ends_one_session(world_db: WorldDb, session: dict[str, Any]) -> None:
    w = world_db.world
    second = add_anonymous(world_db, "second")
    other_thread = redeem(world_db, second.persona, session["link"]["token"]).rows[0]["thread_id"]
    for who, thread in ((session["guest"].persona, session["thread"]), (w.bob.persona, session["thread"]),
                        (w.alice.persona, w.thread_ab), (w.alice.persona, "g_" + "0" * 32)):
        refused(world_db, who, "end_chat_guest", {"_thread_id": thread}, "P0002", "thread not found")
    refused(world_db, w.alice.persona, "end_chat_guest", {"_thread_id": "nope"}, "22023", "_thread_id")
    assert call(world_db, w.alice.persona, "end_chat_guest", {"_thread_id": session["thread"]}).ok
    refused(world_db, session["guest"].persona, "chat_history", {"_thread_id": session["thread"]},
            "P0002", "thread not found")
    assert guest_send(world_db, second.persona, other_thread).ok  # the other session goes on


def test_list_shows_each_status_and_never_a_token(world_db: WorldDb) -> None:
    w = world_db.world
    host = w.bob.persona
    made = {status: create_link(world_db, host, _max_guests=1, _label=status)
            for status in ("active", "expired", "revoked", "full")}
    expire(world_db, made["expired"]["link_id"])
    assert call(world_db, host, "revoke_chat_link", {"_link_id": made["revoked"]["link_id"]}).ok
    assert redeem(world_db, add_anonymous(world_db).persona, made["full"]["token"]).ok
    got = call(world_db, host, "list_chat_links")
    assert got.ok
    assert {r["label"]: (str(r["link_id"]), r["status"], r["guests"], r["max_guests"]) for r in got.rows} == {
        s: (str(link["link_id"]), s, 1 if s == "full" else 0, 1) for s, link in made.items()}
    assert set(got.rows[0]) == {"link_id", "label", "created_at", "expires_at", "max_guests", "guests", "status"}
    text = repr(got.rows)
    assert not any(link["token"] in text for link in made.values())
    assert call(world_db, w.alice.persona, "list_chat_links").rows == []  # only the caller's links


# --- guests on the message, history and Realtime paths -------------------------------------------


def test_guest_and_host_send_and_read_in_the_guest_thread(world_db: WorldDb, session: dict[str, Any]) -> None:
    w = world_db.world
    guest, thread = session["guest"], session["thread"]
    mine = guest_send(world_db, guest.persona, thread, "hello host")
    theirs = guest_send(world_db, w.alice.persona, thread, "hello guest", sender=w.alice.mongo_id.upper())
    assert mine.ok and theirs.ok, (mine.describe(), theirs.describe())
    assert [(r["sender_mongo_id"], r["recipient_mongo_id"], str(r["sender_supabase_id"])) for r in
            mine.rows + theirs.rows] == [(None, None, guest.uid), (w.alice.mongo_id, None, w.alice.uid)]
    for who in (guest.persona, w.alice.persona):
        page = call(world_db, who, "chat_history", {"_thread_id": thread})
        assert [r["body"] for r in page.rows] == ["hello guest", "hello host"]
    broadcast = world_db.admin.execute(
        "select topic, payload -> 'record' ->> 'body' from realtime.messages where topic = %s order by inserted_at, "
        "payload -> 'record' ->> 'id'", (f"chat:{thread}",)).fetchall()
    assert sorted(broadcast) == sorted([(f"chat:{thread}", "hello host"), (f"chat:{thread}", "hello guest")])


def test_a_guest_retry_with_the_same_client_id_returns_the_first_row(world_db: WorldDb,
                                                                     session: dict[str, Any]) -> None:
    key = str(uuid.uuid4())
    first = guest_send(world_db, session["guest"].persona, session["thread"], client_id=key)
    before = state(world_db)
    retry = guest_send(world_db, session["guest"].persona, session["thread"], "again", client_id=key)
    assert first.ok and retry.rows == first.rows and state(world_db) == before


@pytest.mark.parametrize(("who", "sender", "recipient", "sqlstate", "message"), [
    ("guest", "alice", None, "42501", "sender does not match caller"),
    ("guest", "erin", None, "42501", "sender does not match caller"),
    ("guest", "nonsense", None, "22023", "_sender_mongo_id"),
    ("guest", None, "alice", "22023", "_recipient_mongo_id must be null in a guest thread"),
    ("alice", None, None, "42501", "sender does not match caller"),
    ("alice", "alice", "bob", "22023", "_recipient_mongo_id must be null in a guest thread"),
    ("alice", "bob", None, "42501", "sender does not match caller"),
    ("bob", "bob", None, "P0002", "thread not found"),
    ("stranger", None, None, "P0002", "thread not found"),
])
def test_guest_thread_send_rules(world_db: WorldDb, session: dict[str, Any], who: str, sender: str | None,
                                 recipient: str | None, sqlstate: str, message: str) -> None:
    w = world_db.world
    names = {"alice": w.alice.mongo_id, "bob": w.bob.mongo_id, "erin": w.erin.mongo_id}
    persona = {"guest": session["guest"].persona, "alice": w.alice.persona, "bob": w.bob.persona,
               "stranger": add_anonymous(world_db, "stranger").persona}[who]
    refused(world_db, persona, "insert_chat_message",
            {"_thread_id": session["thread"], "_sender_mongo_id": names.get(sender or "", sender),
             "_recipient_mongo_id": names.get(recipient or "", recipient), "_body": "x"}, sqlstate, message)


@pytest.mark.parametrize("body", ["", "   ", "x" * 4001])
def test_guest_bodies_obey_the_body_rule(world_db: WorldDb, session: dict[str, Any], body: str) -> None:
    refused(world_db, session["guest"].persona, "insert_chat_message",
            {"_thread_id": session["thread"], "_sender_mongo_id": None, "_recipient_mongo_id": None, "_body": body},
            "22023", "body")


def test_guest_history_of_other_threads(world_db: WorldDb, session: dict[str, Any]) -> None:
    w = world_db.world
    guest = session["guest"].persona
    for tid in (w.thread_ab, w.missing_thread, "g_" + "a" * 32):
        refused(world_db, guest, "chat_history", {"_thread_id": tid}, "P0002", "thread not found")
    refused(world_db, add_anonymous(world_db, "other").persona, "chat_history", {"_thread_id": session["thread"]},
            "P0002", "thread not found")


def test_guest_realtime_access(world_db: WorldDb, session: dict[str, Any]) -> None:
    w = world_db.world
    topic = f"chat:{session['thread']}"
    with world_db.db.connect(admin=True) as conn:
        guest_read = realtime.read_check(conn, session["guest"].persona, topic).allowed
        guest_write = realtime.write_check(conn, session["guest"].persona, topic).allowed
        host_read = realtime.read_check(conn, w.alice.persona, topic).allowed
        stranger = realtime.read_check(conn, add_anonymous(world_db, "s").persona, topic).allowed
        elsewhere = realtime.read_check(conn, session["guest"].persona, f"chat:{w.thread_ab}").allowed
    assert guest_read == {"broadcast": True, "presence": True}
    assert guest_write == {"broadcast": False, "presence": True}
    assert host_read == {"broadcast": True, "presence": True}
    assert stranger == elsewhere == {"broadcast": False, "presence": False}


def test_an_anonymous_user_sees_nothing_else(world_db: WorldDb, session: dict[str, Any]) -> None:
    w = world_db.world
    lurker = add_anonymous(world_db, "lurker").persona
    guest = session["guest"].persona
    assert guest_send(world_db, guest, session["thread"]).ok
    with world_db.db.connect() as conn:
        for who, threads in ((lurker, []), (guest, [session["thread"]])):
            for table, column in (("chat_identities", "supabase_user_id"), ("chat_threads", "thread_id"),
                                  ("chat_messages", "thread_id"), ("chat_links", "link_id")):
                got = postgrest.run(conn, who, f"select {column} from public.{table}")
                assert got.ok
                seen = sorted({str(r[column]) for r in got.rows})
                assert seen == (threads if column == "thread_id" else []), (table, seen)
    refused(world_db, guest, "ensure_chat_thread", {"_user_a_mongo_id": w.alice.mongo_id,
                                                    "_user_b_mongo_id": w.bob.mongo_id}, "42501", "not a participant")


# --- lifetime -----------------------------------------------------------------------------------


def ended_everywhere(wdb: WorldDb, session: dict[str, Any]) -> None:
    """An ended session: P0002 for the guest, a closed thread for the host, history kept."""
    w = wdb.world
    guest, thread = session["guest"], session["thread"]
    refused(wdb, guest.persona, "insert_chat_message",
            {"_thread_id": thread, "_sender_mongo_id": None, "_recipient_mongo_id": None, "_body": "hi"},
            "P0002", "thread not found")
    refused(wdb, guest.persona, "chat_history", {"_thread_id": thread}, "P0002", "thread not found")
    refused(wdb, guest.persona, "redeem_chat_link", {"_token": session["link"]["token"]}, "P0002", "link not found")
    refused(wdb, w.alice.persona, "insert_chat_message",
            {"_thread_id": thread, "_sender_mongo_id": w.alice.mongo_id, "_recipient_mongo_id": None, "_body": "hi"},
            "22023", "thread is closed")
    assert [r["body"] for r in call(wdb, w.alice.persona, "chat_history", {"_thread_id": thread}).rows] == [
        "before the end"]
    with wdb.db.connect(admin=True) as conn:
        assert not realtime.read_check(conn, guest.persona, f"chat:{thread}").can_join
        assert realtime.read_check(conn, w.alice.persona, f"chat:{thread}").can_join


@pytest.mark.parametrize("how", ["link expired", "link revoked", "session ended", "guest user deleted"])
def test_an_ended_session(world_db: WorldDb, session: dict[str, Any], how: str) -> None:
    w = world_db.world
    assert guest_send(world_db, session["guest"].persona, session["thread"], "before the end").ok
    if how == "link expired":
        expire(world_db, session["link"]["link_id"])
    elif how == "link revoked":
        assert call(world_db, w.alice.persona, "revoke_chat_link", {"_link_id": session["link"]["link_id"]}).ok
    elif how == "session ended":
        assert call(world_db, w.alice.persona, "end_chat_guest", {"_thread_id": session["thread"]}).ok
    else:
        world_db.admin.execute("delete from auth.users where id = %s", (session["guest"].uid,))
    ended_everywhere(world_db, session)
    listed = call(world_db, w.alice.persona, "list_chat_links").rows
    assert [r["status"] for r in listed] == [{"link expired": "expired", "link revoked": "revoked"}.get(how, "active")]


def test_deleting_the_guest_keeps_the_thread_and_messages_for_the_host(world_db: WorldDb,
                                                                       session: dict[str, Any]) -> None:
    assert guest_send(world_db, session["guest"].persona, session["thread"], "kept").ok
    world_db.admin.execute("delete from auth.users where id = %s", (session["guest"].uid,))
    row = world_db.admin.execute(
        "select t.guest_supabase_id, (select count(*) from public.chat_messages m where m.thread_id = t.thread_id) "
        "from public.chat_threads t where t.thread_id = %s", (session["thread"],)).fetchone()
    assert row == (None, 1)


def test_deleting_the_host_deletes_links_and_guest_threads(world_db: WorldDb, session: dict[str, Any]) -> None:
    assert guest_send(world_db, session["guest"].persona, session["thread"]).ok
    world_db.admin.execute("delete from auth.users where id = %s", (world_db.world.alice.uid,))
    left = world_db.admin.execute(
        "select (select count(*) from public.chat_links where link_id = %s), "
        "(select count(*) from public.chat_threads where thread_id = %s), "
        "(select count(*) from public.chat_messages where thread_id = %s), "
        "(select count(*) from auth.users where id = %s)",
        (session["link"]["link_id"], session["thread"], session["thread"], session["guest"].uid)).fetchone()
    assert left == (0, 0, 0, 1)


# --- the identity map -----------------------------------------------------------------------------


def test_the_identity_map_refuses_anonymous_users(world_db: WorldDb) -> None:
    guest = add_anonymous(world_db)
    with world_db.db.connect() as conn:
        got = postgrest.run(conn, personas.service(), "insert into public.chat_identities (supabase_user_id, mongo_id) "
                            "values (%s, %s)", (guest.uid, "6560" + "0" * 19 + "9"), method="POST", commit=True)
        moved = postgrest.run(conn, personas.service(), "update public.chat_identities set supabase_user_id = %s "
                              "where supabase_user_id = %s", (guest.uid, world_db.world.erin.uid), method="PATCH",
                              commit=True)
    for outcome in (got, moved):
        assert (outcome.sqlstate, (outcome.message or "").split(":")[0]) == (
            "22023", "supabase_user_id is an anonymous user")
    assert world_db.admin.execute("select count(*) from public.chat_identities where supabase_user_id = %s",
                                  (guest.uid,)).fetchone() == (0,)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        world_db.admin.execute("insert into public.chat_identities values (%s, %s)", (guest.uid, "0" * 24))


def test_a_converted_user_may_be_mapped(world_db: WorldDb) -> None:
    guest = add_anonymous(world_db)
    world_db.admin.execute("update auth.users set is_anonymous = false, email = 'converted@example.invalid' "
                           "where id = %s", (guest.uid,))
    world_db.admin.execute("insert into public.chat_identities values (%s, %s)", (guest.uid, "0" * 23 + "7"))


def test_direct_messages_keep_both_mongo_ids(world_db: WorldDb) -> None:
    """Even the owner cannot store a direct message without Mongo ids (the guest exception is for g_ threads)."""
    w = world_db.world
    with pytest.raises(psycopg.errors.CheckViolation, match="chat_messages_mongo_ids_check"):
        world_db.admin.execute("insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, "
                               "sender_supabase_id, body) values (%s, null, %s, %s, 'x')",
                               (w.thread_ab, w.bob.mongo_id, w.alice.uid))
    with pytest.raises(psycopg.errors.CheckViolation, match="chat_threads_kind_check"):
        world_db.admin.execute("insert into public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id) "
                               "values (%s, %s, %s)", (w.alice.mongo_id + "_x", w.alice.mongo_id, w.alice.uid))
