"""Settings come from the environment; bad values stop startup naming the variable."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from service.app import create_app
from service.database.engines import database_url
from service.settings import Settings, SettingsError


def test_defaults_use_a_sqlite_file_in_the_working_directory() -> None:
    assert Settings.from_env({}).database_url == "sqlite:///heroes.db"


def test_each_setting_reads_the_variable_of_its_name() -> None:
    settings = Settings.from_env(
        {"DATABASE_URL": "sqlite:///:memory:", "MAX_BODY_SIZE": "2048", "DB_POOL_SIZE": "3"}
    )

    assert settings.database_url == "sqlite:///:memory:"
    assert settings.max_body_size == 2048
    assert settings.db_pool_size == 3


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAX_BODY_SIZE", "lots"),
        ("MAX_BODY_SIZE", "0"),
        ("SQLITE_BUSY_TIMEOUT_MS", "-1"),
        ("DB_POOL_SIZE", "1.5"),
        ("DB_POOL_TIMEOUT", "0"),
        ("PORT", "0"),
        ("PORT", "65536"),
        ("PORT", "http"),
        ("DB_POOLER", "session"),
        ("SHUTDOWN_DRAIN_SECONDS", "-1"),
    ],
)
def test_invalid_value_is_an_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}: "):
        Settings.from_env({variable: value})


def test_an_empty_variable_means_the_default() -> None:
    empty = {name.upper(): "" for name in Settings.__struct_fields__}

    assert Settings.from_env(empty) == Settings()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ALLOW_ANONYMOUS_WRITES", "maybe", "expected one of true, false, 1, 0"),
        ("METRICS", "yes", "expected one of true, false, 1, 0"),
        ("DB_POOLER", "session", "expected one of none, transaction, not 'session'"),
        ("FORWARDED_HEADER", "x-real-ip", "expected one of x-forwarded-for, forwarded"),
        ("PORT", "http", "expected an integer, not 'http'"),
    ],
)
def test_invalid_choice_names_the_values_accepted(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}: {message}"):
        Settings.from_env({variable: value})


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///heroes.db", "sqlite+pysqlite"),
        ("sqlite:///:memory:", "sqlite+pysqlite"),
        ("postgresql://user@host/db", "postgresql+asyncpg"),
        ("postgres://user@host/db", "postgresql+asyncpg"),
        ("postgresql+psycopg://user@host/db", "postgresql+psycopg"),
    ],
)
def test_plain_database_url_gets_its_driver(url: str, driver: str) -> None:
    assert database_url(url).drivername == driver


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://user@host/db", "postgresql+psycopg"),
        ("postgres://user@host/db", "postgresql+psycopg"),
        ("postgresql+asyncpg://user@host/db", "postgresql+asyncpg"),
    ],
)
def test_behind_a_transaction_pooler_a_plain_url_runs_on_psycopg(url: str, driver: str) -> None:
    assert database_url(url, pooler="transaction").drivername == driver


def test_a_pooler_in_front_of_sqlite_stops_startup_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^DB_POOLER: "):
        database_url("sqlite:///heroes.db", pooler="transaction")


def test_the_prepared_pooler_mode_without_a_pooler_stops_startup_naming_both_variables() -> None:
    with pytest.raises(SettingsError, match=r"^DB_POOLER_PREPARED: .*DB_POOLER=transaction"):
        Settings.from_env({"DB_POOLER_PREPARED": "true"})


def test_behind_a_pooler_keeping_prepared_statements_a_plain_url_runs_on_asyncpg() -> None:
    url = database_url("postgresql://user@host/db", pooler="transaction", prepared=True)

    assert url.drivername == "postgresql+asyncpg"


def test_the_prepared_pooler_mode_on_psycopg_stops_startup_naming_the_variable() -> None:
    settings = Settings(
        database_url="postgresql+psycopg://user@host/db",
        db_pooler="transaction",
        db_pooler_prepared=True,
    )

    with pytest.raises(SettingsError, match=r"^DB_POOLER_PREPARED: .*asyncpg"):
        create_app(settings)


@pytest.mark.parametrize(
    ("url", "pooler", "query"),
    [
        ("postgresql://h/db?sslmode=verify-full", "none", {"ssl": "verify-full"}),
        ("postgresql://h/db?ssl=require", "none", {"ssl": "require"}),
        ("postgresql://h/db?sslmode=require", "transaction", {"sslmode": "require"}),
        ("postgresql://h/db?ssl=require", "transaction", {"sslmode": "require"}),
    ],
)
def test_a_url_s_tls_mode_reaches_the_driver_under_the_name_it_reads(
    url: str, pooler: str, query: dict[str, str]
) -> None:
    assert dict(database_url(url, pooler).query) == query


def test_a_managed_postgresql_url_with_sslmode_serves(postgres_url: str) -> None:
    # The local server has no TLS: disable is the mode it takes, through asyncpg's `ssl`.
    settings = Settings(database_url=f"{postgres_url}?sslmode=disable", access_log=False)

    with TestClient(create_app(settings)) as client:
        response = client.get("/heroes")

    assert response.status_code == 200
