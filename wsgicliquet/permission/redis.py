"""Redis permission backend (PROTOCOL.md §17.4): user principals and access control entries as Redis sets.

Besides the sets of §17.4 (``user:<user_id>`` and the ACE ``ace:<permission>:<object_id>``), the backend keeps
reverse indexes, so that no operation scans the key space: ``members:<principal>`` (users holding a principal, for
``remove_principal``), ``perms:<object_id>`` (permissions with an ACE on the object, for
``delete_object_permissions``) and ``objects:<permission>:<principal>`` (objects a principal is granted, for
``principals_accessible_objects``).  Every write updates a set and its indexes together in one Lua script or one
MULTI, so a reader never sees them disagree.  Key layout: ``docs/redis.md``.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set

from wsgicliquet import redis_client
from wsgicliquet.permission import BoundPermissions, bound_pairs, check_storable, checked_replacement, is_storable
from wsgicliquet.permission import Permission as BasePermission
from wsgicliquet.redis_client import escape, wrap_errors

__all__ = ["Permission"]

# Every script gets the namespace (key prefix + "permission:") as ARGV[1] and builds the keys of the indexes from
# it, as the keys depend on set members read by the script.
_LUA_HELPERS = """
local ns = ARGV[1]
local function esc(part)
  local escaped = string.gsub(string.gsub(part, "%%", "%%25"), ":", "%%3A")
  return escaped
end
local function ace(object_id, perm) return ns .. "ace:" .. esc(perm) .. ":" .. object_id end
local function perms(object_id) return ns .. "perms:" .. object_id end
local function objects(perm, principal) return ns .. "objects:" .. esc(perm) .. ":" .. principal end
local function add(object_id, perm, principal)
  redis.call("SADD", ace(object_id, perm), principal)
  redis.call("SADD", perms(object_id), perm)
  redis.call("SADD", objects(perm, principal), object_id)
end
local function clear(object_id, perm)
  local key = ace(object_id, perm)
  for _, principal in ipairs(redis.call("SMEMBERS", key)) do
    redis.call("SREM", objects(perm, principal), object_id)
  end
  redis.call("DEL", key)
  redis.call("SREM", perms(object_id), perm)
end
"""

_ADD_ACE = _LUA_HELPERS + """
add(ARGV[2], ARGV[3], ARGV[4])
"""

_REMOVE_ACE = _LUA_HELPERS + """
local object_id, perm, principal = ARGV[2], ARGV[3], ARGV[4]
local key = ace(object_id, perm)
redis.call("SREM", key, principal)
redis.call("SREM", objects(perm, principal), object_id)
if redis.call("SCARD", key) == 0 then redis.call("SREM", perms(object_id), perm) end
"""

# ARGV[3] is a JSON object permission -> list of principals.
_REPLACE = _LUA_HELPERS + """
local object_id = ARGV[2]
for perm, principals in pairs(cjson.decode(ARGV[3])) do
  clear(object_id, perm)
  for _, principal in ipairs(principals) do add(object_id, perm, principal) end
end
"""

_DELETE_OBJECTS = _LUA_HELPERS + """
for i = 2, #ARGV do
  local object_id = ARGV[i]
  for _, perm in ipairs(redis.call("SMEMBERS", perms(object_id))) do clear(object_id, perm) end
  redis.call("DEL", perms(object_id))
end
"""

# Returns a flat list: permission, JSON list of its principals, permission, ...
_OBJECT_PERMISSIONS = _LUA_HELPERS + """
local object_id, wanted = ARGV[2], {}
if #ARGV > 2 then
  for i = 3, #ARGV do wanted[#wanted + 1] = ARGV[i] end
else
  wanted = redis.call("SMEMBERS", perms(object_id))
end
local result = {}
for _, perm in ipairs(wanted) do
  local principals = redis.call("SMEMBERS", ace(object_id, perm))
  if #principals > 0 then
    result[#result + 1] = perm
    result[#result + 1] = cjson.encode(principals)
  end
end
return result
"""

_REMOVE_PRINCIPAL = _LUA_HELPERS + """
local principal = ARGV[2]
local members = ns .. "members:" .. principal
for _, user_id in ipairs(redis.call("SMEMBERS", members)) do
  redis.call("SREM", ns .. "user:" .. user_id, principal)
end
redis.call("DEL", members)
"""


class Permission(BasePermission):
    name = "redis"

    def __init__(self, client: Any, *, key_prefix: str = redis_client.DEFAULT_KEY_PREFIX) -> None:
        self.client = client
        self.namespace = f"{key_prefix}permission:"
        self._add_ace = client.register_script(_ADD_ACE)
        self._remove_ace = client.register_script(_REMOVE_ACE)
        self._replace = client.register_script(_REPLACE)
        self._delete_objects = client.register_script(_DELETE_OBJECTS)
        self._object_permissions = client.register_script(_OBJECT_PERMISSIONS)
        self._remove_principal = client.register_script(_REMOVE_PRINCIPAL)
        self._scripts = [self._add_ace, self._remove_ace, self._replace, self._delete_objects,
                         self._object_permissions, self._remove_principal]

    @classmethod
    def from_settings(cls, settings: Dict[str, Any], prefix: str = "permission") -> "Permission":
        return cls(redis_client.client_from_settings(settings, prefix),
                   key_prefix=redis_client.key_prefix_from_settings(settings, prefix))

    @wrap_errors
    def initialize_schema(self, dry_run: bool = False) -> None:
        """Load the scripts (they are also loaded on first use, and again after a server restart)."""
        if not dry_run:
            redis_client.load_scripts(self.client, self._scripts)

    # Keys (the Lua helpers above build the same ones).
    def _user(self, user_id: str) -> str:
        return f"{self.namespace}user:{user_id}"

    def _members(self, principal: str) -> str:
        return f"{self.namespace}members:{principal}"

    def _ace(self, object_id: str, permission: str) -> str:
        return f"{self.namespace}ace:{escape(permission)}:{object_id}"

    def _objects(self, permission: str, principal: str) -> str:
        return f"{self.namespace}objects:{escape(permission)}:{principal}"

    @wrap_errors
    def flush(self) -> None:
        redis_client.unlink_prefix(self.client, self.namespace)

    @wrap_errors
    def add_user_principal(self, user_id: str, principal: str) -> None:
        check_storable(user_id, principal)
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(self._user(user_id), principal)
        pipe.sadd(self._members(principal), user_id)
        pipe.execute()

    @wrap_errors
    def remove_user_principal(self, user_id: str, principal: str) -> None:
        if not (is_storable(user_id) and is_storable(principal)):
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.srem(self._user(user_id), principal)
        pipe.srem(self._members(principal), user_id)
        pipe.execute()

    @wrap_errors
    def remove_principal(self, principal: str) -> None:
        if not is_storable(principal):
            return
        self._remove_principal(args=[self.namespace, principal])

    @wrap_errors
    def user_principals(self, user_id: str) -> Set[str]:
        if not is_storable(user_id):
            return set()
        return _strings(self.client.smembers(self._user(user_id)))

    @wrap_errors
    def add_principal_to_ace(self, object_id: str, permission: str, principal: str) -> None:
        check_storable(object_id, permission, principal)
        self._add_ace(args=[self.namespace, object_id, permission, principal])

    @wrap_errors
    def remove_principal_from_ace(self, object_id: str, permission: str, principal: str) -> None:
        if not (is_storable(object_id) and is_storable(permission) and is_storable(principal)):
            return
        self._remove_ace(args=[self.namespace, object_id, permission, principal])

    @wrap_errors
    def object_permission_principals(self, object_id: str, permission: str) -> Set[str]:
        if not (is_storable(object_id) and is_storable(permission)):
            return set()
        return _strings(self.client.smembers(self._ace(object_id, permission)))

    @wrap_errors
    def object_permission_authorized_principals(self, object_id: str, permission: str,
                                                get_bound_permissions: Optional[BoundPermissions] = None
                                                ) -> Set[str]:
        """One SUNION over the ACEs of every bound pair."""
        keys = [self._ace(obj, perm) for obj, perm in bound_pairs(object_id, permission, get_bound_permissions,
                                                                  storable=True)]
        return _strings(self.client.sunion(keys)) if keys else set()

    @wrap_errors
    def principals_accessible_objects(self, principals: Iterable[str], permission: str,
                                      object_id_match: Optional[str] = None,
                                      get_bound_permissions: Optional[BoundPermissions] = None) -> Set[str]:
        """Reads the ``objects:<permission>:<principal>`` indexes, then keeps the ids matching each glob."""
        pairs = bound_pairs(object_id_match or "*", permission, get_bound_permissions, storable=True)
        principals = [principal for principal in principals if is_storable(principal)]
        if not principals or not pairs:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for _glob, perm in pairs:
            pipe.sunion([self._objects(perm, principal) for principal in principals])
        found: Set[str] = set()
        for (glob, _perm), members in zip(pairs, pipe.execute()):
            matcher = _glob_regex(glob)
            found.update(object_id for object_id in _strings(members) if matcher.fullmatch(object_id))
        return found

    @wrap_errors
    def has_accessible_objects(self, principals: Iterable[str], permission: str,
                               object_id_match: Optional[str] = None,
                               get_bound_permissions: Optional[BoundPermissions] = None) -> bool:
        """``SSCAN ... MATCH`` of the same indexes, stopping at the first object found."""
        principals = [principal for principal in principals if is_storable(principal)]
        for glob, perm in bound_pairs(object_id_match or "*", permission, get_bound_permissions, storable=True):
            match = redis_client.match_pattern(glob)
            for principal in principals:
                for _ in self.client.sscan_iter(self._objects(perm, principal), match=match, count=1000):
                    return True
        return False

    @wrap_errors
    def object_permissions(self, object_id: str, permissions: Optional[Iterable[str]] = None
                           ) -> Dict[str, Set[str]]:
        if not is_storable(object_id):
            return {}
        args: List[str] = [self.namespace, object_id]
        if permissions is not None:
            wanted = [perm for perm in permissions if is_storable(perm)]
            if not wanted:
                return {}
            args.extend(wanted)
        flat = self._object_permissions(args=args)
        return {_string(flat[i]): set(json.loads(flat[i + 1])) for i in range(0, len(flat), 2)}

    @wrap_errors
    def replace_object_permissions(self, object_id: str, permissions: Mapping[str, Iterable[str]]) -> None:
        if not permissions:
            return
        # A dict always encodes as a JSON object; lists of principals as arrays ([] decodes as an empty table).
        replacing = checked_replacement(object_id, permissions)
        payload = json.dumps({perm: sorted(principals) for perm, principals in replacing.items()})
        self._replace(args=[self.namespace, object_id, payload])

    @wrap_errors
    def delete_object_permissions(self, *object_ids: str) -> None:
        object_ids = tuple(object_id for object_id in object_ids if is_storable(object_id))
        if object_ids:
            self._delete_objects(args=[self.namespace, *object_ids])


def _string(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _strings(values: Iterable[Any]) -> Set[str]:
    return {_string(value) for value in values}


def _glob_regex(glob: str) -> "re.Pattern[str]":
    """Only ``*`` is special (any characters, ``/`` included), as in Cliquet's backends."""
    return re.compile(".*".join(re.escape(part) for part in glob.split("*")), re.DOTALL)
