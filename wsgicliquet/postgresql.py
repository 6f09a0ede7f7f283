"""The PostgreSQL client shared by the storage, cache and permission backends.

One :class:`Client` per database URL and process (:func:`get_client`), so that backends configured with the same URL
share one connection pool and one transaction per thread: a request's record writes and ACL changes commit together.

* **Pool**: at most ``pool_size`` connections, opened on demand and kept open; a thread waits for a free one (up to
  ``pool_timeout`` seconds) instead of failing at once (``psycopg2.pool`` neither waits nor keeps more than
  ``minconn`` idle connections, hence this small pool).  A connection that broke is closed and dropped, never
  returned to the pool; the first statement of a transaction is retried once on a fresh connection when the pooled
  one turns out to be dead (nothing was done in that transaction yet), so the pool heals itself after a server
  restart.  A pool inherited through ``fork()`` is left alone (its sockets belong to the parent).
* **Timeouts**: libpq parameters the URL leaves unset default to :data:`DEFAULT_CONNECTION_PARAMETERS` (connection
  attempts, TCP keepalives), so that a server gone from the network fails requests within about a minute instead of
  holding them.  Every connection also gets a ``statement_timeout`` (``statement_timeout`` seconds, 0 for none; a
  ``statement_timeout`` given in the URL's ``options`` wins), so that a lock held elsewhere (``LOCK TABLE``, a
  migration, a transaction left open) fails the request with :class:`BackendError` instead of holding the thread
  and its connection for as long as the lock lasts.  A server that does not answer at all (its process stopped, a
  VM paused: its kernel still acknowledges packets and keepalives, and its own timeout needs it to run) is given up
  by the client after ``response_timeout`` seconds (the statement timeout plus :data:`RESPONSE_GRACE` by default):
  one watchdog thread per process shuts the connection's socket down, the blocked call fails with
  :class:`BackendError` and the connection is dropped.  Migrations lift both limits for their own transaction.
* **Transactions**: :meth:`Client.transaction` is re-entrant per thread; a connection is taken at the first
  statement, and the outermost block commits (or rolls back on an exception).  A transaction in which a statement
  failed is never committed: its commit raises :class:`BackendError`.  Connections are in autocommit mode and the
  client sends BEGIN together with the first statement (one round trip less than psycopg2's own BEGIN).
* **Errors**: every ``psycopg2.Error`` (and a pool timeout) becomes a :class:`BackendError`.
* **Schema versions**: :func:`migrate` applies ordered migration steps per component and records the version in the
  ``metadata`` table; :meth:`Client.check_schema` tells a never-migrated database apart with the command to run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from time import monotonic
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from wsgicliquet import jsonio
from wsgicliquet.backends import missing_extra
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.storage.exceptions import BackendError

try:
    import psycopg2
    import psycopg2.extensions
    import psycopg2.extras
    from psycopg2 import sql
    from psycopg2.extras import Json
except ImportError:  # pragma: no cover - depends on the installation
    raise missing_extra("postgresql", "psycopg2") from None

__all__ = ["Client", "get_client", "migrate", "SchemaError", "Unanswered", "Migration", "METADATA_TABLE",
           "DEFAULT_POOL_TIMEOUT", "DEFAULT_STATEMENT_TIMEOUT", "RESPONSE_GRACE", "DEFAULT_CONNECTION_PARAMETERS",
           "settings_options", "Backend", "sql", "Json"]

logger = logging.getLogger(__name__)

DEFAULT_POOL_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10
#: libpq parameters a URL does not set get these: a connection attempt gives up after 10 s, and a connection whose
#: peer vanished (network cut, host down) is declared dead after about a minute instead of the system's two hours.
DEFAULT_CONNECTION_PARAMETERS = {"connect_timeout": str(DEFAULT_CONNECT_TIMEOUT), "keepalives": "1",
                                 "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3",
                                 "tcp_user_timeout": "60000"}
DEFAULT_STATEMENT_TIMEOUT = 10.0
#: Seconds the client waits for an answer beyond the statement timeout (the result still has to travel) before it
#: gives up on an unresponsive server, when ``response_timeout`` is not given.
RESPONSE_GRACE = 5.0
METADATA_TABLE = "metadata"
MIGRATE_COMMAND = "wsgicliquet migrate --ini <your .ini file>"

# One migration step: (version it brings the component to, SQL statements).
Migration = Tuple[int, str]


class SchemaError(BackendError):
    """The database schema is missing or at another version than this release expects."""


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.depth = 0
        self.conn: Optional[Any] = None
        self.statements = 0   # statements that succeeded in the current transaction
        self.failed = False   # a statement failed: the transaction must not commit
        self.unlimited = False  # a migration: the client waits for its statements as long as they take


class Unanswered(BackendError):
    """The server did not answer a statement within the client's ``response_timeout``; its connection was closed."""


class _Watchdog:
    """Shuts down the sockets of connections whose statement outlived its deadline, which makes libpq's blocked read
    fail at once.  One daemon thread per process, started with the first watched statement, waking every
    :attr:`TICK` seconds: watching a statement is a dict insertion and removal, nothing more on the hot path."""

    TICK = 0.25

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._watched: Dict[int, Tuple[float, Any]] = {}  # id(conn) -> (deadline, conn)
        self._thread: Optional[threading.Thread] = None

    def watch(self, conn: Any, seconds: float) -> None:
        with self._lock:
            self._watched[id(conn)] = (monotonic() + seconds, conn)
            thread = None
            if self._thread is None:
                thread = self._thread = threading.Thread(target=self._run, name="wsgicliquet-postgresql-watchdog",
                                                         daemon=True)
        if thread is not None:  # outside the lock: under gevent, starting a thread switches to other greenlets
            thread.start()

    def unwatch(self, conn: Any) -> bool:
        """Stop watching ``conn``; False when its deadline passed and its socket was shut down."""
        with self._lock:
            return self._watched.pop(id(conn), None) is not None

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)  # looked up each time: gevent's monkey patching may come after this import
            now = monotonic()
            with self._lock:  # held while shutting down: the owner cannot close (and free the descriptor) meanwhile
                for key, (deadline, conn) in list(self._watched.items()):
                    if deadline <= now:
                        del self._watched[key]
                        _shut_down(conn)


def _shut_down(conn: Any) -> None:
    try:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
    except (psycopg2.Error, OSError, ValueError):  # closed meanwhile
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


_watchdog = _Watchdog()
os.register_at_fork(after_in_child=_watchdog._reset)  # the thread does not survive fork(); its lock may be held


def _connection_defaults(url: str) -> Dict[str, str]:
    """The :data:`DEFAULT_CONNECTION_PARAMETERS` that ``url`` leaves unset (a URL libpq cannot parse gets none: its
    error comes with the first connection, as it would without them)."""
    try:
        given = psycopg2.extensions.parse_dsn(url)
    except psycopg2.Error:
        return {}
    return {name: value for name, value in DEFAULT_CONNECTION_PARAMETERS.items() if name not in given}


def _sets_statement_timeout(url: str) -> bool:
    """Whether the URL's libpq ``options`` set a ``statement_timeout`` (a database or password merely containing
    the word does not)."""
    try:
        options = psycopg2.extensions.parse_dsn(url).get("options") or ""
    except psycopg2.Error:
        return False
    return "statement_timeout" in options


class Client:
    """A connection pool with per-thread, re-entrant transactions; every method raises only BackendError."""

    def __init__(self, url: str, pool_size: int = 25, pool_timeout: float = DEFAULT_POOL_TIMEOUT,
                 statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
                 response_timeout: Optional[float] = None) -> None:
        self.url = url
        self.pool_size = max(1, int(pool_size))
        self.pool_timeout = float(pool_timeout)
        # In ms; None when the URL sets its own (libpq ``options``), or 0 (PostgreSQL's "no limit").
        timeout_ms = max(0, round(float(statement_timeout) * 1000))
        self._statement_timeout_ms = None if _sets_statement_timeout(url) else timeout_ms
        if response_timeout is None:  # unknown or no statement timeout: no client-side limit either
            response_timeout = statement_timeout + RESPONSE_GRACE if self._statement_timeout_ms else 0
        # None: statements are not watched.
        self._response_timeout = float(response_timeout) if response_timeout and response_timeout > 0 else None
        self._defaults = _connection_defaults(url)
        self._lock = threading.Lock()
        self._state = _ThreadState()
        self._schema_ok: Dict[str, bool] = {}
        self._orphans: List[Any] = []   # connections inherited from a parent process: never used, never closed
        self._new_pool()

    def _new_pool(self) -> None:
        self._pid = os.getpid()
        self._idle: List[Any] = []      # connections ready for use, most recently used last
        self._in_use = 0
        self._free = threading.Condition()

    def grow(self, pool_size: int) -> None:
        """Let the pool hold ``pool_size`` connections when a backend sharing it asks for more."""
        with self._free:
            if int(pool_size) > self.pool_size:
                self.pool_size = int(pool_size)
                self._free.notify_all()

    # Connections ------------------------------------------------------------------------------------------------

    def _connect(self) -> Any:
        conn = psycopg2.connect(self.url, **self._defaults)
        # Transactions are begun by the client itself, in the same round trip as their first statement (see
        # execute()); psycopg2 would send its BEGIN alone, one more round trip per request.
        conn.autocommit = True
        if self._statement_timeout_ms is not None:
            try:
                self._call(conn, f"SET statement_timeout = {int(self._statement_timeout_ms)}")
            except (psycopg2.Error, Unanswered):
                conn.close()
                raise
        # jsonb prints whole floats in full; this decoder gives them back as floats (and is orjson when installed).
        psycopg2.extras.register_default_jsonb(conn, loads=jsonio.loads_numeric)
        return conn

    def _checkout(self, wait: bool = True) -> Any:
        """A connection from the pool; ``wait=False`` takes one even beyond ``pool_size`` (see :meth:`execute`)."""
        with self._free:
            if wait and not self._free.wait_for(lambda: self._in_use < self.pool_size, timeout=self.pool_timeout):
                raise BackendError(message=f"No PostgreSQL connection free after {self.pool_timeout} s "
                                           f"(pool size {self.pool_size})")
            self._in_use += 1
            conn = self._idle.pop() if self._idle else None
        try:
            if conn is not None and conn.closed:
                conn = None
            return conn if conn is not None else self._connect()
        except psycopg2.Error as exc:
            self._give_back(None)
            raise BackendError(exc) from exc
        except BaseException:  # Unanswered while setting the connection up, an interrupt: the slot is free again
            self._give_back(None)
            raise

    def _check_fork(self) -> None:
        """In a forked child, forget the parent's connections (kept referenced, so never closed here)."""
        if os.getpid() == self._pid:
            return
        with self._lock:
            if os.getpid() != self._pid:
                state = self._state  # the only thread of the child is the one that forked
                self._orphans.append((self._idle, state.conn))
                state.depth, state.conn, state.statements, state.failed = 0, None, 0, False
                state.unlimited = False
                self._new_pool()

    def _give_back(self, conn: Optional[Any]) -> None:
        with self._free:
            self._in_use -= 1
            if conn is not None and len(self._idle) < self.pool_size:
                self._idle.append(conn)
                conn = None
            self._free.notify()
        if conn is not None:  # a connection borrowed beyond the pool size
            conn.close()

    def _release(self, conn: Any, broken: bool = False) -> None:
        """Return a connection to the pool, or close it when it broke or is not cleanly idle."""
        broken = broken or bool(conn.closed) or (
            conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE)
        if broken:
            try:
                conn.close()
            except psycopg2.Error:  # pragma: no cover - already gone
                pass
            conn = None
        self._give_back(conn)

    # Transactions -----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _unlimited(self) -> Iterator[None]:
        """Inside: the client waits for the thread's statements as long as they take (migrations)."""
        state = self._state
        previous, state.unlimited = state.unlimited, True
        try:
            yield
        finally:
            state.unlimited = previous

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Join the thread's transaction, or run one that commits on exit and rolls back on an exception."""
        self._check_fork()
        state = self._state
        if state.depth:
            state.depth += 1
            try:
                yield
            finally:
                state.depth -= 1
            return
        state.depth, state.statements, state.failed = 1, 0, False
        try:
            yield
        except BaseException:
            self._finish(commit=False)
            raise
        else:
            self._finish(commit=True)
        finally:
            state.depth = 0

    def _finish(self, commit: bool) -> None:
        state = self._state
        conn, state.conn = state.conn, None
        if conn is None:
            return
        if conn.closed and not commit:  # lost (server gone, or given up by the watchdog): nothing to roll back
            self._release(conn, broken=True)
            return
        broken = False
        try:
            if commit and (state.failed or conn.info.transaction_status
                           == psycopg2.extensions.TRANSACTION_STATUS_INERROR):
                self._call(conn, "ROLLBACK")
                raise BackendError(message="A statement of this transaction failed; it was rolled back")
            self._call(conn, "COMMIT" if commit else "ROLLBACK")
        except Unanswered as exc:
            broken = True
            if commit:
                raise
            logger.warning("Rollback failed: %s", exc)
        except psycopg2.Error as exc:
            broken = True
            if commit:
                raise BackendError(exc) from exc
            logger.warning("Rollback failed: %s", exc)
        finally:
            self._release(conn, broken=broken)

    def execute(self, query: Any, params: Any = None, fetch: Optional[str] = None, *,
                autonomous: bool = False) -> Any:
        """Run one statement in the thread's transaction; ``fetch`` is ``"one"``, ``"all"``, ``"rowcount"`` or None.

        ``autonomous`` runs it in a transaction of its own on another connection, committed at once, whatever the
        thread is doing (the cache: its row locks must not last as long as a request).  A thread that already
        holds a connection gets that second one without waiting, so threads never wait for each other's.
        """
        if autonomous:
            return self._execute_alone(query, params, fetch)
        with self.transaction():
            state = self._state
            for attempt in (1, 2):
                first = state.conn is None
                if first:
                    state.conn = self._checkout()
                conn = state.conn
                try:
                    result = self._call(conn, _begin(query) if first else query, params, fetch)
                    state.statements += 1
                    return result
                except Unanswered:
                    state.failed = True
                    raise
                except psycopg2.Error as exc:
                    if conn.closed and state.statements == 0 and attempt == 1:
                        # A pooled connection died while idle (server restart, terminated backend): nothing was
                        # done in this transaction yet, so run it again on a fresh connection.
                        # Its idle siblings most likely died with it: drop them all, as SQLAlchemy's pool does.
                        state.conn = None
                        self._release(conn, broken=True)
                        self.close()
                        continue
                    state.failed = True
                    raise BackendError(exc) from exc
            raise AssertionError("unreachable")  # pragma: no cover

    def _execute_alone(self, query: Any, params: Any, fetch: Optional[str]) -> Any:
        self._check_fork()
        borrow = self._state.conn is not None
        for attempt in (1, 2):
            conn = self._checkout(wait=not borrow)
            try:
                result = self._call(conn, query, params, fetch)  # autocommit: the statement committed on its own
            except psycopg2.Error as exc:
                dead = bool(conn.closed)
                self._release(conn, broken=True)
                if dead and attempt == 1:
                    self.close()  # see execute(): a dead idle connection, nothing done yet
                    continue
                raise BackendError(exc) from exc
            except BaseException:  # a value psycopg2 cannot send, an interrupt: never keep the connection
                self._release(conn, broken=True)
                raise
            self._release(conn)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _call(self, conn: Any, query: Any, params: Any = None, fetch: Optional[str] = None) -> Any:
        """One statement on ``conn``, given up with :class:`Unanswered` when the server does not answer in time."""
        limit = self._response_timeout
        if limit is None or self._state.unlimited:
            return _statement(conn, query, params, fetch)
        _watchdog.watch(conn, limit)
        try:
            return _statement(conn, query, params, fetch)
        finally:
            if not _watchdog.unwatch(conn):  # its socket was shut down: whatever happened, the connection is lost
                raise Unanswered(message=f"PostgreSQL did not answer within {limit:g} s")

    def close(self) -> None:
        """Close every idle connection (tests, shutdown); connections in use are closed when given back."""
        with self._free:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # Schema -----------------------------------------------------------------------------------------------------

    def schema_version(self, component: str, autonomous: bool = False) -> Optional[int]:
        """The recorded version of ``component``'s tables, None when it was never migrated."""
        row = self.execute(f"SELECT to_regclass('{METADATA_TABLE}') IS NOT NULL", fetch="one", autonomous=autonomous)
        if not row[0]:
            return None
        row = self.execute(f"SELECT value FROM {METADATA_TABLE} WHERE name = %s",
                           (_version_key(component),), fetch="one", autonomous=autonomous)
        return int(row[0]) if row else None

    def check_schema(self, component: str, expected: int, autonomous: bool = False) -> None:
        """Raise :class:`SchemaError` naming the migrate command unless ``component`` is at ``expected``.

        Checked once per component while it succeeds, so that a migration run later is picked up without restart.
        """
        if self._schema_ok.get(component):
            return
        version = self.schema_version(component, autonomous=autonomous)
        if version is None:
            raise SchemaError(message=f"The PostgreSQL {component} tables of wsgicliquet do not exist: "
                                      f"run `{MIGRATE_COMMAND}`")
        if version < expected:
            raise SchemaError(message=f"The PostgreSQL {component} schema is at version {version}, this release "
                                      f"needs {expected}: run `{MIGRATE_COMMAND}`")
        if version > expected:
            raise SchemaError(message=f"The PostgreSQL {component} schema is at version {version}, newer than "
                                      f"this release supports ({expected}): upgrade wsgicliquet")
        self._schema_ok[component] = True


def _begin(query: Any) -> Any:
    """``query`` preceded by BEGIN, sent together (a multi-statement string runs its statements in order)."""
    return "BEGIN;" + query if isinstance(query, str) else sql.Composed([sql.SQL("BEGIN;"), query])


def _statement(conn: Any, query: Any, params: Any, fetch: Optional[str]) -> Any:
    with conn.cursor() as cursor:
        cursor.execute(query, params)
        return _fetch(cursor, fetch)


def _fetch(cursor: Any, fetch: Optional[str]) -> Any:
    if fetch == "one":
        return cursor.fetchone()
    if fetch == "all":
        return cursor.fetchall()
    return cursor.rowcount if fetch == "rowcount" else None


def _version_key(component: str) -> str:
    return f"wsgicliquet.{component}.schema_version"


def migrate(client: Client, component: str, migrations: Sequence[Migration], dry_run: bool = False,
            tables: Sequence[str] = ()) -> List[str]:
    """Bring ``component``'s tables to the last version of ``migrations``; idempotent; returns the steps applied.

    Runs in one transaction under an advisory lock, so that concurrent ``migrate`` runs do not race.  With
    ``dry_run`` the steps are logged and rolled back.  On a first migration, ``tables`` that already exist (a
    Cliquet database has a ``records`` table of another shape) stop it with a clear error instead of a half schema.
    """
    applied: List[str] = []
    try:
        with client.transaction(), client._unlimited():
            # A step may rewrite a large table: no statement timeout for this transaction.
            client.execute("SET LOCAL statement_timeout = 0")
            client.execute("SELECT pg_advisory_xact_lock(hashtext('wsgicliquet.migrate'))")
            client.execute(f"CREATE TABLE IF NOT EXISTS {METADATA_TABLE} "
                           "(name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            current = client.schema_version(component) or 0
            if current == 0:
                _refuse_foreign_tables(client, component, tables)
                _refuse_other_encodings(client)
            for version, statements in migrations:
                if version <= current:
                    continue
                logger.info("Migrating the PostgreSQL %s schema to version %s", component, version)
                client.execute(statements)
                applied.append(f"{component} {version}")
                current = version
            client.execute(f"INSERT INTO {METADATA_TABLE} (name, value) VALUES (%s, %s) "
                           "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                           (_version_key(component), str(current)))
            if dry_run:
                raise _DryRun()
    except _DryRun:
        logger.info("Dry run: %s rolled back", ", ".join(applied) or "nothing to do")
    client._schema_ok.pop(component, None)
    return applied


def _refuse_foreign_tables(client: Client, component: str, tables: Sequence[str]) -> None:
    for table in tables:
        if client.execute("SELECT to_regclass(%s) IS NOT NULL", (table,), fetch="one")[0]:
            raise SchemaError(message=f"Table {table!r} exists but was not created by wsgicliquet's {component} "
                                      "migrations (a Cliquet database?): use another database or schema")


def _refuse_other_encodings(client: Client) -> None:
    """Records are UTF-8 JSON: a SQL_ASCII or LATIN1 database would refuse (or mangle) every non-ASCII value later,
    one request at a time."""
    encoding = client.execute("SHOW server_encoding", fetch="one")[0]
    if encoding != "UTF8":
        raise SchemaError(message=f"The PostgreSQL database uses the {encoding} encoding; wsgicliquet needs UTF8 "
                                  "(createdb --encoding=UTF8 --template=template0 ...)")


class _DryRun(Exception):
    pass


_clients: Dict[str, Client] = {}
_clients_lock = threading.Lock()


def get_client(url: str, pool_size: int = 25, pool_timeout: float = DEFAULT_POOL_TIMEOUT,
               statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
               response_timeout: Optional[float] = None) -> Client:
    """The process-wide client of ``url`` (a larger ``pool_size`` grows the shared pool; the timeouts are those of
    the first backend created for the URL)."""
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = Client(url, pool_size=pool_size, pool_timeout=pool_timeout,
                                            statement_timeout=statement_timeout, response_timeout=response_timeout)
        else:
            client.grow(pool_size)
        return client


def settings_options(settings: Dict[str, Any], prefix: str) -> Dict[str, Any]:
    """``url``, ``pool_size``, ``pool_timeout``, ``statement_timeout`` and ``response_timeout`` of a backend from
    ``<prefix>_url``, ``<prefix>_pool_size``..."""
    url = settings.get(f"{prefix}_url") or ""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(f"Setting '{prefix}_url' has an invalid value {url!r}: expected postgresql://...")
    options: Dict[str, Any] = {"url": url}
    for name, kind in (("pool_size", int), ("pool_timeout", float), ("statement_timeout", float),
                       ("response_timeout", float)):
        value = settings.get(f"{prefix}_{name}")
        if value in (None, ""):
            continue
        try:
            options[name] = kind(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"Setting '{prefix}_{name}' has an invalid value {value!r}") from None
    return options


class Backend:
    """What the PostgreSQL storage, cache and permission backends share: the client of their URL (one pool per URL
    and process, so their writes join one transaction) and their schema, ``migrations`` of ``component``."""

    component = ""
    migrations: Sequence[Migration] = ()
    tables: Tuple[str, ...] = ()

    def __init__(self, client: Client) -> None:
        self.client = client

    @classmethod
    def from_settings(cls, settings: Dict[str, Any], prefix: str = "") -> Any:
        """The backend of the ``<prefix>_url`` setting (``prefix`` defaults to the component)."""
        return cls(get_client(**settings_options(settings, prefix or cls.component)))

    def initialize_schema(self, dry_run: bool = False) -> None:
        migrate(self.client, self.component, self.migrations, dry_run=dry_run, tables=self.tables)
