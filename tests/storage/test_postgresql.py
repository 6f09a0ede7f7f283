"""PostgreSQL storage: the contract suite, plus what only this backend has (schema versions, SQL safety, pool
recovery, transactions, one-round-trip listings, the per-partition count of live records).

These modules run in their own database (``wsgicliquet_pg_tests`` beside the one of ``postgresql_url``), so that
their ``flush()`` calls never race with other test runs using the shared database.
"""
from __future__ import annotations

import multiprocessing
import os
import random
import threading
import urllib.parse
import uuid
from typing import Any, Dict, Iterator, List, Tuple

import psycopg2
import pytest

from tests.backends import emptied
from wsgicliquet import postgresql as pg
from wsgicliquet.storage import (COMPARISON, BackendError, Filter, PreconditionFailed, RecordNotFoundError, Sort,
                                 UnicityError)
from wsgicliquet.storage.postgresql import MIGRATIONS, SCHEMA_VERSION, Storage
from wsgicliquet.storage.testing import StorageContract, run_concurrently

pytestmark = pytest.mark.postgresql

C, P = "items", "alice"


def admin_execute(url: str, query: str, params: Any = None) -> List[Any]:
    """Run one statement on a connection of its own (outside the pools under test)."""
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        conn.close()


@pytest.fixture
def storage(pg_url: str) -> Iterator[Storage]:
    yield from emptied(Storage.from_settings({"storage_url": pg_url, "storage_pool_size": 10}))


class TestPostgreSQLStorage(StorageContract):
    """The shared contract suite; its large partition is smaller, as PostgreSQL writes take milliseconds each (SQL
    lists have no size limit like Redis scripts do)."""

    large_partition = 1_000


# --- schema --------------------------------------------------------------------------------------------------------


@pytest.fixture
def empty_schema_url(pg_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh, empty PostgreSQL schema (a never-migrated database)."""
    admin_execute(pg_url, "DROP SCHEMA IF EXISTS never_migrated CASCADE; CREATE SCHEMA never_migrated")
    yield pg_url + ("&" if "?" in pg_url else "?") + urllib.parse.urlencode(
        {"options": "-c search_path=never_migrated", "application_name": "never_migrated"},
        quote_via=urllib.parse.quote)
    admin_execute(pg_url, "DROP SCHEMA IF EXISTS never_migrated CASCADE")


def test_unmigrated_database_names_the_migrate_command(empty_schema_url: str) -> None:
    storage = Storage.from_settings({"storage_url": empty_schema_url})  # building it never fails
    with pytest.raises(BackendError, match=r"wsgicliquet migrate --ini"):
        storage.get_all(C, P)
    assert storage.ping() is False
    storage.initialize_schema(dry_run=True)
    with pytest.raises(BackendError, match=r"wsgicliquet migrate --ini"):
        storage.collection_timestamp(C, P)
    storage.initialize_schema()
    storage.initialize_schema()  # idempotent
    assert storage.get_all(C, P) == ([], 0)
    rows = admin_execute(empty_schema_url, "SELECT name, value FROM never_migrated.metadata")
    assert rows == [("wsgicliquet.storage.schema_version", str(SCHEMA_VERSION))]


def test_migrations_apply_in_order_once(empty_schema_url: str) -> None:
    client = pg.Client(empty_schema_url, pool_size=2)
    steps = [(1, "CREATE TABLE t (a INT)"), (2, "ALTER TABLE t ADD COLUMN b INT")]
    assert pg.migrate(client, "demo", steps[:1]) == ["demo 1"]
    assert pg.migrate(client, "demo", steps) == ["demo 2"]
    assert pg.migrate(client, "demo", steps) == []
    client.check_schema("demo", 2)
    with pytest.raises(pg.SchemaError, match="version 2, this release needs 3"):
        pg.Client(empty_schema_url).check_schema("demo", 3)
    with pytest.raises(pg.SchemaError, match="newer than this release"):
        pg.Client(empty_schema_url).check_schema("demo", 1)
    client.close()


def test_first_migration_refuses_foreign_tables(empty_schema_url: str) -> None:
    admin_execute(empty_schema_url, "CREATE TABLE never_migrated.records (id TEXT, last_modified TIMESTAMP)")
    storage = Storage(pg.Client(empty_schema_url, pool_size=1))
    with pytest.raises(pg.SchemaError, match="'records' exists but was not created by wsgicliquet"):
        storage.initialize_schema()
    assert admin_execute(empty_schema_url, "SELECT to_regclass('never_migrated.timestamps')") == [(None,)]


def test_first_migration_refuses_a_database_not_in_utf8(postgresql_url: str) -> None:
    name = f"wsgicliquet_ascii_{uuid.uuid4().hex[:8]}"
    admin_execute(postgresql_url, f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0")
    try:
        parts = urllib.parse.urlsplit(postgresql_url)
        client = pg.Client(urllib.parse.urlunsplit(parts._replace(path="/" + name)), pool_size=1)
        with pytest.raises(pg.SchemaError, match="uses the SQL_ASCII encoding; wsgicliquet needs UTF8"):
            Storage(client).initialize_schema()
        assert client.schema_version("storage") is None, "nothing was created"
        client.close()
    finally:
        admin_execute(postgresql_url, f"DROP DATABASE {name} WITH (FORCE)")


def test_upgrade_from_version_1_keeps_the_records(empty_schema_url: str) -> None:
    client = pg.Client(empty_schema_url, pool_size=2)
    assert pg.migrate(client, "storage", MIGRATIONS[:1]) == ["storage 1"]
    admin_execute(empty_schema_url, "INSERT INTO never_migrated.records VALUES ('c', 'p', 'old', 5, FALSE, '{\"a\": 1}');"
                  "INSERT INTO never_migrated.timestamps VALUES ('c', 'p', 5)")
    storage = Storage(client)
    storage.initialize_schema()
    assert storage.get_all("c", "p") == ([{"id": "old", "last_modified": 5, "a": 1}], 1)
    with pytest.raises(UnicityError):
        storage.create("c", "p", {"id": "old"})
    assert storage.create("c", "p", {"a": 1}, unique_fields=["b"])["last_modified"] > 5
    client.close()


def test_upgrade_from_version_2_counts_the_live_records(empty_schema_url: str) -> None:
    client = pg.Client(empty_schema_url, pool_size=2)
    assert pg.migrate(client, "storage", MIGRATIONS[:2]) == ["storage 1", "storage 2"]
    write = "SELECT * FROM wsgicliquet_write(%s, 'c', %s, %s, '{}', NULL, NULL, FALSE, FALSE, NULL, NULL)"
    for action, parent_id, object_id in [("write", "p", "a"), ("write", "p", "b"), ("write", "p", "c"),
                                         ("tombstone", "p", "b"), ("remove", "p", "c"), ("write", "p", "d"),
                                         ("write", "tombstones", "e"), ("tombstone", "tombstones", "e"),
                                         ("write", "emptied", "f"), ("remove", "emptied", "f")]:
        admin_execute(empty_schema_url, write, (action, parent_id, object_id))
    # Rows loaded by hand, without their counter row.
    admin_execute(empty_schema_url, "INSERT INTO records VALUES ('c', 'by-hand', 'g', 7, FALSE, '{}'), "
                                    "('c', 'by-hand', 'h', 8, TRUE, '{\"deleted\": true}')")
    storage = Storage(client)
    stamps = {parent_id: storage.client.execute(
        "SELECT last_modified FROM timestamps WHERE parent_id = %s", (parent_id,), fetch="one")[0]
        for parent_id in ("p", "tombstones", "emptied")}
    with pytest.raises(pg.SchemaError, match=f"version 2, this release needs {SCHEMA_VERSION}"):
        storage.get_all("c", "p")
    assert pg.migrate(client, "storage", MIGRATIONS)[0] == "storage 3"
    assert check_live_counts(empty_schema_url) == {("c", "p"): 2, ("c", "tombstones"): 0, ("c", "emptied"): 0,
                                                   ("c", "by-hand"): 1}
    assert {parent_id: storage.collection_timestamp("c", parent_id) for parent_id in stamps} == stamps
    assert storage.collection_timestamp("c", "by-hand") == 8
    assert [storage.get_all("c", parent_id)[1] for parent_id in ("p", "tombstones", "emptied", "by-hand")] == [
        2, 0, 0, 1]
    storage.create("c", "p", {"id": "b"})  # over its tombstone
    storage.delete("c", "by-hand", "g")
    assert check_live_counts(empty_schema_url) == {("c", "p"): 3, ("c", "tombstones"): 0, ("c", "emptied"): 0,
                                                   ("c", "by-hand"): 0}
    client.close()


def test_upgrade_from_version_3_keeps_counting(empty_schema_url: str) -> None:
    """Versions 4 and 5 only replace wsgicliquet_write(): what version 3 wrote is read and written on as before."""
    client = pg.Client(empty_schema_url, pool_size=2)
    assert pg.migrate(client, "storage", MIGRATIONS[:3])[-1] == "storage 3"
    write = "SELECT * FROM wsgicliquet_write(%s, 'c', 'p', %s, '{}', NULL, NULL, FALSE, FALSE, NULL, NULL)"
    for action, object_id in [("write", "a"), ("write", "b"), ("write", "c"), ("tombstone", "b")]:
        admin_execute(empty_schema_url, write, (action, object_id))
    storage = Storage(client)
    stamp = admin_execute(empty_schema_url, "SELECT last_modified FROM timestamps")[0][0]
    assert pg.migrate(client, "storage", MIGRATIONS) == [f"storage {v}" for v in range(4, SCHEMA_VERSION + 1)]
    kept = storage.get("c", "p", "a")
    with storage.transaction():
        revived = storage.create("c", "p", {"id": "b", "n": 1})  # over its tombstone
        storage.delete("c", "p", "c", with_deleted=False)
        created = storage.create("c", "p", {"id": "d"})
    assert stamp < revived["last_modified"] < created["last_modified"] == storage.collection_timestamp("c", "p")
    assert check_live_counts(empty_schema_url) == {("c", "p"): 3}
    assert storage.get_all("c", "p") == ([created, revived, kept], 3)
    client.close()


def test_backends_on_one_url_share_one_pool(pg_url: str) -> None:
    first = Storage.from_settings({"storage_url": pg_url, "storage_pool_size": 3})
    second = Storage.from_settings({"other_url": pg_url, "other_pool_size": 30}, prefix="other")
    assert first.client is second.client and first.client.pool_size >= 30


# --- timestamps ----------------------------------------------------------------------------------------------------


def test_reads_never_write(storage: Storage, pg_url: str) -> None:
    assert storage.collection_timestamp(C, P) == 0
    storage.get_all(C, P, include_deleted=True)
    assert admin_execute(pg_url, "SELECT count(*) FROM timestamps") == [(0,)]


def test_refused_write_leaves_the_counter_alone_inside_a_transaction(storage: Storage) -> None:
    storage.create(C, P, {"id": "a", "email": "x"})
    stamp = storage.collection_timestamp(C, P)
    with storage.transaction():
        with pytest.raises(UnicityError):
            storage.create(C, P, {"email": "x"}, unique_fields=["email"])
        created = storage.create(C, P, {"email": "y"}, unique_fields=["email"])
    assert created["last_modified"] > stamp
    assert storage.collection_timestamp(C, P) == created["last_modified"]


def test_a_waiting_writer_is_stamped_after_the_holder_commits(storage: Storage) -> None:
    """Commit order equals timestamp order (PROTOCOL.md §21.4): the partition lock is held until commit."""
    holder_wrote, release = threading.Event(), threading.Event()
    stamps: Dict[str, int] = {}

    def holder() -> None:
        with storage.transaction():
            stamps["holder"] = storage.create(C, P, {"who": "holder"})["last_modified"]
            holder_wrote.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    assert holder_wrote.wait(5)
    waiter = threading.Thread(target=lambda: stamps.__setitem__("waiter", storage.create(C, P, {})["last_modified"]))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive(), "a second writer of the partition waits for the first to commit"
    # A reader meanwhile sees neither write, and a timestamp below both.
    assert storage.get_all(C, P) == ([], 0) and storage.collection_timestamp(C, P) == 0
    release.set()
    thread.join(5)
    waiter.join(5)
    assert stamps["waiter"] > stamps["holder"]
    # Another partition is never blocked.
    assert storage.create(C, "bob", {})["last_modified"] > 0


def locked_elsewhere(url: str, parent_id: str) -> bool:
    """Whether another transaction holds the lock of partition ``(C, parent_id)`` (its counter row)."""
    try:
        admin_execute(url, "SELECT 1 FROM timestamps WHERE collection_id = %s AND parent_id = %s "
                           "FOR NO KEY UPDATE NOWAIT", (C, parent_id))
    except psycopg2.errors.LockNotAvailable:
        return True
    return False


def test_a_transaction_writing_many_times_holds_the_lock_until_commit(storage: Storage, pg_url: str) -> None:
    """The lock is taken by the first write of a partition in a transaction only; it is held for every later write,
    refused ones included, whatever other partitions are written in between, until the commit."""
    storage.create(C, P, {"id": "taken"})
    storage.create(C, "bob", {})
    holder_wrote, release = threading.Event(), threading.Event()
    stamps: Dict[str, List[int]] = {"holder": []}

    def holder() -> None:
        with storage.transaction():
            for index in range(3):
                stamps["holder"].append(storage.create(C, P, {"n": index})["last_modified"])
                stamps["holder"].append(storage.create(C, "bob", {"n": index})["last_modified"])
            with pytest.raises(UnicityError):
                storage.create(C, P, {"id": "taken"})
            holder_wrote.set()
            release.wait(5)
            stamps["holder"].append(storage.create(C, P, {"n": 3})["last_modified"])

    thread = threading.Thread(target=holder)
    thread.start()
    assert holder_wrote.wait(5)
    assert locked_elsewhere(pg_url, P) and locked_elsewhere(pg_url, "bob")
    waiter = threading.Thread(target=lambda: stamps.__setitem__("waiter", [storage.create(C, P, {})["last_modified"]]))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive(), "a writer of the partition waits for the transaction that wrote it to commit"
    release.set()
    thread.join(5)
    waiter.join(5)
    assert stamps["waiter"][0] > max(stamps["holder"])
    assert not locked_elsewhere(pg_url, P) and not locked_elsewhere(pg_url, "bob")
    assert storage.get_all(C, P)[1] == 6


def test_a_savepoint_rolled_back_gives_the_lock_back_and_the_next_write_takes_it_again(storage: Storage,
                                                                                       pg_url: str) -> None:
    storage.create(C, P, {})
    with storage.transaction():
        storage.client.execute("SAVEPOINT before_the_lock")
        storage.create(C, P, {"n": 1})
        assert locked_elsewhere(pg_url, P)
        storage.client.execute("ROLLBACK TO SAVEPOINT before_the_lock")
        assert not locked_elsewhere(pg_url, P)
        created = storage.create(C, P, {"n": 2})
        assert locked_elsewhere(pg_url, P), "the write after the rollback locked the partition again"
    assert storage.get_all(C, P)[0][0] == created and storage.get_all(C, P)[1] == 2

def test_a_flush_inside_a_transaction_lets_the_next_writes_lock_again(storage: Storage) -> None:
    """flush() deletes the counter rows, those locked by its own transaction included: the next write of such a
    partition creates and locks the row again instead of counting on the lock noted before."""
    with storage.transaction():
        storage.create(C, P, {"n": 1})
        storage.flush()
        created = storage.create(C, P, {"n": 2})
        deleted = storage.delete(C, P, storage.create(C, P, {"n": 3})["id"])
    assert storage.get_all(C, P) == ([created], 1)
    assert storage.collection_timestamp(C, P) == deleted["last_modified"] > created["last_modified"]


def test_a_counter_row_deleted_under_a_held_lock_fails_the_write_instead_of_writing_without_a_timestamp(
        storage: Storage) -> None:
    kept = storage.create(C, P, {"n": 1})
    with pytest.raises(BackendError, match="has no counter row"):
        with storage.transaction():
            storage.create(C, P, {"n": 2})
            storage.client.execute("DELETE FROM timestamps")  # by hand: flush() would let the next write lock again
            storage.delete(C, P, kept["id"], with_deleted=False)
    assert storage.get_all(C, P) == ([kept], 1)



def test_a_write_over_a_tombstone_being_purged_stores_the_record(storage: Storage, pg_url: str) -> None:
    """purge_deleted() takes no partition lock: a write that found the tombstone may find it gone when it writes."""
    storage.create(C, P, {"id": "x"})
    storage.delete(C, P, "x")
    purging, purged = threading.Event(), threading.Event()

    def purge() -> None:
        with storage.transaction():
            assert storage.purge_deleted(C, P) == 1
            purging.set()
            purged.wait(5)

    purger = threading.Thread(target=purge)
    purger.start()
    assert purging.wait(5)
    written: Dict[str, Any] = {}
    writer = threading.Thread(target=lambda: written.update(storage.create(C, P, {"id": "x", "n": 1})))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive(), "the write waits for the tombstone the purge is deleting"
    purged.set()
    purger.join(5)
    writer.join(5)
    assert written["n"] == 1
    assert storage.get(C, P, "x") == written
    assert check_live_counts(pg_url) == {(C, P): 1}


# --- listings ------------------------------------------------------------------------------------------------------

NUMBERS = [3, 1.5, -2, 1, None, 3, 10**20, 0]
STRINGS = ["b", "a", "B", "é", "", "a", "10", "Z"]


@pytest.mark.parametrize("sorting, filters", [
    pytest.param([Sort("v", 1)], [], id="data-asc"),
    pytest.param([Sort("v", -1)], [], id="data-desc"),
    pytest.param([Sort("v", 1), Sort("w", -1)], [], id="two-data-fields"),
    pytest.param([Sort("w", -1), Sort("id", 1)], [], id="data-then-id"),
    pytest.param([Sort("id", -1)], [], id="id"),
    pytest.param([Sort("v", 1), Sort("v", -1)], [], id="same-field-twice"),
    pytest.param([Sort("s", 1)], [], id="strings-code-point-order"),
    pytest.param([Sort("s", -1), Sort("v", 1)], [], id="strings-then-numbers"),
    pytest.param([Sort("w", 1)], [Filter("w", 1, COMPARISON.GT)], id="filtered"),
    pytest.param([Sort("last_modified", 1)], [], id="last-modified"),
])
def test_pages_walk_the_same_order_as_the_whole_listing(storage: Storage, sorting: List[Sort],
                                                       filters: List[Filter]) -> None:
    """Limited pages (one scan of the sort keys, then the bodies) agree with the unlimited listing."""
    from wsgicliquet.storage.query import keyset_rules

    if sorting[-1].field != "last_modified":
        sorting = sorting + [Sort("last_modified", -1)]  # as the resource app does: a unique last key
    for i in range(24):
        record: Dict[str, Any] = {"w": i % 4}
        if i % 5:
            record["v"], record["s"] = NUMBERS[i % len(NUMBERS)], STRINGS[i % len(STRINGS)]
        storage.create(C, P, record)
    storage.create(C, P, {"id": "gone", "v": 0})
    storage.delete(C, P, "gone")
    expected, total = storage.get_all(C, P, filters=filters, sorting=sorting)
    walked: List[Any] = []
    rules: List[Any] = []
    for _ in range(len(expected) + 2):
        page, page_total = storage.get_all(C, P, filters=filters, sorting=sorting, pagination_rules=rules, limit=4)
        assert page_total == total
        walked.extend(page)
        if len(page) < 4:
            break
        rules = keyset_rules(page[-1], sorting)
    assert walked == expected and len(walked) == total > 0
    assert storage.get_all(C, P, filters=filters, sorting=sorting, limit=0) == ([], total)


HOSTILE = [
    "'; DROP TABLE records; --",
    "a' OR '1'='1",
    "\\",
    "%",
    "_",
    "{}",
    "%s",
    "%(cid)s",
    "$1",
    "\x00",
    "nul\x00in the middle",
    "\ud800",
    "data #> '{a}'",
]


@pytest.mark.parametrize("text", HOSTILE, ids=[repr(text) for text in HOSTILE])
def test_hostile_fields_and_values_give_correct_results(storage: Storage, text: str) -> None:
    storage.create(C, P, {"id": "plain", "title": "plain", "n": 1})
    storage.create(C, P, {"id": "percent", "title": "100%_\\", "n": 2})
    for operator in COMPARISON:
        value: Any = [text] if operator in (COMPARISON.IN, COMPARISON.EXCLUDE, COMPARISON.CONTAINS,
                                            COMPARISON.CONTAINS_ANY) else text
        for field in ("title", text, f"title.{text}", "id"):
            records, total = storage.get_all(C, P, filters=[Filter(field, value, operator)],
                                             sorting=[Sort(field, 1), Sort("last_modified", -1)])
            assert total == len(records)
    # Spot checks of the results themselves.
    assert storage.get_all(C, P, filters=[Filter("title", text, COMPARISON.EQ)]) == ([], 0)
    assert storage.get_all(C, P, filters=[Filter("title", text, COMPARISON.NOT)])[1] == 2
    assert storage.get_all(C, P, filters=[Filter(text, 1, COMPARISON.EQ)]) == ([], 0)
    assert storage.get_all(C, P)[1] == 2, "the table is still there"


@pytest.mark.parametrize("text", [text for text in HOSTILE if "\x00" not in text and "\ud800" not in text])
def test_hostile_unique_fields_are_checked(storage: Storage, text: str) -> None:
    first = storage.create(C, P, {text: {text: text}})
    with pytest.raises(UnicityError) as raised:
        storage.create(C, P, {text: {text: text}}, unique_fields=["other", f"{text}.{text}"])
    assert raised.value.field == f"{text}.{text}" and raised.value.record == first
    storage.create(C, P, {text: {text: "other"}}, unique_fields=[f"{text}.{text}"])
    assert storage.get_all(C, P)[1] == 2


@pytest.mark.parametrize("pattern, expected", [
    pytest.param("%", ["percent"], id="percent-is-literal"),
    pytest.param("_", ["percent"], id="underscore-is-literal"),
    pytest.param("\\", ["percent"], id="backslash-is-literal"),
    pytest.param("100*\\", ["percent"], id="glob-and-backslash"),
    pytest.param("*", ["percent", "plain"], id="star-matches-all"),
])
def test_like_escapes_sql_wildcards(storage: Storage, pattern: str, expected: List[str]) -> None:
    storage.create(C, P, {"id": "plain", "title": "plain"})
    storage.create(C, P, {"id": "percent", "title": "100%_\\"})
    records, _ = storage.get_all(C, P, filters=[Filter("title", pattern, COMPARISON.LIKE)], sorting=[Sort("id", 1)])
    assert [record["id"] for record in records] == expected


@pytest.mark.parametrize("operator, value, expected", [
    pytest.param(COMPARISON.LT, "b\x00z", ["a", "b"], id="lt"),
    pytest.param(COMPARISON.MIN, "b\x00z", ["ba", "c"], id="min"),
])
def test_string_comparison_with_nul(storage: Storage, operator: COMPARISON, value: str, expected: List[str]) -> None:
    for text in ("a", "b", "ba", "c"):
        storage.create(C, P, {"id": text, "s": text})
    records, _ = storage.get_all(C, P, filters=[Filter("s", value, operator)], sorting=[Sort("s", 1)])
    assert [record["id"] for record in records] == expected


def test_strings_compare_by_code_point(storage: Storage) -> None:
    for text in ("b", "B", "é", "a", "Z", "☕"):
        storage.create(C, P, {"s": text})
    records, _ = storage.get_all(C, P, sorting=[Sort("s", 1)])
    assert [record["s"] for record in records] == sorted(["b", "B", "é", "a", "Z", "☕"])
    records, _ = storage.get_all(C, P, filters=[Filter("s", "b", COMPARISON.GT)])
    assert sorted(record["s"] for record in records) == ["é", "☕"]


def test_page_and_total_in_one_statement(storage: Storage) -> None:
    query = storage.list_query(C, P, filters=[Filter("n", 1, COMPARISON.GT)], sorting=[Sort("n", -1)],
                               pagination_rules=[[Filter("n", 5, COMPARISON.LT)]], limit=20)
    conn = psycopg2.connect(storage.client.url)
    text = query.as_string(conn)
    conn.close()
    assert text.count("SELECT") >= 2 and "LIMIT 20" in text and "count(*)" in text
    for index in range(10):
        storage.create(C, P, {"n": index})
    records, total = storage.get_all(C, P, filters=[Filter("n", 1, COMPARISON.GT)], sorting=[Sort("n", -1)],
                                     pagination_rules=[[Filter("n", 5, COMPARISON.LT)]], limit=2)
    assert [record["n"] for record in records] == [4, 3] and total == 8


def test_filters_on_columns_with_other_types(storage: Storage) -> None:
    created = storage.create(C, P, {"id": "r1"})
    assert storage.get_all(C, P, filters=[Filter("last_modified", str(created["last_modified"]),
                                                 COMPARISON.EQ)]) == ([], 0)
    assert storage.get_all(C, P, filters=[Filter("id", 1, COMPARISON.GT)]) == ([], 0)
    assert storage.get_all(C, P, filters=[Filter("last_modified", 1.5, COMPARISON.GT)])[1] == 1
    assert storage.get_all(C, P, filters=[Filter("last_modified", [1, created["last_modified"]],
                                                 COMPARISON.IN)])[1] == 1


# --- count of live records ----------------------------------------------------------------------------------------


def check_live_counts(url: str) -> Dict[Tuple[str, str], int]:
    """Assert that every partition's counter row holds the number of its live records; return these numbers."""
    rows = admin_execute(url, """
        SELECT collection_id, parent_id, t.live, coalesce(r.n, 0) FROM timestamps t FULL JOIN (
            SELECT collection_id, parent_id, count(*) FILTER (WHERE NOT deleted) AS n FROM records
            GROUP BY collection_id, parent_id
        ) r USING (collection_id, parent_id)
    """)
    counted = {(cid, pid): n for cid, pid, _, n in rows}
    assert {(cid, pid): live for cid, pid, live, _ in rows} == counted
    return counted


def test_live_count_follows_every_write(storage: Storage, pg_url: str) -> None:
    def check(expected: int, other: int = 1) -> None:
        assert check_live_counts(pg_url) == {(C, P): expected, (C, "other"): other}
        assert storage.get_all(C, P)[1] == expected

    for index in range(6):
        storage.create(C, P, {"id": f"r{index}", "n": index})
    storage.create(C, "other", {"id": "x"})
    check(6)
    storage.update(C, P, "r0", {"n": 10})
    storage.update(C, P, "new", {"n": 6})  # an update of a missing id creates it
    storage.delete(C, P, "r1")
    storage.delete(C, P, "r2", with_deleted=False)
    check(5)
    storage.create(C, P, {"id": "r1"})  # over its tombstone
    storage.delete(C, P, "r1", if_match=storage.get(C, P, "r1")["last_modified"])
    storage.update(C, P, "r1", {"n": 1})  # an update over a tombstone revives it
    check(6)
    with pytest.raises(UnicityError):
        storage.create(C, P, {"id": "r0"})
    with pytest.raises(UnicityError):
        storage.create(C, P, {"n": 3}, unique_fields=["n"])
    with pytest.raises(PreconditionFailed):
        storage.update(C, P, "r3", {}, if_match=1)
    for object_id in ("r2", "never"):
        with pytest.raises(RecordNotFoundError):
            storage.delete(C, P, object_id, with_deleted=False)
    check(6)
    assert len(storage.delete_all(C, P, [Filter("n", 4, COMPARISON.MIN)])) == 4  # r0 r4 r5 new
    assert len(storage.delete_all(C, P, [Filter("n", 3, COMPARISON.EQ)], with_deleted=False)) == 1
    assert storage.delete_all(C, P, [Filter("n", 3, COMPARISON.EQ)]) == []
    check(1)
    assert storage.purge_deleted(C, P) == 4
    storage.create(C, P, {"id": "r4"})  # a purged id
    check(2)
    with pytest.raises(RuntimeError):
        with storage.transaction():
            storage.create(C, P, {"id": "rolled back"})
            storage.delete(C, P, "r1")
            storage.delete_all(C, "other")
            totals_inside = (storage.get_all(C, P)[1], storage.get_all(C, "other")[1])
            raise RuntimeError("boom")
    assert totals_inside == (2, 0), "a transaction sees its own writes in the total"
    check(2)
    with storage.transaction():
        storage.create(C, P, {"id": "committed"})
        storage.delete(C, P, "r4")
        storage.create(C, "other", {"id": "y"})
    check(2, other=2)
    storage.delete_all(C, P, [Filter("id", True, COMPARISON.HAS)])  # always true
    check(0, other=2)


def test_live_count_is_exact_under_concurrent_writers(storage: Storage, pg_url: str) -> None:
    """Writers of one partition race on the same ids with every kind of write; the count stays exact."""
    def write(slot: int) -> None:
        rng = random.Random(slot)
        for _ in range(40):
            object_id, action = f"shared-{rng.randrange(6)}", rng.randrange(6)
            try:
                if action == 0:
                    storage.create(C, P, {"id": object_id, "slot": slot})
                elif action == 1:
                    storage.delete(C, P, object_id, with_deleted=rng.random() < 0.5)
                elif action == 2:
                    storage.update(C, P, object_id, {"slot": slot})
                elif action == 3:
                    with storage.transaction():
                        storage.create(C, P, {"slot": slot})
                        storage.delete_all(C, P, [Filter("id", object_id, COMPARISON.EQ)])
                elif action == 4:
                    storage.delete_all(C, P, [Filter("slot", slot, COMPARISON.EQ)], with_deleted=rng.random() < 0.5)
                else:
                    storage.purge_deleted(C, P)
            except (UnicityError, RecordNotFoundError):
                pass

    assert run_concurrently(8, write) == [None] * 8
    counted = check_live_counts(pg_url)
    records, total = storage.get_all(C, P)
    assert total == len(records) == counted[(C, P)] > 0


def explain(storage: Storage, **listing: Any) -> List[Dict[str, Any]]:
    """Every node of the executed plan of a listing query."""
    conn = psycopg2.connect(storage.client.url)
    try:
        text = storage.list_query(C, P, **listing).as_string(conn)
    finally:
        conn.close()
    plan = admin_execute(storage.client.url, "EXPLAIN (ANALYZE, FORMAT JSON) " + text)[0][0][0]["Plan"]
    nodes, pending = [], [plan]
    while pending:
        node = pending.pop()
        nodes.append(node)
        pending.extend(node.get("Plans", []))
    return nodes


@pytest.mark.parametrize("listing", [
    pytest.param({"limit": 5}, id="default-order"),
    pytest.param({"limit": 5, "include_deleted": True}, id="include-deleted"),
    pytest.param({"limit": 5, "filters": [Filter("id", True, COMPARISON.HAS), Filter("s", "\x00", COMPARISON.NOT)]},
                 id="always-true-filters"),
    pytest.param({}, id="no-limit"),
    pytest.param({"limit": 5, "sorting": [Sort("n", 1), Sort("last_modified", -1)]}, id="sorted-on-data"),
])
def test_unfiltered_total_reads_the_counter_row(storage: Storage, listing: Dict[str, Any]) -> None:
    for index in range(30):
        storage.create(C, P, {"n": index % 7})
    storage.delete_all(C, P, [Filter("n", 0, COMPARISON.EQ)])
    nodes = explain(storage, **listing)
    assert "Aggregate" not in {node["Node Type"] for node in nodes}, "no count(*) of the records"
    assert any(node.get("Relation Name") == "timestamps" for node in nodes)
    # The records are read for the page only: one scan, or one scan and the fetch of the page's bodies.
    scans = [node for node in nodes if node.get("Relation Name") == "records"]
    assert len(scans) == (2 if "sorting" in listing else 1), scans
    assert storage.get_all(C, P, **listing)[1] == 25


def test_filtered_total_still_counts(storage: Storage) -> None:
    for index in range(30):
        storage.create(C, P, {"n": index % 7})
    nodes = explain(storage, filters=[Filter("n", 3, COMPARISON.GT)], limit=5)
    assert "Aggregate" in {node["Node Type"] for node in nodes}
    assert all(node.get("Relation Name") != "timestamps" for node in nodes)
    assert storage.get_all(C, P, filters=[Filter("n", 3, COMPARISON.GT)], limit=5)[1] == 12


# --- transactions --------------------------------------------------------------------------------------------------


def test_transaction_rolls_back_everything_on_an_exception(storage: Storage) -> None:
    with pytest.raises(RuntimeError):
        with storage.transaction():
            storage.create(C, P, {"id": "a"})
            with storage.transaction():
                storage.create(C, P, {"id": "b"})
            raise RuntimeError("boom")
    assert storage.get_all(C, P, include_deleted=True) == ([], 0)
    assert storage.collection_timestamp(C, P) == 0


def test_transactions_are_per_thread(storage: Storage) -> None:
    seen: List[Any] = []
    with storage.transaction():
        storage.create(C, P, {"id": "uncommitted"})
        thread = threading.Thread(target=lambda: seen.append(storage.get_all(C, P, include_deleted=True)))
        thread.start()
        thread.join(5)
    assert seen == [([], 0)]
    assert storage.get_all(C, P)[1] == 1


def test_a_transaction_with_a_failed_statement_never_commits(storage: Storage) -> None:
    with pytest.raises(BackendError, match="rolled back"):
        with storage.transaction():
            storage.create(C, P, {"id": "kept?"})
            with pytest.raises(BackendError):
                storage.create(C, P, {"bad": "\x00"})  # PostgreSQL refuses NUL in JSONB
    assert storage.get_all(C, P) == ([], 0)
    assert storage.create(C, P, {})["id"]  # the connection is usable again


# --- faults --------------------------------------------------------------------------------------------------------


def test_unreachable_server_raises_backend_error() -> None:
    storage = Storage(pg.Client("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2", pool_size=2))
    for call in (lambda: storage.get_all(C, P), lambda: storage.create(C, P, {}),
                 lambda: storage.collection_timestamp(C, P), lambda: storage.flush()):
        with pytest.raises(BackendError):
            call()
    assert storage.ping() is False and storage.ping(readonly=True) is False


def _tcp_options(conn: Any) -> Tuple[int, int, int, int, int]:
    """The keepalive and user-timeout options of a connection's socket, as the kernel applies them."""
    import socket

    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))
    finally:
        sock.close()


@pytest.mark.skipif(not hasattr(__import__("socket"), "TCP_USER_TIMEOUT"), reason="Linux socket options")
def test_connections_detect_a_vanished_server_within_a_minute(pg_url: str) -> None:
    """A server gone from the network (host down, cable cut) is noticed by TCP keepalives after about a minute, not
    the system's two hours; parameters the URL sets are kept."""
    client = pg.Client(pg_url, pool_size=1)
    conn = client._connect()
    try:
        alive, idle, interval, count, user_timeout = _tcp_options(conn)
        assert alive and idle + interval * count <= 60 and user_timeout == 60_000
    finally:
        conn.close()
    tuned = pg.Client(pg_url + ("&" if "?" in pg_url else "?") + "keepalives_idle=5&tcp_user_timeout=1500")
    conn = tuned._connect()
    try:
        assert _tcp_options(conn)[1] == 5 and _tcp_options(conn)[4] == 1500
    finally:
        conn.close()


def test_pool_recovers_from_terminated_connections(pg_url: str) -> None:
    url = pg_url + ("&" if "?" in pg_url else "?") + "application_name=wsgicliquet_recovery_test"
    storage = Storage(pg.Client(url, pool_size=4))
    storage.flush()
    barrier = threading.Barrier(4)

    def use() -> None:  # four threads at once: four pooled connections
        with storage.transaction():
            barrier.wait(5)
            storage.create(C, P, {})

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    killed = admin_execute(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE application_name = 'wsgicliquet_recovery_test'")
    assert len(killed) == 4
    # Every dead pooled connection is replaced transparently: nothing had been done on it yet.
    for _ in range(6):
        assert storage.create(C, P, {})["id"]
    assert storage.get_all(C, P)[1] == 10
    storage.client.close()


def test_pool_waits_for_a_free_connection_then_gives_up(pg_url: str) -> None:
    storage = Storage(pg.Client(pg_url, pool_size=1, pool_timeout=0.2))
    storage.flush()
    with storage.transaction():
        storage.create(C, P, {})
        errors: List[BaseException] = []
        thread = threading.Thread(target=lambda: _capture(errors, lambda: storage.get_all(C, P)))
        thread.start()
        thread.join(5)
    assert len(errors) == 1 and isinstance(errors[0], BackendError) and "No PostgreSQL connection" in str(errors[0])
    assert storage.get_all(C, P)[1] == 1
    storage.flush()
    storage.client.close()


def _capture(errors: List[BaseException], call: Any) -> None:
    try:
        call()
    except BaseException as exc:
        errors.append(exc)


def test_migrate_command_creates_every_table(empty_schema_url: str, tmp_path: Any, capsys: Any) -> None:
    from wsgicliquet.__main__ import main
    from wsgicliquet.backends import clear_backends

    ini = tmp_path / "app.ini"
    url = empty_schema_url
    ini.write_text(f"[DEFAULT]\nstorage_url = {url}\ncache_url = {url}\npermission_url = {url}\n")
    clear_backends()
    try:
        assert main(["migrate", "--ini", str(ini)]) == 0
        assert main(["migrate", "--ini", str(ini)]) == 0
    finally:
        clear_backends()
    tables = admin_execute(empty_schema_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'never_migrated' "
                                             "ORDER BY tablename")
    assert [row[0] for row in tables] == ["access_control_entries", "cache", "metadata", "records", "timestamps",
                                          "user_principals"]
    assert "storage: wsgicliquet.storage.postgresql ready" in capsys.readouterr().out


def _create_in_child(storage: Storage) -> None:
    storage.create(C, P, {"id": "from-child"})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_opens_its_own_connections(storage: Storage) -> None:
    """gunicorn --preload forks workers after the app (and maybe its pool) exists: the parent's sockets stay its own."""
    parent_pid = storage.client.execute("SELECT pg_backend_pid()", fetch="one")[0]
    child = multiprocessing.get_context("fork").Process(target=_create_in_child, args=(storage,))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert storage.client.execute("SELECT pg_backend_pid()", fetch="one")[0] == parent_pid
    assert storage.get(C, P, "from-child")["id"] == "from-child"


def test_a_deep_dotted_field_is_built_flat(storage: Storage) -> None:
    """The ``->`` chain of a field is one flat composition: a path of 1,000 parts used to overflow Python's stack
    while the query was built (the HTTP layer refuses such paths, code calling the storage does not)."""
    deep = ".".join(["a"] * 1000)
    storage.create("c", "p", {"a": {"a": 1}})
    assert storage.get_all("c", "p", filters=[Filter(deep, 1, COMPARISON.EQ)]) == ([], 0)
    records, total = storage.get_all("c", "p", sorting=[Sort(deep, 1)])
    assert total == 1 and len(records) == 1
