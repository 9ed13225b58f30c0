"""The docs: every table a command produces matches what the command produces now, every
command is in the README's table, and every link between the pages resolves."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import click
import pytest

from dbtool.cli import cli
from dbtool.database import Database
from dbtool.server.embedded import Server
from dbtool.testing.plugin import clone
from docs import generate

ROOT = generate.ROOT
PAGES = generate.pages()
REGIONS = [r for page in PAGES for r in generate.regions(page)]


def _id(region: generate.Region) -> str:
    return f"{region.path.name}:{region.name}"


def test_the_generated_regions_are_there_and_known() -> None:
    assert {r.name for r in REGIONS} == set(generate.GENERATORS)
    for region in REGIONS:
        generate.generator(region)  # raises for an unknown name or a marker naming another command


def test_an_unknown_region_or_command_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- BEGIN GENERATED bench: python -m bench.other x.json -->\n<!-- END GENERATED bench -->\n")
    with pytest.raises(generate.RegionError, match=re.escape("its generator runs 'python -m bench.report '")):
        generate.generator(generate.regions(page)[0])
    page.write_text("<!-- BEGIN GENERATED pasted: by hand -->\n<!-- END GENERATED pasted -->\n")
    with pytest.raises(generate.RegionError, match="unknown generated region 'pasted'"):
        generate.generator(generate.regions(page)[0])


def _no_database() -> str:
    raise AssertionError("this region needs no database")


@pytest.mark.parametrize("region", [r for r in REGIONS if not generate.generator(r).needs_database], ids=_id)
def test_a_region_from_a_committed_file_matches_it(region: generate.Region) -> None:
    assert region.body == generate.produce(region, _no_database), "out of date: run ./dev docs"


@pytest.fixture
def new_databases(chat_db_server: Server, chat_db_template: Database,
                  request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """Fresh clones of the session's migrated template, one per call (dropped afterwards)."""
    with ExitStack() as stack:
        made: list[Database] = []

        def new() -> str:
            name = f"chat_db_docs_{abs(hash(request.node.nodeid)) % 10**8}_{len(made)}"
            made.append(stack.enter_context(clone(chat_db_server, chat_db_template, name)))
            return made[-1].admin_url

        yield new


@pytest.mark.parametrize("region", [r for r in REGIONS if generate.generator(r).needs_database], ids=_id)
def test_a_region_from_the_database_matches_its_command(region: generate.Region,
                                                         new_databases: Callable[[], str]) -> None:
    assert region.body == generate.produce(region, new_databases), "out of date: run ./dev docs"


def _commands(group: click.Group, prefix: str = "dbtool") -> Iterator[str]:
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                yield path
            yield from _commands(command, path)
        else:
            yield path


def test_every_command_is_in_the_readme_table() -> None:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `dbtool ")]
    missing = [c for c in _commands(cli) if not any(row.startswith(f"| `{c}") for row in rows)]
    assert missing == []


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lowercase, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}


def test_links_between_the_pages_resolve() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []
