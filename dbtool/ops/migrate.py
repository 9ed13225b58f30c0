"""Running the Alembic chain: locked, with timeouts, reporting each revision applied."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from dbtool import paths
from dbtool.config import DEFAULT_LOCK_TIMEOUT, DEFAULT_LOCK_WAIT, DEFAULT_STATEMENT_TIMEOUT, MigrationConfig
from dbtool.errors import MigrationError
from dbtool.progress import Progress, quiet
from dbtool.urls import conninfo

if TYPE_CHECKING:  # Alembic and SQLAlchemy load only when migrations run (fast CLI start)
    from alembic.config import Config
    from alembic.script import ScriptDirectory

VERSION_TABLE = "chat_migrations.alembic_version"


@dataclass(frozen=True)
class MigrateSettings:
    """How migrations run: where, and how long DDL may wait for locks or run."""

    url: str
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT
    lock_wait: float = DEFAULT_LOCK_WAIT
    script_location: str | None = None  # another migrations directory (tests use one with a broken revision)

    @classmethod
    def of(cls, url: str, config: MigrationConfig) -> MigrateSettings:
        return cls(url, config.lock_timeout, config.statement_timeout, config.lock_wait)

    @property
    def config(self) -> MigrationConfig:
        return MigrationConfig(self.lock_timeout, self.statement_timeout, self.lock_wait)


@dataclass
class Applied:
    revision: str
    description: str
    direction: str
    seconds: float


@dataclass
class MigrateResult:
    before: str | None
    after: str | None
    applied: list[Applied] = field(default_factory=list)


def alembic_config(settings: MigrateSettings | None = None, progress: Progress = quiet,
                   timeouts: MigrationConfig | None = None) -> tuple[Config, list[Applied]]:
    """An Alembic Config on our migrations, wired to report applied revisions. env.py takes
    the database and the (validated) timeouts from it rather than from the environment."""
    from alembic.config import Config

    cfg = Config(str(paths.alembic_ini()))
    location = settings.script_location if settings and settings.script_location else str(paths.migrations_dir())
    cfg.set_main_option("script_location", location)
    applied: list[Applied] = []
    clock = [time.monotonic()]

    def on_version_apply(*, step: Any, **_: Any) -> None:
        now = time.monotonic()
        description = step.up_revision.doc if step.up_revision else ""
        item = Applied(step.up_revision_id, description, "up" if step.is_upgrade else "down", now - clock[0])
        applied.append(item)
        verb = "applied" if step.is_upgrade else "reverted"
        progress(f"{verb} {item.revision}  {description}  ({item.seconds * 1000:.0f} ms)")
        clock[0] = now

    def on_wait(holder: int | None) -> None:
        who = f"pid {holder}" if holder else "another session"
        progress(f"waiting for the migration lock held by {who} (another runner is migrating)")

    cfg.attributes.update({"dbtool": True, "on_version_apply": on_version_apply, "on_wait": on_wait,
                           "migration_config": settings.config if settings else timeouts or MigrationConfig()})
    if settings is not None:
        cfg.attributes["url"] = settings.url
    return cfg, applied


def script_directory(settings: MigrateSettings | None = None) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    cfg, _ = alembic_config(settings)
    return ScriptDirectory.from_config(cfg)


def heads() -> list[str]:
    return list(script_directory().get_heads())


def current(url: str) -> str | None:
    """The revision the database is at (None: never migrated or at base)."""
    with psycopg.connect(conninfo(url)) as conn:
        if conn.execute("select to_regclass(%s)", (VERSION_TABLE,)).fetchone() == (None,):
            return None
        row = conn.execute(f"select version_num from {VERSION_TABLE}").fetchone()
        return row[0] if row else None


def _explain(exc: BaseException, settings: MigrateSettings, target: str, down: bool) -> MigrationError:
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    try:
        at = current(settings.url)
    except psycopg.Error:
        at = "unknown"
    where = f"the database stays at revision {at or 'base'} (each revision runs in its own transaction)"
    failing = at if down else _next_revision(at, target, settings)
    label = f"revision {failing}" if failing else "the migration"
    if isinstance(orig, psycopg.errors.LockNotAvailable):
        return MigrationError(
            f"{label} could not get a lock within lock_timeout={settings.lock_timeout}: another session holds a "
            f"conflicting lock ({str(orig).strip()}); nothing of it was applied and {where}. Find the blocker with "
            "`select pid, state, query from pg_stat_activity where wait_event_type is null and state <> 'idle'`, "
            "let it finish, then retry (or raise --lock-timeout)"
        )
    if isinstance(orig, psycopg.errors.QueryCanceled):
        return MigrationError(
            f"{label} ran longer than statement_timeout={settings.statement_timeout} and was cancelled; {where}. "
            "Retry with a larger --statement-timeout if the work is expected to be long"
        )
    if isinstance(orig, psycopg.OperationalError):
        return MigrationError(f"cannot connect to the database: {str(orig).strip()}; check DATABASE_URL / --database-url")
    if isinstance(exc, SystemExit):
        return MigrationError(f"{exc}; {where}")
    message = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return MigrationError(f"{label} failed: {message}; {where}")


def _next_revision(at: str | None, target: str, settings: MigrateSettings) -> str | None:
    script = script_directory(settings)
    try:
        if target in ("head", "heads") or script.get_revision(target) is not None:
            chain = list(script.iterate_revisions(target if target != "heads" else "head", at or "base"))
            return chain[-1].revision if chain else None
    except Exception:
        return None
    return None


def _run(settings: MigrateSettings, action: Callable[[Config], None], target: str, progress: Progress,
         down: bool = False) -> MigrateResult:
    import sqlalchemy.exc

    before = current(settings.url)
    cfg, applied = alembic_config(settings, progress)
    try:
        action(cfg)
    except (sqlalchemy.exc.SQLAlchemyError, psycopg.Error, SystemExit) as exc:
        raise _explain(exc, settings, target, down) from None
    except Exception as exc:  # alembic's own CommandError (bad revision, ...)
        if type(exc).__name__ in ("CommandError", "ResolutionError", "RangeNotAncestorError", "MultipleHeads"):
            raise MigrationError(f"{exc}; list the revisions with `dbtool migrate --history`") from None
        raise
    return MigrateResult(before, current(settings.url), applied)


def upgrade(settings: MigrateSettings, target: str = "head", progress: Progress = quiet) -> MigrateResult:
    """Apply revisions up to `target` under the migration lock."""
    from alembic import command

    return _run(settings, lambda cfg: command.upgrade(cfg, target), target, progress)


def downgrade(settings: MigrateSettings, target: str, progress: Progress = quiet) -> MigrateResult:
    """Revert revisions down to `target` ("base" removes everything we own)."""
    from alembic import command

    return _run(settings, lambda cfg: command.downgrade(cfg, target), target, progress, down=True)


def offline_sql(target: str = "head", start: str | None = None, down: bool = False,
                timeouts: MigrationConfig | None = None, export: bool = False) -> str:
    """The SQL an upgrade (or downgrade) would run, for review; needs no database.

    `export`: for a runner that wraps the whole text in one transaction (the Supabase CLI):
    no BEGIN/COMMIT, and the migration lock held for that transaction only.
    """
    from alembic import command

    cfg, _ = alembic_config(timeouts=timeouts)
    cfg.attributes["export"] = export
    buffer = io.StringIO()
    cfg.output_buffer = buffer
    span = f"{start}:{target}" if start else target
    try:
        if down:
            command.downgrade(cfg, span, sql=True)
        else:
            command.upgrade(cfg, span, sql=True)
    except Exception as exc:
        if type(exc).__name__ == "CommandError":
            raise MigrationError(f"{exc}") from None
        raise
    return buffer.getvalue()


def history() -> list[tuple[str, str | None, str]]:
    """(revision, down_revision, description), oldest first."""
    script = script_directory()
    revs = list(script.walk_revisions())
    revs.reverse()
    return [(r.revision, r.down_revision if isinstance(r.down_revision, str) else None, r.doc) for r in revs]
