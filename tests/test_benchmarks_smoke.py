"""The benchmark harness still works: its targets load and answer every workload as the harness expects.

Nothing is timed here.  The workloads are sent in-process through WebTest (memory storage, a small seed), and
one real gunicorn server is started and driven for a fraction of a second by the Python client.
"""
from __future__ import annotations

import json
import shutil
import sys

import pytest
import webtest

from benchmarks import run, targets

RECORDS = 300


@pytest.fixture
def environment(monkeypatch):
    monkeypatch.setenv("WSGICLIQUET_STORAGE_URL", "memory://")
    monkeypatch.setenv("BENCHMARK_RECORDS", str(RECORDS))
    monkeypatch.delenv("BENCHMARK_READY_DIR", raising=False)
    # A cache prefix of our own gives these apps their own shared backend instances (the prefix is part of the
    # key of wsgicliquet.backends), so that the seeded records and the StatsD timers stay out of other tests.
    monkeypatch.setenv("WSGICLIQUET_CACHE_PREFIX", "benchmark-smoke:")


def _send(app: webtest.TestApp, workload: run.Workload, **kwargs) -> webtest.TestResponse:
    return app.request(workload.path, method=workload.method, headers=workload.headers(),
                       body=workload.body or b"", expect_errors=True, **kwargs)


@pytest.mark.parametrize("workload", [pytest.param(w, id=w.name) for w in run.workloads(RECORDS) if not w.patch])
def test_workload_answers_as_expected(environment, workload):
    app = webtest.TestApp(targets.build(workload.target))
    response = _send(app, workload)
    assert response.status_int == workload.expect, response.body[:300]
    if workload.path == "/v1/batch":
        assert [entry["status"] for entry in response.json["responses"]] == [201] * run.BATCH_SIZE
    if workload.name.startswith("_since"):
        assert len(response.json["data"]) == 100
    if workload.name.startswith("list"):
        assert len(response.json["data"]) == 100
        assert response.headers["Total-Records"] == str(RECORDS)
    if workload.name.startswith("filtered"):
        positions = [record["position"] for record in response.json["data"]]
        assert len(positions) == 20 and positions == sorted(positions, reverse=True)
        assert not any(record["done"] for record in response.json["data"])


def test_patch_workload_follows_the_etag(environment):
    workload = next(w for w in run.workloads(RECORDS) if w.patch)
    app = webtest.TestApp(targets.build("api"))
    path = workload.path.format(id=run.patch_record(0))
    headers = dict(workload.headers(), **run.JSON_HEADERS)
    etag = app.get(path, headers=headers).headers["ETag"]
    for counter in (1, 2):
        response = app.patch(path, run.patch_body(counter), headers=dict(headers, **{"If-Match": etag}))
        assert response.json["data"]["position"] == counter
        assert response.headers["ETag"] != etag
        etag = response.headers["ETag"]
    stale = app.patch(path, run.patch_body(3), headers=dict(headers, **{"If-Match": '"1"'}), expect_errors=True)
    assert stale.status_int == 412


def test_full_pipeline_governs_the_flask_app(environment):
    """The pass-through workload really crosses the layers: CORS, end of life, backoff, request id."""
    workload = next(w for w in run.workloads(RECORDS) if w.target == "flask_full")
    response = _send(webtest.TestApp(targets.build("flask_full")), workload)
    assert response.status_int == 200
    for header in ("Access-Control-Allow-Origin", "Alert", "Backoff", "X-Request-Id"):
        assert header in response.headers
    assert len(response.json["scores"]) == 10


def test_seed_is_the_same_in_every_process():
    assert targets.record_id(5) == targets.record_id(5)
    assert targets.seed_record(7)["last_modified"] == targets.SEED_BASE_MS + 7
    assert targets.user_id(targets.READER).startswith("basicauth:")
    assert targets.user_id(targets.READER) != targets.user_id(targets.WRITER)


def test_wrk_scripts_carry_the_request():
    client = run.WrkClient("wrk", "/nonexistent")
    create = next(w for w in run.workloads(RECORDS) if w.name == "create one")
    lines = client.lua(create, 4)
    assert 'wrk.method = [==[POST]==]' in lines
    assert json.loads(lines.split("wrk.body = [==[", 1)[1].split("]==]", 1)[0]) == {"data": run.NEW_TASK}
    patch = client.lua(next(w for w in run.workloads(RECORDS) if w.patch), 2)
    assert run.patch_record(0) in patch and run.patch_record(1) in patch
    assert "If-Match" in patch and "function done" in patch


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_gunicorn_server_and_python_client(tmp_path):
    pytest.importorskip("gunicorn")
    workload = next(w for w in run.workloads(RECORDS) if w.target == "flask_bare")
    with run.Server("flask_bare", 1, run._free_port(), {}, None, str(tmp_path), threads=2) as server:
        assert len(server.worker_pids()) == 1
        assert server.rss_mb()[0] > 0
        assert run.preflight(workload, server.port) is None
        result = run.PythonClient().run(workload, f"http://127.0.0.1:{server.port}", 0.2, 2)
    assert result.requests > 0 and result.errors == 0


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed")
def test_wrk_runs_the_patch_script(tmp_path, monkeypatch):
    """The generated Lua is valid and the If-Match chain holds: no 412 while four connections PATCH."""
    monkeypatch.setenv("BENCHMARK_RECORDS", str(RECORDS))
    workload = next(w for w in run.workloads(RECORDS) if w.patch)
    with run.Server("api", 1, run._free_port(), {"WSGICLIQUET_STORAGE_URL": "memory://"}, None, str(tmp_path),
                    threads=2) as server:
        result = run.WrkClient(shutil.which("wrk"), str(tmp_path)).run(
            workload, f"http://127.0.0.1:{server.port}", 1, 4)
    assert result.requests > 4 and result.errors == 0, result.note


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed")
def test_wrk_patch_chain_recovers_from_a_stale_etag(tmp_path, monkeypatch):
    """Another writer changes a record under the benchmark: one 412, then the chain GETs afresh and goes on."""
    monkeypatch.setenv("BENCHMARK_RECORDS", str(RECORDS))
    workload = next(w for w in run.workloads(RECORDS) if w.patch)
    with run.Server("api", 1, run._free_port(), {"WSGICLIQUET_STORAGE_URL": "memory://"}, None, str(tmp_path),
                    threads=2) as server:
        client = run.WrkClient(shutil.which("wrk"), str(tmp_path))
        script = client.lua(workload, 1).replace('etag = hdrs["ETag"]', 'etag = (n == 5) and \'"1"\' or hdrs["ETag"]')
        path = tmp_path / "stale.lua"
        path.write_text(script)
        client.script = lambda *args: str(path)
        result = client.run(workload, f"http://127.0.0.1:{server.port}", 1, 1)
    assert result.errors == 1 and result.requests > 20, result.note
    assert "STATUS 412" not in result.note and "412" in result.note


@pytest.mark.parametrize("options", [
    pytest.param(["--count", "2", "--clock", "cpu"], id="workloads"),
    pytest.param(["--layers", "--count", "2"], id="layers"),
    pytest.param(["--what-if", "--count", "1"], id="what-if"),
    pytest.param(["--profile", "get one", "--count", "10", "--top", "3"], id="profile"),
])
def test_costs_script_runs_every_mode(options):
    """In a process of its own: the experiments rebuild the shared backends and patch the library."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, str(root / "benchmarks" / "costs.py"), "--records", "50", *options],
                            cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instruction_counts_of_a_request():
    """Two valgrind runs of one workload: a request through the pipeline costs more instructions than none."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, str(root / "benchmarks" / "instructions.py"), "--only", "hello",
                             "--requests", "3"], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    name, figure = result.stdout.split("instructions per request")[0].rsplit(None, 1)
    assert name.strip() == "hello" and int(figure.replace(",", "")) > 10_000
