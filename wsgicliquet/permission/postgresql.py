"""PostgreSQL permission backend (PROTOCOL.md §17.4).

Tables ``user_principals(user_id, principal)`` and ``access_control_entries(object_id, permission, principal)``.
Principals, object ids and globs are always query parameters (arrays are passed whole and ``unnest``-ed), never
formatted into SQL (§21.17); ``*`` globs become ``LIKE`` patterns with ``%``, ``_`` and ``\\`` escaped.
PostgreSQL text cannot hold a NUL character nor a lone surrogate: a principal, user id or object id containing one
is never stored, so reads and removals asked about it find nothing (as on the other backends, which never received
it from the resource app or the authentication middleware either) instead of failing.
Shares the connection pool and the thread's transaction with a storage on the same URL, so a record and its ACL
are written in one transaction.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Set

from wsgicliquet.permission import (BoundPermissions, Permission as PermissionBase, bound_pairs, check_storable,
                                    checked_replacement)
from wsgicliquet.permission import is_storable as _storable
from wsgicliquet.postgresql import Backend, Migration

__all__ = ["Permission", "MIGRATIONS", "SCHEMA_VERSION"]

MIGRATIONS: List[Migration] = [
    (1, """
    CREATE TABLE IF NOT EXISTS user_principals (
        user_id TEXT NOT NULL,
        principal TEXT NOT NULL,
        PRIMARY KEY (user_id, principal)
    );
    CREATE INDEX IF NOT EXISTS user_principals_principal_idx ON user_principals (principal);
    CREATE TABLE IF NOT EXISTS access_control_entries (
        object_id TEXT NOT NULL,
        permission TEXT NOT NULL,
        principal TEXT NOT NULL,
        PRIMARY KEY (object_id, permission, principal)
    );
    CREATE INDEX IF NOT EXISTS access_control_entries_principal_idx
        ON access_control_entries (principal, permission, object_id text_pattern_ops);
    """),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def glob_to_like(glob: str) -> str:
    """``/buckets/*/collections`` to a LIKE pattern, escaping the characters LIKE treats specially."""
    return glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")


class Permission(Backend, PermissionBase):
    """Settings: ``permission_url``, ``permission_pool_size`` (and optionally ``permission_pool_timeout``)."""

    component, migrations, tables = "permission", MIGRATIONS, ("user_principals", "access_control_entries")

    def _run(self, query: str, params: Any = None, fetch: Optional[str] = None) -> Any:
        with self.client.transaction():
            self.client.check_schema("permission", SCHEMA_VERSION)
            return self.client.execute(query, params, fetch)

    def flush(self) -> None:
        self._run("DELETE FROM user_principals; DELETE FROM access_control_entries;")

    # Groups -------------------------------------------------------------------------------------------------------

    def add_user_principal(self, user_id: str, principal: str) -> None:
        check_storable(user_id, principal)
        self._run("INSERT INTO user_principals (user_id, principal) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                  (user_id, principal))

    def remove_user_principal(self, user_id: str, principal: str) -> None:
        if not (_storable(user_id) and _storable(principal)):
            return
        self._run("DELETE FROM user_principals WHERE user_id = %s AND principal = %s", (user_id, principal))

    def remove_principal(self, principal: str) -> None:
        if not _storable(principal):
            return
        self._run("DELETE FROM user_principals WHERE principal = %s", (principal,))

    def user_principals(self, user_id: str) -> Set[str]:
        if not _storable(user_id):
            return set()
        rows = self._run("SELECT principal FROM user_principals WHERE user_id = %s", (user_id,), fetch="all")
        return {row[0] for row in rows}

    # Access control entries ---------------------------------------------------------------------------------------

    def add_principal_to_ace(self, object_id: str, permission: str, principal: str) -> None:
        check_storable(object_id, permission, principal)
        self._run("INSERT INTO access_control_entries (object_id, permission, principal) VALUES (%s, %s, %s) "
                  "ON CONFLICT DO NOTHING", (object_id, permission, principal))

    def remove_principal_from_ace(self, object_id: str, permission: str, principal: str) -> None:
        if not (_storable(object_id) and _storable(permission) and _storable(principal)):
            return
        self._run("DELETE FROM access_control_entries WHERE object_id = %s AND permission = %s AND principal = %s",
                  (object_id, permission, principal))

    def object_permission_principals(self, object_id: str, permission: str) -> Set[str]:
        if not (_storable(object_id) and _storable(permission)):
            return set()
        rows = self._run("SELECT principal FROM access_control_entries WHERE object_id = %s AND permission = %s",
                         (object_id, permission), fetch="all")
        return {row[0] for row in rows}

    def object_permission_authorized_principals(self, object_id: str, permission: str,
                                                get_bound_permissions: Optional[BoundPermissions] = None
                                                ) -> Set[str]:
        """One query for every bound ``(object, permission)`` pair."""
        pairs = bound_pairs(object_id, permission, get_bound_permissions, storable=True)
        if not pairs:
            return set()
        rows = self._run("""
            SELECT DISTINCT principal FROM access_control_entries AS ace
            JOIN unnest(%s::text[], %s::text[]) AS bound(object_id, permission)
              ON ace.object_id = bound.object_id AND ace.permission = bound.permission
            """, ([obj for obj, _ in pairs], [perm for _, perm in pairs]), fetch="all")
        return {row[0] for row in rows}

    def principals_accessible_objects(self, principals: Iterable[str], permission: str,
                                      object_id_match: Optional[str] = None,
                                      get_bound_permissions: Optional[BoundPermissions] = None) -> Set[str]:
        rows = self._accessible("SELECT DISTINCT ace.object_id", "", principals, permission, object_id_match,
                                get_bound_permissions)
        return {row[0] for row in rows}

    def has_accessible_objects(self, principals: Iterable[str], permission: str,
                               object_id_match: Optional[str] = None,
                               get_bound_permissions: Optional[BoundPermissions] = None) -> bool:
        return bool(self._accessible("SELECT 1", "LIMIT 1", principals, permission, object_id_match,
                                     get_bound_permissions))

    def _accessible(self, select: str, limit: str, principals: Iterable[str], permission: str,
                    object_id_match: Optional[str], get_bound_permissions: Optional[BoundPermissions]) -> List[Any]:
        principals = [principal for principal in principals if _storable(principal)]
        pairs = bound_pairs(object_id_match or "*", permission, get_bound_permissions, storable=True)
        if not principals or not pairs:
            return []
        return self._run(f"""
            {select} FROM access_control_entries AS ace
            JOIN unnest(%s::text[], %s::text[]) AS bound(pattern, permission)
              ON ace.permission = bound.permission AND ace.object_id LIKE bound.pattern ESCAPE '\\'
            WHERE ace.principal = ANY(%s::text[]) {limit}
            """, ([glob_to_like(glob) for glob, _ in pairs], [perm for _, perm in pairs], principals), fetch="all")

    def object_permissions(self, object_id: str, permissions: Optional[Iterable[str]] = None
                           ) -> Dict[str, Set[str]]:
        if not _storable(object_id):
            return {}
        query = "SELECT permission, principal FROM access_control_entries WHERE object_id = %s"
        params: List[Any] = [object_id]
        if permissions is not None:
            query += " AND permission = ANY(%s::text[])"
            params.append([perm for perm in permissions if _storable(perm)])
        result: Dict[str, Set[str]] = {}
        for perm, principal in self._run(query, params, fetch="all"):
            result.setdefault(perm, set()).add(principal)
        return result

    def replace_object_permissions(self, object_id: str, permissions: Mapping[str, Iterable[str]]) -> None:
        replacing = checked_replacement(object_id, permissions)
        with self.client.transaction():
            for perm, principals in replacing.items():
                self._run("DELETE FROM access_control_entries WHERE object_id = %s AND permission = %s",
                          (object_id, perm))
                self._run("""
                    INSERT INTO access_control_entries (object_id, permission, principal)
                    SELECT %s, %s, principal FROM unnest(%s::text[]) AS principal ON CONFLICT DO NOTHING
                    """, (object_id, perm, sorted(principals)))

    def delete_object_permissions(self, *object_ids: str) -> None:
        object_ids = tuple(object_id for object_id in object_ids if _storable(object_id))
        if object_ids:
            self._run("DELETE FROM access_control_entries WHERE object_id = ANY(%s::text[])", (list(object_ids),))
