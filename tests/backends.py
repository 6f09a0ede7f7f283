"""Helpers of the backend tests: their Redis database and PostgreSQL databases are shared with other tests."""
from __future__ import annotations

import urllib.parse
from typing import Iterator, TypeVar

Backend = TypeVar("Backend")

PG_TESTS_DATABASE = "wsgicliquet_pg_tests"


def emptied(backend: Backend) -> Iterator[Backend]:
    """The body of a fixture: ``backend`` flushed before the test, and after it so the next one starts empty."""
    backend.flush()  # type: ignore[attr-defined]
    yield backend
    backend.flush()  # type: ignore[attr-defined]


def database_url(base_url: str, database: str = PG_TESTS_DATABASE) -> str:
    """``base_url`` pointing at ``database``, created when missing, so that tests flushing their own database never
    race with other test runs on the shared one; ``base_url`` itself when creating it is not allowed."""
    import psycopg2

    try:
        conn = psycopg2.connect(base_url, connect_timeout=3)
    except psycopg2.Error:  # pragma: no cover - the postgresql_url fixture already checked
        return base_url
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{database}"')
    except psycopg2.Error:  # pragma: no cover - no CREATEDB right: share the given database
        return base_url
    finally:
        conn.close()
    return urllib.parse.urlsplit(base_url)._replace(path="/" + database).geturl()
