"""Connection strings read the way libpq reads them, and the decisions that hang on them.

A database is named by a URL (`postgresql://…`, as Supabase and libpq write it) or a libpq
`key=value` string. Where a connection goes is libpq's decision: the string's own
parameters (`?host=` and `hostaddr` included), then the section of a service file
(`service=` or PGSERVICE), then the PG* environment variables, then compiled-in defaults.
`resolve` follows that order once, so that the local/remote decision, the database name and
the connection itself agree, and writes what it found into the connection string it
returns, so that nothing later can read the target differently.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbtool import pgservice
from dbtool.errors import ConfigError
from dbtool.pgservice import keywords

URL_SCHEMES = ("postgresql://", "postgres://")
DRIVER_SCHEME = "postgresql+psycopg://"  # SQLAlchemy's spelling, accepted as the same URL
SECRET_KEYS = frozenset({"password", "passfile", "sslpassword"})
# The parameters that decide where a connection goes, as whom, into which database.
TARGET_KEYS = ("host", "hostaddr", "port", "dbname", "user")
MASK = "***"


# --- reading a connection string ---------------------------------------------------------


def _normalised(conninfo: str) -> str:
    text = conninfo.strip()
    if text.startswith(DRIVER_SCHEME):
        return "postgresql://" + text[len(DRIVER_SCHEME):]
    return text


def _is_url(text: str) -> bool:
    return "://" in text.split("=", 1)[0]


# libpq error messages quote the offending fragment, which can be part of a password.
_SAFE_TO_QUOTE = ("invalid URI query parameter", "invalid connection option")


def _scrub(message: str) -> str:
    message = message.strip()
    if message.startswith(_SAFE_TO_QUOTE):
        return message
    return re.sub(r'"([^"]*)"', lambda m: m[0] if m[1] == "=" else "…", message)


def parse(conninfo: str, source: str = "the database URL") -> dict[str, str]:
    """The parameters a connection string sets itself (libpq's own parser)."""
    text = _normalised(conninfo)
    if _is_url(text) and not text.startswith(URL_SCHEMES):
        raise ConfigError(
            f"{source} must start with postgresql:// (got {text.split('://', 1)[0]}://); "
            "use the connection string Supabase shows under Project Settings > Database"
        )
    try:
        return {k: str(v) for k, v in conninfo_to_dict(text).items() if v is not None}
    except psycopg.ProgrammingError as exc:
        hint = ("percent-encode special characters in the user and password (@ as %40, % as %25) and use libpq's "
                "parameter names after ?" if _is_url(text)
                else "write key=value pairs with libpq's parameter names, quoting values with spaces as 'like this'")
        raise ConfigError(f"{source} is not a valid connection string ({_scrub(str(exc))}): {hint}") from None


# --- redaction ---------------------------------------------------------------------------


def _redact_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    # libpq takes the user info up to the first '@' before the first '/'.
    at = rest.split("/", 1)[0].find("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        if colon:
            rest = f"{user}:{MASK}{rest[at:]}"
    base, question, query = rest.partition("?")
    if question:
        items = []
        for item in query.split("&"):
            key, equals, _ = item.partition("=")
            items.append(f"{key}={MASK}" if equals and unquote(key) in SECRET_KEYS else item)
        rest = f"{base}?{'&'.join(items)}"
    return f"{scheme}://{rest}"


def redact(conninfo: str) -> str:
    """The connection string with its password, passfile and sslpassword masked, for
    messages and logs. Never raises: a string libpq cannot read is not shown at all."""
    text = _normalised(conninfo)
    try:
        params = conninfo_to_dict(text)
    except psycopg.Error:
        return "(a connection string libpq cannot read)"
    masked = {k: MASK if k in SECRET_KEYS else v for k, v in params.items()}
    if _is_url(text):
        candidate = _redact_url(text)
        try:
            if conninfo_to_dict(candidate) == masked:  # proof that nothing secret is left
                return candidate
        except psycopg.Error:
            pass
    return make_conninfo("", **masked)


# --- where a connection goes ---------------------------------------------------------------


def _loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


@dataclass(frozen=True)
class Endpoint:
    """One place libpq may connect to (a list of hosts gives several)."""

    kind: str  # "socket" (a Unix socket directory), "address" (hostaddr) or "name" (host)
    address: str  # "" for libpq's default Unix socket directory
    port: str
    origin: str  # where the value came from: the string's source, a variable, a service file

    @property
    def local(self) -> bool:
        if self.kind == "socket":
            return True
        if self.kind == "name" and self.address.lower() == "localhost":
            return True
        return self.kind in ("address", "name") and _loopback(self.address)

    def __str__(self) -> str:
        if self.kind == "socket":
            where = f"the Unix socket in {self.address}" if self.address else "libpq's default Unix socket"
            return f"{where} ({self.origin})"
        key = "hostaddr" if self.kind == "address" else "host"
        return f"{self.address} ({key}, from {self.origin})"


def _split(value: str | None) -> list[str]:
    return value.split(",") if value else []  # libpq splits host lists at commas, no escapes


def _endpoints(values: Mapping[str, str], origins: Mapping[str, str], source: str) -> list[Endpoint]:
    """libpq's connectOptions2: one slot per hostaddr (or host) entry, each a numeric
    address, a socket directory (an absolute path, or @ for Linux's abstract namespace), a
    name, or the default socket."""
    hosts, addresses, ports = _split(values.get("host")), _split(values.get("hostaddr")), _split(values.get("port"))
    count = len(addresses) or len(hosts) or 1
    if hosts and addresses and len(hosts) != count:
        raise ConfigError(f"{source}: could not match {len(hosts)} host names to {count} hostaddr values")
    if len(ports) > 1 and len(ports) != count:
        raise ConfigError(f"{source}: could not match {len(ports)} port numbers to {count} hosts")
    out = []
    for i in range(count):
        address = addresses[i] if addresses else ""
        host = hosts[i] if hosts else ""
        port = (ports[i] if len(ports) > 1 else ports[0] if ports else "") or "5432"
        if address:
            out.append(Endpoint("address", address, port, origins["hostaddr"]))
        elif host.startswith(("/", "@")):
            out.append(Endpoint("socket", host, port, origins["host"]))
        elif host:
            out.append(Endpoint("name", host, port, origins["host"]))
        else:
            out.append(Endpoint("socket", "", port, "no host given"))
    return out


@dataclass(frozen=True)
class Resolved:
    """A connection string read once: where it connects, and how to connect there."""

    given: str  # as written (driver scheme normalised); may hold a password: show `redacted`
    conninfo: str  # to connect with: `given` plus the target parameters found elsewhere
    params: Mapping[str, str]  # effective: the string's own, then the service's, then the environment's
    endpoints: tuple[Endpoint, ...]

    @property
    def local(self) -> bool:
        """Every place the connection could go is this machine: loopback or a Unix socket."""
        return all(e.local for e in self.endpoints)

    @property
    def elsewhere(self) -> list[Endpoint]:
        return [e for e in self.endpoints if not e.local]

    @property
    def dbname(self) -> str:
        """libpq's default database is the user name, whose default is the OS user."""
        name = self.params.get("dbname") or self.params.get("user")
        if name:
            return name
        try:
            return pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            raise ConfigError(f"no dbname or user given, and user id {os.geteuid()} has no name: add dbname to "
                              f"{self.redacted}") from None

    @property
    def redacted(self) -> str:
        return redact(self.given)


def _check_timeout(values: Mapping[str, str], origins: Mapping[str, str], env: Mapping[str, str]) -> None:
    """psycopg reads connect_timeout itself, before libpq, and raises on a bad value."""
    timeout = values.get("connect_timeout", env.get("PGCONNECT_TIMEOUT"))
    if timeout is None:
        return
    try:
        int(float(timeout))
    except (ValueError, OverflowError):
        origin = origins.get("connect_timeout", "PGCONNECT_TIMEOUT")
        raise ConfigError(f"connect_timeout must be a number of seconds such as 10, got {timeout!r} (from {origin})") from None


def resolve(conninfo: str, *, source: str = "the database URL", env: Mapping[str, str] | None = None) -> Resolved:
    """Read a connection string as libpq will when connecting (service files and PG*
    variables included); `source` names it in errors (--database-url, DATABASE_URL, ...)."""
    env = os.environ if env is None else env
    given = _normalised(conninfo)
    explicit = parse(given, source)
    values = dict(explicit)
    origins = dict.fromkeys(explicit, source)
    service = explicit.get("service", env.get("PGSERVICE"))
    if service is not None:
        try:
            section, path = pgservice.lookup(service, env)
        except pgservice.Unresolvable as exc:
            # Guessing would decide local/remote and the database name on what libpq may not use.
            named = "named in " + source if "service" in explicit else "named by PGSERVICE"
            raise ConfigError(f"{exc} ({named}): define it in PGSERVICEFILE or PGSYSCONFDIR/pg_service.conf, or give "
                              "host and dbname in the connection string itself") from None
        for key, value in section.items():
            values.setdefault(key, value)
            origins.setdefault(key, f"service {service!r} in {path}")
    for key in TARGET_KEYS:
        variable = keywords().get(key)
        if key not in values and variable and variable in env:
            values[key] = env[variable]
            origins[key] = variable
    endpoints = _endpoints(values, origins, source)
    _check_timeout(values, origins, env)
    found = {k: values[k] for k in TARGET_KEYS if k in values and k not in explicit}
    return Resolved(given, make_conninfo(given, **found) if found else given, values, tuple(endpoints))


# --- helpers for callers that hold a string ---------------------------------------------------


def conninfo(url: str) -> str:
    """What to hand psycopg (or libpq, psql, pg_dump) to connect where `url` leads."""
    return resolve(url).conninfo


def is_local(url: str, env: Mapping[str, str] | None = None) -> bool:
    """True when every host the connection could go to is this machine."""
    return resolve(url, env=env).local


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    return make_conninfo(resolve(url).conninfo, dbname=dbname)


def database_name(url: str) -> str:
    """The database a connection string leads to."""
    return resolve(url).dbname
