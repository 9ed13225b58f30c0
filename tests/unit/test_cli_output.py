"""One output convention for every reporting command: --format, with --json its shorthand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dbtool.cli import cli
from tests.unit.test_cli import walk

REPORTING = [(path, command) for path, command in walk(cli)
             if any(p.name in ("fmt", "as_json") for p in command.params)]


def options(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in p.opts}


def test_the_reporting_commands() -> None:
    assert sorted(" ".join(path) for path, _ in REPORTING) == [
        "audit", "audit diff", "clear-stats", "downgrade", "export supabase-cli", "local start", "local status", "migrate",
        "reset", "seed", "smoke", "standin install", "up", "verify"]


@pytest.mark.parametrize(("path", "command"), REPORTING, ids=lambda p: " ".join(p) if isinstance(p, tuple) else "")
def test_every_reporting_command_takes_format_and_json(path: tuple[str, ...], command: click.Command) -> None:
    assert {"--format", "--json"} <= options(command), f"dbtool {' '.join(path)}"
    fmt = next(p for p in command.params if p.name == "fmt")
    assert isinstance(fmt.type, click.Choice) and fmt.default == "text" and "json" in fmt.type.choices


def test_json_is_format_json(tmp_path: Path) -> None:
    runner = CliRunner()
    for command in (["migrate", "--history"], ["export", "supabase-cli"]):
        def run(*flags: str, command: list[str] = command) -> str:
            # export says "created" in an empty directory, "unchanged" where it wrote before: start empty
            shutil.rmtree(tmp_path / "app", ignore_errors=True)
            args = command if command[0] == "migrate" else [*command, str(tmp_path / "app")]
            result = runner.invoke(cli, [*args, *flags])
            assert result.exit_code == 0, result.output
            return result.output

        assert run("--json") == run("--format", "json") and json.loads(run("--json"))
        assert run() == run("--format", "text") != run("--json")


def test_audit_keeps_its_older_format_name() -> None:
    fmt = next(p for p in cli.commands["audit"].params if p.name == "fmt")
    assert fmt.type.convert("table", fmt, None) == "text"
    assert fmt.type.convert("markdown", fmt, None) == "markdown"
    # accepted on the command line: the run gets as far as the database URL
    result = CliRunner().invoke(cli, ["audit", "--format", "table", "--database-url", "mysql://x@y/z"])
    assert result.exit_code == 1 and result.output.startswith("Error: --database-url must start with postgresql://")


def test_json_with_another_format_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["audit", "--json", "--format", "markdown"])
    assert result.exit_code == 2
    assert "--json is short for --format json; it cannot go with --format markdown" in result.output


def test_unknown_formats_are_usage_errors() -> None:
    result = CliRunner().invoke(cli, ["migrate", "--history", "--format", "markdown"])
    assert result.exit_code == 2 and "'markdown' is not one of 'text', 'json'" in result.output
