"""`dbtool audit`: one planted misconfiguration per finding, graded drift, and proof that
auditing changes nothing in the database."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dbtool.audit import config, findings, report, snapshot
from dbtool.cli import cli
from dbtool.database import Database
from dbtool.policy.probes import ALL_PROBES, PERSONAS
from dbtool.server.pgbin import find_binaries

CLEAN = config.AuditConfig()


def audit(db: Database, cfg: config.AuditConfig = CLEAN) -> list[findings.Finding]:
    with db.connect() as conn:
        return findings.run(conn, cfg)


def test_the_migrated_schema_is_clean(chat_db: Database) -> None:
    assert audit(chat_db) == []


PLANTED = [
    ("rls off on an exposed table", ["alter table public.chat_threads disable row level security"],
     [("rls_disabled", "error", "public.chat_threads"), ("policy_exists_rls_disabled", "error", "public.chat_threads")]),
    ("rls off, exposed, no API privileges",
     ["create table public.quiet (id int)", "revoke all on public.quiet from anon, authenticated"],
     [("rls_disabled", "warn", "public.quiet")]),
    ("policies but rls off", ["create table public.half (id int)", "revoke all on public.half from anon, authenticated",
                              "create policy half_read on public.half for select to authenticated using (true)"],
     [("policy_exists_rls_disabled", "error", "public.half"), ("rls_disabled", "warn", "public.half")]),
    ("rls on, no policy", ["create table public.locked (id int)", "alter table public.locked enable row level security",
                           "revoke all on public.locked from anon, authenticated, service_role"],
     [("rls_enabled_no_policy", "info", "public.locked")]),
    ("write policy using true", ["create policy anyone_edits on public.chat_messages for update to authenticated "
                                 "using (true)"],
     [("write_policy_always_true", "warn", "policy anyone_edits on public.chat_messages")]),
    ("insert policy with check true for anon", ["create policy open_door on public.chat_threads for insert to anon "
                                                "with check (true)"],
     [("write_policy_always_true", "error", "policy open_door on public.chat_threads")]),
    ("unwrapped auth.uid()", ["drop policy chat_identities__select_own on public.chat_identities",
                              "create policy own on public.chat_identities for select to authenticated "
                              "using (supabase_user_id = auth.uid())"],
     [("per_row_auth_call", "warn", "policy own on public.chat_identities")]),
    ("unwrapped current_setting()", ["drop policy chat_identities__select_own on public.chat_identities",
                                     "create policy own on public.chat_identities for select to authenticated using "
                                     "(supabase_user_id::text = current_setting('request.jwt.claims', true)::json->>'sub')"],
     [("per_row_auth_call", "warn", "policy own on public.chat_identities")]),
    ("user_metadata in a policy", ["create policy vip on public.chat_threads for select to authenticated using "
                                   "(((select auth.jwt()) -> 'user_metadata' ->> 'vip')::boolean)"],
     [("user_metadata_in_policy", "error", "policy vip on public.chat_threads"),
      ("multiple_permissive_policies", "warn", "public.chat_threads")]),
    ("two permissive policies", ["create policy also_read on public.chat_threads for select to authenticated "
                                 "using ((select auth.uid()) = user_a_supabase_id)"],
     [("multiple_permissive_policies", "warn", "public.chat_threads")]),
    ("policy without TO", ["create policy everyone on public.chat_identities as restrictive for select using (true)",
                           "create policy anybody on public.chat_identities for select using (false)"],
     [("policy_for_public", "warn", "policy anybody on public.chat_identities"),
      ("multiple_permissive_policies", "warn", "public.chat_identities")]),
    ("definer without search_path", ["create function chat_private.leaky() returns int language sql security definer "
                                     "as 'select 1'", "revoke all on function chat_private.leaky() from public"],
     [("definer_without_search_path", "error", "chat_private.leaky()")]),
    ("definer searching public", ["create function chat_private.risky() returns int language sql security definer "
                                  "set search_path = public as 'select 1'",
                                  "revoke all on function chat_private.risky() from public"],
     [("definer_search_path_not_empty", "warn", "chat_private.risky()")]),
    ("invoker without search_path", ["create function chat_private.plain() returns int language sql as 'select 1'",
                                     "revoke all on function chat_private.plain() from public"],
     [("function_search_path_mutable", "warn", "chat_private.plain()")]),
    ("definer callable through PostgREST", ["create function public.admin_thing() returns int language sql security "
                                            "definer set search_path = '' as 'select 1'",
                                            "revoke all on function public.admin_thing() from public, anon"],
     [("definer_executable_by_api", "warn", "public.admin_thing()")]),
    ("anon privilege on a table", ["grant select on public.chat_messages to anon"],
     [("api_privilege_on_owned_object", "error", "public.chat_messages")]),
    ("PUBLIC privilege on a sequence", ["grant usage on sequence public.chat_messages_id_seq to public"],
     [("api_privilege_on_owned_object", "error", "public.chat_messages_id_seq")]),
    ("anon column privilege", ["grant select (body) on public.chat_messages to anon"],
     [("api_privilege_on_owned_object", "error", "public.chat_messages.body")]),
    ("PUBLIC execute on a function", ["grant execute on function public.chat_history(text, timestamptz, bigint, int) "
                                      "to public"],
     [("api_execute_on_owned_function", "warn", "public.chat_history(_thread_id text, _before_created_at timestamp "
       "with time zone, _before_id bigint, _limit integer)")]),
    ("realtime policy for every topic", ["create policy lobby on realtime.messages for select to authenticated "
                                         "using (true)"],
     [("realtime_policy_unscoped", "error", "policy lobby on realtime.messages"),
      ("multiple_permissive_policies", "warn", "realtime.messages")]),
    ("realtime policy ignoring the topic", ["create policy by_extension on realtime.messages for insert to authenticated "
                                            "with check (extension = 'presence')"],
     [("realtime_policy_unscoped", "warn", "policy by_extension on realtime.messages"),
      ("multiple_permissive_policies", "warn", "realtime.messages")]),
    ("view over protected rows", ["create view public.all_messages as select * from public.chat_messages",
                                  "grant select on public.all_messages to authenticated",
                                  "revoke all on public.all_messages from anon"],
     [("view_bypasses_rls", "error", "public.all_messages")]),
    ("owner's-rights view in a private schema (as 0009's)", ["create view chat_private.all_messages as select * from "
                                                               "public.chat_messages",
                                                               "grant select on chat_private.all_messages to authenticated"],
     []),
    ("materialized view over protected rows", ["create materialized view public.recent as select * from public.chat_messages",
                                               "revoke all on public.recent from anon, authenticated"],
     [("view_bypasses_rls", "warn", "public.recent")]),
    ("unindexed foreign key", ["create table public.reactions (id int primary key, message_id bigint "
                               "references public.chat_messages (id))",
                               "alter table public.reactions enable row level security",
                               "revoke all on public.reactions from anon, authenticated, service_role"],
     [("unindexed_foreign_key", "info", "public.reactions (reactions_message_id_fkey)"),
      ("rls_enabled_no_policy", "info", "public.reactions")]),
    ("duplicate index", ["create index chat_messages_again on public.chat_messages (thread_id, created_at, id)"],
     [("duplicate_index", "warn", "public.chat_messages")]),
    ("read policy for every signed-in user", ["create policy members_read on public.chat_messages for select "
                                              "to authenticated using (true)"],
     [("policy_admits_anonymous", "warn", "policy members_read on public.chat_messages"),
      ("multiple_permissive_policies", "warn", "public.chat_messages")]),
    ("write policy that only checks the sign-in", ["create policy signed_in_links on public.chat_links for insert "
                                                   "to authenticated with check ((select auth.uid()) is not null)"],
     [("policy_admits_anonymous", "error", "policy signed_in_links on public.chat_links")]),
]


@pytest.mark.parametrize(("statements", "expected"), [(s, e) for _, s, e in PLANTED], ids=[n for n, _, _ in PLANTED])
def test_each_misconfiguration_is_reported(chat_db: Database, statements: list[str],
                                           expected: list[tuple[str, str, str]]) -> None:
    with chat_db.connect(admin=True) as conn:
        for statement in statements:
            conn.execute("set role postgres")  # as the migration role would create them
            conn.execute(statement)
            conn.execute("reset role")
    got = {(f.code, f.severity, f.object) for f in audit(chat_db)}
    assert got == set(expected)


def test_measured_anonymous_access_is_a_finding(chat_db: Database) -> None:
    """A membership helper gone wrong reads fine statically; the matrix measured as an anonymous
    user without a link (and as an ended guest) shows what it admits."""
    with chat_db.connect() as conn:
        conn.execute("create or replace function chat_private.is_chat_topic_participant(_topic text) returns boolean "
                     "language sql stable set search_path = '' as $$ select starts_with(_topic, 'chat:') $$")
    assert audit(chat_db) == []
    found = report.run(chat_db.url, CLEAN).findings
    assert {f.code for f in found} == {"anonymous_user_admitted"}
    admitted = {f.object for f in found}
    assert {"realtime chat:<ab> read broadcast", "realtime chat:<guest> write presence"} <= admitted
    assert all(f.severity == "error" and ("anonymous, no link" in f.message or "ended guest" in f.message)
               for f in found)


def test_a_policy_admitting_anonymous_users_is_found_both_ways(chat_db: Database) -> None:
    with chat_db.connect() as conn:
        conn.execute("create policy guest_threads on public.chat_threads for select to authenticated "
                     "using (kind = 'guest')")
    found = {(f.code, f.object) for f in report.run(chat_db.url, CLEAN).findings}
    assert ("policy_admits_anonymous", "policy guest_threads on public.chat_threads") in found
    assert ("anonymous_user_admitted", "chat_threads select") in found


def test_a_recorded_justification_downgrades_to_info(chat_db: Database) -> None:
    with chat_db.connect() as conn:
        conn.execute("create function public.admin_thing() returns int language sql security definer "
                      "set search_path = '' as 'select 1'")
        conn.execute("revoke all on function public.admin_thing() from public, anon")
    cfg = config.AuditConfig(justifications={"public.admin_thing()": "the admin app calls it; reviewed"})
    [finding] = audit(chat_db, cfg)
    assert (finding.code, finding.severity, finding.justification) == (
        "definer_executable_by_api", "info", "the admin app calls it; reviewed")


def test_exposed_schemas_are_configurable(chat_db: Database) -> None:
    with chat_db.connect() as conn:
        conn.execute("create schema api")
        conn.execute("create table api.things (id int)")
        conn.execute("grant usage on schema api to anon")
        conn.execute("grant select on api.things to anon")
    assert audit(chat_db) == []  # not exposed, not ours
    exposed = config.AuditConfig(exposed_schemas=("public", "api"))
    assert {(f.code, f.severity, f.object) for f in audit(chat_db, exposed)} == {("rls_disabled", "error", "api.things")}


def test_per_row_detection_reads_the_deparsed_expression() -> None:
    assert findings.per_row_calls("(user_id = auth.uid())") == ["auth.uid()"]
    assert findings.per_row_calls("(user_id = ( SELECT auth.uid() AS uid))") == []
    assert findings.per_row_calls("(EXISTS ( SELECT 1 FROM t WHERE (t.u = auth.uid())))") == ["auth.uid()"]
    assert findings.per_row_calls("( SELECT f(realtime.topic()) AS f)") == []
    assert findings.per_row_calls("((x = ( SELECT auth.uid() AS uid)) AND (y = auth.jwt()))") == ["auth.jwt()"]
    assert findings.per_row_calls("(note = 'auth.uid()')") == ["auth.uid()"]  # conservative inside literals


# --- drift ------------------------------------------------------------------------------------


def take(db: Database) -> dict[str, Any]:
    with db.connect(admin=True) as conn:
        return snapshot.take(conn, CLEAN, "test")


def grades(changes: list[snapshot.Change]) -> set[tuple[str, str]]:
    return {(c.grade, c.kind) for c in changes}


def test_no_change_no_diff(chat_db: Database) -> None:
    assert snapshot.diff(take(chat_db), take(chat_db)) == []


def test_widening_a_policy_is_dangerous(chat_db: Database) -> None:
    before = take(chat_db)
    with chat_db.connect() as conn:
        conn.execute("alter policy chat_threads__select_participants on public.chat_threads using (true)")
    changes = snapshot.diff(before, take(chat_db))
    policy = [c for c in changes if c.kind == "policy"]
    assert [c.grade for c in policy] == ["dangerous"]
    assert "outsider | chat_threads select" in {c.object for c in changes if c.grade == "dangerous"}
    assert "safe" not in {c.grade for c in changes}
    # chat_history still answers P0002: since 0010 it reads through a helper that applies the
    # membership rule itself, so the widened thread policy does not reach it.
    assert not [c for c in changes if c.object == "outsider | chat_history() call (thread ab)"]


def test_narrowing_a_policy_is_breaking(chat_db: Database) -> None:
    before = take(chat_db)
    with chat_db.connect() as conn:
        conn.execute("alter policy chat_threads__select_participants on public.chat_threads "
                     "using ((select auth.uid()) = user_a_supabase_id)")
    changes = snapshot.diff(before, take(chat_db))
    assert [c.grade for c in changes if c.kind == "policy"] == ["breaking"]
    assert all(c.grade == "breaking" for c in changes)
    assert any(c.kind == "access" for c in changes)


def test_a_cosmetic_rewrite_is_safe(chat_db: Database) -> None:
    before = take(chat_db)
    with chat_db.connect() as conn:
        conn.execute("alter policy chat_threads__select_participants on public.chat_threads "
                     "using ((select auth.uid()) = user_a_supabase_id or user_b_supabase_id = (select auth.uid()) "
                     "or (guest_expires_at > now() and guest_ended_at is null "
                     "and (select auth.uid()) = guest_supabase_id))")
    changes = snapshot.diff(before, take(chat_db))
    assert grades(changes) == {("safe", "policy")}


def test_new_grants_and_policies_and_definers_are_graded(chat_db: Database) -> None:
    before = take(chat_db)
    with chat_db.connect() as conn:
        conn.execute("grant select on public.chat_messages to anon")
        conn.execute("create policy stricter on public.chat_messages as restrictive for select to authenticated "
                     "using (true)")
        conn.execute("create function public.helper() returns int language sql security definer "
                     "set search_path = '' as 'select 1'")
        conn.execute("revoke execute on function public.chat_history(text, timestamptz, bigint, int) from service_role")
    changes = snapshot.diff(before, take(chat_db))
    kinds = grades(changes)
    assert ("dangerous", "grant") in kinds and ("breaking", "grant") in kinds
    assert ("breaking", "policy") in kinds and ("dangerous", "definer") in kinds
    assert any(c.object == "anon | chat_messages select" and c.grade == "dangerous" for c in changes)


# --- the whole command --------------------------------------------------------------------------


def pg_dump(db: Database) -> str:
    done = subprocess.run([find_binaries(None).tool("pg_dump"), "--dbname", db.admin_url, "--no-comments"],
                          capture_output=True, text=True, check=True)
    import re

    return re.sub(r"^\\(un)?restrict \S+$", "", done.stdout, flags=re.M)


def test_audit_changes_nothing_byte_for_byte(chat_db: Database, tmp_path: Path) -> None:
    with chat_db.connect(admin=True) as conn:
        from dbtool.ops import seed

        with conn.transaction():
            seed.demo(conn)
    before = pg_dump(chat_db)
    runner = CliRunner()
    assert runner.invoke(cli, ["audit", "--database-url", chat_db.admin_url]).exit_code == 0
    snap = tmp_path / "snap.json"
    assert runner.invoke(cli, ["audit", "snapshot", "--database-url", chat_db.admin_url, "-o", str(snap)]).exit_code == 0
    assert runner.invoke(cli, ["audit", "diff", str(snap), "--database-url", chat_db.admin_url]).exit_code == 0
    assert pg_dump(chat_db) == before


def test_cli_formats_and_fail_on(chat_db: Database) -> None:
    runner = CliRunner()
    url = chat_db.admin_url
    clean = runner.invoke(cli, ["audit", "--database-url", url, "--format", "json"])
    assert clean.exit_code == 0
    data = json.loads(clean.stdout)
    assert data["counts"] == {"error": 0, "warn": 0, "info": 0} and len(data["matrix"]) == len(ALL_PROBES) * len(PERSONAS)
    with chat_db.connect() as conn:
        conn.execute("create index chat_messages_again on public.chat_messages (thread_id, created_at, id)")
    warned = runner.invoke(cli, ["audit", "--database-url", url, "--no-matrix"])
    assert warned.exit_code == 1 and "WARN   duplicate_index  public.chat_messages" in warned.stdout
    assert runner.invoke(cli, ["audit", "--database-url", url, "--no-matrix", "--fail-on", "error"]).exit_code == 0
    md = runner.invoke(cli, ["audit", "--database-url", url, "--format", "markdown", "--fail-on", "never"])
    assert md.exit_code == 0
    assert "| warn | duplicate_index | `public.chat_messages` |" in md.stdout
    assert "| object | operation | anon |" in md.stdout


def test_extra_personas_from_a_config_file(chat_db: Database, tmp_path: Path) -> None:
    cfg_file = tmp_path / "audit.toml"
    cfg_file.write_text('[[personas]]\nname = "alice (support claim)"\nas = "alice"\n'
                        'claims = { app_metadata = { role = "support" } }\n\n'
                        '[[personas]]\nname = "anon with sub"\nrole = "anon"\nas = "bob"\n')
    got = report.run(chat_db.admin_url, config.load(str(cfg_file)))
    assert got.cells is not None
    by = {(c.persona, c.object, c.operation): c.short for c in got.cells}
    assert by[("alice (support claim)", "chat_messages", "select")] == by[("participant A", "chat_messages", "select")]
    assert by[("anon with sub", "chat_messages", "select")] == "42501 no grant"
    assert by[("alice (support claim)", "realtime chat:<ab>", "read broadcast")] == "yes"


@pytest.mark.parametrize(("content", "message"), [
    ("not = [toml", "is not valid TOML"),
    ("colour = 'blue'", "unknown setting(s)"),
    ("[[personas]]\nrole = 'anon'", "needs a name"),
    ("[[personas]]\nname = 'x'\nrole = 'root'", "role must be one of"),
    ("[[personas]]\nname = 'x'\nas = 'mallory'", "`as` must be one of"),
])
def test_bad_config_is_explained(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "audit.toml"
    path.write_text(content)
    result = CliRunner().invoke(cli, ["audit", "--config", str(path), "--database-url", "postgresql://x@127.0.0.1:1/x"])
    assert result.exit_code == 1 and message in result.output


def test_diff_needs_a_snapshot(tmp_path: Path) -> None:
    bogus = tmp_path / "snap.json"
    bogus.write_text("{}")
    result = CliRunner().invoke(cli, ["audit", "diff", str(bogus), "--database-url", "postgresql://x@127.0.0.1:1/x"])
    assert result.exit_code == 1 and "is not a dbtool audit snapshot" in result.output
