"""Property-based test of shareable resources: random sharing never lets anybody read or write without a grant.

A Hypothesis state machine drives the HTTP API (Authentication middleware + resource app, memory backends):
users create records, grant and revoke ``read`` and ``write`` to users, groups, ``system.Authenticated`` and
``system.Everyone``, edit and bulk-delete records, and join or leave groups.  A plain model (record -> ACL, user ->
groups) predicts every answer: a record is readable (writable) exactly when one of the user's principals is in
its ``read`` (``write``) set, every successful write adds its author to ``write``, a listing is exactly the
readable records, a bulk delete removes exactly the writable ones.
"""
from __future__ import annotations

import uuid
from typing import Dict, Optional, Set

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from wsgicliquet.permission.memory import Permission as MemoryPermission

from .test_shareable import Api, shareable

USERS = ("owner", "ann", "bob", "cid", None)  # None: anonymous
GROUPS = ("group:red", "group:blue")
SPECIAL = ("system.Everyone", "system.Authenticated")


class SharingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        resource = shareable()
        self.api = Api(MemoryPermission(), [resource], **{f"{resource.name}_create_principals": "system.Authenticated"})
        self.acl: Dict[str, Dict[str, Set[str]]] = {}  # record id -> permission -> principals
        self.groups: Dict[str, Set[str]] = {user: set() for user in USERS if user}

    # -- the model ----------------------------------------------------------------------------------------------

    def principals(self, user: Optional[str]) -> Set[str]:
        if user is None:
            return {"system.Everyone"}
        return {*SPECIAL, self.api.userid(user), *self.groups[user]}

    def may(self, user: Optional[str], permission: str, object_id: str) -> bool:
        return bool(self.principals(user) & self.acl[object_id][permission])

    def refused(self, user: Optional[str]) -> int:
        return 401 if user is None else 403

    def principal(self, data) -> str:
        kind = data.draw(st.sampled_from(["user", "group", "special"]))
        if kind == "user":
            return self.api.userid(data.draw(st.sampled_from([user for user in USERS if user])))
        return data.draw(st.sampled_from(GROUPS if kind == "group" else SPECIAL))

    # -- rules --------------------------------------------------------------------------------------------------

    @initialize()
    def two_records(self):
        self.create_record("owner", set())
        self.create_record("ann", {"group:red"})

    @rule(user=st.sampled_from(USERS), data=st.data())
    def create(self, user, data):
        self.create_record(user, data.draw(st.sets(st.sampled_from(GROUPS + SPECIAL), max_size=2)))

    def create_record(self, user, read):
        body = {"data": {"text": "new"}, "permissions": {"read": sorted(read)}}
        response = self.api.request(user, "POST", self.api.url, body, status="*")
        if user is None:
            assert response.status_int == 401
            return
        assert response.status_int == 201
        self.acl[response.json["data"]["id"]] = {"read": set(read), "write": {self.api.userid(user)}}

    @precondition(lambda self: self.acl)
    @rule(user=st.sampled_from(USERS), permission=st.sampled_from(["read", "write"]), grant=st.booleans(),
          data=st.data())
    def share(self, user, permission, grant, data):
        object_id = data.draw(st.sampled_from(list(self.acl)))
        principal = self.principal(data)
        current = self.acl[object_id][permission]
        principals = current | {principal} if grant else current - {principal}
        response = self.api.request(user, "PATCH", self.api.uri(object_id),
                                    {"permissions": {permission: sorted(principals)}}, status="*")
        self.check_write(user, object_id, response, {permission: principals})

    @precondition(lambda self: self.acl)
    @rule(user=st.sampled_from(USERS), data=st.data())
    def edit(self, user, data):
        object_id = data.draw(st.sampled_from(list(self.acl)))
        response = self.api.request(user, "PATCH", self.api.uri(object_id), {"data": {"text": uuid.uuid4().hex}},
                                    status="*")
        self.check_write(user, object_id, response, {})

    def check_write(self, user, object_id, response, changes) -> None:
        if not self.may(user, "write", object_id):
            assert response.status_int == self.refused(user), (user, object_id, response)
            return
        assert response.status_int == 200, response
        acl = self.acl[object_id]
        acl.update(changes)
        if user is not None:
            acl["write"] = acl["write"] | {self.api.userid(user)}
        assert response.json["permissions"] == {perm: sorted(p) for perm, p in sorted(acl.items()) if p}

    @rule(user=st.sampled_from([user for user in USERS if user]), group=st.sampled_from(GROUPS),
          join=st.booleans())
    def membership(self, user, group, join):
        userid = self.api.userid(user)
        if join:
            self.api.permission.add_user_principal(userid, group)
            self.groups[user].add(group)
        else:
            self.api.permission.remove_user_principal(userid, group)
            self.groups[user].discard(group)

    @precondition(lambda self: self.acl)
    @rule(user=st.sampled_from(USERS))
    def bulk_delete(self, user):
        writable = {object_id for object_id in self.acl if self.may(user, "write", object_id)}
        response = self.api.request(user, "DELETE", self.api.url, status="*")
        if not writable:
            assert response.status_int == self.refused(user)
            return
        assert {tombstone["id"] for tombstone in response.json["data"]} == writable
        for object_id in writable:
            del self.acl[object_id]

    @precondition(lambda self: self.acl)
    @rule(user=st.sampled_from(USERS), data=st.data())
    def read_one(self, user, data):
        object_id = data.draw(st.sampled_from(list(self.acl)))
        response = self.api.request(user, "GET", self.api.uri(object_id), status="*")
        expected = 200 if self.may(user, "read", object_id) else self.refused(user)
        assert response.status_int == expected, (user, object_id, response)

    @invariant()
    def listings_are_the_readable_records(self):
        for user in USERS:
            readable = {object_id for object_id in self.acl if self.may(user, "read", object_id)}
            response = self.api.request(user, "GET", self.api.url, status="*")
            if user is None and not readable:
                assert response.status_int == 401
                continue
            assert {record["id"] for record in response.json["data"]} == readable
            assert response.headers["Total-Records"] == str(len(readable))


SharingMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])
TestSharing = SharingMachine.TestCase
