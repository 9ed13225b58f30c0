"""migrations/env.py run by Alembic itself: the database read as libpq reads it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbtool import migrate
from dbtool.pytest_plugin import ChatDatabase

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC = str(Path(sys.executable).parent / "alembic")


def alembic(*args: str, ini: Path = ROOT / "alembic.ini", **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "PG", "DBTOOL_"))}
    return subprocess.run([ALEMBIC, "-c", str(ini), *args], cwd="/", env={**clean, **env}, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("form", ["key=value", "?host="])
def test_database_url_in_every_form_libpq_reads(chat_db: ChatDatabase, form: str) -> None:
    params = conninfo_to_dict(chat_db.url)
    if form == "key=value":  # SQLAlchemy's URL parser cannot read this form at all
        url = make_conninfo("", **params)
    else:
        url = f"postgresql://{params['user']}:{params['password']}@/{params['dbname']}?host={params['host']}&port={params['port']}"
    done = alembic("current", DATABASE_URL=url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{migrate.heads()[0]} (head)"


def test_pghost_completes_a_database_url_without_host(chat_db: ChatDatabase) -> None:
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
