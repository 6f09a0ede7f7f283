"""Load benchmark of wsgicliquet: gunicorn serves the targets of ``benchmarks/targets.py``, wrk (or a Python
client) drives them, one table comes out, with each workload as a ratio of the bare WSGI app measured in the same run
and the targets of the project checked (PASS/FAIL).

    python benchmarks/run.py                 # full run, about 4 minutes
    python benchmarks/run.py --quick         # one worker, 1 s per workload, about a minute
    python benchmarks/run.py --client python --backends memory --workers 1 --only hello,get

See benchmarks/README.md for what each workload sends and how client and server share the CPUs.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import targets  # noqa: E402

DEFAULT_POSTGRESQL_URL = "postgresql://postgres@127.0.0.1:5432/wsgicliquet_bench"
"""A database of its own (created when missing), since the harness empties it."""
BATCH_SIZE = 25
JSON_HEADERS = {"Content-Type": "application/json"}


# -- workloads ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """One kind of request, sent in a loop by every client connection."""

    name: str
    target: str                 # the gunicorn target serving it (benchmarks.targets)
    method: str
    path: str
    expect: int                 # the status every answer must have
    user: Optional[str] = None  # Basic Auth user
    body: Optional[bytes] = None
    writes: bool = False
    patch: bool = False         # stateful: GET the record once, then PATCH with If-Match the last ETag
    connections: Optional[int] = None  # instead of --connections (one client sending requests one after another)

    def headers(self) -> Dict[str, str]:
        headers = {"Origin": targets.ORIGIN}
        if self.user:
            headers["Authorization"] = targets.credentials(self.user)
        if self.body is not None:
            headers.update(JSON_HEADERS)
        return headers


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


NEW_TASK = {"title": "A new task", "position": 42, "done": False, "tags": ["bench", "new"]}


def workloads(records: int) -> List[Workload]:
    since = targets.SEED_BASE_MS + records - 101  # the last 100 seeded records were written after it
    batch = {"defaults": {"method": "POST", "path": "/tasks"},
             "requests": [{"body": {"data": dict(NEW_TASK, position=n)}} for n in range(BATCH_SIZE)]}
    return [
        Workload("bare", "bare", "GET", "/", 200),
        Workload("flask (pipeline off)", "flask_bare", "GET", "/scores", 200, targets.READER),
        Workload("flask (pipeline on)", "flask_full", "GET", "/v1/scores", 200, targets.READER),
        Workload("hello", "api", "GET", "/v1/", 200, targets.READER),
        Workload("get one", "api", "GET", f"/v1/tasks/{targets.record_id(records // 2)}", 200, targets.READER),
        Workload(f"list 100 of {records:,}", "api", "GET", "/v1/tasks?_limit=100", 200, targets.READER),
        Workload("filtered sorted 20", "api", "GET", "/v1/tasks?done=false&_sort=-position&_limit=20", 200,
                 targets.READER),
        Workload("_since 100 changes", "api", "GET", f"/v1/tasks?_since={since}", 200, targets.READER),
        Workload("create one", "api", "POST", "/v1/tasks", 201, targets.WRITER, _json({"data": NEW_TASK}),
                 writes=True),
        Workload("PATCH If-Match", "api", "PATCH", "/v1/tasks/{id}", 200, targets.PATCHER, writes=True, patch=True),
        Workload(f"batch of {BATCH_SIZE} creates", "api", "POST", "/v1/batch", 200, targets.WRITER, _json(batch),
                 writes=True),
        # The batch target compares one client creating 25 records one after another with the same client
        # sending them in one batch: one connection, no other writer.
        Workload("create one, 1 client", "api", "POST", "/v1/tasks", 201, targets.WRITER, _json({"data": NEW_TASK}),
                 writes=True, connections=1),
        Workload(f"batch of {BATCH_SIZE}, 1 client", "api", "POST", "/v1/batch", 200, targets.WRITER, _json(batch),
                 writes=True, connections=1),
    ]


def patch_record(connection: int) -> str:
    """The record PATCHed by one client connection (each has its own: no 412 between clients)."""
    return targets.record_id(connection % targets.PATCH_RECORDS, salt=1)


def patch_body(counter: int) -> bytes:
    return _json({"data": {"position": counter}})


# -- results --------------------------------------------------------------------------------------------------------

@dataclass
class Result:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    rss_mb: List[float] = field(default_factory=list)
    note: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


# -- load generators ------------------------------------------------------------------------------------------------

def _lua_string(value: str) -> str:
    return "[==[" + value + "]==]"


def _lua_headers(headers: Dict[str, str]) -> str:
    return "{" + ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()) + "}"


_WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d %.1f %.1f %.1f\\n", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.mean))
end
"""

_WRK_PATCH = """
local ids = %(ids)s
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("record", ids[counter])
end
local headers = %(headers)s
local etag = nil
local n = 0
function request()
  local path = %(prefix)s .. record
  if etag == nil then
    headers["If-Match"] = nil  -- a GET with a stale If-Match would get 412 forever
    return wrk.format("GET", path, headers)
  end
  n = n + 1
  headers["If-Match"] = etag
  return wrk.format("PATCH", path, headers, '{"data":{"position":' .. n .. '}}')
end
local reported = 0
function response(status, hdrs, body)
  if status == 200 then
    etag = hdrs["ETag"] or hdrs["Etag"] or hdrs["etag"]
  else
    etag = nil
    if reported < 3 then
      reported = reported + 1
      io.write("STATUS " .. status .. " " .. string.gsub(string.sub(body or "", 1, 200), "\\n", " ") .. "\\n")
    end
  end
end
"""


class WrkClient:
    """wrk with one thread per connection (so that the Lua state of a thread is the state of one connection)."""

    name = "wrk"

    def __init__(self, executable: str, workdir: str) -> None:
        self.executable = executable
        self.workdir = workdir

    def lua(self, workload: Workload, connections: int) -> str:
        """The wrk script of ``workload``: the request (or the PATCH state machine) and the result line."""
        if workload.patch:
            headers = dict(workload.headers(), **JSON_HEADERS)
            ids = "{" + ", ".join(_lua_string(patch_record(n)) for n in range(connections)) + "}"
            body = _WRK_PATCH % {"ids": ids, "headers": _lua_headers(headers),
                                 "prefix": _lua_string(workload.path.split("{", 1)[0])}
        else:
            lines = [f"wrk.method = {_lua_string(workload.method)}", f"wrk.path = {_lua_string(workload.path)}"]
            lines += [f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in workload.headers().items()]
            if workload.body is not None:
                lines.append(f"wrk.body = {_lua_string(workload.body.decode('utf-8'))}")
            body = "\n".join(lines) + "\n"
        return body + _WRK_DONE

    def script(self, workload: Workload, connections: int) -> str:
        path = os.path.join(self.workdir, "workload.lua")
        with open(path, "w") as handle:
            handle.write(self.lua(workload, connections))
        return path

    def run(self, workload: Workload, base_url: str, duration: float, connections: int) -> Result:
        command = [self.executable, "-t", str(connections), "-c", str(connections), "-d", f"{max(duration, 1):.0f}s",
                   "--timeout", "10s", "-s", self.script(workload, connections), base_url]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
        line = next((line for line in completed.stdout.splitlines() if line.startswith("RESULT ")), None)
        if line is None or completed.stderr.strip():
            raise RuntimeError(f"wrk failed: {completed.stdout}{completed.stderr}")
        values = line.split()[1:]
        requests, micros = int(values[0]), int(values[1])
        errors = sum(int(value) for value in values[2:7])
        p50, p99, mean = (float(value) / 1000 for value in values[7:10])
        kinds = ", ".join(f"{kind} {value}" for kind, value in zip(("connect", "read", "write", "status", "timeout"),
                                                                   values[2:7]) if value != "0")
        statuses = sorted({line[7:] for line in completed.stdout.splitlines() if line.startswith("STATUS ")})
        note = f"wrk errors: {kinds}" + (f"; answers {' | '.join(statuses[:3])}" if statuses else "") if errors else ""
        return Result(requests=requests, seconds=micros / 1e6, errors=errors, p50_ms=p50, p99_ms=p99, mean_ms=mean,
                      note=note)


class PythonClient:
    """Threads, each with one keep-alive ``http.client`` connection sending requests back to back."""

    name = "python"

    def __init__(self) -> None:
        self.problems: Dict[str, int] = {}  # "status 503: <body>" or an exception, with counts, of the last run

    def run(self, workload: Workload, base_url: str, duration: float, connections: int) -> Result:
        host, port = base_url.split("//", 1)[1].split(":")
        deadline = time.perf_counter() + duration
        latencies: List[List[float]] = [[] for _ in range(connections)]
        errors = [0] * connections
        self.problems = {}
        threads = [threading.Thread(target=self._loop, args=(workload, host, int(port), deadline, n, latencies[n],
                                                             errors, self.problems))
                   for n in range(connections)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        merged = sorted(value for values in latencies for value in values)
        mean = sum(merged) / len(merged) if merged else 0.0
        return Result(requests=len(merged), seconds=elapsed, errors=sum(errors), p50_ms=_percentile(merged, 0.5) * 1e3,
                      p99_ms=_percentile(merged, 0.99) * 1e3, mean_ms=mean * 1e3)

    @staticmethod
    def _loop(workload: Workload, host: str, port: int, deadline: float, index: int, latencies: List[float],
              errors: List[int], problems: Dict[str, int]) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        headers = workload.headers()
        path, method, body = workload.path, workload.method, workload.body
        etag: Optional[str] = None
        counter = 0
        if workload.patch:
            path = workload.path.format(id=patch_record(index))
            headers.update(JSON_HEADERS)
        while True:
            now = time.perf_counter()
            if now >= deadline:
                break
            if workload.patch:
                if etag is None:
                    method, body = "GET", None
                    headers.pop("If-Match", None)
                else:
                    counter += 1
                    method, body = "PATCH", patch_body(counter)
                    headers["If-Match"] = etag
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors[index] += 1
                problem = f"{type(exc).__name__}: {exc}"
                problems[problem] = problems.get(problem, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
                continue
            latencies.append(time.perf_counter() - now)
            status = response.status
            if workload.patch:
                etag = response.getheader("ETag") if status == 200 else None
            if status >= 400 or (not workload.patch and status != workload.expect):
                errors[index] += 1
                problem = f"status {status}: {payload[:200]!r}"
                problems[problem] = problems.get(problem, 0) + 1
        conn.close()


# -- servers --------------------------------------------------------------------------------------------------------

def _pin(cpus: Optional[Set[int]]) -> Any:
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _rss_mb(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Server:
    """gunicorn with gthread workers (keep-alive connections; sync workers close every connection)."""

    def __init__(self, target: str, workers: int, port: int, env: Dict[str, str], cpus: Optional[Set[int]],
                 workdir: str, threads: int) -> None:
        self.target, self.workers, self.port = target, workers, port
        self.ready_dir = tempfile.mkdtemp(prefix="ready-", dir=workdir)
        self.log = os.path.join(workdir, f"gunicorn-{target}-{workers}.log")
        self.env = dict(os.environ, BENCHMARK_READY_DIR=self.ready_dir, **env)
        self.cpus = cpus
        self.threads = threads
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "Server":
        command = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--threads", str(self.threads),
                   "--workers", str(self.workers), "--bind", f"127.0.0.1:{self.port}", "--chdir", ROOT,
                   "--log-level", "warning", "--error-logfile", self.log, "--keep-alive", "30",
                   f"benchmarks.targets:{self.target}"]
        with open(self.log + ".out", "wb") as output:  # what the app prints or logs outside gunicorn's logger
            self.process = subprocess.Popen(command, env=self.env, preexec_fn=_pin(self.cpus), stdout=output,
                                            stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while len(self.worker_pids()) < self.workers:
            if self.process.poll() is not None or time.time() > deadline:
                self.__exit__()
                with open(self.log) as handle:
                    raise RuntimeError(f"gunicorn {self.target} did not start:\n{handle.read()[-3000:]}")
            time.sleep(0.05)
        return self

    def worker_pids(self) -> List[int]:
        """Workers whose app is built (each wrote its pid in the ready directory), alive."""
        pids = []
        for name in os.listdir(self.ready_dir):
            if os.path.exists(f"/proc/{name}"):
                pids.append(int(name))
        return sorted(pids)

    def problems(self) -> str:
        """The last worker failure or traceback in the server's output, if any."""
        lines: List[str] = []
        for path in (self.log, self.log + ".out"):
            with contextlib.suppress(OSError), open(path, errors="replace") as handle:
                lines += [line.strip() for line in handle if any(word in line for word in
                                                                 ("Error", "TIMEOUT", "Traceback", "exited"))]
        return f"{len(lines)} server log lines, last: {lines[-1][:300]}" if lines else ""

    def rss_mb(self) -> List[float]:
        return [value for value in (_rss_mb(pid) for pid in self.worker_pids()) if value is not None]

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.ready_dir, ignore_errors=True)


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(conn: http.client.HTTPConnection, method: str, path: str, headers: Dict[str, str],
             body: Optional[bytes] = None) -> Tuple[int, Dict[str, str], bytes]:
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def preflight(workload: Workload, port: int) -> Optional[str]:
    """One request checked by hand (status, batch sub-statuses): what the load generator cannot check."""
    # One connection: with several workers on the memory backend, each worker has its own records.
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=30)) as conn:
        return _preflight(workload, conn)


def _preflight(workload: Workload, conn: http.client.HTTPConnection) -> Optional[str]:
    headers = workload.headers()
    path, method, body = workload.path, workload.method, workload.body
    if workload.patch:
        path = workload.path.format(id=patch_record(targets.PATCH_RECORDS - 1))
        status, answer, _ = _request(conn, "GET", path, headers)
        if status != 200:
            return f"GET {path}: {status}"
        headers = dict(headers, **JSON_HEADERS, **{"If-Match": answer["ETag"]})
        body = patch_body(int(time.time()))
    status, _, payload = _request(conn, method, path, headers, body)
    if status != workload.expect:
        return f"{method} {path}: {status} {payload[:300]!r}"
    if workload.path == "/v1/batch":
        statuses = {entry["status"] for entry in json.loads(payload)["responses"]}
        if statuses != {201}:
            return f"batch sub-responses {sorted(statuses)}"
    if workload.path.startswith("/v1/tasks?_since="):
        count = len(json.loads(payload)["data"])
        if count != 100:
            return f"_since returned {count} changes, expected 100"
    return None


# -- the run --------------------------------------------------------------------------------------------------------

@dataclass
class Row:
    workers: int
    backend: str
    workload: str
    result: Result
    ratio: Optional[float] = None


def ensure_database(url: str) -> None:
    """Create the database of ``url`` when it does not exist (connecting to the server's ``postgres`` one)."""
    import psycopg2
    from psycopg2 import sql
    from psycopg2.extensions import parse_dsn

    params = parse_dsn(url)
    name = params.pop("dbname", None)
    try:
        psycopg2.connect(url).close()
        return
    except psycopg2.OperationalError:
        if not name:
            raise
    conn = psycopg2.connect(**dict(params, dbname="postgres"))
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def prepare_postgresql(url: str, records: int) -> None:
    from wsgicliquet.backends import load_backend
    from wsgicliquet.settings import load_settings

    ensure_database(url)

    storage = load_backend("storage", load_settings({"storage_url": url}))
    storage.initialize_schema()
    storage.flush()
    started = time.perf_counter()
    targets.seed(storage, records)
    storage.client.close()
    # What autovacuum would do to a table that just received 10,000 rows: statistics for the planner, and a
    # visibility map for index-only scans.  Without it the planner expects one row per partition.
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE records, timestamps")
    finally:
        conn.close()
    print(f"  seeded {records:,} records in PostgreSQL (then VACUUM ANALYZE) in "
          f"{time.perf_counter() - started:.1f} s", flush=True)


_CPUS = sorted(os.sched_getaffinity(0))  # before the harness pins itself


def cpu_plan(workers: int) -> Tuple[Optional[Set[int]], Optional[Set[int]]]:
    """(client CPUs, server CPUs): the load generator on the first CPU, the server on the others when it fits."""
    cpus = _CPUS
    if len(cpus) < 2:
        return None, None
    client = {cpus[0]}
    server = set(cpus[1:]) if workers <= len(cpus) - 1 else set(cpus)
    return client, server


def py_spy(pids: List[int], seconds: float, workdir: str) -> List[subprocess.Popen]:
    """Start ``py-spy record`` on each worker for ``seconds``: collapsed stacks of the thread holding the GIL (the
    Python work of the worker; idle threads and waits for PostgreSQL are not sampled)."""
    executable = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(executable):
        raise SystemExit("py-spy is not installed: pip install py-spy")
    return [subprocess.Popen([executable, "record", "--format", "raw", "--rate", "500", "--gil",
                              "--duration", str(max(1, int(seconds))), "--pid", str(pid),
                              "--output", os.path.join(workdir, f"py-spy-{pid}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pid in pids]


def _frame(frame: str) -> str:
    """``function (file:line)`` of py-spy as ``function (file)``, the file relative to the project."""
    function, _, where = frame.partition(" (")
    return f"{function} ({where.split(':')[0].replace(ROOT + '/', '')})"


def py_spy_report(workdir: str, top: int = 25) -> str:
    """Own and inclusive samples per function, from the collapsed stacks of every worker."""
    own: Dict[str, int] = {}
    inclusive: Dict[str, int] = {}
    total = 0
    for name in os.listdir(workdir):
        if not name.startswith("py-spy-"):
            continue
        with open(os.path.join(workdir, name)) as handle:
            for line in handle:
                stack, _, count = line.rstrip().rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                samples = int(count)
                frames = [_frame(frame) for frame in stack.split(";")]
                frames = [frame for frame in frames if "threading.py" not in frame]
                if not frames:
                    continue
                total += samples
                own[frames[-1]] = own.get(frames[-1], 0) + samples
                for frame in set(frames):
                    inclusive[frame] = inclusive.get(frame, 0) + samples
    if not total:
        return "py-spy recorded nothing"
    lines = [f"py-spy: {total} samples of the workers' Python work (GIL held)", "own time:"]
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in sorted(own.items(), key=lambda i: -i[1])[:top]]
    lines.append("inclusive time, wsgicliquet and benchmark code:")
    ours = [(frame, count) for frame, count in inclusive.items() if "wsgicliquet" in frame or "benchmarks" in frame]
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in sorted(ours, key=lambda i: -i[1])[:top]]
    return "\n".join(lines)


def measure(client: Any, workload: Workload, port: int, duration: float, warmup: float,
            connections: int, repeats: int, profile: Optional[Tuple[List[int], str]] = None) -> Result:
    """The best of ``repeats`` runs of ``duration / repeats`` seconds (the run least disturbed by other processes
    of the machine; the bare app gets the same treatment, so ratios stay fair); errors of every run count."""
    problem = preflight(workload, port)
    if problem is not None:
        return Result(requests=0, seconds=0, errors=1, p50_ms=0, p99_ms=0, mean_ms=0, note=f"preflight: {problem}")
    base = f"http://127.0.0.1:{port}"
    connections = workload.connections or connections
    if warmup > 0:
        client.run(workload, base, warmup, connections)
    spies = py_spy(*profile[:1], duration, profile[1]) if profile else []
    results = [client.run(workload, base, duration / repeats, connections) for _ in range(max(1, repeats))]
    for spy in spies:
        spy.wait(timeout=60)
    best = max(results, key=lambda result: result.rps)
    best.errors = sum(result.errors for result in results)
    if best.errors:
        best.note = "; ".join(filter(None, [result.note for result in results] +
                                     [diagnose(client, workload, base, connections)]))
    return best


def diagnose(client: Any, workload: Workload, base: str, connections: int) -> str:
    """What the errors were: wrk only counts them, so the Python client replays the workload for a second."""
    python = client if isinstance(client, PythonClient) else PythonClient()
    if python is not client:
        python.run(workload, base, 1.0, connections)
    if not python.problems:
        return "errors not reproduced by a 1 s replay with the Python client"
    return "; ".join(f"{count} x {problem}" for problem, count in
                     sorted(python.problems.items(), key=lambda item: -item[1])[:3])


def _held(workers: int, backend: str, server: Server) -> Row:
    """Worker memory while the workers hold the seeded records only (after the reads, before any write)."""
    return Row(workers, backend, "held", Result(0, 0, 0, 0, 0, 0, rss_mb=server.rss_mb()))


def run(args: argparse.Namespace) -> List[Row]:
    records = args.records
    all_workloads = [w for w in workloads(records) if not args.only or w.name.split()[0] in args.only
                     or w.name in args.only or w.target == "bare"]
    workdir = tempfile.mkdtemp(prefix="wsgicliquet-bench-")
    client: Any
    wrk = shutil.which("wrk")
    if args.client == "wrk" and not wrk:
        raise SystemExit("wrk is not installed (apt-get install -y wrk), use --client python")
    client = WrkClient(wrk, workdir) if wrk and args.client != "python" else PythonClient()
    args.client = client.name
    print(f"client: {client.name}, {args.connections} connections, {args.duration:g} s per workload "
          f"(+{args.warmup:g} s warm-up)", flush=True)
    rows: List[Row] = []
    env = {"WSGICLIQUET_STATSD_URL": f"udp://127.0.0.1:{_free_port(socket.SOCK_DGRAM)}",
           "BENCHMARK_RECORDS": str(records)}
    seeded = False
    try:
        for workers in args.workers:
            client_cpus, server_cpus = cpu_plan(workers)
            if client_cpus and not args.no_pin:
                os.sched_setaffinity(0, client_cpus)
            else:
                server_cpus = None
            print(f"{workers} worker(s): server on CPUs {sorted(server_cpus or [])}, "
                  f"client on {sorted(client_cpus or [])}", flush=True)
            plans: List[Tuple[str, str, Dict[str, str], List[Workload]]] = []
            for name in ("bare", "flask_bare", "flask_full"):
                plans.append((name, "-", {}, [w for w in all_workloads if w.target == name]))
            for backend in args.backends:
                url = "memory://" if backend == "memory" else args.postgresql_url
                plans.append(("api", backend, {"WSGICLIQUET_STORAGE_URL": url},
                              [w for w in all_workloads if w.target == "api"]))
            # The ceiling and the Flask pair again at the end: a disturbance during the first measurement of one of
            # them must not skew every ratio, or the pipeline check.
            for name in ("bare", "flask_bare", "flask_full"):
                plans.append((name, "-", {}, [w for w in all_workloads if w.target == name]))
            for target, backend, extra, chosen in plans:
                if not chosen:
                    continue
                if backend == "postgresql" and not seeded:
                    prepare_postgresql(args.postgresql_url, records)
                    seeded = True
                port = _free_port()
                with Server(target, workers, port, dict(env, **extra), server_cpus, workdir, args.threads) as server:
                    held = None
                    for workload in chosen:
                        if target == "api" and workload.writes and held is None:
                            held = _held(workers, backend, server)
                        profile = None
                        if args.py_spy and workload.name.startswith(args.py_spy):
                            profile = (server.worker_pids(), tempfile.mkdtemp(prefix="py-spy-", dir=workdir))
                        result = measure(client, workload, port, args.duration, args.warmup, args.connections,
                                         args.repeats, profile)
                        if result.errors and server.problems():
                            result.note += "; " + server.problems()
                        if profile:
                            print(py_spy_report(profile[1]), flush=True)
                        result.rss_mb = server.rss_mb()
                        first = next((row for row in rows if row.workers == workers and row.backend == backend
                                      and row.workload == workload.name), None)
                        if first is not None:
                            print(f"  {workload.name} again: {result.rps:,.0f} req/s (first {first.result.rps:,.0f}); "
                                  "the better one is kept", flush=True)
                            errors = first.result.errors + result.errors
                            if result.rps > first.result.rps:
                                first.result = result
                            first.result.errors = errors
                            continue
                        rows.append(Row(workers, backend, workload.name, result))
                        print("  " + format_row(rows[-1]), flush=True)
                    if target == "api":
                        rows.append(held or _held(workers, backend, server))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for row in rows:
        bare = next((r for r in rows if r.workers == row.workers and r.workload == "bare"), None)
        if bare is not None and bare.result.rps and row.workload != "held":
            row.ratio = row.result.rps / bare.result.rps
    return rows


# -- report ---------------------------------------------------------------------------------------------------------

COLUMNS = ("workers", "backend", "workload", "req/s", "p50 ms", "p99 ms", "errors", "worker RSS MB", "vs bare")


def _cells(row: Row) -> List[str]:
    result = row.result
    rss = "/".join(f"{value:.0f}" for value in result.rss_mb) or "-"
    ratio = f"{row.ratio * 100:.0f}%" if row.ratio is not None else "-"
    errors = str(result.errors) + (" (see below)" if result.note else "")
    return [str(row.workers), row.backend, row.workload, f"{result.rps:,.0f}", f"{result.p50_ms:.2f}",
            f"{result.p99_ms:.2f}", errors, rss, ratio]


def format_row(row: Row) -> str:
    return " | ".join(_cells(row))


def table(rows: List[Row], markdown: bool = False) -> str:
    body = [list(COLUMNS)] + [_cells(row) for row in rows if row.workload != "held"]
    if markdown:
        lines = ["| " + " | ".join(cells) + " |" for cells in body]
        lines.insert(1, "|" + "|".join(" --- " for _ in COLUMNS) + "|")
        return "\n".join(lines)
    widths = [max(len(cells[i]) for cells in body) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)) for cells in body)


def _find(rows: List[Row], workers: int, backend: str, prefix: str) -> Optional[Row]:
    return next((row for row in rows if row.workers == workers and row.backend == backend
                 and row.workload.startswith(prefix) and row.result.requests
                 and ("1 client" in prefix or "1 client" not in row.workload)), None)


def checks(rows: List[Row], records: int, connections: int) -> List[Tuple[bool, str]]:
    """The targets of the project, each PASS or FAIL, for every worker count measured."""
    outcomes: List[Tuple[bool, str]] = []

    def ratio(workers: int, backend: str, prefix: str, minimum: float, label: str) -> None:
        row = _find(rows, workers, backend, prefix)
        if row is not None and row.ratio is not None:
            outcomes.append((row.ratio >= minimum, f"{label} >= {minimum:.0%} of bare [{workers}w]: {row.ratio:.1%}"))

    for workers in sorted({row.workers for row in rows}):
        ratio(workers, "memory", "hello", 0.50, "hello (memory)")
        on, off = _find(rows, workers, "-", "flask (pipeline on)"), _find(rows, workers, "-", "flask (pipeline off)")
        if on is not None and off is not None:
            added = off.result.rps / on.result.rps - 1  # time per request grows by this fraction
            outcomes.append((added <= 0.20, f"pipeline adds <= 20% to a Flask request [{workers}w]: "
                                            f"+{added:.0%} per request ({off.result.rps:,.0f} -> "
                                            f"{on.result.rps:,.0f} req/s)"))
        for backend, limits in (("memory", (("get one", .35), ("create one", .25), ("list 100", .10))),
                                ("postgresql", (("get one", .20), ("create one", .12), ("list 100", .08),
                                                ("filtered sorted", .08), ("_since", .08)))):
            for prefix, minimum in limits:
                ratio(workers, backend, prefix, minimum, f"{prefix} ({backend})")
            single = _find(rows, workers, backend, "create one, 1 client")
            batch = _find(rows, workers, backend, f"batch of {BATCH_SIZE}, 1 client")
            if single is not None and batch is not None:
                speedup = BATCH_SIZE * batch.result.rps / single.result.rps  # records per second, one client
                outcomes.append((speedup >= 3, f"batch of {BATCH_SIZE} >= 3x faster than {BATCH_SIZE} single "
                                               f"creates, one client ({backend}) [{workers}w]: {speedup:.1f}x"))
        held = next((row for row in rows if row.workers == workers and row.backend == "memory"
                     and row.workload == "held"), None)
        if held is not None and held.result.rss_mb:
            peak = max(held.result.rss_mb)
            outcomes.append((peak < 60, f"worker RSS < 60 MB holding {records:,} records (memory) "
                                        f"[{workers}w]: {peak:.1f} MB"))
        if workers >= 2:
            writes = [row for row in rows if row.workers == workers and row.backend == "postgresql"
                      and row.workload in ("create one", "PATCH If-Match", f"batch of {BATCH_SIZE} creates")]
            # ("create one" and the batch: 4 clients writing into one partition, so they contend for its lock)
            if writes:
                failed = sum(row.result.errors for row in writes)
                outcomes.append((failed == 0, f"zero failed writes, {workers} workers on PostgreSQL, "
                                              f"{connections} concurrent clients: {failed} failed"))
    return outcomes


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    return (f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one worker, 1 s per workload, short warm-up")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds measured per workload (default 6)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per workload (default 1)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent client connections (default 4)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per workload, the best one kept (default 3, each of duration/repeats s)")
    parser.add_argument("--threads", type=int, default=4, help="gthread threads per worker (default 4)")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma separated (default 1,2)")
    parser.add_argument("--backends", default="memory,postgresql", help="storage backends (default both)")
    parser.add_argument("--postgresql-url", default=DEFAULT_POSTGRESQL_URL,
                        help="database whose storage tables are EMPTIED (flush) and seeded")
    parser.add_argument("--records", type=int, default=10_000, help="records seeded (default 10,000)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator: wrk when installed (auto), or the Python http.client loop")
    parser.add_argument("--only", default="", help="workloads to run, by first word (hello,get,list,...)")
    parser.add_argument("--py-spy", metavar="WORKLOAD",
                        help="profile the workers with py-spy during the workloads whose name starts with this")
    parser.add_argument("--no-pin", action="store_true", help="do not pin client and server to separate CPUs")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table and checks as markdown")
    parser.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.workers, args.repeats = 1.0, 0.3, "1", 1
    args.workers = [int(value) for value in args.workers.split(",") if value]
    args.backends = [value.strip() for value in args.backends.split(",") if value.strip()]
    args.only = {value.strip() for value in args.only.split(",") if value.strip()}
    for backend in args.backends:
        if backend not in ("memory", "postgresql"):
            parser.error(f"unknown backend {backend!r}")
    if args.records <= 100:
        parser.error("--records must be above 100 (the _since workload reads the last 100)")

    started = time.time()
    print(machine(), flush=True)
    rows = run(args)
    outcomes = checks(rows, args.records, args.connections)
    print()
    print(table(rows))
    for row in rows:
        if row.result.note:
            print(f"{row.workers} worker(s), {row.backend}, {row.workload}: {row.result.note}")
    print()
    for ok, text in outcomes:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"\n{len(rows)} measurements in {time.time() - started:.0f} s on {machine()}")
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(f"Machine: {machine()}; client {args.client}, {args.connections} connections, "
                         f"{args.duration:g} s per workload.\n\n{table(rows, markdown=True)}\n\n")
            handle.writelines(f"{row.workers} worker(s), {row.backend}, {row.workload}: {row.result.note}\n\n"
                              for row in rows if row.result.note)
            handle.writelines(f"- {'PASS' if ok else 'FAIL'} {text}\n" for ok, text in outcomes)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine(), "rows": [dict(asdict(row), rps=row.result.rps) for row in rows],
                       "checks": outcomes}, handle, indent=1)
    return 0 if all(ok for ok, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
