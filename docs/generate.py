"""Regenerate the tables that commands produce in README.md and docs/*.md.

    python -m docs.generate            # rewrite every generated region (./dev docs)
    python -m docs.generate --check    # exit 1 and show a diff if a region is out of date

A generated region sits between two comments naming the command that produces it:

    <!-- BEGIN GENERATED access-matrix: dbtool audit --format markdown, after dbtool reset -->
    ...
    <!-- END GENERATED access-matrix -->

Nothing between the markers is edited by hand. The regions that need a database (the audit's
matrix and findings) are measured on a private embedded server started for the run; the
benchmark's table is rendered from the JSON of the run the marker names. tests/test_docs.py
runs the same generators against the test session's database, so CI fails when a region
differs from what its command produces now.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.report import render_file
from dbtool.audit import findings
from dbtool.audit import report as audit_report
from dbtool.audit.config import AuditConfig
from dbtool.ops import build, seed
from dbtool.urls import conninfo

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("README.md", "docs/*.md")

MARKER = re.compile(r"<!-- BEGIN GENERATED (?P<name>[a-z0-9-]+): (?P<command>.+?) -->\n"
                    r"(?P<body>.*?)"
                    r"<!-- END GENERATED (?P=name) -->", re.S)

# The misconfiguration docs/policies.md shows the audit catching: a second policy with a bare
# auth.uid(), and SELECT granted to anon.
PLANTED_SQL = """\
create policy own_again on public.chat_identities for select to authenticated
  using (supabase_user_id = auth.uid());
grant select on public.chat_messages to anon;"""


class RegionError(Exception):
    """A marker the generator does not know, or output it cannot place."""


@dataclass(frozen=True)
class Region:
    path: Path
    name: str
    command: str
    body: str
    span: tuple[int, int]  # of the body in the file's text


def regions(path: Path) -> list[Region]:
    text = path.read_text()
    return [Region(path, m["name"], m["command"], m["body"], m.span("body")) for m in MARKER.finditer(text)]


def pages(root: Path = ROOT) -> list[Path]:
    return sorted(p for pattern in PAGES for p in root.glob(pattern))


def _without_heading(markdown: str) -> str:
    """The audit's Markdown starts with a heading naming the database it ran on (a temporary
    one here); the rest is what the page shows."""
    heading, _, rest = markdown.partition("\n\n")
    if not heading.startswith("## RLS audit of "):
        raise RegionError(f"the audit's Markdown no longer starts with its heading: {heading!r}")
    return rest


def seed_as_reset(admin_url: str) -> None:
    """The demo personas, loaded as `dbtool reset` loads them (triggers off: constant rows)."""
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn, conn.transaction():
        conn.execute("set local session_replication_role = replica")
        seed.demo(conn)


def access_matrix(admin_url: str) -> str:
    """`dbtool audit --format markdown` on a database as `dbtool reset` leaves it: findings
    (none) and the measured matrix. `admin_url`: a migrated database without rows."""
    seed_as_reset(admin_url)
    return _without_heading(audit_report.render(audit_report.run(admin_url, AuditConfig()), "markdown"))


def planted_findings(admin_url: str) -> str:
    """`dbtool audit --no-matrix --format markdown` after PLANTED_SQL, which is rolled back."""
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn, conn.transaction():
        conn.execute(PLANTED_SQL)
        found = findings.run(conn, AuditConfig())
        report = audit_report.AuditReport("planted", list(AuditConfig().exposed_schemas), found)
        text = audit_report.render(report, "markdown")
        raise psycopg.Rollback
    return f"```sql\n{PLANTED_SQL}\n```\n\n" + _without_heading(text)


def bench_report(command: str) -> str:
    """`python -m bench.report [--targets] RESULTS.json`: the run's table, from the committed JSON."""
    args = command.removeprefix("python -m bench.report ").split()
    targets_only = args[:1] == ["--targets"]
    return render_file(ROOT / args[-1], targets_only)


@dataclass(frozen=True)
class Generator:
    command: str  # what the marker must say (a prefix, for commands that take an argument)
    needs_database: bool
    produce: Callable[[str, str], str]  # (the marker's command, a migrated empty database's admin URL)


GENERATORS: dict[str, Generator] = {
    "access-matrix": Generator("dbtool audit --format markdown, after dbtool reset", True,
                               lambda _cmd, url: access_matrix(url)),
    "audit-findings": Generator("dbtool audit --no-matrix --format markdown, after the SQL shown", True,
                                lambda _cmd, url: planted_findings(url)),
    "bench": Generator("python -m bench.report ", False, lambda cmd, _url: bench_report(cmd)),
    "bench-targets": Generator("python -m bench.report --targets ", False, lambda cmd, _url: bench_report(cmd)),
}


def generator(region: Region) -> Generator:
    found = GENERATORS.get(region.name)
    if found is None:
        raise RegionError(f"{region.path.name}: unknown generated region {region.name!r} (known: {', '.join(GENERATORS)})")
    if not region.command.startswith(found.command):
        raise RegionError(f"{region.path.name}: region {region.name} says {region.command!r}; "
                          f"its generator runs {found.command!r}")
    return found


def produce(region: Region, database: Callable[[], str]) -> str:
    """The region's body as its command produces it now. `database()` gives the admin URL of
    a new migrated database without rows (each region that needs one gets its own)."""
    gen = generator(region)
    return "\n" + gen.produce(region.command, database() if gen.needs_database else "").strip("\n") + "\n\n"


def regenerate(path: Path, database: Callable[[], str]) -> str:
    """The page's text with every generated region produced again."""
    text = path.read_text()
    out, last = [], 0
    for region in regions(path):
        start, end = region.span
        out += [text[last:start], produce(region, database)]
        last = end
    return "".join(out) + text[last:]


@contextmanager
def private_databases() -> Iterator[Callable[[], str]]:
    """New migrated databases, built like the test template, on a private embedded server
    that starts when the first one is asked for."""
    from bench.harness import embedded_server
    from dbtool.server.embedded import Server

    with ExitStack() as stack:
        server: Server | None = None
        made = 0

        def new() -> str:
            nonlocal server, made
            if server is None:
                server = stack.enter_context(embedded_server(lambda m: print(f"· {m}", file=sys.stderr)))
            made += 1
            db = server.database(f"chat_db_docs_{made}")
            build.create_database(db.admin_url, db.name)
            build.prepare(db.admin_url, db.url)
            return db.admin_url

        yield new


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print("usage: python -m docs.generate [--check]", file=sys.stderr)
        return 2
    stale = 0
    with private_databases() as database:
        for path in pages():
            if not regions(path):
                continue
            old, new = path.read_text(), regenerate(path, database)
            if old == new:
                continue
            stale += 1
            name = str(path.relative_to(ROOT))
            if check:
                sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), name, name))
            else:
                path.write_text(new)
                print(f"· rewrote the generated regions of {name}", file=sys.stderr)
    if check and stale:
        print(f"{stale} page(s) out of date: run ./dev docs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
