"""Supabase, emulated on plain PostgreSQL: the public API for an application's tests.

* `personas` — who calls: the JWT claims of anon, a signed-in user, an anonymous user, the
  service role (`personas.user("alice", uid)`).
* `postgrest` — a request as PostgREST runs it: the role and JWT settings of one request in
  its own transaction (`postgrest.request(conn, persona, sql, params)`, `postgrest.call` for RPC).
* `realtime` — the Realtime server's checks: may a persona join a private channel
  (`realtime.read_check`), send on it (`realtime.write_check`), which broadcasts it sees.

Run them on a database prepared like `dbtool reset` prepares one (the pytest plugin's
`chat_db` fixture is one); docs/testing.md has an example.
"""

from __future__ import annotations

from dbtool.supabase import personas, postgrest, realtime
from dbtool.supabase.personas import Persona
from dbtool.supabase.postgrest import Outcome
from dbtool.supabase.realtime import ChannelAccess

__all__ = ["ChannelAccess", "Outcome", "Persona", "personas", "postgrest", "realtime"]
