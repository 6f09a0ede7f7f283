"""collect(): the whole response of a WSGI app, as the batch, CORS preflight and transaction layers need it."""
import sys

import pytest

from wsgicliquet.middleware import collect, status_code


def test_collect_keeps_written_data_and_closes_the_response():
    closed = []

    class Body(list):
        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("X-First", "1")])
        try:
            raise RuntimeError("late")
        except RuntimeError:
            write = start_response("500 Internal Server Error", [("X-Second", "2")], sys.exc_info())
        write(b"a")
        return Body([b"b", b"c"])

    status, headers, body, exc_info = collect(app, {})
    assert (status, headers, body, closed) == ("500 Internal Server Error", [("X-Second", "2")], b"abc", [True])
    assert isinstance(exc_info[1], RuntimeError)


@pytest.mark.parametrize("status, code", [
    ("200 OK", 200), ("404 Not Found", 404), ("503 Service Unavailable", 503), ("299 Custom", 299),
    ("abc", 500), ("", 500), ("20", 20),
])
def test_status_code_of_a_status_line(status, code):
    for _ in range(2):  # the code of a line is remembered: the second reading is the same
        assert status_code(status) == code
