"""Shared fixtures: real PostgreSQL and Redis servers on 127.0.0.1.

Tests that need a server fail in CI when it is missing, and skip with a reason elsewhere.
"""
from __future__ import annotations

import os

import pytest

POSTGRESQL_URL = os.environ.get("WSGICLIQUET_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("WSGICLIQUET_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable: {exc}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgresql_url() -> str:
    try:
        import psycopg2

        psycopg2.connect(POSTGRESQL_URL, connect_timeout=3).close()
    except Exception as exc:  # pragma: no cover - depends on the machine
        _unavailable("PostgreSQL", exc)
    return POSTGRESQL_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # pragma: no cover - depends on the machine
        _unavailable("Redis", exc)
    return REDIS_URL
