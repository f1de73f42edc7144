"""Start-up checks that run before anything is created: errors in words, with what to do.

`check_rpc(urls)` asks every RPC URL for eth_chainId and returns the chain id; `check_store_server`
asks a ClickHouse server for its version (a refused login names where the password came from);
`check_store_port` finds a fixed `clickhouse.port` taken; `check_chain_matches_store` refuses a
store whose cached day table and checkpoints belong to another chain. Each failure is a
`StartupError` whose message says what happened and which setting to look at, for example

    cannot reach http://127.0.0.1:9 (connection refused, 3 attempts): check rpc.urls /
    ETHEREUM_RPC_URLS

URLs are masked (engine.masking) and passwords never appear. None of these functions writes a
file or a folder, so a failed check leaves the machine as it was.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.masking import mask_secrets, mask_url
from engine.rpc.http_transport import HttpConnection, TransportError, TransportTimeout
from engine.store.client import is_auth_failure, refused_words
from engine.store.server import port_problem, running_server

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.client import Store

RPC_ATTEMPTS = 3
RPC_SETTING = "check rpc.urls / ETHEREUM_RPC_URLS"
STORE_URL_SETTING = "check clickhouse.url / CLICKHOUSE_URL"


class StartupError(Exception):
    """An expected start-up failure; the message is for the operator (no traceback)."""


def connection_reason(text: str) -> str:
    """An exception text from a connection attempt -> a few words an operator knows."""
    low = text.lower()
    table = (
        (("connectionrefused", "connection refused", "errno 111"), "connection refused"),
        (
            ("gaierror", "name or service not known", "nodename nor servname", "no address"),
            "host name not found",
        ),
        (("timed out", "timeout"), "no answer: timed out"),
        (("certificate", "ssl"), "TLS failed (certificate or protocol)"),
        (
            ("connectionreset", "connection reset", "remotedisconnected", "badstatusline"),
            "connection reset by the server",
        ),
        (("network is unreachable", "no route to host"), "network unreachable"),
    )
    for needles, words in table:
        if any(n in low for n in needles):
            return words
    return text.split(":", 1)[0] or "connection failed"


def _rpc_once(url: str, timeout_s: float) -> tuple[int | None, str, bool]:
    """(chain id or None, why not, worth retrying)."""
    conn = HttpConnection(url, connect_timeout_s=min(timeout_s, 5.0), read_timeout_s=timeout_s)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    try:
        resp = conn.post(body.encode())
    except TransportTimeout:
        return None, "no answer: timed out", True
    except TransportError as exc:
        return None, connection_reason(str(exc)), True
    finally:
        conn.close()
    if resp.status in (401, 403):
        return None, f"HTTP {resp.status}: the provider refused the key", False
    if resp.status == 429:
        return None, "HTTP 429: rate limited", True
    if resp.status >= 500:
        return None, f"HTTP {resp.status}: server error", True
    if resp.status != 200:
        return None, f"HTTP {resp.status}: not a JSON-RPC endpoint?", False
    try:
        doc = json.loads(resp.body)
    except ValueError:
        return None, "answer is not JSON: not a JSON-RPC endpoint?", False
    if not isinstance(doc, dict):
        return None, "answer is not a JSON-RPC object", False
    if "error" in doc:
        err = doc["error"] if isinstance(doc["error"], dict) else {"message": doc["error"]}
        return None, f"JSON-RPC error: {str(err.get('message', err))[:120]}", False
    try:
        return int(str(doc.get("result")), 16), "", False
    except ValueError:
        return None, f"eth_chainId answered {str(doc.get('result'))[:40]!r}, not a chain id", False


def check_rpc(
    urls: list[str],
    timeout_s: float = 10.0,
    attempts: int = RPC_ATTEMPTS,
    say: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """The chain id served by `urls`; StartupError when none answers or they disagree.

    A URL that fails while another answers is reported through `say` (the run goes on with the
    healthy ones; the pool rests the failing one)."""
    ids: dict[str, int] = {}
    failures: list[str] = []
    for url in urls:
        shown = mask_url(url)
        why = ""
        tries = 0
        for tries in range(1, attempts + 1):
            chain_id, why, retry = _rpc_once(url, timeout_s)
            if chain_id is not None:
                ids[shown] = chain_id
                break
            if not retry:
                break
            if tries < attempts:
                sleep(0.5 * tries)
        if shown not in ids:
            why = mask_secrets(why, urls)
            n = f"{tries} attempt" + ("s" if tries != 1 else "")
            failures.append(f"cannot reach {shown} ({why}, {n})")
    if not ids:
        raise StartupError("; ".join(failures) + f": {RPC_SETTING}")
    if len(set(ids.values())) > 1:
        seen = ", ".join(f"{u} chain id {c}" for u, c in ids.items())
        raise StartupError(f"rpc.urls serve different chains ({seen}): {RPC_SETTING}")
    for line in failures:
        if say is not None:
            say(f"warning: {line}; going on with the other URL(s)")
    return next(iter(ids.values()))


def _server_request(cfg: Config, query: str, timeout_s: float) -> str:
    ch = cfg.clickhouse
    parts = urllib.parse.urlsplit(ch.url)
    user = urllib.parse.unquote(parts.username or "") or ch.user
    password = urllib.parse.unquote(parts.password or "") or ch.password
    host = parts.hostname or ""
    port = parts.port or (8443 if parts.scheme == "https" else 8123)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    base = urllib.parse.urlunsplit((parts.scheme, netloc, "/", "", ""))
    url = base + "?" + urllib.parse.urlencode({"query": query})
    req = urllib.request.Request(url)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    shown = mask_url(ch.url)
    secrets = [ch.url, password] if password else [ch.url]
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.read().decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        if exc.code in (401, 403, 516) or is_auth_failure(text):
            raise StartupError(refused_words(shown, user, ch.password_from)) from None
        first = mask_secrets(text.strip().splitlines()[0] if text.strip() else "", secrets)
        raise StartupError(
            f"ClickHouse at {shown} answered HTTP {exc.code} ({first[:160]}): {STORE_URL_SETTING}"
        ) from None
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        why = connection_reason(f"{type(reason).__name__}: {reason}")
        raise StartupError(
            f"cannot reach ClickHouse at {shown} ({why}): {STORE_URL_SETTING}"
        ) from None


def store_server_version(cfg: Config, timeout_s: float = 10.0) -> str:
    """`SELECT version()` on the configured ClickHouse server (StartupError in words)."""
    return _server_request(cfg, "SELECT version()", timeout_s)


def check_store_server(cfg: Config, timeout_s: float = 10.0) -> str:
    """Reachable and credentials accepted; returns the server's version."""
    return store_server_version(cfg, timeout_s)


def check_store_port(cfg: Config) -> None:
    """The local store server's fixed `clickhouse.port` is free (or already ours): StartupError
    naming the key, the port and what to do when another process holds it."""
    ch = cfg.clickhouse
    if ch.url or not ch.port or running_server(ch.path) is not None:
        return
    problem = port_problem(ch.port)
    if problem:
        raise StartupError(problem)


def check_chain_matches_store(store: Store, chain_id: int, start_date: str) -> None:
    """Refuse a store whose day table and checkpoints belong to another chain only.

    Staging rows carry no chain id: backfilling chain B into a database that holds chain A's
    days would mix both into the analytics. Days of this chain (a resumed run) pass.
    """
    db = store.database
    rows = store.query(
        f"SELECT chain_id, count() FROM {db}.day_blocks FINAL "
        f"WHERE start_date = '{start_date}' GROUP BY chain_id"
    )
    rows += store.query(
        f"SELECT chain_id, count() FROM {db}.backfill_checkpoint FINAL "
        f"WHERE start_date = '{start_date}' AND status = 'COMPLETE' GROUP BY chain_id"
    )
    other = sorted({int(c) for c, n in rows if int(c) != chain_id and int(n) > 0})
    mine = any(int(c) == chain_id and int(n) > 0 for c, n in rows)
    if other and not mine:
        days = max(int(n) for c, n in rows if int(c) in other)
        raise StartupError(
            f"the store's database {db!r} holds {days} cached day(s) of chain id "
            f"{', '.join(map(str, other))} (start {start_date}), but the RPC serves chain id "
            f"{chain_id}: point rpc.urls at that chain, or use another clickhouse.database "
            f"for this one (rows of two chains would mix)"
        )
