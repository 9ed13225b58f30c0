"""migrations/env.py run by Alembic itself: the database read as libpq reads it, the
timeouts validated as dbtool validates them, and autogenerate refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbtool.database import Database
from dbtool.ops import migrate

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC = str(Path(sys.executable).parent / "alembic")


def alembic(*args: str, ini: Path = ROOT / "alembic.ini", **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "PG", "DBTOOL_"))}
    return subprocess.run([ALEMBIC, "-c", str(ini), *args], cwd="/", env={**clean, **env}, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("form", ["key=value", "?host="])
def test_database_url_in_every_form_libpq_reads(chat_db: Database, form: str) -> None:
    params = conninfo_to_dict(chat_db.url)
    if form == "key=value":  # SQLAlchemy's URL parser cannot read this form at all
        url = make_conninfo("", **params)
    else:
        url = f"postgresql://{params['user']}:{params['password']}@/{params['dbname']}?host={params['host']}&port={params['port']}"
    done = alembic("current", DATABASE_URL=url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{migrate.heads()[0]} (head)"


def test_pghost_completes_a_database_url_without_host(chat_db: Database) -> None:
    params = conninfo_to_dict(chat_db.url)
    done = alembic("current", DATABASE_URL=f"postgresql://{params['user']}:{params['password']}@/{params['dbname']}",
                   PGHOST=str(params["host"]), PGPORT=str(params["port"]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{migrate.heads()[0]} (head)"


def test_an_unreadable_database_url_fails_with_its_name() -> None:
    done = alembic("current", DATABASE_URL="mysql://root@db.example.com/chat")
    assert done.returncode != 0
    assert "FAILED: DATABASE_URL must start with postgresql:// (got mysql://)" in done.stdout


def test_timeouts_from_the_environment_are_validated_alike() -> None:
    bad = alembic("upgrade", "head", "--sql", DBTOOL_LOCK_TIMEOUT="abc")
    assert bad.returncode != 0 and bad.stdout.strip() == (
        "FAILED: DBTOOL_LOCK_TIMEOUT must be a PostgreSQL duration such as 5s, 500ms or 2min, got 'abc'")
    good = alembic("upgrade", "head", "--sql", DBTOOL_LOCK_TIMEOUT="2s")
    assert good.returncode == 0, good.stderr
    assert "set lock_timeout = '2s';" in good.stdout


# --- autogenerate: refused, never a revision that drops the schema ------------------------------


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    """A copy of alembic.ini and migrations/, so that a revision written by mistake lands there."""
    shutil.copy(ROOT / "alembic.ini", tmp_path / "alembic.ini")
    shutil.copytree(ROOT / "migrations", tmp_path / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def revisions(scripts: Path) -> list[str]:
    return sorted(p.name for p in (scripts / "migrations" / "versions").glob("*.py"))


def refused(done: subprocess.CompletedProcess[str]) -> bool:
    output = done.stdout + done.stderr
    return (done.returncode != 0 and done.stdout.startswith("FAILED: chat-db has no autogenerate support")
            and "docs/adding-a-migration.md" in done.stdout
            and not any(word in output for word in ("New upgrade operations", "remove_table", "drop_table", "Generating")))


@pytest.mark.parametrize("command", [["check"], ["revision", "--autogenerate", "-m", "sync"]])
def test_autogenerate_is_refused_on_a_migrated_database(chat_db: Database, scripts: Path, command: list[str]) -> None:
    before = revisions(scripts)
    done = alembic(*command, ini=scripts / "alembic.ini", DATABASE_URL=chat_db.url)
    assert refused(done), done.stdout + done.stderr
    assert revisions(scripts) == before
    assert migrate.current(chat_db.url) == migrate.heads()[0]


@pytest.mark.parametrize("command", [["check"], ["revision", "--autogenerate", "-m", "sync"]])
def test_autogenerate_is_refused_without_a_database(scripts: Path, command: list[str]) -> None:
    done = alembic(*command, ini=scripts / "alembic.ini")
    assert refused(done), done.stdout + done.stderr


def test_autogenerate_through_the_api_is_refused_too(chat_db: Database, scripts: Path) -> None:
    from alembic import command
    from alembic.util import CommandError

    cfg, _ = migrate.alembic_config(migrate.MigrateSettings(chat_db.url, script_location=str(scripts / "migrations")))
    before = revisions(scripts)
    for call in (lambda: command.check(cfg), lambda: command.revision(cfg, "sync", autogenerate=True)):
        with pytest.raises(CommandError, match=r"^chat-db has no autogenerate support"):
            call()
    assert revisions(scripts) == before


def test_a_hand_written_revision_starts_as_the_docs_say(scripts: Path) -> None:
    head = migrate.heads()[0]
    following = f"{int(head) + 1:04d}"
    done = alembic("revision", "-m", "chat receipts", "--rev-id", following, ini=scripts / "alembic.ini")
    assert done.returncode == 0, done.stdout + done.stderr
    created = scripts / "migrations" / "versions" / f"{following}_chat_receipts.py"
    text = created.read_text()
    assert f"revision = '{following}'" in text and f"down_revision = '{head}'" in text
    assert 'UPGRADE = """' in text and 'DOWNGRADE = """' in text
