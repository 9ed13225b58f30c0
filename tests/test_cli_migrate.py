"""`dbtool migrate` for CI: serialised runners, fail-fast lock timeouts, atomic revisions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbtool import migrate, paths
from dbtool.errors import MigrationError
from dbtool.pytest_plugin import ChatDatabase

LOCK_KEY = int.from_bytes(b"chat-db\x01", "big")  # migrations/env.py


def dbtool(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.Popen([sys.executable, "-m", "dbtool", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_runners_at_once_serialise_and_both_succeed(bare: ChatDatabase) -> None:
    with bare.connect() as holder:
        holder.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))  # hold the gate until both wait
        runners = [dbtool("migrate", "--database-url", bare.url) for _ in range(2)]
        deadline = time.monotonic() + 60
        outputs: list[str] = []
        while time.monotonic() < deadline and all(r.poll() is None for r in runners):
            time.sleep(0.2)
            with bare.connect(admin=True) as conn:
                waiting = conn.execute(
                    "select count(*) from pg_stat_activity where datname = %s and application_name = '' "
                    "and pid <> pg_backend_pid() and pid <> %s", (bare.name, holder.info.backend_pid)).fetchone()
            if waiting and waiting[0] >= 2:
                break
        assert all(r.poll() is None for r in runners), "a runner did not wait for the lock"
        holder.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))
    for runner in runners:
        out, err = runner.communicate(timeout=120)
        assert runner.returncode == 0, err
        outputs.append(out + err)
    applied = [o for o in outputs if "applied 0001" in o]
    idle = [o for o in outputs if "nothing to do: already at " + migrate.heads()[0] in o]
    assert len(applied) == 1 and len(idle) == 1, outputs
    assert all("waiting for the migration lock held by pid" in o for o in outputs)
    assert migrate.current(bare.url) == migrate.heads()[0]


def test_blocked_ddl_fails_fast_and_leaves_the_revision(bare: ChatDatabase) -> None:
    migrate.upgrade(migrate.MigrateSettings(bare.url), "0002")
    with bare.connect(autocommit=False) as app:
        # Realtime reading its queue: CREATE POLICY on realtime.messages needs an exclusive lock.
        app.execute("select count(*) from realtime.messages")
        runner = dbtool("migrate", "--database-url", bare.url, "--lock-timeout", "300ms")
        _out, err = runner.communicate(timeout=120)
        app.rollback()
    assert runner.returncode == 1
    assert "Error: revision 0003 could not get a lock within lock_timeout=300ms" in err
    assert "the database stays at revision 0002" in err
    assert migrate.current(bare.url) == "0002"


BROKEN = '''"""broken on purpose

Revision ID: 0099
Revises: {head}
"""

from alembic import op

revision = "0099"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("create table public.half_done (id int)")
    op.execute("select 1 / 0")


def downgrade() -> None:
    op.execute("drop table public.half_done")
'''


def test_a_revision_failing_midway_leaves_the_previous_one_intact(bare: ChatDatabase, tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(paths.migrations_dir(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrate.heads()[0]
    (scripts / "versions" / "0099_broken.py").write_text(BROKEN.format(head=head))
    settings = migrate.MigrateSettings(bare.url, script_location=str(scripts))
    with pytest.raises(MigrationError) as failure:
        migrate.upgrade(settings, "head")
    assert str(failure.value) == (
        f"revision 0099 failed: division by zero; the database stays at revision {head} "
        "(each revision runs in its own transaction)")
    assert migrate.current(bare.url) == head
    with bare.connect() as conn:
        assert conn.execute("select to_regclass('public.half_done')").fetchone() == (None,)


def test_migrate_prints_each_revision_and_json(bare: ChatDatabase) -> None:
    runner = dbtool("migrate", "--database-url", bare.url, "--json")
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    for rev, _, description in migrate.history():
        assert f"applied {rev}  {description}" in err
    import json

    report = json.loads(out)
    assert report["before"] is None and report["after"] == migrate.heads()[0]
    assert [a["revision"] for a in report["applied"]] == [r for r, _, _ in migrate.history()]


def test_downgrade_and_history_and_sql(bare: ChatDatabase) -> None:
    migrate.upgrade(migrate.MigrateSettings(bare.url), "head")
    head, before, _ = migrate.history()[-1]
    down = dbtool("downgrade", "-1", "--database-url", bare.url)
    _, err = down.communicate(timeout=120)
    assert down.returncode == 0 and f"reverted {head}" in err
    assert migrate.current(bare.url) == before
    history = dbtool("migrate", "--history")
    out, _ = history.communicate(timeout=60)
    assert "0001" in out and "0003" in out
    sql = dbtool("downgrade", "base", "--sql")
    out, _ = sql.communicate(timeout=60)
    assert sql.returncode == 0 and "drop table public.chat_messages" in out


def test_unknown_revision_is_a_clear_error(bare: ChatDatabase) -> None:
    runner = dbtool("migrate", "--database-url", bare.url, "--to", "9999")
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 1
    assert err.strip().splitlines()[-1].startswith("Error: Can't locate revision identified by '9999'")


def test_unreachable_database_is_a_clear_error() -> None:
    runner = dbtool("migrate", "--database-url", "postgresql://postgres:x@127.0.0.1:1/nope")
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 1
    assert "Error: cannot reach the database" in err
