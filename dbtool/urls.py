"""Database URLs as Supabase and libpq write them, and the forms our drivers want."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit, urlunsplit

from dbtool.errors import ConfigError

LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1", "[::1]"})


def _split(url: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
        raise ConfigError(
            f"database URL must start with postgresql:// (got {parts.scheme or 'no scheme'}://); "
            "use the connection string Supabase shows under Project Settings > Database"
        )
    return parts


def sqlalchemy_url(url: str) -> str:
    """The same URL with the psycopg 3 driver named, as SQLAlchemy needs it."""
    parts = _split(url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def libpq_url(url: str) -> str:
    """The same URL in the plain form libpq and psql accept."""
    parts = _split(url)
    return urlunsplit(parts._replace(scheme="postgresql"))


def is_local(url: str) -> bool:
    """True when the URL points at this machine (loopback or a Unix socket)."""
    parts = _split(url)
    host = parts.hostname or ""
    if "host=/" in (parts.query or ""):
        return True
    return host in LOCAL_HOSTS


def redact(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    parts = _split(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    parts = _split(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def database_name(url: str) -> str:
    """The database a URL names (libpq's default is the user name)."""
    parts = _split(url)
    name = parts.path.lstrip("/")
    return name or (parts.username or "postgres")
