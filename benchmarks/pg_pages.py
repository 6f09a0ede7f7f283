"""Page 1 vs page 1,000 of a 100,000-record collection on the PostgreSQL storage, and the plan of a filtered page.

    python benchmarks/pg_pages.py [--url postgresql://postgres@127.0.0.1:5432/test] [--records 100000]

The collection is bulk-loaded with one INSERT (creating 100,000 records one by one only measures commits), with
the same row shape ``Storage.create`` writes, then queried through ``Storage.get_all`` exactly as the resource app
does: limit 21 for a page of 20, keyset rules from the previous page's last record.  Prints medians of 15 runs and
the EXPLAIN ANALYZE of each query.  The benchmark collection is removed at the end.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, List, Sequence

from psycopg2 import sql

from wsgicliquet.storage import COMPARISON, Filter, Sort
from wsgicliquet.storage.postgresql import Storage
from wsgicliquet.storage.query import keyset_rules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.timing import median_ms  # noqa: E402

C, P = "benchmark", "pages"
PAGE = 20
RUNS = 15


def load(storage: Storage, count: int) -> None:
    with storage.transaction():
        storage.client.execute("DELETE FROM records WHERE collection_id = %s AND parent_id = %s", (C, P))
        storage.client.execute("""
            INSERT INTO records (collection_id, parent_id, id, last_modified, deleted, data)
            SELECT %(c)s, %(p)s, md5(i::text), %(base)s + i, FALSE,
                   jsonb_build_object('title', 'title ' || lpad((i * 7919 %% %(n)s)::text, 6, '0'),
                                      'status', (ARRAY['todo', 'doing', 'done'])[1 + i %% 3],
                                      'n', i %% 100)
            FROM generate_series(1, %(n)s) AS i
            """, {"c": C, "p": P, "n": count, "base": int(time.time() * 1000) - count})
        storage.client.execute("""
            INSERT INTO timestamps (collection_id, parent_id, last_modified, live)
            SELECT %s, %s, max(last_modified), count(*) FILTER (WHERE NOT deleted)
            FROM records WHERE collection_id = %s AND parent_id = %s
            ON CONFLICT (collection_id, parent_id) DO UPDATE SET last_modified = EXCLUDED.last_modified,
                                                                 live = EXCLUDED.live
            """, (C, P, C, P))
    storage.client.execute("ANALYZE records")


def explain(storage: Storage, **query: Any) -> str:
    statement = sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {}").format(
        storage.list_query(C, P, **query))
    return "\n".join(row[0] for row in storage.client.execute(statement, fetch="all"))


def page_rules(storage: Storage, number: int, filters: Sequence[Filter], sorting: Sequence[Sort]) -> List[Any]:
    """The keyset rules of page ``number``: those built from the last record of the page before."""
    if number == 1:
        return []
    records, _ = storage.get_all(C, P, filters=filters, sorting=sorting, limit=(number - 1) * PAGE)
    return keyset_rules(records[-1], sorting)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    storage = Storage.from_settings({"storage_url": args.url})
    storage.initialize_schema()
    load(storage, args.records)
    cases = [
        ("default order (-last_modified, -id)", [], [Sort("last_modified", -1), Sort("id", -1)]),
        ("status=todo, _sort=title", [Filter("status", "todo", COMPARISON.EQ)],
         [Sort("title", 1), Sort("last_modified", -1), Sort("id", -1)]),
    ]
    try:
        for label, filters, sorting in cases:
            print(f"## {label}")
            for number in (1, 1000):
                rules = page_rules(storage, number, filters, sorting)
                query = dict(filters=filters, sorting=sorting, pagination_rules=rules, limit=PAGE + 1)
                records, total = storage.get_all(C, P, **query)
                assert len(records) == PAGE + 1, (label, number, len(records))
                elapsed = median_ms(lambda: storage.get_all(C, P, **query), RUNS)
                print(f"page {number}: {elapsed:.1f} ms (median of {RUNS}), Total-Records {total}")
                print(explain(storage, **query))
                print()
    finally:
        with storage.transaction():
            storage.client.execute("DELETE FROM records WHERE collection_id = %s AND parent_id = %s", (C, P))
            storage.client.execute("DELETE FROM timestamps WHERE collection_id = %s AND parent_id = %s", (C, P))


if __name__ == "__main__":
    main()
