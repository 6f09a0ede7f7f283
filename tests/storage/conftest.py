"""The PostgreSQL database of the storage tests, shared by the plain and the concurrency tests, and schemas of their
own for the tests that lock tables or cut connections."""
from __future__ import annotations

import urllib.parse
import uuid
from typing import Iterator

import psycopg2
import pytest

from tests.backends import database_url
from wsgicliquet import postgresql as pg
from wsgicliquet.storage.postgresql import Storage


@pytest.fixture(scope="session")
def pg_url(postgresql_url: str) -> str:
    """The URL of the tests' own database, migrated."""
    url = database_url(postgresql_url)
    Storage.from_settings({"storage_url": url}).initialize_schema()
    return url


def _admin(url: str, query: str, params: object = None) -> None:
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(query, params)
    finally:
        conn.close()


@pytest.fixture
def schema_url(pg_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, migrated; dropped afterwards (with its connections)."""
    schema = f"wsgicliquet_locks_{uuid.uuid4().hex[:10]}"
    _admin(pg_url, f'CREATE SCHEMA "{schema}"')
    url = pg_url + ("&" if "?" in pg_url else "?") + urllib.parse.urlencode(
        {"options": f"-c search_path={schema}", "application_name": schema}, quote_via=urllib.parse.quote)
    try:
        client = pg.Client(url, pool_size=1)
        Storage(client).initialize_schema()
        client.close()
        yield url
    finally:
        _admin(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (schema,))
        _admin(pg_url, f'DROP SCHEMA "{schema}" CASCADE')
