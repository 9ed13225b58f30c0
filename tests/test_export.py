"""`dbtool export supabase-cli`: the files apply on a bare stand-in and give Alembic's schema;
exporting again is stable; the RPC surface read from the revisions matches the database."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
from click.testing import CliRunner

from dbtool import paths
from dbtool.cli import cli
from dbtool.database import Database
from dbtool.ops import build, export, migrate, standin
from dbtool.server.embedded import Server
from dbtool.smoke import surface
from tests.test_migrations import schema_dump


def chain() -> list[str]:
    return [rev for rev, _, _ in migrate.history()]


def bare_database(server: Server, name: str) -> Database:
    db = server.database(name)
    build.drop_database(db.admin_url, name)
    build.create_database(db.admin_url, name)
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        standin.install(conn)
    return db


def test_exported_files_give_the_schema_alembic_gives(bare: Database, chat_db_server: Server,
                                                       tmp_path: Path) -> None:
    written = export.supabase_cli(tmp_path)
    files = sorted((tmp_path / "supabase" / "migrations").glob("*.sql"))
    assert [Path(w.path) for w in written] == files  # file-name order is the chain's order
    # As `supabase db push` does: the migration role, each file in a transaction of its own.
    with psycopg.connect(bare.url, autocommit=True) as conn:
        for path in files:
            with conn.transaction():
                conn.execute(path.read_text())
    reference = bare_database(chat_db_server, "chat_db_export_reference")
    try:
        migrate.upgrade(migrate.MigrateSettings(reference.url), "head")
        # The version table (chat_migrations) is part of the export, so the dumps are equal whole.
        assert schema_dump(bare) == schema_dump(reference)
    finally:
        build.drop_database(reference.admin_url, reference.name)
    assert migrate.current(bare.url) == migrate.heads()[0]
    assert migrate.upgrade(migrate.MigrateSettings(bare.url), "head").applied == []


def test_file_names_come_from_the_revisions(tmp_path: Path) -> None:
    written = export.supabase_cli(tmp_path)
    assert [w.revision for w in written] == chain()
    versions = paths.migrations_dir() / "versions"
    for w in written:
        source = next(versions.glob(f"{w.revision}_*.py")).read_text()
        created = re.search(r"^Create Date:\s*(\d{4})-(\d{2})-(\d{2})", source, re.M)
        assert created is not None
        name = Path(w.path).name
        assert re.fullmatch(rf"{''.join(created.groups())}\d{{6}}_chat_db_{w.revision}\.sql", name), name


def test_each_file_holds_its_revision_alone_without_transaction_control(tmp_path: Path) -> None:
    export.supabase_cli(tmp_path)
    texts = {p.name.split("_chat_db_")[1][:-4]: p.read_text()
             for p in (tmp_path / "supabase" / "migrations").glob("*.sql")}
    for path in sorted((paths.migrations_dir() / "versions").glob("[0-9]*.py")):
        namespace: dict[str, object] = {}
        exec(compile(path.read_text(), str(path), "exec"), namespace)
        upgrade = str(namespace["UPGRADE"]).strip()
        owners = [rev for rev, text in texts.items() if upgrade in text]
        assert owners == [namespace["revision"]]
    for text in texts.values():
        assert not re.search(r"^(BEGIN|COMMIT);$", text, re.M)
        assert "pg_advisory_xact_lock" in text and "pg_advisory_lock(" not in text


def test_exporting_again_is_stable(tmp_path: Path) -> None:
    first = export.supabase_cli(tmp_path / "a")
    again = export.supabase_cli(tmp_path / "a")
    elsewhere = export.supabase_cli(tmp_path / "b")
    assert {w.status for w in first} == {"created"} and {w.status for w in again} == {"unchanged"}
    read = {Path(w.path).name: Path(w.path).read_bytes() for w in first}
    assert read == {Path(w.path).name: Path(w.path).read_bytes() for w in elsewhere}


def test_cli_export(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export", "supabase-cli", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["revision"] for r in rows] == chain()
    assert all(Path(r["path"]).parent == tmp_path / "supabase" / "migrations" for r in rows)
    result = CliRunner().invoke(cli, ["export", "supabase-cli", str(tmp_path)])
    assert result.exit_code == 0 and result.stdout.count("unchanged") == len(chain())


def test_cli_export_into_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "supabase").write_text("not a directory")
    result = CliRunner().invoke(cli, ["export", "supabase-cli", str(tmp_path)])
    assert result.exit_code == 1 and result.output.startswith("Error: cannot create")


def database_surface(conn: psycopg.Connection) -> surface.Surface:
    rows = conn.execute(
        "select p.proname, coalesce(array_agg(a.name) filter (where a.mode in ('i', 'b', 'v') and a.name <> ''), "
        "'{}') from pg_proc p left join lateral unnest(p.proargnames, coalesce(p.proargmodes, "
        "array_fill('i'::\"char\", array[p.pronargs]))) as a(name, mode) on true "
        "where p.pronamespace = 'public'::regnamespace group by p.oid, p.proname").fetchall()
    return {name: frozenset(args) for name, args in rows}


def test_rpc_surface_read_from_the_revisions_is_the_databases(bare: Database) -> None:
    expected = dict(surface.by_revision((f.revision, f.sql) for f in export.files()))
    for revision in chain():
        migrate.upgrade(migrate.MigrateSettings(bare.url), revision)
        with bare.connect() as conn:
            assert database_surface(conn) == expected[revision], revision


def openapi_of(found: surface.Surface) -> dict[str, object]:
    """The shape PostgREST's OpenAPI output gives functions: POST /rpc/<name>, a body parameter."""
    return {"swagger": "2.0", "paths": {
        "/": {"get": {}},
        "/chat_messages": {"get": {"parameters": [{"$ref": "#/parameters/select"}]}},
        **{f"/rpc/{name}": {"post": {"parameters": [
            {"in": "body", "name": "args", "required": True,
             "schema": {"type": "object", "properties": {a: {"type": "string"} for a in args}}},
            {"$ref": "#/parameters/preferParams"}]}} for name, args in found.items()}}}


def test_a_project_is_compared_with_the_head(chat_db: Database) -> None:
    revisions = surface.by_revision((f.revision, f.sql) for f in export.files())
    with chat_db.connect() as conn:
        at_head = database_surface(conn)
    project = surface.from_openapi(openapi_of({**at_head, "app_function": frozenset({"x"})}))
    assert surface.compare(project, revisions).matches_head
    head = revisions[-1][1]
    name = sorted(head)[0]
    lacking = surface.compare({k: v for k, v in project.items() if k != name}, revisions)
    assert not lacking.matches_head and lacking.missing == [name]
    assert f"it lacks {name}" in lacking.explain("HEAD") and "this package's head is HEAD" in lacking.explain("HEAD")
    other = surface.compare({**project, name: frozenset({"_renamed"})}, revisions)
    assert other.different == [name]
    assert surface.compare({}, revisions).matching_revisions == [rev for rev, s in revisions if not s]
