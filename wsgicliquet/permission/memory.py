"""In-process permission backend: user principals and access control entries in dicts.  For development and tests."""
from __future__ import annotations

import functools
import re
import threading
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Set

from . import BoundPermissions, Permission as PermissionBase, bound_pairs, check_storable, checked_replacement

__all__ = ["Permission"]


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> "re.Pattern[str]":
    """``*`` matches any run of characters (``/`` included); everything else is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")) + r"\Z", re.DOTALL)


class Permission(PermissionBase):
    """Memory permission backend.  One lock guards both maps; returned sets are copies."""

    name = "memory"

    def __init__(self) -> None:
        self._users: Dict[str, Set[str]] = {}                 # user id -> extra principals
        self._aces: Dict[str, Dict[str, Set[str]]] = {}       # object id -> permission -> principals
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Dict[str, Any], prefix: str = "permission") -> "Permission":
        return cls()

    def flush(self) -> None:
        with self._lock:
            self._users.clear()
            self._aces.clear()

    def add_user_principal(self, user_id: str, principal: str) -> None:
        check_storable(user_id, principal)
        with self._lock:
            self._users.setdefault(user_id, set()).add(principal)

    def remove_user_principal(self, user_id: str, principal: str) -> None:
        with self._lock:
            principals = self._users.get(user_id)
            if principals is not None:
                principals.discard(principal)
                if not principals:
                    del self._users[user_id]

    def remove_principal(self, principal: str) -> None:
        with self._lock:
            for user_id in [user for user, principals in self._users.items() if principal in principals]:
                self._users[user_id].discard(principal)
                if not self._users[user_id]:
                    del self._users[user_id]

    def user_principals(self, user_id: str) -> Set[str]:
        with self._lock:
            return set(self._users.get(user_id, ()))

    def add_principal_to_ace(self, object_id: str, permission: str, principal: str) -> None:
        check_storable(object_id, permission, principal)
        with self._lock:
            self._aces.setdefault(object_id, {}).setdefault(permission, set()).add(principal)

    def remove_principal_from_ace(self, object_id: str, permission: str, principal: str) -> None:
        with self._lock:
            self._set_principals(object_id, permission,
                                 self._aces.get(object_id, {}).get(permission, set()) - {principal})

    def _set_principals(self, object_id: str, permission: str, principals: Set[str]) -> None:
        """Replace one ACE, dropping empty entries; the caller holds the lock."""
        if principals:
            self._aces.setdefault(object_id, {})[permission] = set(principals)
            return
        permissions = self._aces.get(object_id)
        if permissions is not None:
            permissions.pop(permission, None)
            if not permissions:
                del self._aces[object_id]

    def object_permission_principals(self, object_id: str, permission: str) -> Set[str]:
        with self._lock:
            return set(self._aces.get(object_id, {}).get(permission, ()))

    def principals_accessible_objects(self, principals: Iterable[str], permission: str,
                                      object_id_match: Optional[str] = None,
                                      get_bound_permissions: Optional[BoundPermissions] = None) -> Set[str]:
        return set(self._accessible(principals, permission, object_id_match, get_bound_permissions))

    def has_accessible_objects(self, principals: Iterable[str], permission: str,
                               object_id_match: Optional[str] = None,
                               get_bound_permissions: Optional[BoundPermissions] = None) -> bool:
        return any(True for _ in self._accessible(principals, permission, object_id_match, get_bound_permissions))

    def _accessible(self, principals: Iterable[str], permission: str, object_id_match: Optional[str],
                    get_bound_permissions: Optional[BoundPermissions]) -> Iterator[str]:
        principals = set(principals)
        pairs = bound_pairs(object_id_match or "*", permission, get_bound_permissions)
        matchers = [(_glob(obj_pattern), perm) for obj_pattern, perm in pairs]
        with self._lock:
            for object_id, permissions in self._aces.items():
                for regex, perm in matchers:
                    if principals & permissions.get(perm, set()) and regex.match(object_id):
                        yield object_id
                        break

    def object_permissions(self, object_id: str, permissions: Optional[Iterable[str]] = None
                           ) -> Dict[str, Set[str]]:
        with self._lock:
            current = self._aces.get(object_id, {})
            wanted = current.keys() if permissions is None else [perm for perm in permissions if perm in current]
            return {perm: set(current[perm]) for perm in wanted if current[perm]}

    def replace_object_permissions(self, object_id: str, permissions: Mapping[str, Iterable[str]]) -> None:
        replacing = checked_replacement(object_id, permissions)
        with self._lock:
            for permission, principals in replacing.items():
                self._set_principals(object_id, permission, principals)

    def delete_object_permissions(self, *object_ids: str) -> None:
        with self._lock:
            for object_id in object_ids:
                self._aces.pop(object_id, None)
