"""`dbtool smoke`: the scenario through the local driver against a real database, the
refusals, clean-up after failures, and the live driver's configuration and secret handling."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from dbtool import smoke
from dbtool.cli import cli
from dbtool.database import Database
from dbtool.ops import build, migrate, standin
from dbtool.server.embedded import Server
from dbtool.smoke import scenario
from dbtool.smoke.local import USER_PREFIX

TABLES = ("auth.users", "public.chat_identities", "public.chat_threads", "public.chat_messages", "public.chat_links",
          "realtime.messages")


def counts(db: Database) -> dict[str, int]:
    """Rows of each table the scenario writes (those the database has: chat_links is 0007's)."""
    with db.connect(admin=True) as conn:
        present = [t for t in TABLES if conn.execute("select to_regclass(%s)", (t,)).fetchone() != (None,)]
        return {t: conn.execute(f"select count(*) from {t}").fetchone()[0] for t in present}  # type: ignore[index]


def missing_functions(db: Database, names: tuple[str, ...]) -> bool:
    with db.connect(admin=True) as conn:
        row = conn.execute("select count(distinct proname) from pg_proc where pronamespace = 'public'::regnamespace "
                           "and proname = any(%s)", (list(names),)).fetchone()
    return row is not None and row[0] < len(names)


def smoke_cli(db: Database, *extra: str) -> Any:
    return CliRunner().invoke(cli, ["smoke", "--local", "--database-url", db.url, *extra])


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step"]: s for s in report["steps"]}


def test_local_smoke_passes_and_leaves_the_database_as_it_was(chat_db: Database) -> None:
    before = counts(chat_db)
    result = smoke_cli(chat_db, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["step"] for s in report["steps"]] == [s.name for s in smoke.steps()]
    assert report["ok"] and report["driver"] == "local"
    for step in smoke.steps():
        got = by_name(report)[step.name]
        if step.feature and missing_functions(chat_db, step.feature):
            assert got["result"] == "waiting for its feature", got
        elif step.name == "realtime.public":
            assert got["result"] == "skipped" and "Realtime server" in got["detail"]
        else:
            assert got["result"] == "passed", got
    assert by_name(report)["users.delete"]["detail"].startswith(
        f"{3 + (0 if missing_functions(chat_db, scenario.GUEST_LINKS) else 1)} user(s) deleted")
    assert counts(chat_db) == before


def test_step_table_and_summary(chat_db: Database) -> None:
    result = smoke_cli(chat_db)
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    assert header == ["step", "expectation", "result", "ms"]
    for step in smoke.steps():
        assert any(line.startswith(step.name + " ") for line in result.stdout.splitlines()), step.name
    assert "local smoke of postgresql://postgres:***@" in result.stdout  # the password is redacted


def test_a_failed_step_exits_1_and_still_deletes_the_users(chat_db: Database) -> None:
    with chat_db.connect(admin=True) as conn:
        conn.execute("alter table public.chat_messages disable trigger user")
    before = counts(chat_db)
    result = smoke_cli(chat_db, "--json")
    assert result.exit_code == 1, result.output
    steps = by_name(json.loads(result.stdout))
    assert steps["realtime.insert"]["result"] == "failed"
    assert "0 matching INSERT broadcast(s)" in steps["realtime.insert"]["detail"]
    assert steps["users.delete"]["result"] == "passed"
    assert counts(chat_db) == before


def test_steps_after_a_failed_one_say_what_they_needed(chat_db: Database) -> None:
    # Without ensure_chat_thread's grant, the thread step fails and its dependants are skipped.
    with chat_db.connect(admin=True) as conn:
        conn.execute("revoke execute on function public.ensure_chat_thread(text, text) from authenticated")
    result = smoke_cli(chat_db, "--json")
    assert result.exit_code == 1
    steps = by_name(json.loads(result.stdout))
    assert steps["thread.ensure"]["result"] == "failed" and "42501" in steps["thread.ensure"]["detail"]
    assert steps["message.send"] == {**steps["message.send"], "result": "skipped",
                                     "detail": "needs step thread.ensure, which did not pass"}
    assert steps["users.delete"]["result"] == "passed"


def test_a_feature_step_lights_up_once_the_database_has_its_rpcs(chat_db: Database) -> None:
    if not missing_functions(chat_db, scenario.RECEIPTS):
        pytest.skip("receipts are migrated: the step runs for real in the first test")
    # A mark_chat_read that moves no cursor and broadcasts nothing: the step runs and fails.
    with chat_db.connect(admin=True) as conn:
        conn.execute("create function public.mark_chat_read(_thread_id text, _up_to_id bigint) "
                     "returns table (thread_id text, delivered_up_to bigint, read_up_to bigint) "
                     "language sql as $$ select _thread_id, _up_to_id, _up_to_id $$")
    result = smoke_cli(chat_db, "--json")
    step = by_name(json.loads(result.stdout))["receipts.read"]
    assert step["result"] == "failed" and "READ broadcast" in step["detail"]
    assert result.exit_code == 1


def test_refuses_a_database_without_the_chat_schema(bare: Database) -> None:
    result = smoke_cli(bare)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "has no chat schema: run `dbtool migrate`" in result.output


def test_refuses_a_database_at_another_revision(bare: Database) -> None:
    revisions = [rev for rev, _, _ in migrate.history()]
    migrate.upgrade(migrate.MigrateSettings(bare.url), revisions[-2])
    before = counts(bare)
    result = smoke_cli(bare)
    assert result.exit_code == 1
    assert f"is at schema revision {revisions[-2]}, this package's head is {revisions[-1]}" in result.output
    assert counts(bare) == before


def test_local_driver_users_carry_the_run_prefix(chat_db: Database) -> None:
    seen: list[str] = []

    def watch(result: smoke.StepResult) -> None:
        if result.name == "users.create":
            with chat_db.connect(admin=True) as conn:
                seen.extend(r[0] for r in conn.execute("select email from auth.users where email like %s",
                                                       (f"{USER_PREFIX}-%",)).fetchall())

    report = smoke.run_local(chat_db.url, chat_db.admin_url, progress=watch)
    assert sorted(seen) == sorted(f"{USER_PREFIX}-{report.run_id}-{label}@smoke.chat-db.invalid"
                                  for label in ("alice", "bob", "outsider"))


def test_local_smoke_on_a_database_migrated_by_the_package(chat_db_server: Server) -> None:
    # The default path of `dbtool smoke --local`: a database built like `dbtool reset` builds one.
    name = "chat_db_smoke_built"
    db = chat_db_server.database(name)
    build.create_database(db.admin_url, name)
    try:
        build.prepare(db.admin_url, db.url)
        report = smoke.run_local(db.url, db.admin_url)
        assert report.ok, [s for s in report.steps if s.status is smoke.Status.FAILED]
    finally:
        build.drop_database(db.admin_url, name)


def test_standin_alone_is_not_enough(chat_db_server: Server) -> None:
    name = "chat_db_smoke_standin"
    db = chat_db_server.database(name)
    build.create_database(db.admin_url, name)
    try:
        with psycopg.connect(db.admin_url, autocommit=True) as conn:
            standin.install(conn)
        with pytest.raises(smoke.SmokeRefused, match="has no chat schema"):
            smoke.run_local(db.url, db.admin_url)
    finally:
        build.drop_database(db.admin_url, name)


def test_local_guest_is_an_anonymous_user_and_is_deleted(chat_db: Database) -> None:
    from dbtool.smoke.local import LocalDriver

    before = counts(chat_db)
    driver = LocalDriver(chat_db.url, chat_db.admin_url)
    guest = driver.sign_in_anonymously("guest", "run")
    assert guest.anonymous and guest.handle.claims["is_anonymous"] is True and guest.handle.sub == guest.uid
    with chat_db.connect(admin=True) as conn:
        assert conn.execute("select is_anonymous, email from auth.users where id = %s", (guest.uid,)).fetchone() == (
            True, None)
    # Anonymous users get nothing else: no thread of their own to join, no history.
    missing = scenario.thread_id(scenario.mongo_id(), scenario.mongo_id())
    assert driver.rpc(guest, "chat_history", {"_thread_id": missing}).code == "P0002"
    assert driver.cleanup() == (1, [])
    assert counts(chat_db) == before
