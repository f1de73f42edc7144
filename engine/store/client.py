"""One store interface over embedded chdb and a ClickHouse server; creates the schema.

Both implementations run the same SQL. Queries come back as lists of tuples (UInt256 as Python int);
inserts take JSONCompactEachRow rows so the same bytes work on both stores.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from engine.masking import mask_url

if TYPE_CHECKING:
    from engine.config import Config


class StoreError(Exception):
    """A store query or command failed; the message never carries a password."""


def schema_statements(database: str) -> list[str]:
    """The DDL of store/sql/schema.sql with the database name filled in, one statement each."""
    text = resources.files("engine.store").joinpath("sql/schema.sql").read_text()
    return split_sql(text.replace("{db}", database))


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


class Store(ABC):
    """Common interface; see ChdbStore and ServerStore."""

    database: str
    label: str

    @abstractmethod
    def command(self, sql: str) -> None:
        """Run a statement that returns nothing."""

    @abstractmethod
    def query(self, sql: str) -> list[tuple]:
        """Run a SELECT; rows as tuples."""

    def insert_json_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence]
    ) -> None:
        """Insert rows given as JSONCompactEachRow arrays in `columns` order."""
        if rows:
            self.insert_jsonl(table, columns, _rows_to_jsonl(rows).encode())

    @abstractmethod
    def insert_jsonl(self, table: str, columns: Sequence[str], data: bytes) -> None:
        """Insert JSONCompactEachRow lines (bytes, one row per line) as they are."""

    @abstractmethod
    def insert_raw(
        self, table: str, columns: Sequence[str], data: bytes, fmt: str, settings: dict[str, str]
    ) -> None:
        """Insert `data` in ClickHouse input format `fmt` as it is, with query `settings`."""

    @abstractmethod
    def close(self) -> None:
        """Release the store."""

    def query_dicts(self, sql: str) -> list[dict]:
        names, rows = self._query_with_names(sql)
        return [dict(zip(names, r, strict=True)) for r in rows]

    @abstractmethod
    def _query_with_names(self, sql: str) -> tuple[list[str], list[tuple]]:
        """Run a SELECT; column names and rows."""

    def scalar(self, sql: str) -> Any:
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def ensure_schema(self) -> None:
        for stmt in schema_statements(self.database):
            self.command(stmt)

    def table(self, name: str) -> str:
        return f"{self.database}.{name}"


class ChdbStore(Store):
    """Embedded ClickHouse (chdb) on a data directory; one process per directory."""

    #: Workers decode logs themselves for this store: its inserts carry the data inline in the
    #: query text, which costs more than the decoding (engine/store/raw_logs.py).
    decodes_raw_logs = False
    #: Inserts go in as query text (insert_raw takes text formats only).
    binary_inserts = False

    def __init__(self, path: Path, database: str) -> None:
        from chdb import session  # heavy import, only when used

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.database = database
        self.label = f"embedded {self.path}"
        try:
            self._session = session.Session(str(self.path))
        except Exception as exc:  # chdb raises plain RuntimeError/Exception
            raise StoreError(f"cannot open embedded ClickHouse at {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    def _run(self, sql: str, fmt: str = "CSV") -> Any:
        try:
            with self._lock:
                return self._session.query(sql, fmt)
        except Exception as exc:
            raise StoreError(f"{exc}".strip()) from exc

    def command(self, sql: str) -> None:
        self._run(sql)

    def _query_with_names(self, sql: str) -> tuple[list[str], list[tuple]]:
        res = self._run(sql, "JSONCompact")
        raw = res.bytes() if hasattr(res, "bytes") else bytes(res)
        if not raw.strip():
            return [], []
        doc = json.loads(raw)
        names = [m["name"] for m in doc["meta"]]
        return names, [tuple(r) for r in doc["data"]]

    def query(self, sql: str) -> list[tuple]:
        return self._query_with_names(sql)[1]

    def insert_jsonl(self, table: str, columns: Sequence[str], data: bytes) -> None:
        if not data.strip():
            return
        cols = ", ".join(columns)
        self._run(f"INSERT INTO {table} ({cols}) FORMAT JSONCompactEachRow\n{data.decode()}")

    def insert_raw(
        self, table: str, columns: Sequence[str], data: bytes, fmt: str, settings: dict[str, str]
    ) -> None:
        if not data:
            return
        cols = ", ".join(columns)
        opts = ", ".join(f"{k} = '{v}'" for k, v in settings.items())
        head = f"INSERT INTO {table} ({cols})" + (f" SETTINGS {opts}" if opts else "")
        self._run(f"{head} FORMAT {fmt}\n{data.decode()}")

    def close(self) -> None:
        try:
            self._session.close()
        except Exception:
            pass


class ServerStore(Store):
    """A ClickHouse server over HTTP (clickhouse-connect); one client per thread."""

    def __init__(self, url: str, database: str, user: str, password: str) -> None:
        import clickhouse_connect  # noqa: F401  (fail early when missing)

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StoreError(f"clickhouse.url = {mask_url(url)}: expected http(s)://host[:port]")
        self._url = url
        self._host = parts.hostname
        self._port = parts.port or (8443 if parts.scheme == "https" else 8123)
        self._secure = parts.scheme == "https"
        self._user = parts.username or user
        self._password = parts.password or password
        self.database = database
        self.label = f"server {self._host}:{self._port}"
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            import clickhouse_connect

            try:
                client = clickhouse_connect.get_client(
                    host=self._host,
                    port=self._port,
                    username=self._user,
                    password=self._password,
                    secure=self._secure,
                    # On loopback, compressing inserts only costs CPU on both ends.
                    compress=self._host not in ("127.0.0.1", "localhost", "::1"),
                )
            except Exception as exc:
                raise StoreError(self._mask(f"cannot connect to {self.label}: {exc}")) from exc
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _mask(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text.replace(self._url, mask_url(self._url))

    def command(self, sql: str) -> None:
        try:
            self._client().command(sql)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(self._mask(str(exc))) from exc

    def _query_with_names(self, sql: str) -> tuple[list[str], list[tuple]]:
        try:
            res = self._client().query(sql)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(self._mask(str(exc))) from exc
        return list(res.column_names), [tuple(r) for r in res.result_rows]

    def query(self, sql: str) -> list[tuple]:
        return self._query_with_names(sql)[1]

    def insert_jsonl(self, table: str, columns: Sequence[str], data: bytes) -> None:
        if not data.strip():
            return
        try:
            self._client().raw_insert(
                table, column_names=list(columns), insert_block=data, fmt="JSONCompactEachRow"
            )
        except Exception as exc:
            raise StoreError(self._mask(str(exc))) from exc

    def insert_raw(
        self, table: str, columns: Sequence[str], data: bytes, fmt: str, settings: dict[str, str]
    ) -> None:
        if not data:
            return
        try:
            self._client().raw_insert(
                table,
                column_names=list(columns),
                insert_block=data,
                fmt=fmt,
                settings=settings,
            )
        except Exception as exc:
            raise StoreError(self._mask(str(exc))) from exc

    def close(self) -> None:
        with self._clients_lock:
            for c in self._clients:
                try:
                    c.close()
                except Exception:
                    pass
            self._clients.clear()


def open_store(cfg: Config, create_schema: bool = True) -> Store:
    """Open the configured store (server when clickhouse.url is set, else embedded chdb)."""
    ch = cfg.clickhouse
    store: Store
    if ch.url:
        store = ServerStore(ch.url, ch.database, ch.user, ch.password)
    else:
        store = ChdbStore(ch.path, ch.database)
    if create_schema:
        store.ensure_schema()
    return store
