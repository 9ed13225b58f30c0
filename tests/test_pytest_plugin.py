"""The `chat_db` pytest plugin as an application's own test suite uses it, run with pytester.

pytest loads the plugin through its pytest11 entry point in the inner session too, just as
it does in a project that installed chat-db.
"""

from __future__ import annotations

import os

import pytest

from dbtool.database import Database


def test_options_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["chat-db:", "*--chat-db-exact*", "*--chat-db-url*"])


def test_a_suite_without_chat_fixtures_starts_no_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain(): assert 1 + 1 == 2")
    result = pytester.runpytest("-p", "no:cacheprovider", f"--basetemp={pytester.path / 'tmp'}")
    result.assert_outcomes(passed=1)
    assert not list(pytester.path.glob("tmp/chat-db-server*"))


def test_chat_db_exact_is_read_as_verify_reads_exact(pytester: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAT_DB_EXACT", raising=False)
    pytester.makepyfile(test_mode='''
        def test_mode(pytestconfig):
            assert pytestconfig.getoption("--chat-db-exact") is None  # auto: decided by where the database is
    ''')
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    wrong = pytester.runpytest("-p", "no:cacheprovider", "--chat-db-exact=maybe")
    assert wrong.ret == pytest.ExitCode.USAGE_ERROR
    wrong.stderr.fnmatch_lines(["*'maybe' is not one of auto, yes, no*"])


def test_world_fixtures_against_a_given_database(pytester: pytest.Pytester, chat_db: Database) -> None:
    """An application's query and channel checks against a database given with --chat-db-url
    (every probe rolled back; no embedded server in the inner session)."""
    pytester.makepyfile(test_app='''
        from dbtool.supabase import personas, postgrest, realtime

        def test_strangers_are_refused(chat_world):  # the example in docs/testing.md
            w = chat_world.world
            got = postgrest.call(chat_world.conn, w.carol.persona, "chat_history", {"_thread_id": w.thread_ab},
                                 volatile=False)
            assert (got.ok, got.sqlstate, got.message) == (False, "P0002", "thread not found")
            assert not realtime.read_check(chat_world.conn, personas.anon(), f"chat:{w.thread_ab}").can_join

        def test_my_backend_query(chat_world):
            w = chat_world.world
            got = postgrest.run(chat_world.conn, w.bob.persona,
                                "select body from public.chat_messages where thread_id = %s order by id",
                                [w.thread_ab])
            assert [r["body"] for r in got.rows] == ["hi bob", "hi alice", "how are you?"]
            assert realtime.read_check(chat_world.conn, w.bob.persona, f"chat:{w.thread_ab}").can_join

        def test_shared_world_is_the_same_each_time(chat_world_shared, chat_db_target):
            assert chat_db_target.external
            assert chat_world_shared.world.thread_ab
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider", "--chat-db-url", chat_db.admin_url)
    result.assert_outcomes(passed=3)
    with chat_db.connect(admin=True) as conn:
        assert conn.execute("select count(*) from public.chat_messages").fetchone() == (0,)


@pytest.mark.slow
def test_clones_of_a_template_on_an_embedded_server(pytester: pytest.Pytester) -> None:
    """Without --chat-db-url the plugin starts its own server, migrates a template once and
    gives each test a clone of it: what one test writes, the next does not see."""
    pytester.makepyfile(test_clones='''
        import pytest

        @pytest.mark.parametrize("n", [1, 2])
        def test_each_test_gets_a_fresh_clone(chat_db, chat_db_template, n):
            assert chat_db.name != chat_db_template.name
            with chat_db.connect() as conn:
                assert conn.execute("select to_regclass('public.scratch')").fetchone() == (None,)
                assert conn.execute("select to_regclass('public.chat_messages')").fetchone() != (None,)
                conn.execute("create table public.scratch (n int)")
            with chat_db.connect(admin=True) as admin:
                template = admin.execute("select datistemplate from pg_database where datname = %s",
                                         [chat_db_template.name]).fetchone()
                assert template == (True,)
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider", f"--basetemp={pytester.path / 'tmp'}")
    result.assert_outcomes(passed=2)
    assert list(pytester.path.glob("tmp/chat-db-server*"))  # where the server's data lived


def test_the_plugin_loads_without_pytest_postgresql(pytester: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pytest run where chat-db is installed loads its plugin: without the [pytest] extra
    it must neither break the run nor fail with a traceback in the fixtures that need it.
    (A fresh interpreter: a package of that name first on the path fails to import, as if it
    were not installed.)"""
    pytester.makepyfile(test_app='''
        def test_unrelated():
            assert True

        def test_needs_a_database(chat_db):
            pass
    ''')
    shadow = pytester.path / "not-installed" / "pytest_postgresql"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'pytest_postgresql'\", "
                                        "name='pytest_postgresql')\n")
    for name in ("DATABASE_URL", "CHAT_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(shadow.parent), os.environ.get("PYTHONPATH")])))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:pytest_postgresql", "test_app.py")
    result.assert_outcomes(passed=1, errors=1)
    assert "need pytest-postgresql, which is not installed: pip install 'chat-db[pytest]'" in result.stdout.str()
    assert "Traceback" not in result.stdout.str() and "During handling" not in result.stdout.str()
