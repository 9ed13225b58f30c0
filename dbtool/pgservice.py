"""Service files as libpq reads them (pg_service.conf: `[name]` sections of key=value).

A connection string or PGSERVICE can name a service; its section fills in every parameter
the string leaves unset, before the PG* environment variables do. libpq looks in
PGSERVICEFILE (else ~/.pg_service.conf), then in PGSYSCONFDIR/pg_service.conf (else a
directory compiled into libpq, which cannot be known from here).
"""

from __future__ import annotations

import functools
import os
import pwd
from collections.abc import Mapping
from pathlib import Path

from psycopg import pq

from dbtool.errors import ConfigError


@functools.cache
def keywords() -> dict[str, str | None]:
    """libpq's connection keywords, each with the environment variable it falls back to."""
    return {o.keyword.decode(): o.envvar.decode() if o.envvar else None for o in pq.Conninfo.get_defaults()}


class Unresolvable(Exception):
    """The service's parameters cannot be known here (not in a file we can read, or in LDAP)."""


def _section(path: Path, service: str) -> dict[str, str] | None:
    """[service] of one service file, read as libpq reads it (first value of a key wins)."""
    found = False
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if found:
                break
            found = line[1:1 + len(service)] == service and line[1 + len(service):2 + len(service)] == "]"
            continue
        if not found:
            continue
        if line.startswith("ldap"):
            raise Unresolvable(f"service {service!r} is looked up in LDAP ({path}), which dbtool does not do")
        key, equals, value = line.partition("=")
        if not equals or key == "service" or key not in keywords():
            raise ConfigError(f'syntax error in service file "{path}", line {number}: expected key=value with a libpq '
                              "connection keyword (no spaces around =)")
        values.setdefault(key, value)
    return values if found else None


def _home(env: Mapping[str, str]) -> Path | None:
    if env.get("HOME"):
        return Path(env["HOME"])
    try:
        return Path(pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:
        return None


def lookup(service: str, env: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The parameters of a service, from the first file that defines it, in libpq's order:
    PGSERVICEFILE (or ~/.pg_service.conf), then PGSYSCONFDIR/pg_service.conf."""
    looked: list[str] = []
    user_file = env.get("PGSERVICEFILE")
    if user_file is not None:
        if not Path(user_file).is_file():
            raise ConfigError(f'service file "{user_file}" (PGSERVICEFILE) not found: fix PGSERVICEFILE or unset it')
        candidates = [Path(user_file)]
    else:
        home = _home(env)
        candidates = [home / ".pg_service.conf"] if home else []
    if env.get("PGSYSCONFDIR"):
        candidates.append(Path(env["PGSYSCONFDIR"]) / "pg_service.conf")
    for path in candidates:
        if path.is_file():
            looked.append(str(path))
            section = _section(path, service)
            if section is not None:
                return section, str(path)
    where = ", ".join(looked) if looked else "no service file here"
    # libpq also reads pg_service.conf in its compiled-in directory, which is not known here.
    raise Unresolvable(f"service {service!r} is not defined in {where}")
