"""Resource events (PROTOCOL.md §17.6): what subscribers and listeners receive, merged per request and batch, and
notified around the commit: before it (a refusal rolls the request back), and after it."""
from __future__ import annotations

import base64
import json
import logging
import uuid
from typing import Any, Dict, List

import pytest
import webtest

from tests.resource.conftest import Item, Note, as_user, unique_user
from wsgicliquet import build_pipeline
from wsgicliquet.errors import ERRORS, HTTPError
from wsgicliquet.events import (AfterResourceChanged, AfterResourceRead, Notifier, ResourceChanged, ResourceEvent,
                                ResourceRead)
from wsgicliquet.resource.app import ResourceApp
from wsgicliquet.settings import ConfigurationError, load_settings


class Recorder:
    """Subscribes to every kind of event of an app and keeps what it receives."""

    def __init__(self, notifier: Notifier, *kinds: type) -> None:
        self.events: List[ResourceEvent] = []
        for kind in kinds or (ResourceChanged, AfterResourceChanged):
            notifier.subscribe(kind, self.events.append)

    def of(self, kind: type) -> List[ResourceEvent]:
        return [event for event in self.events if type(event) is kind]

    def summary(self, kind: type = AfterResourceChanged) -> List[tuple]:
        return [(event.payload["action"], event.payload["resource_name"], len(event.impacted_records))
                for event in self.of(kind)]


@pytest.fixture
def user() -> str:
    return unique_user()


@pytest.fixture
def direct(any_storage, user):
    """A resource app alone on each backend (no transaction layer: it notifies its own events)."""
    app = ResourceApp([Note, Item], load_settings({}, environ={}), storage=any_storage)
    return app, webtest.TestApp(app, extra_environ=as_user(user), lint=True)


def test_each_write_is_one_event_with_its_payload_and_impacted_records(direct, user) -> None:
    app, api = direct
    seen = Recorder(app.events)

    created = api.post_json("/notes", {"data": {"n": 1}}, status=201).json["data"]
    event = seen.of(AfterResourceChanged)[-1]
    assert seen.summary(ResourceChanged) == seen.summary() == [("create", "note", 1)]
    assert event.payload == {"action": "create", "uri": "/notes", "user_id": user, "resource_name": "note",
                             "timestamp": created["last_modified"]}
    assert event.impacted_records == [{"new": created}]

    replaced = api.put_json(f"/notes/{created['id']}", {"data": {"n": 2}}, status=200).json["data"]
    event = seen.of(AfterResourceChanged)[-1]
    assert event.payload["action"] == "update" and event.payload["uri"] == f"/notes/{created['id']}"
    assert event.payload["note_id"] == event.payload["id"] == created["id"]
    assert event.impacted_records == [{"new": replaced, "old": created}]

    patched = api.patch_json(f"/notes/{created['id']}", {"data": {"m": 3}}, status=200).json["data"]
    assert seen.of(AfterResourceChanged)[-1].impacted_records == [{"new": patched, "old": replaced}]
    api.patch_json(f"/notes/{created['id']}", {"data": {"m": 3}}, status=200)  # nothing changes: no event

    fresh = api.put_json(f"/notes/{uuid.uuid4()}", {"data": {"n": 4}}, status=201).json["data"]
    assert seen.of(AfterResourceChanged)[-1].payload["action"] == "create"
    assert seen.of(AfterResourceChanged)[-1].impacted_records == [{"new": fresh}]

    tombstone = api.delete(f"/notes/{created['id']}", status=200).json["data"]
    event = seen.of(AfterResourceChanged)[-1]
    assert event.payload["action"] == "delete" and event.impacted_records == [{"old": tombstone}]
    assert event.payload["timestamp"] == tombstone["last_modified"]

    tombstones = api.delete("/notes", status=200).json["data"]
    event = seen.of(AfterResourceChanged)[-1]
    assert [change["old"] for change in event.impacted_records] == tombstones and len(tombstones) == 1
    api.delete("/notes", status=200)  # nothing left to delete: no event

    assert seen.summary() == [("create", "note", 1), ("update", "note", 1), ("update", "note", 1),
                              ("create", "note", 1), ("delete", "note", 1), ("delete", "note", 1)]
    assert seen.summary(ResourceChanged) == seen.summary(), "each change notified before and after its commit"


def test_refused_and_unchanged_requests_make_no_event(direct) -> None:
    app, api = direct
    seen = Recorder(app.events)
    created = api.post_json("/notes", {"data": {"n": 1}}, status=201).json["data"]
    seen.events.clear()
    api.post_json("/notes", {"data": created}, status=200)  # the existing record: nothing written
    api.patch_json(f"/notes/{created['id']}", {"data": {"n": 2}}, headers={"If-Match": '"1"'}, status=412)
    api.put_json(f"/notes/{uuid.uuid4()}", {"data": "nope"}, status=400)
    api.delete(f"/notes/{uuid.uuid4()}", status=404)
    api.get("/notes", status=200)
    api.get(f"/notes/{created['id']}", status=200)
    assert seen.events == [], "no read subscriber: reads make no event either"


def test_read_events_only_for_their_subscribers(direct, user) -> None:
    app, api = direct
    created = api.post_json("/notes", {"data": {"n": 1}}, status=201).json["data"]
    seen = Recorder(app.events, ResourceRead, AfterResourceRead)
    listing = api.get("/notes", status=200)
    api.get(f"/notes/{created['id']}", status=200)
    api.get(f"/notes/{created['id']}", headers={"If-None-Match": listing.headers["ETag"]}, status=304)
    assert [event.payload["action"] for event in seen.of(AfterResourceRead)] == ["read", "read"]
    collection, record = seen.of(AfterResourceRead)
    assert collection.impacted_records == [{"new": created}] and collection.payload["uri"] == "/notes"
    assert collection.payload["timestamp"] == int(listing.headers["ETag"].strip('"'))
    assert record.impacted_records == [{"new": created}] and record.payload["note_id"] == created["id"]
    assert len(seen.of(ResourceRead)) == 2
    api.post_json("/notes", {"data": {"n": 2}}, status=201)
    assert len(seen.events) == 4, "read subscribers get no change events"


def test_nested_payload_carries_every_placeholder(direct, user) -> None:
    app, api = direct
    seen = Recorder(app.events)
    rid = str(uuid.uuid4())
    item = api.put_json(f"/buckets/b1/collections/c1/records/{rid}", {"data": {"n": 1}}, status=201).json["data"]
    payload = seen.of(AfterResourceChanged)[0].payload
    assert payload == {"action": "create", "uri": f"/buckets/b1/collections/c1/records/{rid}", "user_id": user,
                       "resource_name": "item", "timestamp": item["last_modified"], "bucket_id": "b1",
                       "collection_id": "c1", "id": rid, "item_id": rid}


def test_subscriptions_filter_by_action_and_resource(direct) -> None:
    app, api = direct
    deletes: List[ResourceEvent] = []
    items: List[ResourceEvent] = []
    app.events.subscribe(AfterResourceChanged, deletes.append, actions=["delete"])
    app.events.subscribe(AfterResourceChanged, items.append, resources=["item"])
    created = api.post_json("/notes", {"data": {"n": 1}}, status=201).json["data"]
    api.delete(f"/notes/{created['id']}", status=200)
    api.put_json(f"/buckets/b/collections/c/records/{uuid.uuid4()}", {"data": {"n": 1}}, status=201)
    assert [(event.payload["action"], event.payload["resource_name"]) for event in deletes] == [("delete", "note")]
    assert [(event.payload["action"], event.payload["resource_name"]) for event in items] == [("create", "item")]
    with pytest.raises(ValueError, match="Unknown actions"):
        app.events.subscribe(AfterResourceChanged, print, actions=["created"])
    with pytest.raises(TypeError):
        app.events.subscribe(dict, print)  # type: ignore[arg-type]


def test_a_failing_after_subscriber_is_logged_and_the_request_succeeds(direct, caplog) -> None:
    app, api = direct

    def broken(event: ResourceEvent) -> None:
        raise RuntimeError("listener down")

    app.events.subscribe(AfterResourceChanged, broken)
    seen = Recorder(app.events, AfterResourceChanged)
    with caplog.at_level(logging.ERROR, logger="wsgicliquet.events"):
        api.post_json("/notes", {"data": {"n": 1}}, status=201)
    assert seen.summary() == [("create", "note", 1)], "the next subscribers still get the event"
    assert "listener down" in caplog.text


# -- through the pipeline: batches, transactions ----------------------------------------------------------------

def _headers(name: str) -> Dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:secret".encode()).decode()}


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def pipeline(request):
    """The full pipeline over a resource app; on PostgreSQL the transaction layer notifies around its commit."""
    from wsgicliquet.backends import clear_backends

    settings: Dict[str, Any] = {"userid_hmac_secret": "abc", "cache_url": "", "permission_url": ""}
    if request.param == "postgresql":
        from tests.backends import database_url
        from tests.resource.conftest import RESOURCE_DATABASE

        settings["storage_url"] = database_url(request.getfixturevalue("postgresql_url"), RESOURCE_DATABASE)
    clear_backends()
    app = ResourceApp([Note, Item, Crash], settings)
    if request.param == "postgresql":
        app.storage.initialize_schema()
    yield app, webtest.TestApp(build_pipeline(app, settings)), request.param
    clear_backends()


def test_a_batch_merges_its_events_per_resource_and_action(pipeline) -> None:
    app, api, _ = pipeline
    seen = Recorder(app.events)
    user = _headers(uuid.uuid4().hex)
    first = api.post_json("/v1/notes", {"data": {"n": 0}}, headers=user, status=201).json["data"]
    seen.events.clear()
    batch = {"requests": [{"method": "POST", "path": "/notes", "body": {"data": {"n": 1}}},
                          {"method": "POST", "path": "/notes", "body": {"data": {"n": 2}}},
                          {"method": "DELETE", "path": f"/notes/{first['id']}"},
                          {"method": "PUT", "path": f"/notes/{uuid.uuid4()}", "body": {"data": "invalid"}}]}
    responses = api.post_json("/v1/batch", batch, headers=user, status=200).json["responses"]
    assert [response["status"] for response in responses] == [201, 201, 200, 400]
    assert seen.summary() == [("create", "note", 2), ("delete", "note", 1)]
    assert seen.summary(ResourceChanged) == seen.summary()
    create = seen.of(AfterResourceChanged)[0]
    assert [change["new"] for change in create.impacted_records] == [responses[0]["body"]["data"],
                                                                     responses[1]["body"]["data"]]
    assert create.payload["timestamp"] == responses[1]["body"]["data"]["last_modified"], "the last write's"
    assert create.payload["uri"] == "/notes" and create.environ["PATH_INFO"] == "/batch"


def test_a_batch_keeps_apart_the_events_of_other_parents_and_users(pipeline) -> None:
    app, api, _ = pipeline
    seen = Recorder(app.events, AfterResourceChanged)
    alice, bob = _headers(uuid.uuid4().hex), _headers(uuid.uuid4().hex)
    batch = {"requests": [
        {"method": "PUT", "path": f"/buckets/a/collections/c/records/{uuid.uuid4()}", "body": {"data": {"n": 1}}},
        {"method": "PUT", "path": f"/buckets/b/collections/c/records/{uuid.uuid4()}", "body": {"data": {"n": 2}}},
        {"method": "PUT", "path": f"/buckets/a/collections/c/records/{uuid.uuid4()}", "body": {"data": {"n": 3}}},
        {"method": "POST", "path": "/notes", "body": {"data": {"n": 4}}},
        {"method": "POST", "path": "/notes", "body": {"data": {"n": 5}}, "headers": bob}]}
    responses = api.post_json("/v1/batch", batch, headers=alice, status=200).json["responses"]
    assert [response["status"] for response in responses] == [201] * 5
    groups = [(event.payload["resource_name"], event.payload.get("bucket_id"), event.payload["user_id"],
               sorted(change["new"]["n"] for change in event.impacted_records)) for event in seen.events]
    alice_id, bob_id = groups[0][2], groups[-1][2]
    assert alice_id != bob_id and alice_id.startswith("basicauth:")
    assert groups == [("item", "a", alice_id, [1, 3]), ("item", "b", alice_id, [2]), ("note", None, alice_id, [4]),
                      ("note", None, bob_id, [5])]


class Crash(Note):
    """A resource whose hook fails: a 500 in the middle of a batch."""

    def process_record(self, new, old=None):
        raise RuntimeError("hook failed")


def test_a_batch_failing_midway_announces_only_the_writes_that_stay(pipeline) -> None:
    app, api, backend = pipeline
    seen = Recorder(app.events, AfterResourceChanged)
    user = _headers(uuid.uuid4().hex)
    batch = {"requests": [{"method": "POST", "path": "/notes", "body": {"data": {"n": 1}}},
                          {"method": "POST", "path": "/crashs", "body": {"data": {"n": 2}}},
                          {"method": "POST", "path": "/notes", "body": {"data": {"n": 3}}}]}
    api.post_json("/v1/batch", batch, headers=user, status=500)
    kept = [record["n"] for record in api.get("/v1/notes", headers=user).json["data"]]
    if backend == "postgresql":  # rolled back: nothing to announce
        assert kept == [] and seen.events == []
    else:  # no transaction: the first creation stays, and is announced
        assert kept == [1] and seen.summary() == [("create", "note", 1)]


def test_a_before_subscriber_refusing_aborts_the_request(pipeline) -> None:
    app, api, backend = pipeline
    after = Recorder(app.events, AfterResourceChanged)

    def refuse_big(event: ResourceChanged) -> None:
        if any(change["new"].get("n", 0) > 10 for change in event.impacted_records if "new" in change):
            raise HTTPError(403, ERRORS.FORBIDDEN, message="Too big")

    app.events.subscribe(ResourceChanged, refuse_big)
    user = _headers(uuid.uuid4().hex)
    refused = api.post_json("/v1/notes", {"data": {"n": 11}}, headers=user, status=403)
    assert refused.json["message"] == "Too big" and refused.json["errno"] == ERRORS.FORBIDDEN
    batch = {"requests": [{"method": "POST", "path": "/notes", "body": {"data": {"n": 1}}},
                          {"method": "POST", "path": "/notes", "body": {"data": {"n": 12}}}]}
    api.post_json("/v1/batch", batch, headers=user, status=403)
    assert after.events == [], "nothing refused is announced as done"
    kept = [record["n"] for record in api.get("/v1/notes", headers=user).json["data"]]
    # With a transaction the refused writes are rolled back; the memory backend has none to roll back.
    assert sorted(kept) == ([] if backend == "postgresql" else [1, 11, 12])


# -- listeners from settings --------------------------------------------------------------------------------------

@pytest.mark.redis
def test_the_redis_listener_pushes_committed_payloads(redis_url) -> None:
    import redis

    listname = f"events-{uuid.uuid4().hex}"
    settings = {"event_listeners": "queue", "event_listeners.queue.use": "wsgicliquet.listeners.redis",
                "event_listeners.queue.url": redis_url, "event_listeners.queue.listname": listname,
                "event_listeners.queue.resources": "note"}
    client = redis.Redis.from_url(redis_url)
    try:
        app = ResourceApp([Note, Item], load_settings(settings, environ={}))
        api = webtest.TestApp(app, extra_environ=as_user(unique_user()))
        created = api.post_json("/notes", {"data": {"n": 1}}, status=201).json["data"]
        api.get("/notes", status=200)  # reads are not among the default actions
        api.put_json(f"/buckets/b/collections/c/records/{uuid.uuid4()}", {"data": {"n": 1}}, status=201)  # not a note
        api.delete(f"/notes/{created['id']}", status=200)
        pushed = [json.loads(raw) for raw in reversed(client.lrange(listname, 0, -1))]
        assert [(payload["action"], payload["resource_name"]) for payload in pushed] == [("create", "note"),
                                                                                        ("delete", "note")]
        assert pushed[0]["uri"] == "/notes" and pushed[0]["timestamp"] == created["last_modified"]
        assert pushed[1]["note_id"] == created["id"]
    finally:
        client.delete(listname)


def test_a_listener_from_settings_with_reads_and_a_function(direct) -> None:
    received.clear()
    settings = {"event_listeners": "mine", "event_listeners.mine.use": f"{__name__}:load_recorder",
                "event_listeners.mine.actions": "read delete"}
    app = ResourceApp([Note], load_settings(settings, environ={}))
    metrics: List[tuple] = []  # what the StatsD layer gives the requests below it
    api = webtest.TestApp(app, extra_environ={**as_user(unique_user()), "wsgicliquet.metrics": metrics})
    created = api.post_json("/notes", {"data": {"n": 1}}, status=201).json["data"]
    api.get(f"/notes/{created['id']}", status=200)
    api.delete(f"/notes/{created['id']}", status=200)
    assert [(type(event).__name__, event.payload["action"]) for event in received] == [
        ("AfterResourceRead", "read"), ("AfterResourceChanged", "delete")]
    assert received_prefixes == ["event_listeners.mine."]
    assert [(kind, name) for kind, name, _ in metrics] == [("ms", "listeners.mine")] * 2, "each call timed (§14)"


received: List[ResourceEvent] = []
received_prefixes: List[str] = []


def load_recorder(settings: Any, prefix: str) -> Any:
    received_prefixes[:] = [prefix]
    return received.append


@pytest.mark.parametrize("settings, message", [
    pytest.param({"event_listeners": "x"}, "'event_listeners.x.use' is missing", id="no-use"),
    pytest.param({"event_listeners": "x", "event_listeners.x.use": "no_such_module_here"}, "cannot import",
                 id="unknown-module"),
    pytest.param({"event_listeners": "x", "event_listeners.x.use": "wsgicliquet.settings"},
                 "has no load_from_config", id="module-without-factory"),
    pytest.param({"event_listeners": "x", "event_listeners.x.use": "wsgicliquet.listeners.redis",
                  "event_listeners.x.actions": "create created"}, "unknown actions", id="unknown-action"),
    pytest.param({"event_listeners": "x", "event_listeners.x.use": "wsgicliquet.listeners.redis",
                  "event_listeners.x.url": "http://localhost"}, "not a Redis URL", id="bad-url"),
])
def test_listener_mistakes_stop_start_up_naming_the_setting(settings, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ResourceApp([Note], load_settings(settings, environ={}))


@pytest.mark.parametrize("use", ["broken_listener", "broken_listeners.listener", "broken_listeners.listener.make"])
def test_a_listener_module_failing_to_import_names_its_own_error(use, tmp_path, monkeypatch) -> None:
    """A missing dependency of the listener's module is named, not hidden behind 'no attribute' or 'expected a
    dotted path' (what importing ``use`` as ``module.function`` says instead)."""
    broken = "import no_such_dependency_of_the_listener\n\ndef load_from_config(settings, prefix):\n    return print\n"
    (tmp_path / "broken_listener.py").write_text(broken)
    (tmp_path / "broken_listeners").mkdir()
    (tmp_path / "broken_listeners" / "__init__.py").write_text("")
    (tmp_path / "broken_listeners" / "listener.py").write_text(broken)
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = {"event_listeners": "x", "event_listeners.x.use": use}
    with pytest.raises(ConfigurationError, match="'event_listeners.x.use'.*no_such_dependency_of_the_listener"):
        ResourceApp([Note], load_settings(settings, environ={}))
