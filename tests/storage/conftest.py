"""The PostgreSQL database of the storage tests, shared by the plain and the concurrency tests."""
from __future__ import annotations

import pytest

from tests.backends import database_url
from wsgicliquet.storage.postgresql import Storage


@pytest.fixture(scope="session")
def pg_url(postgresql_url: str) -> str:
    """The URL of the tests' own database, migrated."""
    url = database_url(postgresql_url)
    Storage.from_settings({"storage_url": url}).initialize_schema()
    return url
