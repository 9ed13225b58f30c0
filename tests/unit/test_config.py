"""Settings resolved once: flag > environment > default, and a bad value names where it came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbtool import config
from dbtool.errors import ConfigError


def test_local_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config.local_config(env={})
    assert (cfg.home, cfg.port, cfg.database, cfg.pg_bin, cfg.root_mode) == (
        tmp_path / ".dbtool", config.DEFAULT_PORT, config.DEFAULT_DATABASE, None, "auto")
    assert (cfg.data_dir, cfg.log_file) == (tmp_path / ".dbtool" / "data", tmp_path / ".dbtool" / "postgres.log")


def test_local_flags_win_over_the_environment(tmp_path: Path) -> None:
    env = {"DBTOOL_HOME": "/elsewhere", "DBTOOL_PORT": "6000", "DBTOOL_DATABASE": "other", "DBTOOL_PG_BIN": "/pg/bin",
           "DBTOOL_ROOT_MODE": "nobody"}
    cfg = config.local_config(home=tmp_path, port=7000, database="chat_x", env=env)
    assert (cfg.home, cfg.port, cfg.database, cfg.pg_bin, cfg.root_mode) == (
        tmp_path, 7000, "chat_x", Path("/pg/bin"), "nobody")
    from_env = config.local_config(env=env)
    assert (from_env.home, from_env.port, from_env.database) == (Path("/elsewhere"), 6000, "other")


@pytest.mark.parametrize(("port", "env", "message"), [
    (80, {}, "--port must be between 1024 and 65535, got 80"),
    (None, {"DBTOOL_PORT": "abc"}, "DBTOOL_PORT must be a TCP port number, got 'abc'"),
    (None, {"DBTOOL_PORT": "70000"}, "DBTOOL_PORT must be between 1024 and 65535, got 70000"),
    (None, {"DBTOOL_ROOT_MODE": "sudo"}, "DBTOOL_ROOT_MODE must be one of auto, userns, nobody, got 'sudo'"),
])
def test_local_errors_name_their_source(tmp_path: Path, port: int | None, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config.local_config(home=tmp_path, port=port, env=env)
    assert str(raised.value) == message


def test_migration_defaults() -> None:
    assert config.migration_config(env={}) == config.MigrationConfig("5s", "5min", 600.0)


def test_migration_flag_then_variable_then_default() -> None:
    env = {"DBTOOL_LOCK_TIMEOUT": "abc", "DBTOOL_STATEMENT_TIMEOUT": "90s", "DBTOOL_LOCK_WAIT": "0.5"}
    got = config.migration_config(lock_timeout=" 2s ", env=env)
    assert got == config.MigrationConfig("2s", "90s", 0.5)


@pytest.mark.parametrize("value", ["0", "500", "500ms", "500 ms", "1.5min", "2h", "1d", "24d", "10us"])
def test_durations_postgresql_takes(value: str) -> None:
    assert config.migration_config(lock_timeout=value, env={}).lock_timeout == value


@pytest.mark.parametrize(("value", "message"), [
    ("abc", "--lock-timeout must be a PostgreSQL duration such as 5s, 500ms or 2min, got 'abc'"),
    ("5 minutes", "--lock-timeout must be a PostgreSQL duration such as 5s, 500ms or 2min, got '5 minutes'"),
    ("-1s", "--lock-timeout must be a PostgreSQL duration such as 5s, 500ms or 2min, got '-1s'"),
    ("25d", "--lock-timeout must be at most 2147483647ms (about 24 days, PostgreSQL's limit), got '25d'"),
])
def test_bad_durations(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config.migration_config(lock_timeout=value, env={})
    assert str(raised.value) == message


@pytest.mark.parametrize(("value", "message"), [
    ("abc", "DBTOOL_LOCK_WAIT must be a number of seconds such as 600 or 0.5, got 'abc'"),
    ("-1", "DBTOOL_LOCK_WAIT must be a number of seconds, zero or more, got '-1'"),
    ("nan", "DBTOOL_LOCK_WAIT must be a number of seconds, zero or more, got 'nan'"),
    ("inf", "DBTOOL_LOCK_WAIT must be a number of seconds, zero or more, got 'inf'"),
])
def test_bad_lock_waits(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config.migration_config(env={"DBTOOL_LOCK_WAIT": value})
    assert str(raised.value) == message


def test_clear_stats_timeouts() -> None:
    assert config.stats_config(env={}) == config.StatsConfig("2s", "5min")
    # the statement timeout follows DBTOOL_STATEMENT_TIMEOUT like migrate's; the lock timeout has only its flag
    env = {"DBTOOL_STATEMENT_TIMEOUT": "1min", "DBTOOL_LOCK_TIMEOUT": "9s"}
    assert config.stats_config(env=env) == config.StatsConfig("2s", "1min")
    assert config.stats_config(lock_timeout="50ms", statement_timeout="30s", env=env) == config.StatsConfig("50ms", "30s")


def test_clear_stats_bad_timeouts_name_their_source() -> None:
    with pytest.raises(ConfigError, match=r"^--lock-timeout must be a PostgreSQL duration such as 5s"):
        config.stats_config(lock_timeout="soon", env={})
    with pytest.raises(ConfigError, match=r"^DBTOOL_STATEMENT_TIMEOUT must be a PostgreSQL duration"):
        config.stats_config(env={"DBTOOL_STATEMENT_TIMEOUT": "forever"})
