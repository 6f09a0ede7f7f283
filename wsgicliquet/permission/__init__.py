"""The permission contract (PROTOCOL.md §17.4): user principals (groups) and access control entries.

An ACE is ``(object_id, permission, principal)``.  ``get_bound_permissions(object_id, permission)`` returns the
``(object_id, permission)`` pairs whose principals also grant the asked permission (write implies read, a parent
grants its children...); by default only the pair itself.  ``wsgicliquet.permission.testing`` is the contract suite.
"""
from __future__ import annotations

import abc
import re
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from wsgicliquet.storage.exceptions import BackendError

__all__ = ["Permission", "BackendError", "BoundPermissions", "MAX_PRINCIPAL_LENGTH", "check_storable",
           "is_storable", "checked_replacement", "bound_pairs"]

#: Longest principal (user id, group) the resource app and the authentication middleware accept: every backend
#: stores it in any script, PostgreSQL's indexes included (an index entry holds at most about 2,700 bytes, and a
#: group membership indexes two principals).
MAX_PRINCIPAL_LENGTH = 256

#: A NUL (PostgreSQL text cannot hold one) or a lone surrogate (not encodable as UTF-8, so neither Redis nor
#: PostgreSQL can receive it).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def is_storable(value: str) -> bool:
    """Whether every backend can store ``value``: reads and removals asked about any other string find nothing."""
    if value.isascii():  # most ids: only a NUL to look for, without the regular expression (a fourth of the cost)
        return "\x00" not in value
    return _UNSTORABLE.search(value) is None


def check_storable(*values: str) -> None:
    """Writes refuse a NUL character or a lone surrogate (``ValueError``) on every backend, and write nothing, as
    PostgreSQL and Redis cannot hold them; reads asked about one find nothing."""
    if not all(is_storable(value) for value in values):
        raise ValueError("user ids, principals, object ids and permissions cannot contain a NUL character "
                         "or a lone surrogate")


def checked_replacement(object_id: str, permissions: Mapping[str, Optional[Iterable[str]]]) -> Dict[str, Set[str]]:
    """The principals of each permission :meth:`Permission.replace_object_permissions` sets (None: none), after
    :func:`check_storable` of everything it would write, so that a refused value writes nothing."""
    replacing = {permission: set(principals or ()) for permission, principals in permissions.items()}
    check_storable(object_id, *replacing, *(principal for group in replacing.values() for principal in group))
    return replacing


BoundPermissions = Callable[[str, str], Iterable[Tuple[str, str]]]


def bound_pairs(object_id: str, permission: str, get_bound_permissions: Optional[BoundPermissions], *,
                storable: bool = False) -> List[Tuple[str, str]]:
    """The ``(object, permission)`` pairs that grant ``permission`` on ``object_id`` (``object_id`` may be a glob),
    itself alone without ``get_bound_permissions``; with ``storable``, only those a backend can hold (the others
    match nothing)."""
    pairs = list(get_bound_permissions(object_id, permission)) if get_bound_permissions else [(object_id, permission)]
    return [(obj, perm) for obj, perm in pairs if is_storable(obj) and is_storable(perm)] if storable else pairs


class Permission(abc.ABC):
    """Abstract permission backend.  Failures raise :class:`BackendError`; methods are thread-safe."""

    name = "permission"

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Dict[str, Any], prefix: str = "permission") -> "Permission":
        """Build from ``<prefix>_url`` and ``<prefix>_pool_size``."""

    def initialize_schema(self, dry_run: bool = False) -> None:
        """Create tables where needed; idempotent."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Remove every principal and ACE of this backend."""

    @abc.abstractmethod
    def add_user_principal(self, user_id: str, principal: str) -> None: ...

    @abc.abstractmethod
    def remove_user_principal(self, user_id: str, principal: str) -> None: ...

    @abc.abstractmethod
    def remove_principal(self, principal: str) -> None:
        """Remove ``principal`` from every user."""

    @abc.abstractmethod
    def user_principals(self, user_id: str) -> Set[str]:
        """The extra principals (groups) of a user."""

    @abc.abstractmethod
    def add_principal_to_ace(self, object_id: str, permission: str, principal: str) -> None: ...

    @abc.abstractmethod
    def remove_principal_from_ace(self, object_id: str, permission: str, principal: str) -> None: ...

    @abc.abstractmethod
    def object_permission_principals(self, object_id: str, permission: str) -> Set[str]: ...

    def object_permission_authorized_principals(self, object_id: str, permission: str,
                                                get_bound_permissions: Optional[BoundPermissions] = None
                                                ) -> Set[str]:
        """Union of the principals of every bound ``(object, permission)`` pair."""
        principals: Set[str] = set()
        for obj, perm in bound_pairs(object_id, permission, get_bound_permissions):
            principals |= self.object_permission_principals(obj, perm)
        return principals

    def check_permission(self, object_id: str, permission: str, principals: Iterable[str],
                         get_bound_permissions: Optional[BoundPermissions] = None) -> bool:
        """True when one of ``principals`` holds the permission (directly or through a bound pair)."""
        authorized = self.object_permission_authorized_principals(object_id, permission, get_bound_permissions)
        return bool(authorized & set(principals))

    @abc.abstractmethod
    def principals_accessible_objects(self, principals: Iterable[str], permission: str,
                                      object_id_match: Optional[str] = None,
                                      get_bound_permissions: Optional[BoundPermissions] = None) -> Set[str]:
        """Object ids (matching the ``*`` glob ``object_id_match``) on which a principal has the permission."""

    def has_accessible_objects(self, principals: Iterable[str], permission: str,
                               object_id_match: Optional[str] = None,
                               get_bound_permissions: Optional[BoundPermissions] = None) -> bool:
        """Whether :meth:`principals_accessible_objects` would find any object: an authorization that only needs to
        know whether the user was granted something asks this, and backends answer it without listing them all."""
        return bool(self.principals_accessible_objects(principals, permission, object_id_match,
                                                        get_bound_permissions))

    @abc.abstractmethod
    def object_permissions(self, object_id: str, permissions: Optional[Iterable[str]] = None
                           ) -> Dict[str, Set[str]]:
        """Mapping permission -> principals (only permissions with at least one principal)."""

    @abc.abstractmethod
    def replace_object_permissions(self, object_id: str, permissions: Mapping[str, Iterable[str]]) -> None:
        """For each permission given, replace its principals (an empty list or None removes them); others
        untouched."""

    @abc.abstractmethod
    def delete_object_permissions(self, *object_ids: str) -> None:
        """Drop every ACE of these objects."""

    def ping(self, readonly: bool = False) -> bool:
        """Heartbeat probe: adds then removes a principal unless ``readonly``."""
        try:
            if readonly:
                self.user_principals("__heartbeat__")
            else:
                self.add_user_principal("__heartbeat__", "alive")
                self.remove_user_principal("__heartbeat__", "alive")
            return True
        except Exception:
            return False
