"""How listing and writing costs grow with the size of one partition, on Redis (and PostgreSQL when given).

    python benchmarks/redis_sizes.py --sizes 1000 10000 50000
    python benchmarks/redis_sizes.py --postgresql postgresql://postgres@127.0.0.1/test

Each size fills one partition with records ``{"n", "group", "title"}`` through the public storage API, then times
(median of several runs, milliseconds):

* ``page``: the default listing, newest first, one page of 10 (served from the sorted set on Redis);
* ``since``: the changes after the newest 1 % of writes, tombstones included (``_since`` sync, sorted set);
* ``filter``: one page of the records of one group (a field filter: the whole partition is read on Redis);
* ``sort``: one page sorted by title (a field sort: the whole partition is read on Redis);
* ``create``: one plain write; ``unique``: one write checking a unique field (scans the partition on Redis).

The Redis data lives under its own key prefix and is removed at the end; on PostgreSQL the benchmark writes to its
own partition and deletes it at the end, so it can run against a database in use.
"""
from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Any, Callable, Dict, List

from wsgicliquet.storage import COMPARISON, Filter, Sort, Storage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.timing import median_ms  # noqa: E402

COLLECTION = "bench"
OPERATIONS = ["page", "since", "filter", "sort", "create", "unique"]


def measure(storage: Storage, size: int, runs: int) -> Dict[str, float]:
    parent = f"size-{size}-{uuid.uuid4().hex[:8]}"
    stamps: List[int] = []
    for index in range(size):
        record = storage.create(COLLECTION, parent, {"n": index, "group": index % 10, "title": f"t{index * 7919 % size}"})
        stamps.append(record["last_modified"])
    since = stamps[-max(1, size // 100)]
    newest_first = [Sort("last_modified", -1)]

    def write(unique: bool) -> None:
        record = storage.create(COLLECTION, parent, {"title": uuid.uuid4().hex}, unique_fields=["title"] if unique else ())
        storage.delete(COLLECTION, parent, record["id"], with_deleted=False)

    calls: Dict[str, Callable[[], Any]] = {
        "page": lambda: storage.get_all(COLLECTION, parent, sorting=newest_first, limit=11),
        "since": lambda: storage.get_all(COLLECTION, parent, filters=[Filter("last_modified", since, COMPARISON.GT)],
                                         include_deleted=True),
        "filter": lambda: storage.get_all(COLLECTION, parent, filters=[Filter("group", 3, COMPARISON.EQ)],
                                          sorting=newest_first, limit=11),
        "sort": lambda: storage.get_all(COLLECTION, parent, sorting=[Sort("title", 1), Sort("last_modified", -1)],
                                        limit=11),
        "create": lambda: write(False),
        "unique": lambda: write(True),
    }
    try:
        return {name: median_ms(call, runs) for name, call in calls.items()}
    finally:
        storage.delete_all(COLLECTION, parent, with_deleted=False)
        storage.purge_deleted(COLLECTION, parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--postgresql", default="", help="also measure this PostgreSQL database")
    options = parser.parse_args()

    backends: Dict[str, Storage] = {}
    if options.redis:
        from wsgicliquet.storage.redis import Storage as RedisStorage

        backends["redis"] = RedisStorage.from_settings({"storage_url": options.redis,
                                                        "storage_key_prefix": "wsgicliquet-bench:"})
    if options.postgresql:
        from wsgicliquet.storage.postgresql import Storage as PostgreSQLStorage

        backends["postgresql"] = PostgreSQLStorage.from_settings({"storage_url": options.postgresql})
        backends["postgresql"].initialize_schema()

    print("| backend | records | " + " | ".join(f"{name} (ms)" for name in OPERATIONS) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in OPERATIONS) + " |")
    for size in options.sizes:
        for name, storage in backends.items():
            timings = measure(storage, size, options.runs)
            print(f"| {name} | {size} | " + " | ".join(f"{timings[op]:.2f}" for op in OPERATIONS) + " |",
                  flush=True)
    if "redis" in backends:
        backends["redis"].flush()


if __name__ == "__main__":
    main()
