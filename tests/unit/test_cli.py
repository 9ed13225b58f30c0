"""The CLI's shape: every command documented with an example, errors formatted alike."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from dbtool import __version__
from dbtool.cli import cli


def walk(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from walk(command, (*prefix, name))


COMMANDS = [path for path, _ in walk(cli)]


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "dbtool")
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    for flag in ("--help", "-h"):
        result = CliRunner().invoke(cli, [*path, flag])
        assert result.exit_code == 0, result.output
        assert "Example:" in result.output, f"`dbtool {' '.join(path)} --help` lacks an example"
        assert result.output.index("Example:") > result.output.index("Usage:")


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"dbtool, version {__version__}"


def test_usage_errors_exit_2() -> None:
    assert CliRunner().invoke(cli, ["no-such-command"]).exit_code == 2
    assert CliRunner().invoke(cli, ["local", "start", "--port", "not-a-port"]).exit_code == 2


def test_library_errors_exit_1_with_error_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("DBTOOL_PORT", "80")
    result = CliRunner().invoke(cli, ["local", "start"])
    assert result.exit_code == 1
    assert result.output == "Error: DBTOOL_PORT must be between 1024 and 65535, got 80\n"


def test_bad_database_url_is_explained() -> None:
    result = CliRunner().invoke(cli, ["migrate", "--database-url", "mysql://x@y/z"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: --database-url must start with postgresql://")


def test_top_level_help_lists_every_command_once_under_its_concern() -> None:
    from dbtool.cli import SECTIONS

    listed = [name for _, names in SECTIONS for name in names]
    assert sorted(listed) == sorted(cli.commands) and len(listed) == len(set(listed))
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for title, names in SECTIONS:
        section = result.output.split(f"{title}:\n", 1)[1].split("\n\n", 1)[0]
        assert [line.split()[0] for line in section.splitlines()] == list(names)
    assert "import dbtool.supabase" in result.output
