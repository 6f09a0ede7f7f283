"""Instructions per request, counted by valgrind (callgrind): the same figure on a quiet or a busy machine.

Timings of a middleware of a few microseconds drown in the noise of a shared machine (``costs.py --layers`` reads
±15 µs from run to run); a count of the machine instructions run does not move.  Each measure runs a fresh Python
twice under ``valgrind --tool=callgrind``, once building the app, its request environs and warming it up, once
doing the same and then ``--requests`` more requests; the difference divided by the requests is the cost of one
request.

    python benchmarks/instructions.py                       # flask alone, with the pipeline, hello, get one
    python benchmarks/instructions.py --layers              # the pipeline minus each layer, for a Flask request
    python benchmarks/instructions.py --only "get one" --requests 200

About 15 s per measure (valgrind runs Python some 50 times slower).  Requires valgrind (``apt-get install
valgrind``).  Memory storage, 100 seeded records.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.costs import LAYERS  # noqa: E402

#: Workloads of run.py measured by default.
DEFAULT = ("flask (pipeline off)", "flask (pipeline on)", "hello", "get one")
WARMUP = 20


def child(workload_name: str, requests: int, environs: int, off: Sequence[str]) -> None:
    """In the measured process: build the target (with ``off`` layers switched off) and ``environs`` request
    environs (as many in both runs of a measure, so that building them does not count), warm up, send requests."""
    from benchmarks import costs, run, targets
    from wsgicliquet.middleware import collect
    from wsgicliquet.pipeline import build_pipeline

    targets.configure_logging()
    workload = next(w for w in run.workloads(100) if w.name == workload_name)
    if off:
        settings = targets.settings()
        for layer in off:
            settings[f"middleware.{layer}"] = "off"
        app = build_pipeline(targets.build("flask_bare"), settings)
    else:
        app = targets.build(workload.target)
    built = [costs.environ_of(workload, counter) for counter in range(WARMUP + environs)]
    for environ in built[:WARMUP + requests]:
        collect(app, environ)


def count(workload: str, requests: int, environs: int, off: Sequence[str] = ()) -> int:
    """Instructions of a child process that sends ``requests`` requests after its warm-up."""
    with tempfile.TemporaryDirectory() as folder:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={os.path.join(folder, 'out')}",
                   sys.executable, os.path.abspath(__file__), "--child", workload, "--requests", str(requests),
                   "--environs", str(environs), "--off", ",".join(off)]
        env = dict(os.environ, BENCHMARK_RECORDS="100", WSGICLIQUET_STORAGE_URL="memory://",
                   PYTHONHASHSEED="0")
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind failed ({result.returncode}): {result.stderr[-2000:]}")
    return int(found.group(1))


def per_request(workload: str, requests: int, off: Sequence[str] = ()) -> float:
    return (count(workload, requests, requests, off) - count(workload, 0, requests, off)) / requests


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--only", help="workloads of run.py, by exact name, comma separated")
    parser.add_argument("--layers", action="store_true", help="the Flask request through the pipeline minus each layer")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--off", default="", help=argparse.SUPPRESS)
    parser.add_argument("--environs", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.requests, max(args.environs, args.requests), [layer for layer in args.off.split(",") if layer])
        return 0
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    if args.layers:
        full = per_request("flask (pipeline on)", args.requests)
        alone = per_request("flask (pipeline off)", args.requests)
        print(f"flask alone {alone:,.0f}, with the pipeline {full:,.0f} instructions per request "
              f"(+{full - alone:,.0f}, +{full / alone - 1:.0%})")
        print(f"{'layer':16} {'without it':>12} {'the layer':>12}")
        for layer in LAYERS:
            without = per_request("flask (pipeline on)", args.requests, [layer])
            print(f"{layer:16} {without:12,.0f} {full - without:12,.0f}", flush=True)
        return 0
    names = args.only.split(",") if args.only else DEFAULT
    costs: Dict[str, float] = {}
    for name in names:
        costs[name] = per_request(name, args.requests)
        print(f"{name:24} {costs[name]:12,.0f} instructions per request", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
