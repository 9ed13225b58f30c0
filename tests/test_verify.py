"""`dbtool verify`: the contract checked cell by cell on a database, safe (nothing changes) and loud."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import psycopg

from dbtool.database import Database
from dbtool.ops import seed
from dbtool.policy.probes import ALL_PROBES, PERSONAS

CELLS = len(ALL_PROBES) * len(PERSONAS)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CHAT_DB_URL")}
    return subprocess.run([sys.executable, "-m", "dbtool", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def everything(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """Every row of every table verify could touch, as text."""
    tables = ("auth.users", "public.chat_identities", "public.chat_threads", "public.chat_links", "public.chat_messages",
              "realtime.messages")
    return {t: sorted(r[0] for r in conn.execute(f"select t::text from {t} t")) for t in tables}


def test_verify_passes_reports_the_matrix_and_changes_nothing(chat_db: Database, tmp_path: Path) -> None:
    with chat_db.connect(admin=True) as conn:
        with conn.transaction():
            seed.demo(conn)
        seed.load(conn, users=40, threads=50, messages=500, seed=2)
        before = everything(conn)
    junit = tmp_path / "policy.xml"
    done = run("verify", "--database-url", chat_db.admin_url, "--json", "--junit-xml", str(junit))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    with chat_db.connect(admin=True) as conn:
        after = everything(conn)
    assert after == before
    assert report["ok"] and report["database_unchanged"]
    assert report["passed"] == CELLS and report["failed"] == 0
    assert report["fingerprints_before"] == report["fingerprints_after"]
    cell = next(c for c in report["cells"] if c["persona"] == "outsider" and c["object"] == "chat_history()")
    assert (cell["allowed"], cell["result"]) == (False, "P0002 thread not found")
    cases = ET.parse(junit).getroot().iter("testcase")
    assert sum(1 for _ in cases) == CELLS + 1


def test_verify_text_output(chat_db: Database) -> None:
    done = run("verify", "--database-url", chat_db.admin_url)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["object", "operation"]
    assert any(line.startswith("chat_messages") and "insert as the other participant" in line and "42501 RLS" in line
               for line in lines)
    assert f"{CELLS}/{CELLS} cells as the contract says" in done.stdout
    assert "database unchanged" in done.stdout


def test_verify_fails_loudly_on_a_widened_policy(chat_db: Database, tmp_path: Path) -> None:
    with chat_db.connect() as conn:
        conn.execute("alter policy chat_messages__select_participants on public.chat_messages using (true)")
    junit = tmp_path / "policy.xml"
    done = run("verify", "--database-url", chat_db.admin_url, "--junit-xml", str(junit))
    assert done.returncode == 1
    assert "FAILED outsider | chat_messages select: expected the ids {" in done.stdout
    assert "NOT" in done.stdout and "!ok" in done.stdout
    failed = {case.get("name"): case.find("failure") for case in ET.parse(junit).getroot().iter("testcase")
              if case.find("failure") is not None}
    assert "outsider | chat_messages select" in failed
    failure = failed["outsider | chat_messages select"]
    assert failure is not None and failure.get("message", "").startswith("expected the ids {")
    assert "measured: " in (failure.text or "")


def test_sequences_move_only_when_asked_not_to_keep_them(chat_db: Database) -> None:
    def last_value() -> int:
        with chat_db.connect(admin=True) as conn:
            row = conn.execute("select last_value from public.chat_messages_id_seq").fetchone()
        assert row is not None
        return int(row[0])

    start = last_value()
    assert run("verify", "--database-url", chat_db.admin_url).returncode == 0  # local: kept still
    assert last_value() == start
    loose = run("verify", "--database-url", chat_db.admin_url, "--no-exact")
    assert loose.returncode == 0
    assert last_value() > start
    assert f"the message id sequence moved by {last_value() - start}" in loose.stdout


NO_PYTEST = '''
import json, pkgutil, importlib, sys
import dbtool
from dbtool.cli import cli

codes = []
for args in sys.argv[1:]:
    try:
        cli.main(args.split(), prog_name="dbtool", standalone_mode=False)
        codes.append(0)
    except SystemExit as exc:
        codes.append(exc.code)
for info in pkgutil.walk_packages(dbtool.__path__, "dbtool."):
    # the plugin, loaded by pytest itself, is the one module that needs it; __main__ would run the CLI
    if info.name not in ("dbtool.testing.plugin", "dbtool.__main__"):
        importlib.import_module(info.name)
test_tools = sorted(m for m in sys.modules if m.split(".")[0] in ("pytest", "_pytest", "pluggy", "pytest_postgresql"))
print(json.dumps({"codes": codes, "test_tools": test_tools}))
'''


def test_verify_audit_and_migrate_never_import_pytest(chat_db: Database) -> None:
    """pytest and pytest-postgresql are the plugin's extra (chat-db[pytest]), not the tool's."""
    commands = [f"verify --database-url {chat_db.admin_url}", f"audit --database-url {chat_db.admin_url}",
                f"migrate --database-url {chat_db.url}"]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CHAT_DB_URL")}
    done = subprocess.run([sys.executable, "-c", NO_PYTEST, *commands], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"codes": [0, 0, 0], "test_tools": []}
