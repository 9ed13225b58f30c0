"""The local driver: the scenario through the package's reproduction of PostgREST's and
Realtime's requests, against a database with the Supabase stand-in.

Users are rows this run inserts into auth.users (and deletes at the end, which cascades to
their identities, threads and messages). "The channel receives the INSERT broadcast" is
checked the way the database decides it: the Realtime read check lets the participant join,
and the broadcast row with the right payload was written to realtime.messages for the topic.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from dbtool.ops import migrate
from dbtool.smoke.base import Caller, Driver, Reply, SmokeRefused, StepFailed, StepSkipped
from dbtool.supabase import personas, postgrest, realtime
from dbtool.supabase.personas import Persona
from dbtool.urls import conninfo, redact

USER_PREFIX = "chat-db-smoke"


def user_email(run_id: str, label: str) -> str:
    return f"{USER_PREFIX}-{run_id}-{label}@smoke.chat-db.invalid"


class LocalDriver(Driver):
    """`url`: the migration role (postgres), as PostgREST's and Realtime's connections;
    `admin_url`: a role that may write auth.users (the stand-in's superuser, or postgres)."""

    name = "local"

    def __init__(self, url: str, admin_url: str) -> None:
        self.url = url
        self.api = psycopg.connect(conninfo(url), autocommit=True)
        self.admin = psycopg.connect(conninfo(admin_url), autocommit=True)
        self.created: list[str] = []
        self.topics: set[str] = set()
        self.arg_types: dict[str, dict[str, str]] = {}

    def describe(self) -> str:
        return redact(self.url)

    def preflight(self) -> None:
        head = migrate.heads()[0]
        row = self.admin.execute("select to_regclass('public.chat_messages') is not null, to_regclass(%s) is not null",
                                 (migrate.VERSION_TABLE,)).fetchone()
        if row is None or not row[0]:
            raise SmokeRefused(f"{self.describe()} has no chat schema: run `dbtool migrate` (or `dbtool reset`) first")
        at = migrate.current(self.url) if row[1] else None
        if at != head:
            raise SmokeRefused(f"{self.describe()} is at schema revision {at or 'unknown'}, this package's head is "
                               f"{head}: migrate it with `dbtool migrate` (or use the chat-db version that matches it)")
        if self.admin.execute("select to_regclass('auth.users') is null").fetchone() == (True,):
            raise SmokeRefused(f"{self.describe()} has no auth.users: install the stand-in (`dbtool standin install`)")

    def has_functions(self, names: tuple[str, ...]) -> bool:
        row = self.admin.execute(
            "select count(distinct proname) from pg_catalog.pg_proc "
            "where pronamespace = 'public'::regnamespace and proname = any(%s)", (list(names),)).fetchone()
        return row is not None and row[0] == len(names)

    def _persona(self, caller: Caller) -> Persona:
        persona: Persona = caller.handle
        return persona

    def _insert_user(self, label: str, run_id: str, anonymous: bool) -> Caller:
        uid = str(uuid.uuid4())
        email = None if anonymous else user_email(run_id, label)
        self.admin.execute(
            "insert into auth.users (id, email, aud, role, is_anonymous, created_at, updated_at, raw_user_meta_data) "
            "values (%s, %s, 'authenticated', 'authenticated', %s, now(), now(), %s)",
            (uid, email, anonymous, json.dumps({"chat_db_smoke": run_id, "label": label})))
        self.created.append(uid)
        return Caller(label, uid, email, anonymous)

    def create_user(self, label: str, run_id: str) -> Caller:
        return self._insert_user(label, run_id, anonymous=False)

    def map_identity(self, caller: Caller, mongo_id: str) -> Reply:
        return _reply(postgrest.run(
            self.api, personas.service(),
            "insert into public.chat_identities (supabase_user_id, mongo_id) values (%s, %s) returning *",
            (caller.uid, mongo_id), method="POST", path="/chat_identities", commit=True))

    def sign_in(self, caller: Caller) -> Caller:
        persona = personas.user(caller.label, caller.uid, caller.email)
        return Caller(caller.label, caller.uid, caller.email, caller.anonymous, caller.mongo_id, persona)

    def sign_in_anonymously(self, label: str, run_id: str) -> Caller:
        caller = self._insert_user(label, run_id, anonymous=True)
        # What Supabase Auth puts in an anonymous user's access token.
        claims = personas.claims("authenticated", sub=caller.uid, is_anonymous=True,
                                 session_id=str(uuid.uuid4()), aal="aal1")
        return Caller(label, caller.uid, None, True, None, Persona(label, "authenticated", claims))

    def rpc(self, caller: Caller, function: str, args: Mapping[str, Any]) -> Reply:
        declared = self._arg_types(function)
        types = {k: declared.get(k, "text") for k in args}
        return _reply(postgrest.call(self.api, self._persona(caller), function, args, types=types, commit=True))

    def _arg_types(self, function: str) -> dict[str, str]:
        if function not in self.arg_types:
            self.arg_types[function] = argument_types(self.admin, function)
        return self.arg_types[function]

    def join(self, caller: Caller, topic: str) -> tuple[bool, str]:
        self.topics.add(topic)
        access = realtime.read_check(self.api, self._persona(caller), topic)
        seen = ", ".join(ext for ext, ok in access.allowed.items() if ok) or "nothing"
        return access.can_join, f"read check: {seen} visible"

    def public_join(self, caller: Caller, topic: str) -> tuple[bool, str]:
        raise StepSkipped("public channels are a setting of the Realtime server, which the local database never sees")

    def expect_broadcast(self, caller: Caller, topic: str, event: str,
                         match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        access = realtime.read_check(self.api, self._persona(caller), topic)
        if not access.allowed.get("broadcast"):
            raise StepFailed(f"{caller.label} may not read broadcasts on {topic}")
        rows = self.admin.execute(
            "select payload from realtime.messages where topic = %s and event = %s and extension = 'broadcast' "
            "and private order by inserted_at", (topic, event)).fetchall()
        found = [payload for (payload,) in rows if isinstance(payload, dict) and match(payload)]
        if len(found) != 1:
            raise StepFailed(f"{len(found)} matching {event} broadcast(s) in realtime.messages for {topic}, expected 1")
        return found[0]

    def client_broadcast(self, sender: Caller, observer: Caller, topic: str) -> tuple[bool, str]:
        access = realtime.write_check(self.api, self._persona(sender), topic, ("broadcast",))
        if access.allowed["broadcast"]:
            return True, "the Realtime write check lets the participant broadcast"
        return False, "the Realtime write check refuses the participant's broadcast (42501)"

    def presence(self, sender: Caller, observer: Caller, topic: str) -> tuple[bool, str]:
        wrote = realtime.write_check(self.api, self._persona(sender), topic, ("presence",)).allowed["presence"]
        reads = realtime.read_check(self.api, self._persona(observer), topic, ("presence",)).allowed["presence"]
        if wrote and reads:
            return True, f"{sender.label} may track presence, {observer.label} may read it"
        return False, f"presence write allowed: {wrote}, presence read allowed: {reads}"

    def cleanup(self) -> tuple[int, list[str]]:
        problems: list[str] = []
        deleted = 0
        try:
            with self.admin.transaction():
                deleted = self.admin.execute("delete from auth.users where id = any(%s::uuid[])",
                                             (self.created,)).rowcount
                # The broadcasts this run caused (Realtime's queue; Supabase prunes it after days).
                self.admin.execute("delete from realtime.messages where topic = any(%s)", (sorted(self.topics),))
            self.created.clear()
        except psycopg.Error as exc:
            problems.append(f"could not delete users {', '.join(self.created)}: {str(exc).strip()}")
        finally:
            self.api.close()
            self.admin.close()
        return deleted, problems


def argument_types(conn: psycopg.Connection[Any], function: str) -> dict[str, str]:
    """The declared type of each input argument of public.`function`: PostgREST reads the JSON
    body into them."""
    rows = conn.execute(
        "select a.name, pg_catalog.format_type(a.type, null) from pg_catalog.pg_proc p cross join lateral "
        "unnest(p.proargnames, coalesce(p.proallargtypes, p.proargtypes::oid[]), "
        "coalesce(p.proargmodes, array_fill('i'::\"char\", array[p.pronargs]))) as a(name, type, mode) "
        "where p.pronamespace = 'public'::regnamespace and p.proname = %s and a.mode in ('i', 'b', 'v')",
        (function,)).fetchall()
    return {name: type_ for name, type_ in rows}


def _reply(outcome: postgrest.Outcome) -> Reply:
    if outcome.ok:
        return Reply(True, [jsonable(r) for r in outcome.rows])
    return Reply(False, [], outcome.sqlstate, outcome.message)


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """Rows as PostgREST's JSON gives them: uuids and times as strings, ids as numbers."""
    return {k: _json_value(v) for k, v in row.items()}


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | dict | list):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
