"""dbtool: click only — parse options, call one library function, render the result."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import psycopg

from dbtool import __version__, audit, database, smoke
from dbtool.config import MigrationConfig, local_config, migration_config, stats_config
from dbtool.errors import DbtoolError
from dbtool.ops import export, migrate, reset, seed, standin, stats, up
from dbtool.policy import verify, worlds
from dbtool.render import table, to_json
from dbtool.server import local


class DbtoolGroup(click.Group):
    """Turns library errors into `Error: ...` with exit status 1 (usage errors stay 2)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DbtoolError as exc:
            raise click.ClickException(str(exc)) from None
        except psycopg.OperationalError as exc:
            raise click.ClickException(f"cannot reach the database: {str(exc).strip()}") from None


def progress(message: str) -> None:
    click.echo(f"· {message}", err=True)


class FormatChoice(click.Choice):  # type: ignore[type-arg]  # generic from click 8.2 on
    """A choice of output formats that also accepts the older names of some (`table`)."""

    def __init__(self, formats: tuple[str, ...], aliases: dict[str, str]) -> None:
        super().__init__(formats)
        self.aliases = aliases

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return super().convert(self.aliases.get(value, value), param, ctx)


def output_options(*formats: str, aliases: dict[str, str] | None = None) -> Callable[..., Any]:
    """The output flags of every reporting command: `--format` (text, the default, for people;
    json for machines; markdown where a report is pasted into a review) and `--json`, the
    shorthand for `--format json`. The command receives `fmt`."""
    formats = formats or ("text", "json")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @click.option("--format", "fmt", type=FormatChoice(formats, aliases or {}), default=formats[0],
                      show_default=True, help="Output format.")
        @click.option("--json", "as_json", is_flag=True, help="Shorthand for --format json.")
        @functools.wraps(func)
        def wrapper(*args: Any, fmt: str, as_json: bool, **kwargs: Any) -> Any:
            if as_json and fmt not in ("json", formats[0]):
                raise click.UsageError(f"--json is short for --format json; it cannot go with --format {fmt}")
            return func(*args, fmt="json" if as_json else fmt, **kwargs)

        return wrapper

    return decorate


def database_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--database-url",
        metavar="URL",
        help="postgresql://user:pass@host:port/db (default: $DATABASE_URL, else the local server).",
    )(func)


def emit(fmt: str, data: Any, text: str | Callable[[], str]) -> None:
    """Print `data` as JSON for --format json, else the text (built only when needed)."""
    click.echo(to_json(data) if fmt == "json" else (text() if callable(text) else text))


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# `dbtool --help` lists the commands by concern, each with the package that does the work.
SECTIONS = (
    ("Server (dbtool/server/)", ("local", "up")),
    ("Build & data (dbtool/ops/)", ("standin", "reset", "seed", "clear-stats")),
    ("Migrations (migrations/, dbtool/ops/migrate.py)", ("migrate", "downgrade", "export")),
    ("Policies & audit (dbtool/policy/, dbtool/audit/)", ("verify", "audit")),
    ("End to end (dbtool/smoke/)", ("smoke",)),
)

EPILOG = """\b
Application tests: import dbtool.supabase (personas, postgrest, realtime) and use the
chat_db pytest plugin (dbtool/testing/); see docs/testing.md. Reference: docs/cli.md."""


class TopGroup(DbtoolGroup):
    """The top-level group: commands listed under the concern they belong to."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        for title, names in SECTIONS:
            rows = [(name, self.commands[name].get_short_help_str(limit)) for name in names]
            with formatter.section(title):
                formatter.write_dl(rows)


@click.group(cls=TopGroup, context_settings=CONTEXT, epilog=EPILOG)
@click.version_option(__version__, "--version", prog_name="dbtool")
def cli() -> None:
    """Migrate, reset, verify and audit the chat database on Supabase or plain PostgreSQL.

    The local server is a pip-installed PostgreSQL with a stand-in of Supabase's roles,
    auth and realtime objects; data lives in .dbtool/ (override with DBTOOL_HOME).

    \b
    Example:
      dbtool up                       # local server, migrated and seeded, policies verified
      dbtool migrate --database-url postgresql://postgres:...@db.x.supabase.co:5432/postgres
    """


# --- local server -------------------------------------------------------------------


@cli.group(cls=DbtoolGroup, context_settings=CONTEXT)
def local_group() -> None:
    """Run the embedded PostgreSQL server (no Docker, works as root and as a normal user).

    \b
    Example:
      dbtool local start --port 54329 && dbtool local url
    """


cli.add_command(local_group, "local")


def _status_text(st: local.ServerStatus) -> str:
    if not st.running:
        return f"stopped (data directory {st.data_dir}, PostgreSQL {st.version or 'not initialised'})"
    return "\n".join(
        [
            f"running   pid {st.pid}, PostgreSQL {st.version}, 127.0.0.1:{st.port} ({st.mode})",
            f"data      {st.data_dir}",
            f"url       {st.url}",
            f"admin     {st.admin_url}",
        ]
    )


@local_group.command("start")
@click.option("--port", type=int, help="TCP port on 127.0.0.1 (default: $DBTOOL_PORT or 54329).")
@output_options()
def local_start(port: int | None, fmt: str) -> None:
    """Start the local server, creating it on first use.

    Running it again while it runs says so and exits 0.

    \b
    Example:
      dbtool local start --port 54339
    """
    result = local.start(local_config(port=port), progress)
    st = result.status
    if result.already_running:
        message = f"already running on port {st.port} (pid {st.pid})"
    else:
        what = "initialised and started" if result.initialised else "started"
        message = f"{what} in {result.seconds:.2f}s\n{_status_text(st)}"
    emit(fmt, {"already_running": result.already_running, "initialised": result.initialised,
                   "seconds": round(result.seconds, 3), "binaries": result.binaries, **st.as_dict()}, message)


@local_group.command("stop")
def local_stop() -> None:
    """Stop the local server (fast shutdown: open sessions are disconnected).

    \b
    Example:
      dbtool local stop
    """
    seconds = local.stop(local_config(), progress)
    click.echo(f"stopped in {seconds:.2f}s")


@local_group.command("status")
@output_options()
def local_status(fmt: str) -> None:
    """Show whether the local server runs, its port, version and URLs (exit 3 when stopped).

    \b
    Example:
      dbtool local status --json
    """
    st = local.status(local_config())
    emit(fmt, st.as_dict(), _status_text(st))
    if not st.running:
        sys.exit(3)


@local_group.command("url")
@click.option("--admin", is_flag=True, help="The superuser (supabase_admin) URL instead of postgres.")
def local_url(admin: bool) -> None:
    """Print the connection URL of the running local server.

    \b
    Example:
      export DATABASE_URL=$(dbtool local url)
    """
    running = local.running_config(local_config())
    click.echo(local.server_url(running, local.ADMIN_ROLE if admin else local.APP_ROLE))


@local_group.command("psql", context_settings={"ignore_unknown_options": True})
@click.option("--admin", is_flag=True, help="Connect as the superuser (supabase_admin).")
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def local_psql(admin: bool, psql_args: tuple[str, ...]) -> None:
    """Open psql on the local database (extra arguments go to psql).

    \b
    Example:
      dbtool local psql -c 'select count(*) from public.chat_messages'
    """
    argv, env = local.psql_command(local_config(), admin)
    os.execve(argv[0], [*argv, *psql_args], env)


@local_group.command("destroy")
@click.option("--yes", is_flag=True, help="Confirm: all local data is deleted.")
def local_destroy(yes: bool) -> None:
    """Stop the local server and delete its data directory.

    \b
    Example:
      dbtool local destroy --yes
    """
    if not yes:
        raise click.UsageError("this deletes all local data; add --yes to confirm")
    local.destroy(local_config(), progress)
    click.echo("local server data removed")


# --- stand-in -------------------------------------------------------------------------


@cli.group(cls=DbtoolGroup, context_settings=CONTEXT)
def standin_group() -> None:
    """The local stand-in of Supabase's roles, auth and realtime objects (plain PostgreSQL only).

    \b
    Example:
      dbtool standin install --database-url postgresql://postgres@localhost/chat
    """


cli.add_command(standin_group, "standin")


def _installed_text(result: standin.Installed) -> str:
    head = "already current" if result.already_current else "installed"
    lines = [f"Supabase stand-in {head} (sha256 {result.fingerprint[:12]})"]
    for kind, items in result.objects.items():
        lines.append(f"  {kind}:")
        lines.extend(f"    {item}" for item in items)
    lines.extend(f"note: {note}" for note in result.notes)
    return "\n".join(lines)


@standin_group.command("install")
@database_option
@output_options()
def standin_install(database_url: str | None, fmt: str) -> None:
    """Install or update the stand-in (needs a superuser; refuses real Supabase databases).

    \b
    Example:
      dbtool standin install --database-url postgresql://postgres:pw@127.0.0.1:5432/app
    """
    result = standin.install_in(database.resolve(database_url, local_config()))
    emit(fmt, result.__dict__, lambda: _installed_text(result))


# --- migrations -----------------------------------------------------------------------


def migration_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The timeouts, read into one validated MigrationConfig (flag > DBTOOL_* variable > default)."""

    @click.option("--lock-timeout", metavar="DURATION",
                  help="How long DDL may wait for a table lock before failing (default: $DBTOOL_LOCK_TIMEOUT, else 5s).")
    @click.option("--statement-timeout", metavar="DURATION",
                  help="How long one statement may run (default: $DBTOOL_STATEMENT_TIMEOUT, else 5min).")
    @click.option("--lock-wait", metavar="SECONDS",
                  help="How long to wait for another runner's migration lock (default: $DBTOOL_LOCK_WAIT, else 600).")
    @functools.wraps(func)
    def wrapper(*args: Any, lock_timeout: str | None, statement_timeout: str | None, lock_wait: str | None,
                **kwargs: Any) -> Any:
        timeouts = migration_config(lock_timeout=lock_timeout, statement_timeout=statement_timeout, lock_wait=lock_wait)
        return func(*args, timeouts=timeouts, **kwargs)

    return wrapper


def _migrated_text(result: migrate.MigrateResult) -> str:
    if not result.applied:
        return f"nothing to do: already at {result.after or 'base'}"
    return f"now at {result.after or 'base'} ({len(result.applied)} revision(s), was {result.before or 'base'})"


@cli.command("migrate")
@click.option("--to", "to", default="head", show_default=True, help="Target revision.")
@click.option("--sql", "offline", is_flag=True, help="Print the SQL instead of running it (no database needed).")
@click.option("--history", is_flag=True, help="List the revisions and exit.")
@database_option
@migration_options
@output_options()
def migrate_cmd(to: str, offline: bool, history: bool, database_url: str | None, timeouts: MigrationConfig,
                fmt: str) -> None:
    """Apply migrations (locked against concurrent runners, one transaction per revision).

    \b
    Example:
      DATABASE_URL=postgresql://postgres:...@db.x.supabase.co:5432/postgres dbtool migrate
      dbtool migrate --sql > review.sql
    """
    if history:
        rows = migrate.history()
        emit(fmt, [{"revision": r, "down_revision": d, "description": m} for r, d, m in rows],
             lambda: table(["revision", "down", "description"], rows))
        return
    if offline:
        click.echo(migrate.offline_sql(to, timeouts=timeouts), nl=False)
        return
    tgt = database.resolve(database_url, local_config())
    progress(f"migrating {tgt.describe()} to {to}")
    result = migrate.upgrade(migrate.MigrateSettings.of(tgt.url, timeouts), to, progress)
    emit(fmt, {"before": result.before, "after": result.after, "applied": [a.__dict__ for a in result.applied]},
         _migrated_text(result))


@cli.command("downgrade", context_settings={"ignore_unknown_options": True})  # so that `-1` is a revision
@click.argument("revision")
@click.option("--sql", "offline", is_flag=True, help="Print the SQL instead of running it.")
@database_option
@migration_options
@output_options()
def downgrade_cmd(revision: str, offline: bool, database_url: str | None, timeouts: MigrationConfig,
                  fmt: str) -> None:
    """Revert migrations down to REVISION ("base" removes every object we own).

    \b
    Example:
      dbtool downgrade -1
      dbtool downgrade base --sql --database-url ...   # offline needs a start: use head:base
    """
    if offline:
        click.echo(migrate.offline_sql(revision if ":" in revision else f"head:{revision}", down=True,
                                       timeouts=timeouts), nl=False)
        return
    tgt = database.resolve(database_url, local_config())
    progress(f"downgrading {tgt.describe()} to {revision}")
    result = migrate.downgrade(migrate.MigrateSettings.of(tgt.url, timeouts), revision, progress)
    emit(fmt, {"before": result.before, "after": result.after, "applied": [a.__dict__ for a in result.applied]},
         _migrated_text(result))


# --- developers: reset and seed ----------------------------------------------------------------


def _demo_text(demo: seed.DemoData | None) -> str:
    if demo is None:
        return "no seed data (--no-seed)"
    rows = [(p.name, p.uid, p.mongo_id or "(anonymous guest)", p.email or "") for p in demo.personas]
    links = "; ".join(f"{k.status} {k.link_id}" + (f" (token {k.token}, redeemed by dave: {k.guest_thread})"
                                                   if k.guest_thread else "") for k in demo.links)
    return "\n".join([
        table(["persona", "supabase user id", "mongo id", "email"], rows),
        f"thread alice+bob: {demo.thread_id} ({demo.messages} messages); {demo.outsider} is an outsider",
        f"guest links of alice: {links}",
    ])


def _reset_text(result: reset.ResetResult) -> str:
    how = (f"kept the database and wiped its data ({result.wipe_method})" if result.mode == "fast"
           else "rebuilt the database (stand-in, migrations)")
    return f"reset in {result.seconds * 1000:.0f} ms: {how}; {result.reason}; at revision {result.revision}"


@cli.command("reset")
@click.option("--full", is_flag=True, help="Rebuild from scratch even if nothing changed.")
@click.option("--force", is_flag=True, help="Allow a database that is not on this machine.")
@click.option("--no-seed", is_flag=True, help="Leave the database empty (no demo personas).")
@database_option
@output_options()
def reset_cmd(full: bool, force: bool, no_seed: bool, database_url: str | None, fmt: str) -> None:
    """Bring the database to a clean, migrated state with the demo personas.

    When the stand-in and migrations are unchanged since the last reset the database is
    kept and only its data wiped (milliseconds); otherwise it is dropped and rebuilt.
    Refuses databases that are not on this machine unless --force.

    \b
    Example:
      dbtool reset            # the local server's database
      dbtool reset --full --database-url postgresql://postgres:pw@localhost:5432/chat_ci
    """
    tgt = database.resolve(database_url, local_config())
    result = reset.reset(tgt, full=full, force=force, with_seed=not no_seed, progress=progress)
    data = {**{k: v for k, v in result.__dict__.items() if k != "seeded"},
            "seeded": result.seeded.as_dict() if result.seeded else None}
    emit(fmt, data, lambda: _reset_text(result) + "\n\n" + _demo_text(result.seeded))


@cli.command("seed")
@click.option("--profile", type=click.Choice(["demo", "load"]), default="demo", show_default=True,
              help="demo: alice, bob (a thread) and carol (an outsider); load: bulk data via COPY.")
@click.option("--users", type=click.IntRange(min=2), default=5_000, show_default=True, help="load: users.")
@click.option("--threads", type=click.IntRange(min=1), default=10_000, show_default=True, help="load: threads.")
@click.option("--messages", type=click.IntRange(min=0), default=1_000_000, show_default=True, help="load: messages.")
@click.option("--seed", "seed_value", type=int, default=1, show_default=True, help="load: random seed (same seed, same data).")
@click.option("--force", is_flag=True, help="Allow a database that is not on this machine.")
@database_option
@output_options()
def seed_cmd(profile: str, users: int, threads: int, messages: int, seed_value: int, force: bool,
             database_url: str | None, fmt: str) -> None:
    """Add seed data: the demo personas, or a deterministic load profile.

    \b
    Example:
      dbtool seed --profile demo
      dbtool seed --profile load --threads 10000 --messages 1000000 --seed 7
    """
    if profile == "load":
        seed.check_load(users, threads, messages)
    tgt = database.resolve(database_url, local_config())
    if profile == "demo":
        demo = seed.demo_in(tgt, force=force)
        emit(fmt, demo.as_dict(), lambda: _demo_text(demo))
        return
    with contextlib.ExitStack() as stack:
        bars: list[Any] = []  # opened at the first report, after the checks: a refusal prints no bar
        last = [0]

        def advance(done: int, total: int) -> None:
            if not bars:
                bars.append(stack.enter_context(click.progressbar(length=total, label="messages", file=sys.stderr,
                                                                  show_pos=True, show_percent=True)))
            bars[0].update(done - last[0])
            last[0] = done

        result = seed.load_in(tgt, users=users, threads=threads, messages=messages, seed=seed_value, force=force,
                              progress=advance)
    emit(fmt, result.as_dict(), lambda: (
        f"loaded {result.users:,} users, {result.threads:,} threads, {result.messages:,} messages in "
        f"{result.seconds:.1f}s ({result.rate:,.0f} messages/s; COPY {result.copy_seconds:.1f}s, indexes and "
        f"constraints {result.index_seconds:.1f}s). The broadcast trigger was off during the load: "
        "load data is history, not live traffic."))


# --- DBAs: private estimates ------------------------------------------------------------------


def _cleared_text(result: stats.Cleared) -> str:
    if not result.columns and not result.validated and not result.finished:
        return "nothing to clear: no column kept private from the planner has statistics left"
    lines = []
    if result.finished:
        lines.append(f"finished what an earlier run left: {'; '.join(result.finished)}")
    if result.columns:
        lines.append(f"cleared the statistics of {len(result.columns)} column(s): {', '.join(result.columns)}")
        lines.append(f"ACCESS EXCLUSIVE held {result.lock_held_ms:.0f} ms (after waiting {result.lock_wait_ms:.0f} ms "
                     f"for it); recreated {len(result.policies)} policy(ies) and {len(result.constraints)} CHECK "
                     "constraint(s)")
    if result.columns or result.validated:
        rebuilt = f"{len(result.indexes)} partial index(es) rebuilt behind a stand-in, " if result.indexes else ""
        lines.append(f"{rebuilt}{len(result.validated)} constraint(s) validated: {result.background_ms:.0f} ms "
                     "without blocking reads or writes")
    lines.append("left: " + (", ".join(result.remaining) if result.remaining else "nothing (estimates no longer "
                                                                                  "depend on these columns' values)"))
    return "\n".join(lines)


@cli.command("clear-stats")
@database_option
@click.option("--dry-run", is_flag=True, help="Print the SQL it would run for this database; change nothing.")
@click.option("--lock-timeout", metavar="DURATION",
              help="How long to wait for the tables' locks (the application queues behind the wait) before giving up "
              "(default: 2s).")
@click.option("--statement-timeout", metavar="DURATION",
              help="How long one statement (a constraint's validation) may run (default: $DBTOOL_STATEMENT_TIMEOUT, "
              "else 5min).")
@output_options()
def clear_stats_cmd(database_url: str | None, dry_run: bool, lock_timeout: str | None, statement_timeout: str | None,
                    fmt: str) -> None:
    """Remove statistics that revision 0005 keeps from the planner but ANALYZE leaves behind.

    Needed once on a database analysed before 0005: until then `Prefer: count=planned` can
    tell a caller how busy a thread, a sender or a text is that they cannot see. Holds ACCESS
    EXCLUSIVE on the chat tables for a moment (measured: 10-60 ms at 1M and 5M messages);
    everything that scans the table (a stand-in for the partial unique index, its rebuild,
    validating CHECK constraints) runs before or after without blocking reads or writes, and
    waits for long transactions. Run as the owner (postgres on Supabase); `dbtool audit`
    reports whether it is needed. A run that stops half-way is finished by the next one.

    \b
    Example:
      dbtool clear-stats --dry-run --database-url "$DATABASE_URL"
      dbtool clear-stats --database-url "$DATABASE_URL"
    """
    timeouts = stats_config(lock_timeout=lock_timeout, statement_timeout=statement_timeout)
    tgt = database.resolve(database_url, local_config())
    if dry_run:
        found = stats.plan_for(tgt)
        emit(fmt, {"columns": [c.name for c in found.columns], "sql": found.script(timeouts.lock_timeout)},
             lambda: found.script(timeouts.lock_timeout) if not found.empty else "-- nothing to clear")
        return
    progress(f"clearing stale planner statistics in {tgt.describe()}")
    result = stats.clear_in(tgt, timeouts, progress)
    emit(fmt, result.as_dict(), lambda: _cleared_text(result))


# --- DBAs and CI: verify ---------------------------------------------------------------------


EXACT_HELP = ("Keep the chat sequences still as well (they restart inside the rolled-back probe transaction, "
              "which pauses message inserts until the run ends). Default: only for databases on this machine.")


@cli.command("verify")
@database_option
@click.option("--junit-xml", metavar="PATH", help="Also write a JUnit XML report (for CI).")
@click.option("--exact/--no-exact", default=None, help=EXACT_HELP)
@output_options()
def verify_cmd(database_url: str | None, junit_xml: str | None, exact: bool | None, fmt: str) -> None:
    """Check every cell of the persona x object matrix against the contract (exit 1 on any failure).

    Every probe runs in a transaction that is rolled back, so it is safe on a staging copy
    of production; the report shows that row counts and checksums did not change. The URL's
    role must bypass RLS and be able to become anon/authenticated/service_role (postgres on
    Supabase).

    \b
    Example:
      dbtool verify
      dbtool verify --database-url "$STAGING_URL" --junit-xml policy.xml
    """
    tgt = database.resolve(database_url, local_config())
    report = verify.run(tgt.admin_url, junit_xml=junit_xml, exact=worlds.exact_for(tgt.local, exact), progress=progress)
    emit(fmt, report.as_dict(), lambda: verify.render(report))
    if not report.ok:
        sys.exit(1)


# --- DBAs: audit ----------------------------------------------------------------------------


def audit_options(func: Callable[..., Any]) -> Callable[..., Any]:
    @database_option
    @click.option("--config", "config_path", metavar="FILE",
                  help="TOML/JSON: exposed_schemas, owned_schemas, [justifications], [[personas]].")
    @click.option("--exposed-schemas", metavar="LIST", help="Schemas PostgREST exposes (db_schemas), comma-separated; "
                  "default public,graphql_public.")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


REPORT_FORMATS = ("text", "json", "markdown")
OLD_FORMAT_NAMES = {"table": "text"}  # audit's name for text until every command took --format


@cli.group("audit", cls=DbtoolGroup, invoke_without_command=True, context_settings=CONTEXT)
@audit_options
@output_options(*REPORT_FORMATS, aliases=OLD_FORMAT_NAMES)
@click.option("--fail-on", type=click.Choice(["info", "warn", "error", "never"]), default="warn", show_default=True,
              help="Exit 1 when a finding of this severity or worse is reported.")
@click.option("--no-matrix", is_flag=True, help="Only the static findings (strictly read-only, no probing).")
@click.option("--exact/--no-exact", default=None, help=EXACT_HELP)
@click.pass_context
def audit_group(ctx: click.Context, database_url: str | None, config_path: str | None, exposed_schemas: str | None,
                fmt: str, fail_on: str, no_matrix: bool, exact: bool | None) -> None:
    """Audit RLS, grants and SECURITY DEFINER functions, and measure who can do what.

    Prints findings (severity, object, why, fix) and the effective access matrix, measured by
    running every operation as each persona in a transaction that is rolled back. Changes
    nothing in the database. Subcommands snapshot and diff detect drift.

    \b
    Example:
      dbtool audit --format markdown > audit.md
      dbtool audit --database-url "$DATABASE_URL" --fail-on error --no-matrix
      dbtool audit snapshot > policy-snapshot.json && dbtool audit diff policy-snapshot.json
    """
    if ctx.invoked_subcommand is not None:
        return
    tgt = database.resolve(database_url, local_config())
    report = audit.run(tgt.admin_url, audit.load_config(config_path, exposed_schemas),
                              exact=worlds.exact_for(tgt.local, exact), with_matrix=not no_matrix)
    click.echo(audit.render(report, fmt))
    if fail_on != "never" and audit.at_least(report.findings, fail_on):
        sys.exit(1)


@audit_group.command("snapshot")
@audit_options
@click.option("--no-matrix", is_flag=True, help="Leave the measured matrix out.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
def audit_snapshot(database_url: str | None, config_path: str | None, exposed_schemas: str | None, no_matrix: bool,
                   output: str | None) -> None:
    """Record policies, grants, definer functions and the measured matrix as JSON.

    \b
    Example:
      dbtool audit snapshot > policy-snapshot.json
    """
    tgt = database.resolve(database_url, local_config())
    data = audit.snapshot_of(tgt, audit.load_config(config_path, exposed_schemas), with_matrix=not no_matrix)
    text = to_json(data)
    if output:
        with open(output, "w") as handle:
            handle.write(text + "\n")
        progress(f"snapshot written to {output}")
    else:
        click.echo(text)


@audit_group.command("diff")
@click.argument("snapshot_file", metavar="SNAPSHOT")
@audit_options
@output_options(*REPORT_FORMATS, aliases=OLD_FORMAT_NAMES)
def audit_diff(snapshot_file: str, database_url: str | None, config_path: str | None, exposed_schemas: str | None,
               fmt: str) -> None:
    """Compare the database with a snapshot; exit 1 if anything changed.

    Each change is graded: dangerous (access widened), breaking (narrowed) or safe
    (rewritten without changing the measured matrix).

    \b
    Example:
      dbtool audit diff policy-snapshot.json --format markdown
    """
    old = audit.load_snapshot(snapshot_file)
    tgt = database.resolve(database_url, local_config())
    found = audit.drift(tgt, audit.load_config(config_path, exposed_schemas), old)
    click.echo(audit.render_diff(found.changes, fmt, found.since))
    if found.changes:
        sys.exit(1)


# --- end to end: smoke, and the Supabase CLI export -----------------------------------------


def _smoke_text(report: smoke.Report) -> str:
    rows = [(s.name, s.expectation, s.status.value, f"{s.ms:.0f}") for s in report.steps]
    lines = [table(["step", "expectation", "result", "ms"], rows), ""]
    reasons: dict[str, list[str]] = {}
    for s in report.steps:
        if s.status is not smoke.Status.PASSED:
            reasons.setdefault(f"{s.status.value}: {s.detail}", []).append(s.name)
    lines += [f"{', '.join(names)}: {reason}" for reason, names in reasons.items()]
    lines += [f"note: {n}" for n in report.notes]
    counts = ", ".join(f"{report.count(st)} {st.value}" for st in smoke.Status if report.count(st))
    lines.append(f"{report.driver} smoke of {report.target} (run {report.run_id}): {counts}")
    return "\n".join(lines)


def _step_progress(result: smoke.StepResult) -> None:
    progress(f"{result.name}: {result.status.value} ({result.ms:.0f} ms)")


@cli.command("smoke")
@click.option("--local", "use_local", is_flag=True,
              help="Run against a local database through the package's PostgREST and Realtime reproduction.")
@database_option
@click.option("--supabase-url", metavar="URL", help="The project's URL (default: $SUPABASE_URL).")
@click.option("--anon-key", metavar="KEY", help="The anon (publishable) key (default: $SUPABASE_ANON_KEY).")
@click.option("--service-role-key", metavar="KEY",
              help="The service_role (secret) key (default: $SUPABASE_SERVICE_ROLE_KEY; prefer the variable: "
              "flags show in the process list).")
@click.option("--timeout", type=float, default=15.0, show_default=True,
              help="Seconds any network wait may take (live).")
@output_options()
def smoke_cmd(use_local: bool, database_url: str | None, supabase_url: str | None, anon_key: str | None,
              service_role_key: str | None, timeout: float, fmt: str) -> None:
    """Run the chat end to end: users, thread, messages, history, Realtime, guests, receipts.

    Live (the default): supabase-py against a project (hosted, a branch or `supabase start`).
    It creates throwaway users named chat-db-smoke-<run>-<label>@smoke.chat-db.invalid through
    the Auth admin API and deletes every one of them at the end, also on failure and Ctrl-C;
    it changes nothing else. It refuses a project without the chat schema or at another
    schema revision. With --local the same scenario runs against a local database
    (default: the `dbtool local` server) through the package's reproduction of PostgREST and
    Realtime. Steps of features the database lacks report "waiting for its feature".
    Exit 1 when a step failed.

    \b
    Example:
      export SUPABASE_URL=https://abcd.supabase.co SUPABASE_ANON_KEY=... SUPABASE_SERVICE_ROLE_KEY=...
      dbtool smoke
      dbtool smoke --local --json
    """
    if use_local:
        if supabase_url or anon_key or service_role_key:
            raise click.UsageError("--supabase-url, --anon-key and --service-role-key are for the live run, not --local")
        tgt = database.resolve(database_url, local_config())
        report = smoke.run_local(tgt.url, tgt.admin_url, progress=_step_progress)
    else:
        if database_url:
            raise click.UsageError("--database-url is for --local; the live run reaches the project through its API")
        from dbtool.smoke import live

        cfg = live.live_config(supabase_url, anon_key, service_role_key, timeout)
        progress(f"live smoke of {cfg.url}")
        report = smoke.run_live(cfg, progress=_step_progress)
    emit(fmt, report.as_dict(), lambda: _smoke_text(report))
    if not report.ok:
        sys.exit(1)


@cli.group("export", cls=DbtoolGroup, context_settings=CONTEXT)
def export_group() -> None:
    """Write the migrations in the form another deployment tool applies.

    \b
    Example:
      dbtool export supabase-cli .    # then: supabase db push
    """


@export_group.command("supabase-cli")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@output_options()
def export_supabase_cli(directory: str, fmt: str) -> None:
    """Write each revision as DIRECTORY/supabase/migrations/<timestamp>_chat_db_<rev>.sql.

    Each file is the revision's offline SQL (as `dbtool migrate --sql` prints it, with the
    version table in chat_migrations), without BEGIN/COMMIT because `supabase db push` runs
    each file in one transaction. Timestamps come from each revision's Create Date and its
    place in the chain, so exporting again writes the same names and bytes.

    \b
    Example:
      dbtool export supabase-cli ~/src/app && cd ~/src/app && supabase db push
    """
    written = export.supabase_cli(Path(directory))
    rows = [(w.revision, w.status, w.path) for w in written]
    emit(fmt, [w.as_dict() for w in written], lambda: table(["revision", "file", "path"], rows))


# --- the main job -----------------------------------------------------------------------


@cli.command("up")
@click.option("--port", type=int, help="TCP port for the local server (default: $DBTOOL_PORT or 54329).")
@click.option("--no-verify", is_flag=True, help="Skip checking the policy matrix (dbtool verify).")
@output_options()
def up_cmd(port: int | None, no_verify: bool, fmt: str) -> None:
    """The local stack in one go: start the server, reset its database, verify its policies.

    \b
    Example:
      dbtool up && psql "$(dbtool local url)"
    """
    stack = up.run(local_config(port=port), with_verify=not no_verify, progress=progress)
    st, result, report = stack.server, stack.reset, stack.verify
    data = {"server": st.as_dict(), "reset": {k: v for k, v in result.__dict__.items() if k != "seeded"},
            "seeded": result.seeded.as_dict() if result.seeded else None,
            "verify": report.as_dict() if report else None}
    emit(fmt, data, lambda: "\n\n".join(filter(None, [
        _status_text(st),
        _reset_text(result),
        _demo_text(result.seeded),
        verify.render(report) if report else None,
        f"connect with:  psql \"{st.url}\"",
    ])))
    if not stack.ok:
        sys.exit(1)


def main() -> None:
    cli(prog_name="dbtool")
