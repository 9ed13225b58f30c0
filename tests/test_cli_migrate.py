"""`dbtool migrate` for CI: serialised runners, fail-fast lock timeouts, atomic revisions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbtool import paths
from dbtool.database import Database
from dbtool.errors import MigrationError
from dbtool.ops import migrate

LOCK_KEY = int.from_bytes(b"chat-db\x01", "big")  # migrations/env.py


def dbtool(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.Popen([sys.executable, "-m", "dbtool", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_runners_at_once_serialise_and_both_succeed(bare: Database, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    logs = [tmp_path / f"runner{i}.err" for i in range(2)]
    with bare.connect() as holder:
        holder.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))  # hold the gate until both wait
        runners = []
        for log in logs:
            with log.open("w") as err:
                runners.append(subprocess.Popen([sys.executable, "-m", "dbtool", "migrate", "--database-url", bare.url],
                                                env=env, text=True, stdout=subprocess.PIPE, stderr=err))
        deadline = time.monotonic() + 60
        # Each runner says so once it has tried the lock and found it taken.
        while time.monotonic() < deadline and all(r.poll() is None for r in runners):
            if all("waiting for the migration lock" in log.read_text() for log in logs):
                break
            time.sleep(0.1)
        assert all(r.poll() is None for r in runners), "a runner did not wait for the lock"
        holder.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))
    outputs: list[str] = []
    for runner, log in zip(runners, logs, strict=True):
        out, _ = runner.communicate(timeout=120)
        err = log.read_text()
        assert runner.returncode == 0, err
        outputs.append(out + err)
    applied = [o for o in outputs if "applied 0001" in o]
    idle = [o for o in outputs if "nothing to do: already at " + migrate.heads()[0] in o]
    assert len(applied) == 1 and len(idle) == 1, outputs
    assert all("waiting for the migration lock held by pid" in o for o in outputs)
    assert migrate.current(bare.url) == migrate.heads()[0]


def test_blocked_ddl_fails_fast_and_leaves_the_revision(bare: Database) -> None:
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


def test_a_revision_failing_midway_leaves_the_previous_one_intact(bare: Database, tmp_path: Path) -> None:
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


def test_migrate_prints_each_revision_and_json(bare: Database) -> None:
    runner = dbtool("migrate", "--database-url", bare.url, "--json")
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    for rev, _, description in migrate.history():
        assert f"applied {rev}  {description}" in err
    import json

    report = json.loads(out)
    assert report["before"] is None and report["after"] == migrate.heads()[0]
    assert [a["revision"] for a in report["applied"]] == [r for r, _, _ in migrate.history()]


def test_downgrade_and_history_and_sql(bare: Database) -> None:
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


def test_unknown_revision_is_a_clear_error(bare: Database) -> None:
    runner = dbtool("migrate", "--database-url", bare.url, "--to", "9999")
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 1
    assert err.strip().splitlines()[-1].startswith("Error: Can't locate revision identified by '9999'")


def test_unreachable_database_is_a_clear_error() -> None:
    runner = dbtool("migrate", "--database-url", "postgresql://postgres:x@127.0.0.1:1/nope")
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 1
    assert "Error: cannot reach the database" in err


HOSTED_REFUSED = BROKEN.replace(
    'op.execute("create table public.half_done (id int)")\n    op.execute("select 1 / 0")',
    'op.execute("create table public.half_done (id int)")\n'
    '    op.execute("comment on policy chat_realtime__select_participants on realtime.messages is \'x\'")')


def test_a_revision_that_hosted_supabase_refuses_fails_locally_first(bare: Database, tmp_path: Path) -> None:
    """The stand-in refuses what supautils (before 3.3) refuses, and the database stays at
    the last complete revision."""
    scripts = tmp_path / "migrations"
    shutil.copytree(paths.migrations_dir(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrate.heads()[0]
    (scripts / "versions" / "0099_broken.py").write_text(HOSTED_REFUSED.format(head=head))
    settings = migrate.MigrateSettings(bare.url, script_location=str(scripts))
    with pytest.raises(MigrationError) as failure:
        migrate.upgrade(settings, "head")
    assert str(failure.value) == (
        f"revision 0099 failed: must be owner of relation messages; the database stays at revision {head} "
        "(each revision runs in its own transaction)")
    assert migrate.current(bare.url) == head
    with bare.connect() as conn:
        assert conn.execute("select to_regclass('public.half_done')").fetchone() == (None,)
