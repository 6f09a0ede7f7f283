"""In-process costs: each workload called straight through WSGI (no server, no network), in microseconds per
request, plus what each middleware of the pipeline costs and a profile of one workload.

    python benchmarks/costs.py                          # µs per request of every workload, memory storage
    python benchmarks/costs.py --layers                 # cost of each middleware on a Flask pass-through
    python benchmarks/costs.py --profile "get one"      # cProfile of one workload, top functions by own time
    python benchmarks/costs.py --json                   # orjson against the standard library on our payloads
    python benchmarks/costs.py --storage-url postgresql://postgres@127.0.0.1:5432/test --seed

Numbers here have no server overhead, so they show where the time of a request goes; ``run.py`` gives the
throughput a client sees.  ``--seed`` empties (flush) and seeds the PostgreSQL database, like ``run.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from webob import Request  # noqa: E402

from benchmarks import run, targets  # noqa: E402
from wsgicliquet.middleware import collect  # noqa: E402

#: The layers of build_pipeline() that can be switched off one at a time (``middleware.<name> = off``).
LAYERS = ["request_log", "statsd", "cors", "json_errors", "end_of_life", "backoff", "heartbeat", "transaction",
          "batch", "auth", "readonly", "hello", "backends"]


def environ_of(workload: run.Workload, counter: int = 0, etag: Optional[str] = None) -> Dict[str, Any]:
    path, method, body = workload.path, workload.method, workload.body
    headers = workload.headers()
    if workload.patch:
        path = workload.path.format(id=targets.record_id(0, salt=1))
        method, body = "PATCH", run.patch_body(counter)
        headers.update(run.JSON_HEADERS)
        if etag:
            headers["If-Match"] = etag
    return Request.blank(path, method=method, headers=headers, body=body or b"",
                         environ={"SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000"}).environ


def call(app: Callable, environ: Dict[str, Any]) -> tuple:
    status, headers, body, _ = collect(app, environ)
    return int(status.split()[0]), dict(headers), body


def per_request(app: Callable, workload: run.Workload, count: int, rounds: int = 5,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """Best of ``rounds`` of the mean µs per request (environs are built before the clock starts)."""
    return interleaved({"only": (app, workload)}, count, rounds, clock)["only"]


def interleaved(variants: Dict[str, Any], count: int, rounds: int = 5,
                clock: Callable[[], float] = time.perf_counter) -> Dict[str, float]:
    """Best round of each ``name: (app, workload[, context])``, the variants taking turns so that a disturbance
    (another process on the machine) hits them alike; the best round is the least disturbed one.  ``context`` is a
    callable returning a context manager active while its variant runs (a patch of the library)."""
    best: Dict[str, float] = {}
    etags: Dict[str, Optional[str]] = {}
    counter = int(time.time())
    for name, (app, workload, *_) in variants.items():
        if workload.patch:
            answer = call(app, Request.blank(workload.path.format(id=targets.record_id(0, salt=1)),
                                             headers=workload.headers()).environ)
            etags[name] = answer[1].get("ETag")
    for _ in range(rounds):
        for name, (app, workload, *context) in variants.items():
            environs = []
            for _ in range(count):
                counter += 1
                environs.append(environ_of(workload, counter))
            with (context[0]() if context else contextlib.nullcontext()):
                started = clock()
                for environ in environs:
                    if workload.patch:
                        environ["HTTP_IF_MATCH"] = etags[name]
                    status, headers, _ = call(app, environ)
                    if status != workload.expect:
                        raise RuntimeError(f"{workload.name}: {status}")
                    if workload.patch:
                        etags[name] = headers.get("ETag")
                cost = (clock() - started) / count * 1e6
            best[name] = min(cost, best.get(name, cost))
    return best


_apps: Dict[str, Callable] = {}


def _app(target: str) -> Callable:
    if target not in _apps:
        targets.configure_logging()  # the request log renders and writes its events, as in production
        _apps[target] = targets.build(target)
    return _apps[target]


def workload_costs(args: argparse.Namespace) -> None:
    print(f"{'workload':24} µs/request ({'CPU time of this process' if args.clock == 'cpu' else 'wall clock'})")
    for workload in run.workloads(args.records):
        if args.only and not any(workload.name.startswith(name) for name in args.only):
            continue
        count = max(20, args.count // (25 if workload.path == "/v1/batch" else 1))
        if workload.name.startswith(("filtered", "_since")) and "memory" in os.environ["WSGICLIQUET_STORAGE_URL"]:
            count = max(20, count // 20)
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        cost = per_request(_app(workload.target), workload, count, clock=clock)
        print(f"{workload.name:24} {cost:10.1f}", flush=True)


def layer_costs(args: argparse.Namespace) -> None:
    """What each middleware adds to a pass-through request to the Flask app, measured two ways: the full pipeline
    minus that layer, and a pipeline of that layer alone (every switchable layer off but it) minus the pipeline with
    every switchable layer off.  The second isolates a layer; the first shows what it costs among the others.

    Measured in CPU time of this process, so that other processes on the machine do not count.
    """
    from wsgicliquet.pipeline import build_pipeline

    targets.configure_logging()
    flask_app = targets.build("flask_bare")
    on = next(w for w in run.workloads(args.records) if w.name == "flask (pipeline on)")
    off = next(w for w in run.workloads(args.records) if w.name == "flask (pipeline off)")

    def pipeline(*off_layers: str) -> Callable:
        settings = targets.settings()
        for layer in off_layers:
            settings[f"middleware.{layer}"] = "off"
        return build_pipeline(flask_app, settings)

    variants: Dict[str, Any] = {"flask alone": (flask_app, off), "full pipeline": (pipeline(), on),
                                "no layer": (pipeline(*LAYERS), on)}
    for layer in LAYERS:
        variants[f"-{layer}"] = (pipeline(layer), on)
        variants[f"+{layer}"] = (pipeline(*(other for other in LAYERS if other != layer)), on)
    costs = interleaved(variants, args.count, rounds=7, clock=time.process_time)
    base, full, bare = costs["flask alone"], costs["full pipeline"], costs["no layer"]
    print(f"flask alone {base:.1f} µs, with the pipeline {full:.1f} µs (+{full - base:.1f} µs, "
          f"+{(full / base - 1):.0%}), with every switchable layer off {bare:.1f} µs, of CPU per request")
    print(f"{'layer':20} {'full minus it':>14} {'saves':>7} {'alone':>7} {'adds':>7}")
    for layer in LAYERS:
        without, alone = costs[f"-{layer}"], costs[f"+{layer}"]
        print(f"{layer:20} {without:14.1f} {full - without:7.1f} {alone:7.1f} {alone - bare:7.1f}")


def profile(args: argparse.Namespace) -> None:
    workload = next(w for w in run.workloads(args.records) if w.name.startswith(args.profile))
    app = _app(workload.target)
    per_request(app, workload, 50)  # warm up caches
    profiler = cProfile.Profile()
    profiler.enable()
    per_request(app, workload, max(10, args.count // 5))
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(args.sort).print_stats(args.top)
    print(out.getvalue())


# -- what if: the library with one change, against the library as it is -------------------------------------------

@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any) -> Any:
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


@contextlib.contextmanager
def _environment(name: str, value: str) -> Any:
    """A setting override read when an app is built (``targets.settings()`` reads the environment)."""
    original = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if original is None:
            del os.environ[name]
        else:
            os.environ[name] = original


def _fresh(target: str, build_patch: Optional[Callable[[], Any]] = None) -> Callable:
    """A new app on a new storage instance (so that an instrumentation patch applies to it alone)."""
    from wsgicliquet.backends import clear_backends

    clear_backends()
    with (build_patch() if build_patch else contextlib.nullcontext()):
        return targets.build(target)


def what_if(args: argparse.Namespace) -> None:
    """µs of CPU per request with the library as it is, and with one candidate change (patched in memory)."""
    from wsgicliquet import jsonio
    from wsgicliquet.middleware import statsd

    targets.configure_logging()
    workloads = run.workloads(args.records)
    experiments = [
        # (label, workloads, (build patch, run patch) of "before", (build patch, run patch) of "after")
        ("JSON: the json module -> orjson (jsonio)", ["get one", "list 100", "create one",
                                                      "batch of 25 creates"],
         (None, lambda: _patched(jsonio, "_orjson", None)), (None, None)),
        ("StatsD: one packet per response -> aggregated every second",
         ["flask (pipeline on)", "hello"],
         (lambda: _environment("WSGICLIQUET_STATSD_FLUSH_INTERVAL_SECONDS", "0"), None), (None, None)),
        ("StatsD: no per-call backend timers (statsd.instrument_backend)", ["get one", "create one",
                                                                             "batch of 25 creates"],
         (None, None), (lambda: _patched(statsd, "instrument_backend", lambda *a, **k: None), None)),
    ]
    print(f"{'change':64} {'workload':22} {'before':>8} {'after':>8}  µs CPU/request")
    for label, names, before, after in experiments:
        for name in names:
            workload = next(w for w in workloads if w.name.startswith(name))
            variants = {}
            for key, (build_patch, run_patch) in (("before", before), ("after", after)):
                app = _fresh(workload.target, build_patch)
                variants[key] = (app, workload, run_patch) if run_patch else (app, workload)
            count = max(20, args.count // (25 if workload.path == "/v1/batch" else 1))
            costs = interleaved(variants, count, rounds=5, clock=time.process_time)
            print(f"{label:64} {name:22} {costs['before']:8.1f} {costs['after']:8.1f}", flush=True)


def json_costs(args: argparse.Namespace) -> None:
    """orjson against the standard library on a page of 100 records, one record and a batch body."""
    import orjson

    from wsgicliquet.resource.body import parse_json

    records = [dict(targets.seed_record(n), id=targets.record_id(n)) for n in range(100)]
    payloads = {"page of 100 records": {"data": records}, "one record": {"data": records[0]}}
    batch = next(w for w in run.workloads(args.records) if w.path == "/v1/batch").body
    print(f"{'payload':28} {'stdlib µs':>10} {'orjson µs':>10}")
    for name, value in payloads.items():
        std = _timeit(lambda: json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        fast = _timeit(lambda: orjson.dumps(value))
        print(f"dumps {name:22} {std:10.1f} {fast:10.1f}")
    text = json.dumps({"data": records}).encode()
    print(f"{'loads page of 100 records':28} {_timeit(lambda: json.loads(text)):10.1f} "
          f"{_timeit(lambda: orjson.loads(text)):10.1f}")
    print(f"{'loads batch body':28} {_timeit(lambda: json.loads(batch)):10.1f} "
          f"{_timeit(lambda: orjson.loads(batch)):10.1f}")
    print(f"{'body.parse_json(batch body)':28} {_timeit(lambda: parse_json(batch)):10.1f}")


def _timeit(function: Callable[[], Any], count: int = 2000) -> float:
    started = time.perf_counter()
    for _ in range(count):
        function()
    return (time.perf_counter() - started) / count * 1e6


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage-url", default="memory://")
    parser.add_argument("--seed", action="store_true", help="flush and seed the PostgreSQL database first")
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--count", type=int, default=1000, help="requests per round (default 1000)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall clock (default; includes waiting for PostgreSQL) or CPU time of this process")
    parser.add_argument("--only", default="", help="workloads, by name prefix, comma separated")
    parser.add_argument("--layers", action="store_true", help="cost of each middleware")
    parser.add_argument("--profile", metavar="WORKLOAD", help="cProfile one workload (name prefix)")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (default tottime)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", action="store_true", help="orjson against the standard library")
    parser.add_argument("--what-if", action="store_true", help="candidate fixes, patched in memory, before/after")
    args = parser.parse_args(argv)
    args.only = [value.strip() for value in args.only.split(",") if value.strip()]
    os.environ["WSGICLIQUET_STORAGE_URL"] = args.storage_url
    os.environ["BENCHMARK_RECORDS"] = str(args.records)
    if args.seed and args.storage_url.startswith("postgres"):
        run.prepare_postgresql(args.storage_url, args.records)
    if args.json:
        json_costs(args)
    elif args.what_if:
        what_if(args)
    elif args.layers:
        layer_costs(args)
    elif args.profile:
        profile(args)
    else:
        workload_costs(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
