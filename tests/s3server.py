"""A real moto S3 server on 127.0.0.1 that counts requests and can add latency to each.

Tests get it through the fixtures in ``conftest.py``. Benchmarks import it by path (``tests``
is not a package), with no pytest needed::

    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from s3server import MotoS3Server

    with MotoS3Server(delay_s=0.020) as server:        # 20 ms per request, like a real store
        options = {"key": "testing", "secret": "testing",
                   "client_kwargs": {"endpoint_url": server.endpoint_url}}
        ...
        print(server.count(kind="get"), server.count(method="HEAD"))

or by hand: ``.venv/bin/python tests/s3server.py --delay-ms 20`` prints the endpoint and serves
until Ctrl-C. Requests are recorded by a WSGI middleware in front of moto's own app; the
latency is a sleep in that middleware, in the request's own server thread, so concurrent
clients overlap their waits as they would against a real store.

Connections are kept alive (HTTP/1.1), as a real store keeps them: werkzeug's server closes
each one after a single answer, which made every GET pay a TCP accept and a new server thread
(``keep_alive=False``, or ``--close`` by hand, gives that behaviour back for comparisons).
On a kept-alive connection the answer also goes out without Nagle's algorithm (``TCP_NODELAY``):
the handler writes the headers and the body in two sends, and with Nagle on the body waited for
the client's delayed ACK of the headers, ~40 ms per GET on Linux (a 20 ms-delay GET took
65-75 ms with 16 in flight, 40-45 ms without it; ``nagle=True`` / ``--nagle`` restores it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class S3Request:
    """One request as the server saw it (path-style addressing: ``/bucket/key``)."""

    method: str
    path: str
    query: str

    @property
    def kind(self) -> str:
        """``list``, ``get``, ``head``, ``put``, ``delete``, ``bucket`` or ``other``.

        ``get`` is a GET of one object (a download), ``list`` a bucket-level GET with a listing
        query, ``head`` a HEAD of one object, ``bucket`` any other bucket-level call.
        """
        parts = unquote(self.path).lstrip("/").split("/", 1)
        on_object = len(parts) == 2 and parts[1] != ""
        if self.path.startswith("/moto-api"):
            return "other"
        if not on_object:
            listing = not self.query or "list-type" in self.query or "prefix" in self.query
            return "list" if self.method == "GET" and listing else "bucket"
        return {"GET": "get", "HEAD": "head", "PUT": "put", "DELETE": "delete"}.get(
            self.method, "other"
        )


class _CountingMiddleware:
    """Records every request, then sleeps ``delay_s`` before handing it to moto."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self.delay_s = 0.0
        self.requests: list[S3Request] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request = S3Request(
            environ.get("REQUEST_METHOD", ""),
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
        )
        with self.lock:
            self.requests.append(request)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.delay_s > 0:
                time.sleep(self.delay_s)
            return self.app(environ, start_response)
        finally:
            with self.lock:
                self.in_flight -= 1


class MotoS3Server:
    """moto's S3 in a background thread, with a request log and per-request latency."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        delay_s: float = 0.0,
        keep_alive: bool = True,
        nagle: bool = False,
    ) -> None:
        self.host = host
        self.keep_alive = keep_alive
        self.nagle = nagle
        self.port = port
        self._initial_delay_s = delay_s
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._middleware: _CountingMiddleware | None = None

    # lifecycle

    def start(self) -> MotoS3Server:
        # moto is slow to import; only pay for it when a server is wanted.
        from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        keep_alive = self.keep_alive

        class QuietHandler(MotoRequestHandler):
            # headers and body are two sends: with Nagle the body waits for the delayed ACK
            disable_nagle_algorithm = keep_alive and not self.nagle

            def log_request(self, *args: Any, **kwargs: Any) -> None:
                """One log line per request would drown test output."""

            def run_wsgi(self) -> None:
                """After answering, werkzeug reads whatever the client sent next and throws it
                away (it assumes the connection closes): on a kept-alive connection that is
                the next request. ``make_environ`` hands it an empty stream to drain instead."""
                connection_stream = self.rfile
                try:
                    super().run_wsgi()
                finally:
                    self.rfile = connection_stream

            def make_environ(self) -> dict[str, Any]:
                """The request's whole body read here (by its Content-Length), so the next
                request on a kept-alive connection starts where the parser looks."""
                environ = super().make_environ()
                length = self.headers.get("Content-Length", "0")
                self.framed = keep_alive and (
                    "chunked" not in self.headers.get("Transfer-Encoding", "").lower()
                    and length.isdigit()
                )
                if self.framed:
                    environ["wsgi.input"] = io.BytesIO(self.rfile.read(int(length)))
                    self.rfile = io.BytesIO()
                return environ

            def send_header(self, keyword: str, value: str) -> None:
                """werkzeug closes every connection (``Connection: close``) because its
                handler cannot drain a body the app left unread; ``make_environ`` reads it,
                so a connection stays open as a real store's does (chunked bodies aside)."""
                closing = keyword.lower() == "connection" and value.lower() == "close"
                if closing and getattr(self, "framed", False):
                    return
                super().send_header(keyword, value)

        # moto's S3 app itself, not moto's all-services dispatcher in front of it: the
        # dispatcher works out the service of every request by listing moto's package folders
        # under one global lock, about half the server's CPU per GET (cProfile), which a
        # real store does not cost this machine. S3 answers exactly the same either way.
        self._middleware = _CountingMiddleware(create_backend_app("s3"))
        self._middleware.delay_s = self._initial_delay_s
        self._server = make_server(
            self.host, self.port, self._middleware, threaded=True, request_handler=QuietHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="moto-s3", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> MotoS3Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # what tests and benchmarks use

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def delay_s(self) -> float:
        """Seconds every request sleeps before moto answers it (0: no added latency)."""
        return self._running.delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        self._running.delay_s = float(value)

    @property
    def requests(self) -> list[S3Request]:
        """A snapshot of the requests since the last ``reset()``, in arrival order."""
        with self._running.lock:
            return list(self._running.requests)

    def reset(self) -> None:
        """Forget the requests seen so far (call it right before the operation you measure)."""
        with self._running.lock:
            self._running.requests.clear()
            self._running.peak_in_flight = self._running.in_flight

    @property
    def peak_in_flight(self) -> int:
        """Most requests the server was handling at once since ``reset()``."""
        with self._running.lock:
            return self._running.peak_in_flight

    def count(self, *, method: str | None = None, kind: str | None = None) -> int:
        """Requests since ``reset()`` with this HTTP method and/or ``S3Request.kind``."""
        return sum(
            1
            for request in self.requests
            if (method is None or request.method == method.upper())
            and (kind is None or request.kind == kind)
        )

    def counts(self) -> Counter[str]:
        """Requests since ``reset()`` by HTTP method, e.g. ``{"GET": 3, "HEAD": 0}``."""
        return Counter(request.method for request in self.requests)

    def preload(self, bucket: str, prefix: str, paths: Iterable[Any]) -> int:
        """Put files into ``bucket`` under ``prefix/NAME`` through moto's backend, not HTTP.

        Setup for benchmarks with tens of thousands of objects: a PUT through the server costs
        the injected delay plus ~10 ms of client and server CPU on this machine (40,000 PNGs
        took over 15 minutes at load 8-17), the backend call well under a millisecond. GETs,
        HEADs and listings then answer exactly as for uploaded objects (same bytes and ETag);
        nothing is counted in ``requests``. Returns how many objects were put."""
        from pathlib import Path

        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        if self._server is None:
            raise RuntimeError("MotoS3Server is not started; call start() or use `with`")
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        if bucket not in backend.buckets:
            backend.create_bucket(bucket, "us-east-1")
        count = 0
        for path in map(Path, paths):
            backend.put_object(
                bucket, f"{prefix}/{path.name}" if prefix else path.name, path.read_bytes()
            )
            count += 1
        return count

    @property
    def _running(self) -> _CountingMiddleware:
        if self._middleware is None:
            raise RuntimeError("MotoS3Server is not started; call start() or use `with`")
        return self._middleware


def _main() -> None:
    parser = argparse.ArgumentParser(description="Serve moto S3 with optional latency.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument(
        "--close", action="store_true", help="close every connection (werkzeug's default)"
    )
    parser.add_argument(
        "--nagle", action="store_true", help="keep Nagle's algorithm on (~40 ms stalls)"
    )
    parser.add_argument(
        "--preload",
        metavar="DIR",
        help="before serving, put every file of DIR into --bucket under --prefix (no HTTP)",
    )
    parser.add_argument("--bucket", default="alcli-bench")
    parser.add_argument("--prefix", default="")
    args = parser.parse_args()
    server = MotoS3Server(
        port=args.port,
        delay_s=args.delay_ms / 1000,
        keep_alive=not args.close,
        nagle=args.nagle,
    )
    with server:
        if args.preload:
            from pathlib import Path

            server.preload(args.bucket, args.prefix, sorted(Path(args.preload).iterdir()))
        print(server.endpoint_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    _main()
