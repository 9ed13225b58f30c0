"""Building a chat database from nothing: create it, install the stand-in, migrate.

`dbtool reset` (full rebuild) and the test harness's template database both use this,
so the tests exercise exactly what developers run.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from dbtool.ops import migrate, standin
from dbtool.progress import Progress, quiet
from dbtool.urls import conninfo, database_name, with_database

APP_ROLE = "postgres"
MAINTENANCE_DB = "postgres"


@dataclass(frozen=True)
class Built:
    standin: standin.Installed
    migrated: migrate.MigrateResult


def _maintenance(admin_url: str, avoid: str | None = None) -> psycopg.Connection:
    """A connection to a database other than the one being created or dropped."""
    other = "template1" if avoid == MAINTENANCE_DB else MAINTENANCE_DB
    return psycopg.connect(conninfo(with_database(admin_url, other)), autocommit=True)


def terminate_connections(conn: psycopg.Connection, dbname: str) -> None:
    conn.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
        (dbname,),
    )


def drop_database(admin_url: str, dbname: str) -> None:
    with _maintenance(admin_url, dbname) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))


def create_database(admin_url: str, dbname: str, owner: str = APP_ROLE, template: str | None = None) -> None:
    """CREATE DATABASE owned by the migration role, as Supabase's `postgres` database is."""
    query = sql.SQL("create database {} owner {}").format(sql.Identifier(dbname), sql.Identifier(owner))
    if template:
        query += sql.SQL(" template {}").format(sql.Identifier(template))
    with _maintenance(admin_url, dbname) as conn:
        if template:
            terminate_connections(conn, template)
        conn.execute(query)


def prepare(admin_url: str, app_url: str, progress: Progress = quiet) -> Built:
    """Stand-in (as the superuser), then migrations (as the app role) in an existing database."""
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
        installed = standin.install(conn)
    progress(f"stand-in {'current' if installed.already_current else 'installed'} in {database_name(app_url)}")
    migrated = migrate.upgrade(migrate.MigrateSettings(app_url), "head", progress)
    return Built(installed, migrated)


def rebuild(admin_url: str, app_url: str, progress: Progress = quiet) -> Built:
    """Drop and recreate the database, then prepare it."""
    dbname = database_name(app_url)
    progress(f"recreating database {dbname}")
    drop_database(admin_url, dbname)
    create_database(admin_url, dbname)
    return prepare(admin_url, app_url, progress)
