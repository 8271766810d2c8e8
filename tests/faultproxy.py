"""An HTTP proxy on 127.0.0.1 that injects store faults in front of a real S3 server (moto).

Real clients (s3fs, boto3) talk to the proxy as if it were the store; it forwards each request
to ``upstream_url`` and relays the answer, except where told to fail:

- ``hang_keys``: a GET of one of these object keys is read, then never answered (until
  ``release()``, ``stop()`` or ``hang_limit_s`` after the proxy started, when hanging stops
  and the proxy answers normally: a test against a client without a deadline ends instead
  of hanging for ever);
- ``down()``: the store dies: new connections are refused (nothing listens on the port any
  more) and open ones are cut; ``up()`` brings it back on the same port;
- ``down_after_gets=N``: ``down()`` by itself once N object GETs have been answered (once).

Tests and benchmarks import it like ``s3server.py`` (``tests`` is not a package)::

    import sys
    sys.path.insert(0, "tests")
    from faultproxy import FaultProxy
    from s3server import MotoS3Server

    with MotoS3Server() as server:
        proxy = FaultProxy(server.endpoint_url, hang_keys={"imgs/img00040.png"})
        url = proxy.start()            # give this as the endpoint URL
        ...
        proxy.wait_for_hang(30)        # True once a GET is being held
        proxy.stop()                   # releases hung requests, closes every connection

or by hand: ``.venv/bin/python tests/faultproxy.py http://127.0.0.1:PORT --hang KEY`` prints
its URL and serves until Ctrl-C. Every thread is a daemon and every hang is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from s3server import S3Request

#: Hop-by-hop headers: they describe one connection, so they are not relayed.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
     "proxy-authenticate", "proxy-authorization"}
)  # fmt: skip


class FaultProxy:
    """See the module docstring. ``start()`` returns the URL to use as the S3 endpoint."""

    def __init__(
        self,
        upstream_url: str,
        *,
        hang_keys: set[str] | frozenset[str] | tuple[str, ...] = (),
        down_after_gets: int | None = None,
        hang_limit_s: float = 60.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        upstream = urlsplit(upstream_url)
        self._upstream = (upstream.hostname or "127.0.0.1", upstream.port or 80)
        self.hang_keys = set(hang_keys)
        self.down_after_gets = down_after_gets
        self.hang_limit_s = hang_limit_s
        self.host = host
        self.port = port
        self.requests: list[S3Request] = []  # every request seen, in arrival order
        self.gets_answered = 0
        self.hung: list[str] = []  # keys of the GETs held so far
        self._lock = threading.Lock()
        self._release = threading.Event()  # set: hung requests stop waiting
        self._generation = 0  # bumped by down(): requests held before it are dropped
        self._hanging = threading.Event()  # set once a GET is being held
        self._dead = threading.Event()  # set: the store is down, nothing more is answered
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._deadline = 0.0

    # lifecycle

    def start(self) -> str:
        """Listen (on a free port the first time, the same one after ``down()``); the URL."""
        self._deadline = time.monotonic() + self.hang_limit_s
        self._release.clear()
        self._listen()
        return self.url

    def stop(self) -> None:
        """Release every hung request, stop listening and cut every open connection."""
        self._release.set()
        self.down()

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # faults

    def down(self) -> None:
        """The store dies: refuse new connections, cut the open ones (hung ones included)."""
        self._die()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._cut_all()

    def up(self) -> None:
        """The store is back, on the same port."""
        if self._server is None:
            self._listen()
        self._dead.clear()

    @property
    def is_up(self) -> bool:
        return not self._dead.is_set()

    def release(self) -> None:
        """Stop hanging: held GETs and later ones are answered normally."""
        self.hang_keys.clear()
        self._release.set()

    def wait_for_hang(self, timeout: float) -> bool:
        """True once a GET of a hang key is being held (False after ``timeout`` s)."""
        return self._hanging.wait(timeout)

    def count(self, kind: str | None = None) -> int:
        """Requests seen with this ``S3Request.kind`` (``get``, ``list``, ...), or all."""
        with self._lock:
            return sum(1 for r in self.requests if kind is None or r.kind == kind)

    # internals

    def _listen(self) -> None:
        proxy = self

        class Handler(_Relay):
            owner = proxy

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                """A client that went away (a cut, a cancelled read) is no error here."""

        self._server = Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fault-proxy", daemon=True
        )
        self._thread.start()

    def _die(self) -> None:
        """The part of ``down()`` that must be instant: from now on no request is answered
        and every open connection is cut. Closing the listening socket waits for
        ``serve_forever``'s poll (up to 0.5 s); keep-alive connections must not go on being
        served meanwhile, or a fast client reads dozens of objects from a "dead" store."""
        with self._lock:
            self._dead.set()
            self._generation += 1
        self._cut_all()

    def _cut_all(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            _cut(connection)

    def _should_hang(self, request: S3Request) -> bool:
        if request.kind != "get" or self._release.is_set():
            return False
        key = unquote(request.path).lstrip("/").split("/", 1)[-1]
        return key in self.hang_keys and time.monotonic() < self._deadline

    def _hang(self, request: S3Request) -> bool:
        """Hold a GET; True when it should then be answered, False when the store went down."""
        generation = self._generation
        with self._lock:
            self.hung.append(request.path)
        self._hanging.set()
        while generation == self._generation and time.monotonic() < self._deadline:
            if self._release.wait(0.05):
                break
        return generation == self._generation

    def _answered(self, request: S3Request) -> None:
        if request.kind != "get":
            return
        with self._lock:
            self.gets_answered += 1
            due = self.down_after_gets is not None and self.gets_answered >= self.down_after_gets
            if due:
                self.down_after_gets = None  # once: after up(), the store stays up
        if due:
            self._die()  # at once, before any other handler answers
            # closing the listener waits on serve_forever, so not from a handler thread
            threading.Thread(target=self.down, name="fault-proxy-down", daemon=True).start()


def _cut(connection: socket.socket) -> None:
    """Close a client connection at once (the client sees a reset or an EOF)."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        connection.close()


class _Relay(BaseHTTPRequestHandler):
    """One client connection: each request is forwarded upstream and its answer relayed."""

    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as a real store: clients pool connections

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            dead = self.owner._dead.is_set()
            if not dead:
                self.owner._connections.add(self.connection)
        if dead:  # accepted just before the listener closed: refused all the same
            _cut(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.owner._lock:
            self.owner._connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """One log line per request would drown test output."""

    def _relay(self) -> None:
        owner = self.owner
        path, _, query = self.path.partition("?")
        request = S3Request(self.command, path, query)
        with owner._lock:
            owner.requests.append(request)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if owner._dead.is_set() or (owner._should_hang(request) and not owner._hang(request)):
            self.close_connection = True
            _cut(self.connection)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream = http.client.HTTPConnection(*owner._upstream, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        if owner._dead.is_set():  # the store died while this request was upstream
            self.close_connection = True
            _cut(self.connection)
            return
        self.send_response_only(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if self.command != "HEAD" and answer.getheader("Content-Length") is None:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()
        owner._answered(request)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _relay


def _main() -> None:
    parser = argparse.ArgumentParser(description="Serve a fault-injecting proxy to an S3 URL.")
    parser.add_argument("upstream", help="the real endpoint, e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--hang", action="append", default=[], help="object key to hang")
    parser.add_argument("--hang-limit-s", type=float, default=3600.0)
    parser.add_argument("--down-after-gets", type=int, default=None)
    args = parser.parse_args()
    proxy = FaultProxy(
        args.upstream,
        hang_keys=set(args.hang),
        down_after_gets=args.down_after_gets,
        hang_limit_s=args.hang_limit_s,
        port=args.port,
    )
    print(proxy.start(), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    proxy.stop()


if __name__ == "__main__":
    _main()
