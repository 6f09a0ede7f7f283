"""The profiler writes one pstats file per request; switched off, it changes nothing."""
from __future__ import annotations

import pstats
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest
import webtest

from wsgicliquet.middleware.profiler import Profiler, filter_factory
from wsgicliquet.settings import ConfigurationError, load_settings


def compute_score(n: int) -> int:
    return sum(i * i for i in range(n))


def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(compute_score(1000)).encode()]


def versioned(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
    """Moves /v1 into SCRIPT_NAME, as a router below the profiler does."""
    environ["SCRIPT_NAME"], environ["PATH_INFO"] = "/v1", environ["PATH_INFO"][3:]
    return app(environ, start_response)


def test_one_loadable_profile_per_request(tmp_path: Path) -> None:
    profiled = webtest.TestApp(Profiler.from_settings(versioned, load_settings(
        {"profiler_enabled": "true", "profiler_dir": str(tmp_path / "profiles")}, environ={})), lint=True)
    assert profiled.post("/v1/batch").text == str(compute_score(1000))
    profiled.post("/v1/batch")
    files = sorted((tmp_path / "profiles").iterdir())
    assert len(files) == 2
    for path in files:
        assert re.fullmatch(r"POST\.v1\.batch\.\d{6}ms\.\d{10}\.[0-9a-f]{8}\.prof", path.name)
        stats = pstats.Stats(str(path))
        assert any(function == "compute_score" for (_file, _line, function) in stats.stats)


def test_root_and_odd_paths_give_safe_names(tmp_path: Path) -> None:
    profiled = webtest.TestApp(Profiler(app, enabled=True, profile_dir=str(tmp_path)))
    profiled.get("/")
    profiled.get("/a b/%2E%2E/c")
    names = sorted(path.name for path in tmp_path.iterdir())
    assert [name.split(".")[1] for name in names] == ["a_b", "root"]
    assert all("/" not in name and " " not in name for name in names)


def test_disabled_is_a_pass_through(tmp_path: Path) -> None:
    body = [b"untouched"]

    def plain(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        start_response("200 OK", [])
        return body

    middleware = Profiler.from_settings(plain, load_settings({"profiler_dir": str(tmp_path)}, environ={}))
    assert middleware.profiled is None and middleware.app is plain
    assert middleware({}, lambda *args: None) is body
    assert list(tmp_path.iterdir()) == []


def test_unusable_directory_fails_at_construction(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigurationError, match="profiler_dir"):
        Profiler(app, enabled=True, profile_dir=str(blocker / "profiles"))


def test_paste_filter_factory(tmp_path: Path) -> None:
    wrapped = filter_factory({}, profiler_enabled="true", profiler_dir=str(tmp_path))(app)
    webtest.TestApp(wrapped).get("/scores")
    [path] = tmp_path.iterdir()
    assert path.name.startswith("GET.scores.")
