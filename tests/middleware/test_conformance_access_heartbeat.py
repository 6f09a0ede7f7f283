"""Heartbeat checks that hang (PROTOCOL.md §1.5, kinto's concurrent checks with a timeout)."""
import threading
import time

import webtest

from wsgicliquet.middleware.heartbeat import Heartbeat


def not_found(environ, start_response):
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]


def test_a_hung_check_is_not_queued_again_by_every_heartbeat():
    """A load balancer polling a hung backend must not pile up runs that all fire once it answers again."""
    release, returned = threading.Event(), threading.Event()
    calls = []

    def hanging():
        calls.append(1)
        release.wait(10)
        returned.set()
        return True

    app = webtest.TestApp(Heartbeat(not_found, checks={"storage": hanging, "cache": lambda: True}, timeout=0.1))
    try:
        for _ in range(5):
            assert app.get("/__heartbeat__", status=503).json == {"storage": False, "cache": True}
        assert len(calls) == 1
    finally:
        release.set()
    assert returned.wait(5)
    time.sleep(0.05)  # the pool marks the run done just after the check returns
    assert app.get("/__heartbeat__").json == {"storage": True, "cache": True}
    assert app.get("/__heartbeat__").json == {"storage": True, "cache": True}
    assert len(calls) == 3  # once done, each heartbeat runs the check afresh
