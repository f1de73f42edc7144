"""engine.rpc.http_transport against small loopback HTTP servers: reuse, reconnects, errors, auth"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.rpc.http_transport import HttpConnection, TransportError, TransportTimeout


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[int, str, bytes, str | None]] = []
    delay_s = 0.0
    close_after = False

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Handler.seen.append(
            (self.client_address[1], self.path, body, self.headers.get("Authorization"))
        )
        time.sleep(_Handler.delay_s)
        out = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        if _Handler.close_after:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(out)
        if _Handler.close_after:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    _Handler.seen = []
    _Handler.delay_s = 0.0
    _Handler.close_after = False
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: ThreadingHTTPServer, path: str = "/v1/key123?x=1", auth: str = "") -> str:
    host, port = srv.server_address[:2]
    return f"http://{auth}{host}:{port}{path}"


def test_posts_reuse_one_connection_and_keep_path_and_query(server) -> None:
    c = HttpConnection(_url(server), 5.0, 5.0)
    for i in range(3):
        r = c.post(b'{"n":%d}' % i)
        assert (r.status, r.body) == (200, b'{"ok":true}')
    ports = {s[0] for s in _Handler.seen}
    assert len(ports) == 1, "three requests should share one TCP connection"
    assert [s[1] for s in _Handler.seen] == ["/v1/key123?x=1"] * 3
    assert [s[2] for s in _Handler.seen] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    c.close()


def test_server_closing_the_connection_is_not_an_error(server) -> None:
    _Handler.close_after = True
    c = HttpConnection(_url(server), 5.0, 5.0)
    assert c.post(b"{}").status == 200
    assert c.post(b"{}").status == 200  # a fresh connection, no failed request
    assert len({s[0] for s in _Handler.seen}) == 2


def test_idle_connection_dropped_by_server_is_reopened(server) -> None:
    c = HttpConnection(_url(server), 5.0, 5.0)
    assert c.post(b"{}").status == 200
    assert c._conn is not None and c._conn.sock is not None
    c._conn.sock.shutdown(socket.SHUT_RD)  # looks like the peer closed it while idle
    assert c.post(b"{}").status == 200


def test_read_timeout_raises_transport_timeout(server) -> None:
    _Handler.delay_s = 1.0
    c = HttpConnection(_url(server), 5.0, 0.2)
    with pytest.raises(TransportTimeout):
        c.post(b"{}")


def test_refused_connection_raises_transport_error() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(TransportError) as exc:
        HttpConnection(f"http://127.0.0.1:{port}/", 1.0, 1.0).post(b"{}")
    assert not isinstance(exc.value, TransportTimeout)


def test_credentials_in_url_become_basic_auth(server) -> None:
    c = HttpConnection(_url(server, "/", "user:p%40ss@"), 5.0, 5.0)
    c.post(b"{}")
    assert _Handler.seen[-1][3] == "Basic dXNlcjpwQHNz"  # base64("user:p@ss")


def test_proxy_from_environment_and_no_proxy(monkeypatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "http://proxy.local:3128")
    monkeypatch.setenv("no_proxy", "internal.example")
    assert HttpConnection("https://rpc.example/v1/k", 1, 1).proxy == "http://proxy.local:3128"
    assert HttpConnection("https://internal.example/", 1, 1).proxy is None
    assert HttpConnection("http://rpc.example/", 1, 1).proxy is None  # only https is proxied


def test_rejects_non_http_urls() -> None:
    with pytest.raises(ValueError):
        HttpConnection("ws://127.0.0.1:8545", 1, 1)
