"""The live driver of `dbtool smoke`: configuration, secrets, refusals, timeouts and clean-up.

Without a project, the driver runs against tests/supabase_http.py (Supabase's HTTP API:
Auth admin, sign-in, PostgREST) and, where Realtime is needed, tests/supabase_realtime.py,
both over the real local database. With SUPABASE_URL and both keys in the environment, the
last test runs it against that project.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from click.testing import CliRunner, Result

from dbtool import smoke
from dbtool.cli import cli
from dbtool.database import Database
from dbtool.errors import ConfigError
from dbtool.server.embedded import free_port
from dbtool.smoke import base, live, scenario
from dbtool.smoke.local import USER_PREFIX
from tests import supabase_http, supabase_realtime
from tests.supabase_http import ANON_KEY, SERVICE_KEY
from tests.test_smoke import counts as all_counts
from tests.test_smoke import missing_functions

REST_STEPS = ("users.create", "identities.map", "users.sign_in", "thread.ensure", "message.send", "message.retry",
              "history.paging", "history.outsider")
# The guest-link steps that need no Realtime server, and those that join chat:<guest thread>.
GUEST_REST_STEPS = ("guest.link_create", "guest.sign_in", "guest.redeem", "guest.revoke")
GUEST_REALTIME_STEPS = ("guest.exchange", "guest.refused")


@pytest.fixture
def project(chat_db: Database) -> Iterator[tuple[str, supabase_http.Api]]:
    with supabase_http.serve(chat_db.url, chat_db.admin_url) as served:
        yield served


def counts(db: Database) -> dict[str, int]:
    """Rows of every table but realtime.messages: on a project the broadcasts of the run's
    messages stay in Realtime's queue (which Realtime prunes) and the run cannot delete them."""
    return {k: v for k, v in all_counts(db).items() if k != "realtime.messages"}


@contextmanager
def project_with_realtime(db: Database, public_access: bool = False) -> Iterator[tuple[str, supabase_http.Api]]:
    server = supabase_realtime.RealtimeServer(db.url, public_access=public_access)
    server.start()
    try:
        with supabase_http.serve(db.url, db.admin_url, server.port) as served:
            yield served
    finally:
        server.stop()


def run_cli(url: str, *extra: str) -> Result:
    env = {"SUPABASE_URL": url, "SUPABASE_ANON_KEY": ANON_KEY, "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY}
    return CliRunner().invoke(cli, ["smoke", "--timeout", "1", *extra], env=env)


def no_secrets(result: Result) -> None:
    for key in (ANON_KEY, SERVICE_KEY):
        assert key not in result.stdout and key not in result.stderr


def steps_of(result: Result) -> dict[str, dict[str, Any]]:
    return {s["step"]: s for s in json.loads(result.stdout)["steps"]}


# --- configuration --------------------------------------------------------------------------


def test_flags_win_over_the_environment() -> None:
    env = {"SUPABASE_URL": "https://env.supabase.co", "SUPABASE_ANON_KEY": "a-env", "SUPABASE_SERVICE_ROLE_KEY": "s-env"}
    assert live.live_config(env=env) == live.LiveConfig("https://env.supabase.co", "a-env", "s-env")
    cfg = live.live_config("http://127.0.0.1:54321/", "a-flag", None, 3, env=env)
    assert (cfg.url, cfg.anon_key, cfg.service_role_key, cfg.timeout) == ("http://127.0.0.1:54321", "a-flag", "s-env", 3)


def test_missing_settings_are_named() -> None:
    with pytest.raises(ConfigError) as err:
        live.live_config(url="https://x.supabase.co", env={})
    assert str(err.value).startswith("the live smoke needs --anon-key or SUPABASE_ANON_KEY, --service-role-key or "
                                     "SUPABASE_SERVICE_ROLE_KEY")


@pytest.mark.parametrize(("url", "anon", "service", "timeout", "message"), [
    ("x.supabase.co", "a", "s", 1.0, "must start with https:// or http://"),
    ("https://x.supabase.co", "same", "same", 1.0, "are the same"),
    ("https://x.supabase.co", "a", "s", 0.0, "--timeout must be positive"),
])
def test_bad_settings(url: str, anon: str, service: str, timeout: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        live.live_config(url, anon, service, timeout, env={})


def test_keys_never_show() -> None:
    cfg = live.live_config("https://x.supabase.co", ANON_KEY, SERVICE_KEY, env={})
    assert ANON_KEY not in repr(cfg) and SERVICE_KEY not in repr(cfg)
    assert cfg.scrub(f"apikey={SERVICE_KEY}&a={ANON_KEY}") == "apikey=<service role key>&a=<anon key>"


def test_cli_without_settings_is_an_error() -> None:
    result = CliRunner().invoke(cli, ["smoke"], env={"SUPABASE_URL": "", "SUPABASE_ANON_KEY": "",
                                                      "SUPABASE_SERVICE_ROLE_KEY": ""})
    assert result.exit_code == 1 and result.output.startswith("Error: the live smoke needs --supabase-url")


def test_database_url_is_for_local_only() -> None:
    result = CliRunner().invoke(cli, ["smoke", "--database-url", "postgresql://x@localhost/y"])
    assert result.exit_code == 2 and "--database-url is for --local" in result.output


def test_an_unreachable_project_is_an_error_without_secrets() -> None:
    port = free_port()  # nobody listens on it
    result = run_cli(f"http://127.0.0.1:{port}")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(f"Error: cannot reach the project at http://127.0.0.1:{port}")
    no_secrets(result)


# --- against the HTTP API over the local database -------------------------------------------


def test_live_driver_runs_the_rest_steps_and_deletes_its_users(chat_db: Database,
                                                              project: tuple[str, supabase_http.Api]) -> None:
    url, api = project
    before = counts(chat_db)
    result = run_cli(url, "--json")
    no_secrets(result)
    assert result.exit_code == 1  # no Realtime server here
    steps = steps_of(result)
    assert [name for name in REST_STEPS if steps[name]["result"] != "passed"] == []
    join = steps["realtime.join"]
    assert join["result"] == "failed" and join["detail"].startswith("timed out after 1s waiting for bob's join")
    assert steps["realtime.insert"]["detail"] == "needs step realtime.join, which did not pass"
    guests = not missing_functions(chat_db, scenario.GUEST_LINKS)
    for step in scenario.STEPS:
        got = steps[step.name]
        if step.feature and missing_functions(chat_db, step.feature):
            assert got["result"] == "waiting for its feature", got
        elif step.name in GUEST_REST_STEPS:
            assert got["result"] == "passed", got
        elif step.name in GUEST_REALTIME_STEPS:  # the guest's join of chat:<guest thread> gets no answer
            assert got["result"] == "failed" and got["detail"].startswith("timed out after 1s waiting for "), got
    # Three users through the Auth admin API and the guest through the anonymous sign-in (anon
    # key), each of them deleted with the service role key.
    assert steps["users.delete"] == {**steps["users.delete"], "result": "passed",
                                     "detail": f"{3 + guests} user(s) deleted"}
    assert counts(chat_db) == before
    created = [p for m, p, _ in api.requests if m == "POST" and p == "/auth/v1/admin/users"]
    signed_up = [key for m, p, key in api.requests if m == "POST" and p == "/auth/v1/signup"]
    deleted = [p for m, p, _ in api.requests if m == "DELETE"]
    assert (len(created), signed_up, len(deleted)) == (3, [ANON_KEY] * guests, 3 + guests)
    assert {key for m, p, key in api.requests if p.startswith("/auth/v1/admin/")} == {SERVICE_KEY}


def test_users_are_named_for_the_run(chat_db: Database, project: tuple[str, supabase_http.Api]) -> None:
    url, api = project
    guests: list[tuple[Any, ...]] = []

    def watch(result: smoke.StepResult) -> None:
        if result.name == "guest.sign_in":
            with chat_db.connect(admin=True) as conn:
                guests.extend(conn.execute("select email, raw_user_meta_data from auth.users where is_anonymous"))

    cfg = live.live_config(url, ANON_KEY, SERVICE_KEY, 1, env={})
    report = smoke.run_live(cfg, progress=watch)
    assert sorted(api.passwords) == sorted(f"{USER_PREFIX}-{report.run_id}-{label}@smoke.chat-db.invalid"
                                           for label in ("alice", "bob", "outsider"))
    # The guest has no email: its metadata names the run, which is how clean-up finds it after a timeout.
    assert guests == [(None, {"chat_db_smoke": report.run_id, "label": "guest"})]


def test_refuses_a_project_without_the_chat_schema(chat_db: Database,
                                                   project: tuple[str, supabase_http.Api]) -> None:
    url, api = project
    api.hide_functions.add("chat_history")
    result = run_cli(url)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(f"Error: the project at {url} has no chat schema")
    assert not [p for _, p, _ in api.requests if p.startswith("/auth/")]  # refused before creating anything


def test_refuses_a_project_at_another_revision(project: tuple[str, supabase_http.Api]) -> None:
    url, api = project
    api.hide_functions.add("ensure_chat_thread")
    result = run_cli(url)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(
        "Error: the project's chat schema is not this package's: it lacks ensure_chat_thread")
    assert not [p for _, p, _ in api.requests if p.startswith("/auth/")]


@pytest.mark.parametrize(("flag", "what"), [("--service-role-key", "service role key"), ("--anon-key", "anon key")])
def test_refuses_a_key_the_project_does_not_accept(project: tuple[str, supabase_http.Api], flag: str,
                                                   what: str) -> None:
    url, api = project
    result = run_cli(url, flag, "wrong-key-that-must-not-show")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(f"Error: the project at {url} does not accept the {what}")
    assert "wrong-key-that-must-not-show" not in result.output
    assert not [p for _, p, _ in api.requests if p.startswith("/auth/")]


def test_a_timeout_names_its_step_and_the_user_created_late_is_deleted(
        chat_db: Database, project: tuple[str, supabase_http.Api]) -> None:
    url, api = project
    api.hold_create = "bob"  # bob is created, but the answer never arrives in time
    before = counts(chat_db)
    result = run_cli(url, "--json")
    assert result.exit_code == 1
    steps = steps_of(result)
    assert steps["users.create"]["detail"] == "timed out after 1s waiting for creating user bob"
    assert steps["identities.map"]["result"] == "skipped"
    # No link, so no guest either: alice, and bob found by the run's name.
    assert steps["guest.sign_in"]["detail"] == "needs step guest.link_create, which did not pass"
    assert not [p for _, p, _ in api.requests if p == "/auth/v1/signup"]
    assert steps["users.delete"]["result"] == "passed" and steps["users.delete"]["detail"] == "2 user(s) deleted"
    assert counts(chat_db) == before


def test_a_guest_signed_in_too_late_is_deleted(chat_db: Database, project: tuple[str, supabase_http.Api]) -> None:
    url, api = project
    if missing_functions(chat_db, scenario.GUEST_LINKS):
        pytest.skip("no guest links in this schema: the scenario signs in no guest")
    api.hold_create = "guest"  # the anonymous user is created, but the session arrives too late
    before = counts(chat_db)
    result = run_cli(url, "--json")
    assert result.exit_code == 1
    steps = steps_of(result)
    assert steps["guest.sign_in"]["detail"] == "timed out after 1s waiting for the anonymous sign-in of guest"
    assert steps["guest.redeem"]["detail"] == "needs step guest.sign_in, which did not pass"
    assert steps["users.delete"]["result"] == "passed" and steps["users.delete"]["detail"] == "4 user(s) deleted"
    assert counts(chat_db) == before


def test_a_creation_that_answers_does_not_forget_one_that_did_not(
        chat_db: Database, project: tuple[str, supabase_http.Api]) -> None:
    url, api = project
    api.hold_create = "bob"
    before = counts(chat_db)
    driver = live.LiveDriver(live.live_config(url, ANON_KEY, SERVICE_KEY, 1, env={}))
    try:
        with pytest.raises(base.StepTimeout):
            driver.create_user("bob", "run-late")
        driver.sign_in_anonymously("guest", "run-late")  # answers; bob is still to be looked for
    finally:
        assert driver.cleanup() == (2, [])
    assert counts(chat_db) == before


@pytest.mark.parametrize(("step", "users"), [("thread.ensure", 3), ("guest.redeem", 4)])
def test_ctrl_c_still_deletes_the_users(chat_db: Database, project: tuple[str, supabase_http.Api], step: str,
                                        users: int) -> None:
    url, api = project
    if step.startswith("guest.") and missing_functions(chat_db, scenario.GUEST_LINKS):
        pytest.skip("no guest links in this schema: the scenario signs in no guest")
    before = counts(chat_db)

    def interrupt(result: smoke.StepResult) -> None:
        if result.name == step:
            assert result.status is smoke.Status.PASSED, result
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        smoke.run_live(live.live_config(url, ANON_KEY, SERVICE_KEY, 1, env={}), progress=interrupt)
    assert counts(chat_db) == before
    assert len([p for m, p, _ in api.requests if m == "DELETE"]) == users


def test_anonymous_sign_ins_off_is_said_plainly(chat_db: Database, project: tuple[str, supabase_http.Api]) -> None:
    url, api = project
    api.anonymous_sign_ins = False  # the setting of a new project
    driver = live.LiveDriver(live.live_config(url, ANON_KEY, SERVICE_KEY, 1, env={}))
    try:
        with pytest.raises(base.StepSkipped, match="anonymous sign-ins are off in this project"):
            driver.sign_in_anonymously("guest", "run")
    finally:
        assert driver.cleanup() == (0, [])
    if missing_functions(chat_db, scenario.GUEST_LINKS):
        return
    # In a run: the guest steps are skipped with the reason (the link is still made and revoked).
    before = counts(chat_db)
    steps = steps_of(run_cli(url, "--json"))
    assert steps["guest.link_create"]["result"] == steps["guest.revoke"]["result"] == "passed"
    assert steps["guest.sign_in"]["result"] == "skipped"
    assert steps["guest.sign_in"]["detail"].startswith("anonymous sign-ins are off in this project: turn on "
                                                       "'Allow anonymous sign-ins'")
    for name in ("guest.redeem", "guest.exchange", "guest.refused"):
        assert steps[name] == {**steps[name], "result": "skipped",
                               "detail": "needs step guest.sign_in, which did not pass"}
    assert steps["users.delete"]["detail"] == "3 user(s) deleted"
    assert counts(chat_db) == before


# --- with Realtime too ----------------------------------------------------------------------


def test_live_driver_end_to_end(chat_db: Database) -> None:
    before = counts(chat_db)
    with project_with_realtime(chat_db) as (url, api):
        result = run_cli(url, "--json", "--timeout", "10")
    no_secrets(result)
    assert result.exit_code == 0, result.output
    steps = steps_of(result)
    for step in smoke.steps():
        waiting = bool(step.feature) and missing_functions(chat_db, step.feature)
        assert steps[step.name]["result"] == ("waiting for its feature" if waiting else "passed"), steps[step.name]
    assert steps_of(result)["realtime.outsider"]["detail"].startswith(
        "refused: CHANNEL_ERROR {\"reason\": \"Unauthorized: You do not have permissions to read")
    guests = not missing_functions(chat_db, scenario.GUEST_LINKS)
    if guests:
        assert steps["guest.refused"]["detail"].startswith(
            "history P0002 thread not found; join refused: CHANNEL_ERROR {\"reason\": \"Unauthorized: ")
    assert steps["users.delete"]["detail"] == f"{3 + guests} user(s) deleted"
    assert len([p for m, p, _ in api.requests if m == "DELETE"]) == 3 + guests
    assert counts(chat_db) == before


def test_public_channels_allowed_is_said_plainly(chat_db: Database) -> None:
    with project_with_realtime(chat_db, public_access=True) as (url, _):
        result = run_cli(url, "--json", "--timeout", "10")
    assert result.exit_code == 1
    failed = {name: s["detail"] for name, s in steps_of(result).items() if s["result"] == "failed"}
    assert list(failed) == ["realtime.public"]
    assert "turn off 'Allow public access' in the project's Realtime settings" in failed["realtime.public"]


def test_a_forged_broadcast_that_gets_through_fails_the_run(chat_db: Database) -> None:
    with chat_db.connect(admin=True) as conn:  # a project whose guards were dropped by another feature
        conn.execute("drop policy chat_realtime__guard_authenticated on realtime.messages")
        conn.execute("drop policy chat_realtime__guard_other_roles on realtime.messages")
        conn.execute("create policy open_broadcasts on realtime.messages for insert to authenticated with check (true)")
    with project_with_realtime(chat_db) as (url, _):
        result = run_cli(url, "--json", "--timeout", "10")
    assert result.exit_code == 1
    step = steps_of(result)["realtime.client_broadcast"]
    assert step["result"] == "failed" and step["detail"] == (
        "a client broadcast reached the other participant: bob received the forged INSERT")


# --- against a real project -----------------------------------------------------------------

LIVE_ENV = ("SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY")


@pytest.mark.skipif(not all(os.environ.get(k) for k in LIVE_ENV),
                    reason="no live project: set SUPABASE_URL, SUPABASE_ANON_KEY and SUPABASE_SERVICE_ROLE_KEY")
def test_live_project() -> None:
    result = CliRunner().invoke(cli, ["smoke", "--json"])
    for key in LIVE_ENV[1:]:
        assert os.environ[key] not in result.output
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["steps"][-1]["result"] == "passed"
