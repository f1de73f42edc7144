"""The local ClickHouse store server on a data dir: files, start, find, stop.

With `clickhouse.url` empty the store is a ClickHouse server of our own: chdb's engine serving the
real HTTP interface on 127.0.0.1 over `clickhouse.path` (engine/store/server_process.py). Files in
the data dir, beside ClickHouse's own:

- `config.xml`, `users.xml`: written on every start (port, loopback only, users).
- `server-password` (0600): generated on first start, never printed. Clients log in as
  SERVER_USER with it. The HTTP handlers (config.xml) refuse, before any login, every request
  that does not carry it exactly (basic auth or X-ClickHouse-User/Key), so nobody without the
  password reaches `default` (which LocalServer itself must use, with no password, and which has
  no rights beyond starting the listener) or anything else.
- `server.json`: port and pid of the running server, so other programs (another console,
  `backfill-console sql`, hard-gate, rebuild, curl) find it.
- `server.log`: the server process's output; `server.lock`: held while a server is being started.

A server runs as a child of the process that started it and dies with it (PR_SET_PDEATHSIG);
whoever finds it gone starts a new one (engine/store/watch.py does that for the console).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

HOST = "127.0.0.1"
SERVER_USER = "backfill"
PASSWORD_FILE = "server-password"
INFO_FILE = "server.json"
LOG_FILE = "server.log"
LOCK_FILE = "server.lock"
READY_TIMEOUT_S = 120.0


class ServerError(RuntimeError):
    """The local store server could not be started or reached (never carries the password)."""


def port_problem(port: int) -> str:
    """'' when the local store server could listen on 127.0.0.1:port, else why not in words,
    naming the key (`clickhouse.port`) and what to do."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            s.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = "is taken by another process"
            elif exc.errno == errno.EACCES:
                why = "needs privileges this user lacks"
            else:
                why = f"cannot be used ({exc.strerror or exc})"
            return (
                f"clickhouse.port = {port}: port {port} on {HOST} {why}: stop that process, "
                "choose another clickhouse.port, or set it to 0 (a free port at each start)"
            )
    return ""


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_password(data_dir: Path) -> str:
    path = Path(data_dir) / PASSWORD_FILE
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ServerError(f"cannot read the store server's password file {path}: {exc}") from exc


def ensure_password(data_dir: Path) -> str:
    """The data dir's password, generated (and kept in a 0600 file) on first use."""
    path = Path(data_dir) / PASSWORD_FILE
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(24) + "\n")
    os.chmod(path, 0o600)
    return read_password(data_dir)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# The HTTP handlers are the gate: a request reaches the query handler only when it carries the
# whole credential, exactly (basic auth `backfill:<password>`, as clickhouse-connect and `curl -u`
# send it, or the X-ClickHouse-User/Key headers); everything else gets a static 403 and runs
# nothing. ClickHouse's own login comes after the gate and cannot be the gate: with basic auth it
# lets `?user=default` in the query string win, and handler rules cannot see the query string,
# while `default` must keep an empty password (LocalServer logs its own first query in with it).
# So the password is in config.xml (0600, like the password file), not only its hash in users.xml.
REFUSED_TEXT = (
    f"Code: 516. DB::Exception: Authentication failed: log in as user {SERVER_USER} with the "
    f"password in the store data directory's {PASSWORD_FILE} file (basic auth, or the "
    "X-ClickHouse-User and X-ClickHouse-Key headers). (AUTHENTICATION_FAILED)"
)


def config_xml(port: int, password: str) -> str:
    """The local server's config.xml: loopback, `port`, and the HTTP handlers that gate on
    `password`."""
    if not password or not all(c.isascii() and (c.isalnum() or c in "-_") for c in password):
        raise ServerError(
            f"the store server's password (file {PASSWORD_FILE}) must be URL-safe base64 text"
        )
    token = base64.b64encode(f"{SERVER_USER}:{password}".encode()).decode()
    query = (
        "<handler><type>dynamic_query_handler</type>"
        "<query_param_name>query</query_param_name></handler>"
    )
    refuse = (
        "<handler><type>static</type><status>403</status>"
        "<content_type>text/plain; charset=UTF-8</content_type>"
        f"<response_content>{escape(REFUSED_TEXT)}&#10;</response_content></handler>"
    )
    return f"""<clickhouse>
  <!-- Written by backfill-console on every start of the local store server; edits are lost. -->
  <listen_host>{HOST}</listen_host>
  <http_port>{port}</http_port>
  <users_config>users.xml</users_config>
  <!-- On stop, wait this long for clients' open connections (other processes' keep-alives). -->
  <shutdown_wait_unfinished>3</shutdown_wait_unfinished>
  <http_handlers>
    <rule><headers><Authorization>Basic {token}</Authorization></headers>{query}</rule>
    <rule><headers><X-ClickHouse-User>{SERVER_USER}</X-ClickHouse-User>
      <X-ClickHouse-Key>{password}</X-ClickHouse-Key></headers>{query}</rule>
    <rule><url>/ping</url><methods>GET,HEAD</methods>
      <handler><type>static</type><response_content>Ok.&#10;</response_content></handler></rule>
    <rule>{refuse}</rule>
  </http_handlers>
</clickhouse>
"""


def users_xml(password: str) -> str:
    digest = hashlib.sha256(password.encode()).hexdigest()
    return f"""<clickhouse>
  <!-- Written by backfill-console on every start of the local store server; edits are lost. -->
  <profiles>
    <!-- chdb's default output format is CSV; clients (and curl users) expect TabSeparated. -->
    <default><default_format>TabSeparated</default_format></default>
  </profiles>
  <users>
    <!-- LocalServer runs its own first query as `default` with no password: it may only start
         the listener. The HTTP handlers refuse every request without the password first. -->
    <default>
      <password></password>
      <profile>default</profile>
      <quota>default</quota>
      <grants><query>GRANT SYSTEM LISTEN ON *.*</query></grants>
    </default>
    <{escape(SERVER_USER)}>
      <password_sha256_hex>{digest}</password_sha256_hex>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
      <access_management>1</access_management>
    </{escape(SERVER_USER)}>
  </users>
  <quotas><default></default></quotas>
</clickhouse>
"""


def read_port_from_config(data_dir: Path) -> int:
    text = (Path(data_dir) / "config.xml").read_text()
    start = text.index("<http_port>") + len("<http_port>")
    return int(text[start : text.index("</http_port>")])


@dataclass
class ServerInfo:
    """Where a running local store server listens (server.json); the password is read apart."""

    port: int
    pid: int
    user: str = SERVER_USER

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def read_info(data_dir: Path) -> ServerInfo | None:
    try:
        doc = json.loads((Path(data_dir) / INFO_FILE).read_text())
        return ServerInfo(int(doc["port"]), int(doc["pid"]), str(doc.get("user", SERVER_USER)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child not yet reaped) is not alive.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


def ping(port: int, timeout: float = 2.0) -> bool:
    """True when something answers ClickHouse's /ping on 127.0.0.1:port."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/ping")
        resp = conn.getresponse()
        return resp.status == 200 and resp.read().startswith(b"Ok")
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def running_server(data_dir: Path) -> ServerInfo | None:
    """The server serving data_dir now, if any (its process alive and answering)."""
    info = read_info(data_dir)
    if info is None or not _pid_alive(info.pid) or not ping(info.port):
        return None
    return info


@contextlib.contextmanager
def _start_lock(data_dir: Path) -> Iterator[None]:
    fd = os.open(Path(data_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class LocalServer:
    """A handle on the store server of a data dir: ours (`proc` set) or found running."""

    def __init__(
        self, data_dir: Path, info: ServerInfo, proc: subprocess.Popen[bytes] | None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.info = info
        self.proc = proc
        self.password = read_password(self.data_dir)

    @property
    def port(self) -> int:
        return self.info.port

    @property
    def pid(self) -> int:
        return self.info.pid

    @property
    def url(self) -> str:
        return self.info.url

    @property
    def user(self) -> str:
        return self.info.user

    @property
    def owned(self) -> bool:
        return self.proc is not None

    def alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            return False
        return _pid_alive(self.pid) and ping(self.port)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server if this process started it (SIGTERM: a clean stop; SIGKILL after
        `timeout`). A server found running belongs to someone else and is left alone."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(OSError):
            info = read_info(self.data_dir)
            if info is not None and info.pid == proc.pid:
                (self.data_dir / INFO_FILE).unlink()


def _spawn(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["BACKFILL_STORE_OWNER_PID"] = str(os.getpid())
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    with open(data_dir / LOG_FILE, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.store.server_process", str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches the owner, which stops us
        )


def _wait_ready(proc: subprocess.Popen[bytes], port: int, data_dir: Path, timeout: float) -> str:
    """'' once the server answers /ping, else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = ""
            with contextlib.suppress(OSError):
                tail = (data_dir / LOG_FILE).read_text(errors="replace")[-600:].strip()
            return f"exited with code {proc.returncode}: {tail}"
        if ping(port, timeout=1.0):
            return ""
        time.sleep(0.05)
    return f"not answering on port {port} after {timeout:.0f} s"


def ensure_server(data_dir: Path, port: int = 0, timeout: float = READY_TIMEOUT_S) -> LocalServer:
    """The store server of data_dir: the running one, or one started now as our child.

    `port` 0 picks a free port (again on each start); a fixed port is used as given.
    """
    data_dir = Path(data_dir).resolve()
    if port and running_server(data_dir) is None and (problem := port_problem(port)):
        raise ServerError(problem)  # before anything is created
    data_dir.mkdir(parents=True, exist_ok=True)
    with _start_lock(data_dir):
        info = running_server(data_dir)
        if info is not None:
            return LocalServer(data_dir, info, None)
        password = ensure_password(data_dir)
        last = ""
        for _ in range(1 if port else 3):
            p = port or free_port()
            _write_private(data_dir / "config.xml", config_xml(p, password))
            _write_private(data_dir / "users.xml", users_xml(password))
            proc = _spawn(data_dir, p)
            last = _wait_ready(proc, p, data_dir, timeout)
            if not last:
                info = ServerInfo(p, proc.pid)
                _write_private(
                    data_dir / INFO_FILE,
                    json.dumps({"port": p, "pid": proc.pid, "user": SERVER_USER}) + "\n",
                )
                return LocalServer(data_dir, info, proc)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if port and "Address already in use" in last:  # taken meanwhile
                raise ServerError(port_problem(port) or last)
        raise ServerError(f"local store server on {data_dir} did not start: {last}")
