"""The store: a ClickHouse server through clickhouse-connect, local or remote; creates the schema.

One implementation for both: with `clickhouse.url` empty it is the local store server on
`clickhouse.path` (engine/store/server.py, started here when none runs), else the server at the
URL. Queries come back as lists of tuples with plain JSON types, whichever server answers: results
travel as JSONCompact with 64-bit integers and decimals unquoted, so integers (UInt256 too) are
Python ints, floats are floats (an integral float may come back as an int), DateTime/Date are
strings ('2024-01-02 03:04:05'), arrays/tuples are lists, maps are dicts, NULL is None. Inserts take
JSONCompactEachRow rows, sent as they are.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from engine.masking import mask_url
from engine.store.server import LocalServer, ServerError, ensure_server

if TYPE_CHECKING:
    from engine.config import Config


class StoreError(Exception):
    """A store query or command failed; the message never carries a password."""


# Read at import, like the analytics SQL (engine/analytics/templating.py): a process runs the SQL of
# the code it loaded, even when the checkout changes under it.
SCHEMA_SQL = resources.files("engine.store").joinpath("sql/schema.sql").read_text()


def schema_statements(database: str) -> list[str]:
    """The DDL of store/sql/schema.sql with the database name filled in, one statement each."""
    return split_sql(SCHEMA_SQL.replace("{db}", database))


def split_sql(text: str) -> list[str]:
    """Split a .sql file on ';' at line ends, dropping comment-only lines."""
    out: list[str] = []
    for chunk in text.split(";\n"):
        lines = [ln for ln in chunk.splitlines() if not ln.strip().startswith("--")]
        stmt = "\n".join(lines).strip().rstrip(";").strip()
        if stmt:
            out.append(stmt)
    return out


def _rows_to_jsonl(rows: Sequence[Sequence[Any]]) -> str:
    return "\n".join(json.dumps(r, separators=(",", ":")) for r in rows)


#: Answers up to this size are held in the server's memory until the query ends, not in a
#: temporary file (see JSON_SETTINGS).
RESPONSE_BUFFER_BYTES = 16 << 20

#: Settings for query results, so every server (any version, Cloud) gives the same JSON types.
#: clickhouse-connect asks for `wait_end_of_query=1` (an error mid-query is then an HTTP error,
#: not text after a 200), so the server holds the whole answer until the query ends: in memory up
#: to `http_response_buffer_size` (default 0), then in a temporary file on its disk. With that
#: disk full, ClickHouse (26.9) answers 200 with an empty or cut body instead of an error; the
#: buffer keeps small answers (counts, checkpoints) off the disk, and `_parse_json` refuses any
#: body that is not a whole result.
JSON_SETTINGS = {
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_64bit_floats": 0,
    "output_format_json_quote_decimals": 0,
    "output_format_json_quote_denormals": 0,
    "http_response_buffer_size": RESPONSE_BUFFER_BYTES,
}


class Store:
    """A ClickHouse server over HTTP (clickhouse-connect); one client per thread.

    With `local` (the local store server of a data dir) a lost connection to a server that is
    gone starts it again (ensure_server). When the connection was refused (the request never
    reached a server, so it cannot have run) the call is then repeated once on the new server;
    any other failure is raised (the caller's next attempt reaches the new server), because a
    request that may have reached the old one, e.g. EXCHANGE TABLES, must not run twice.
    """

    #: Workers send raw eth_getLogs answers; the server decodes them (engine/store/raw_logs.py).
    decodes_raw_logs = True
    #: insert_raw takes binary formats (RowBinary) too: the bytes travel in the HTTP body.
    binary_inserts = True

    def __init__(
        self,
        url: str,
        database: str,
        user: str,
        password: str,
        local: LocalServer | None = None,
        local_port: int = 0,
        password_from: str = "",
    ) -> None:
        import clickhouse_connect  # noqa: F401  (fail early when missing)

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StoreError(f"clickhouse.url = {mask_url(url)}: expected http(s)://host[:port]")
        self.database = database
        self.local = local
        self._local_port = local_port
        self._password_from = password_from
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        self._revive_lock = threading.Lock()
        self._generation = 0
        self._target(url, user, password)

    def _target(self, url: str, user: str, password: str) -> None:
        parts = urlsplit(url)
        self._url = url
        self._host = parts.hostname or ""
        self._port = parts.port or (8443 if parts.scheme == "https" else 8123)
        self._secure = parts.scheme == "https"
        self._user = parts.username or user
        self._password = parts.password or password
        if self.local is not None:
            self.label = f"local {self._host}:{self._port}"
        else:
            self.label = f"server {self._host}:{self._port}"
        self._generation += 1

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is not None and getattr(self._local, "generation", 0) != self._generation:
            client = None  # the server moved (restarted on another port)
        if client is None:
            import clickhouse_connect

            client = clickhouse_connect.get_client(
                host=self._host,
                port=self._port,
                username=self._user,
                password=self._password,
                secure=self._secure,
                # On loopback, compressing inserts only costs CPU on both ends.
                compress=self._host not in ("127.0.0.1", "localhost", "::1"),
                # Its own connections, closed with it: a stopping local server does not
                # wait for this process's idle keep-alive connections.
                dedicated_pool=True,
            )
            self._local.client = client
            self._local.generation = self._generation
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _words(self, exc: BaseException, prefix: str = "") -> str:
        """The error an operator reads: a refused login in words, else the masked text."""
        if is_auth_failure(str(exc)):
            return refused_words(mask_url(self._url), self._user, self._password_from)
        return self._mask(prefix + str(exc))

    def _mask(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text.replace(self._url, mask_url(self._url))

    def _after_failure(self, exc: BaseException) -> None:
        """A local server that is gone is started again (for the next call)."""
        if self.local is None or not _is_connection_error(exc):
            return
        with self._revive_lock:
            if self.local.alive():
                return
            try:
                server = ensure_server(self.local.data_dir, self._local_port)
            except ServerError:
                return  # the next call tries again
            self.local = server
            self._target(server.url, server.user, server.password)

    def _call(self, fn: Any) -> Any:
        """fn(client of this thread), failures as StoreError; see the class docstring for when
        a call is repeated."""
        for attempt in (1, 2):
            generation = self._generation
            prefix = f"cannot connect to {self.label}: "  # making a client sends a query too
            try:
                client = self._client()
                prefix = ""
                return fn(client)
            except Exception as exc:
                self._after_failure(exc)
                moved = self._generation != generation  # revived here, or by another thread
                if attempt == 1 and moved and was_refused(exc):
                    continue
                raise StoreError(self._words(exc, prefix)) from exc
        raise AssertionError("unreachable")

    def command(self, sql: str) -> None:
        """Run a statement that returns nothing."""
        self._call(lambda c: c.command(sql))

    def _query_with_names(self, sql: str) -> tuple[list[str], list[tuple]]:
        raw = self._call(lambda c: c.raw_query(sql, settings=JSON_SETTINGS, fmt="JSONCompact"))
        return _parse_json(raw)

    def raw_in_database(self, sql: str, fmt: str) -> bytes:
        """The server's output of `sql` in format `fmt`, with the configured database current
        (for hand-written SQL: `backfill-console sql`)."""

        def run(c: Any) -> bytes:
            c.database = self.database
            try:
                return c.raw_query(sql, fmt=fmt)
            finally:
                c.database = None

        return self._call(run)

    def command_in_database(self, sql: str) -> None:
        """Run a statement without output, with the configured database current."""

        def run(c: Any) -> None:
            c.database = self.database
            try:
                c.command(sql)
            finally:
                c.database = None

        self._call(run)

    def query_in_database(self, sql: str) -> tuple[list[str], list[tuple]]:
        """Column names and rows of `sql` (JSON types), with the configured database current."""

        def run(c: Any) -> bytes:
            c.database = self.database
            try:
                return c.raw_query(sql, settings=JSON_SETTINGS, fmt="JSONCompact")
            finally:
                c.database = None

        return _parse_json(self._call(run))

    def query(self, sql: str) -> list[tuple]:
        """Run a SELECT; rows as tuples of JSON types (see the module docstring)."""
        return self._query_with_names(sql)[1]

    def query_dicts(self, sql: str) -> list[dict]:
        names, rows = self._query_with_names(sql)
        return [dict(zip(names, r, strict=True)) for r in rows]

    def scalar(self, sql: str) -> Any:
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def insert_json_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence]
    ) -> None:
        """Insert rows given as JSONCompactEachRow arrays in `columns` order."""
        if rows:
            self.insert_jsonl(table, columns, _rows_to_jsonl(rows).encode())

    def insert_jsonl(self, table: str, columns: Sequence[str], data: bytes) -> None:
        """Insert JSONCompactEachRow lines (bytes, one row per line) as they are."""
        if not data.strip():
            return
        self._call(
            lambda c: c.raw_insert(
                table, column_names=list(columns), insert_block=data, fmt="JSONCompactEachRow"
            )
        )

    def insert_raw(
        self, table: str, columns: Sequence[str], data: bytes, fmt: str, settings: dict[str, str]
    ) -> None:
        """Insert `data` in ClickHouse input format `fmt` as it is, with query `settings`."""
        if not data:
            return
        self._call(
            lambda c: c.raw_insert(
                table, column_names=list(columns), insert_block=data, fmt=fmt, settings=settings
            )
        )

    def ensure_schema(self) -> None:
        for stmt in schema_statements(self.database):
            self.command(stmt)

    def table(self, name: str) -> str:
        return f"{self.database}.{name}"

    def close(self) -> None:
        """Close the clients; stop the local server if this process started it."""
        with self._clients_lock:
            for c in self._clients:
                try:
                    c.close()
                except Exception:
                    pass
            self._clients.clear()
        self._generation += 1
        if self.local is not None:
            self.local.stop()


#: What the server did when its answer to a query is not a whole JSONCompact result.
NOT_A_RESULT = (
    "the server answered {what} (HTTP 200) instead of a result; nothing was read. ClickHouse "
    "does so when it cannot write the answer to its temporary files: is the store's disk full?"
)


def _parse_json(raw: bytes) -> tuple[list[str], list[tuple]]:
    """Names and rows of a JSONCompact answer; StoreError for anything else: an empty or cut body
    is never read as no rows (a JSONCompact result always has its `meta`, `data` and `rows`)."""
    if not raw.strip():
        raise StoreError(NOT_A_RESULT.format(what="a query with an empty body"))
    try:
        doc = json.loads(raw)
        names = [m["name"] for m in doc["meta"]]
        rows = [tuple(r) for r in doc["data"]]
        complete = int(doc["rows"]) == len(rows)
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(
            NOT_A_RESULT.format(what=f"a query with a body that is not a whole result ({exc})")
        ) from None
    if not complete:
        raise StoreError(
            NOT_A_RESULT.format(what=f"{len(rows)} of the {doc['rows']} rows it announced")
        )
    return names, rows


def is_auth_failure(text: str) -> bool:
    """A server's answer saying it refused the login (ClickHouse code 516 / HTTP 401, 403)."""
    return "AUTHENTICATION_FAILED" in text or "code: 516" in text.lower()


def refused_words(shown_url: str, user: str, password_from: str) -> str:
    """What to tell an operator whose login the server refused; `password_from` names where the
    password came from ("" when none was given). Never contains the password."""
    head = f"ClickHouse at {shown_url} refused user {user!r}"
    if password_from:
        return (
            f"{head}: the password from {password_from} is wrong, or the user is unknown: "
            f"check {password_from} and clickhouse.user"
        )
    return (
        f"{head} with no password (clickhouse.password and env CLICKHOUSE_PASSWORD are empty), "
        "or the user is unknown: set clickhouse.password or env CLICKHOUSE_PASSWORD, and check "
        "clickhouse.user"
    )


def was_refused(exc: BaseException) -> bool:
    """True when `exc` was caused by a refused TCP connection: the request was never sent, so no
    server can have run it. Only the chain of direct causes is followed (clickhouse-connect's
    error, urllib3's MaxRetryError and its `reason`, the NewConnectionError raised while handling
    ConnectionRefusedError), never an error that was merely being handled at the time (one that
    may have come after the request was sent)."""
    from urllib3.exceptions import NewConnectionError

    e: BaseException | None = exc
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, ConnectionRefusedError):
            return True
        if isinstance(e, NewConnectionError):
            return isinstance(e.__context__ or e.__cause__, ConnectionRefusedError)
        reason = getattr(e, "reason", None)  # urllib3's MaxRetryError
        e = e.__cause__ or (reason if isinstance(reason, BaseException) else None)
    return False


def _is_connection_error(exc: BaseException) -> bool:
    from clickhouse_connect.driver.exceptions import OperationalError

    return isinstance(exc, OperationalError | OSError)


def open_store(cfg: Config, create_schema: bool = True) -> Store:
    """Open the configured store: the server at clickhouse.url, else the local store server on
    clickhouse.path (the running one, or one started now; it stops with store.close())."""
    ch = cfg.clickhouse
    if ch.url:
        store = Store(ch.url, ch.database, ch.user, ch.password, password_from=ch.password_from)
    else:
        try:
            server = ensure_server(ch.path, ch.port)
        except ServerError as exc:
            raise StoreError(str(exc)) from exc
        store = Store(server.url, ch.database, server.user, server.password, server, ch.port)
    if create_schema:
        t0 = time.monotonic()
        while True:
            try:
                store.ensure_schema()
                break
            except StoreError:
                if store.local is None or time.monotonic() - t0 > 30:
                    store.close()
                    raise
                time.sleep(0.5)  # a local server found just as its owner stopped it
    return store
