"""One persistent HTTP/1.1 connection per JSON-RPC URL: POST bytes, get status, headers, body.

A thin layer over ``http.client`` because the per-request cost matters here: on a fast node a
worker spends most of its CPU in the HTTP client (~450 us per request with ``requests`` against
~90 us with ``http.client``, measured on the devchain). It keeps what the RPC pool relies on:

- http and https (default TLS verification), ``user:password@`` in the URL as Basic auth;
- proxies from the environment (``HTTP(S)_PROXY``, ``NO_PROXY``), resolved once per URL: https
  goes through a CONNECT tunnel, http sends the absolute URL to the proxy;
- a connect timeout and a read timeout (per socket operation, like ``requests``);
- a connection the server closed while idle is noticed before reuse and reopened, so a stale
  keep-alive connection never shows up as a failed request. Any error closes the connection.

Errors are ``TransportTimeout`` (connect or read timed out) and ``TransportError`` (anything else
on the connection: refused, reset, dropped mid-response, malformed HTTP).
"""

from __future__ import annotations

import base64
import http.client
import select
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass


class TransportError(Exception):
    """The request did not produce an HTTP response (connection-level failure)."""


class TransportTimeout(TransportError):
    """Connecting or reading timed out."""


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


class HttpConnection:
    """Persistent connection to one URL. Not thread-safe: use one per thread."""

    def __init__(self, url: str, connect_timeout_s: float, read_timeout_s: float) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {u.scheme}://{u.hostname or ''}")
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "backfill-console",
        }
        if u.username is not None:
            self.headers["Authorization"] = _basic_auth(u)
        self.proxy = _proxy_for(url, u.scheme, self.host)
        self._conn: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        host, port = self.host, self.port
        proxy_headers: dict[str, str] = {}
        if self.proxy is not None:
            p = urllib.parse.urlsplit(self.proxy)
            host, port = p.hostname or "", p.port or 80
            if p.username is not None:
                proxy_headers["Proxy-Authorization"] = _basic_auth(p)
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(host, port, timeout=self.connect_timeout_s)
            if self.proxy is not None:
                conn.set_tunnel(self.host, self.port, headers=proxy_headers)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout_s)
            self.headers.update(proxy_headers)
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(self.read_timeout_s)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _target(self) -> str:
        if self.proxy is not None and not self.https:
            return f"http://{self.host}:{self.port}{self.path}"
        return self.path

    def post(self, body: bytes) -> Response:
        """POST ``body``; return the response, or raise TransportTimeout / TransportError."""
        try:
            if self._conn is not None and _dropped(self._conn):
                self.close()
            if self._conn is None:
                self._conn = self._open()
            conn = self._conn
            conn.request("POST", self._target(), body=body, headers=self.headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.will_close:
                self.close()
            return Response(resp.status, resp.headers, data)
        except TimeoutError as exc:
            self.close()
            raise TransportTimeout(str(exc) or "timed out") from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TransportError(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None


def _basic_auth(u: urllib.parse.SplitResult) -> str:
    cred = f"{urllib.parse.unquote(u.username or '')}:{urllib.parse.unquote(u.password or '')}"
    return "Basic " + base64.b64encode(cred.encode()).decode()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """True when an idle connection was closed by the server (readable with nothing pending)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _proxy_for(url: str, scheme: str, host: str) -> str | None:
    """The proxy the environment names for this URL, or None (also when NO_PROXY matches)."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy:
        return None
    if urllib.request.proxy_bypass(host):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    return proxy
