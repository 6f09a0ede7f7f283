"""One storage transaction per request: committed on success, rolled back on a 5xx; a no-op without transactions."""
import pytest
import webtest

from wsgicliquet.backends import clear_backends, load_backend
from wsgicliquet.middleware.transaction import Transaction
from wsgicliquet.settings import load_settings


def writer(storage, status):
    def app(environ, start_response):
        storage.create("note", "tx-test", {"status": status})
        start_response(status, [("Content-Type", "text/plain")])
        return [b"done"]
    return app


def test_memory_backend_makes_it_a_pass_through():
    storage = load_backend("storage", load_settings({}, environ={}))
    body = [b"untouched"]

    def app(environ, start_response):
        start_response("200 OK", [])
        return body

    layer = Transaction(app, storage=storage)
    assert layer.enabled is False
    assert layer({"REQUEST_METHOD": "GET"}, lambda *args: None) is body


@pytest.fixture
def pg_storage(postgresql_url):
    clear_backends()
    storage = load_backend("storage", load_settings({"storage_url": postgresql_url}, environ={}))
    storage.initialize_schema()
    storage.delete_all("note", "tx-test", with_deleted=False)
    storage.purge_deleted("note", "tx-test")
    yield storage
    storage.delete_all("note", "tx-test", with_deleted=False)
    storage.purge_deleted("note", "tx-test")
    clear_backends()


@pytest.mark.parametrize("status, kept", [("200 OK", 1), ("404 Not Found", 1), ("503 Service Unavailable", 0),
                                          ("500 Internal Server Error", 0)])
def test_postgresql_writes_commit_unless_the_response_is_a_5xx(pg_storage, status, kept):
    app = webtest.TestApp(Transaction(writer(pg_storage, status), storage=pg_storage))
    response = app.get("/", status="*")
    assert response.text == "done"
    assert pg_storage.get_all("note", "tx-test")[1] == kept


def test_switched_off_by_the_setting(pg_storage):
    layer = Transaction.from_settings(writer(pg_storage, "500 Internal Server Error"),
                                      load_settings({"storage_url": "memory://", "transaction_per_request": "false"},
                                                    environ={}))
    assert layer.enabled is False


def test_what_the_app_writes_through_write_is_kept(pg_storage):
    """A legacy app writing with start_response's write(): the body is collected whole, written part first."""
    def legacy(environ, start_response):
        pg_storage.create("note", "tx-test", {"status": "written"})
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written, ")
        return [b"then returned"]

    response = webtest.TestApp(Transaction(legacy, storage=pg_storage)).get("/")
    assert response.text == "written, then returned"
    assert pg_storage.get_all("note", "tx-test")[1] == 1
