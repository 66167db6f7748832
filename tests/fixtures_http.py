"""A real HTTP server on 127.0.0.1 standing in for external hosts (Zenodo, the Hugging Face Hub, plain file hosts).

It serves files with strong ETags, byte ranges (`Range`, `If-Range`, 206/416) and conditional GETs
(`If-None-Match`, 304), JSON documents (with extra headers such as `Link`), redirects, and can cut a file's
response short to simulate a broken transfer. A route can demand request headers (an account's
`Authorization`: 401 without them), and `add_handler` answers GET and POST from a function of the request (a
GraphQL endpoint, a paged listing). Every request is recorded, with its body, so tests can count what was
downloaded and what was sent.

    with LocalHTTPServer() as server:
        server.add_file("/data/a.bin", b"...")
        url = server.url("/data/a.bin")
        ...
        assert len(server.requests_to("/data/a.bin")) == 1
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "application/octet-stream"
    etag: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    location: str | None = None
    cut_at: int | None = None  # bytes sent before the connection drops...
    cuts_left: int = 0  # ...for this many responses
    delay: float = 0.0  # seconds before answering
    rate: int | None = None  # bytes per second of body (a slow host), else as fast as possible
    require_headers: dict[str, str] = field(default_factory=dict)  # else 401
    handler: Callable[[RecordedRequest], tuple[int, dict[str, str], bytes]] | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    bytes_sent: int = 0
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


class LocalHTTPServer:
    def __init__(self, tls: ssl.SSLContext | None = None, host_name: str = "127.0.0.1") -> None:
        """`tls`: a server-side SSL context to serve HTTPS (see `self_signed_tls`); `host_name`: the host
        written into URLs (e.g. `localhost`, to match a certificate)."""
        self.tls = tls
        self.host_name = host_name
        self.routes: dict[str, Route] = {}
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- set-up ----------------------------------------------------------------------------------------

    def add_file(
        self,
        path: str,
        body: bytes,
        *,
        etag: str | None = "auto",
        content_type: str = "application/octet-stream",
        cut_at: int | None = None,
        cuts: int = 0,
        delay: float = 0.0,
        rate: int | None = None,
        require_headers: dict[str, str] | None = None,
    ) -> Route:
        """Serve `body` at `path`. `etag="auto"` derives a strong ETag from the content; None sends none.
        With `cut_at` and `cuts`, the next `cuts` responses stop after `cut_at` bytes of the body. With
        `rate`, the body trickles out at that many bytes per second, and `bytes_sent` grows as it goes.
        `require_headers`: a request without exactly these headers is answered 401."""
        if etag == "auto":
            etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        route = Route(
            body=body,
            content_type=content_type,
            etag=etag,
            cut_at=cut_at,
            cuts_left=cuts,
            delay=delay,
            rate=rate,
            require_headers=require_headers or {},
        )
        self.routes[path] = route
        return route

    def add_json(
        self, path: str, document: Any, *, status: int = 200, headers: dict[str, str] | None = None
    ) -> Route:
        route = Route(
            body=json.dumps(document).encode(),
            content_type="application/json",
            status=status,
            headers=headers or {},
        )
        self.routes[path] = route
        return route

    def add_redirect(
        self, path: str, location: str, status: int = 302, *, require_headers: dict[str, str] | None = None
    ) -> Route:
        route = Route(status=status, location=location, require_headers=require_headers or {})
        self.routes[path] = route
        return route

    def add_handler(
        self,
        path: str,
        handler: Callable[[RecordedRequest], tuple[int, dict[str, str], bytes]],
        *,
        require_headers: dict[str, str] | None = None,
    ) -> Route:
        """Answer GET and POST at `path` with `handler(request) -> (status, headers, body)`; the request has
        its `body` (and `.json()`)."""
        route = Route(handler=handler, require_headers=require_headers or {})
        self.routes[path] = route
        return route

    # --- use -------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "the server is not started"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host_name}:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [request for request in self.requests if urlsplit(request.path).path == path]

    def __enter__(self) -> LocalHTTPServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _route(self, raw_path: str) -> Route | None:
        return self.routes.get(raw_path) or self.routes.get(urlsplit(raw_path).path)


def self_signed_tls(folder: Path, host_name: str = "localhost") -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A certificate valid only for `host_name` (no IP address), made with the openssl command: returns the
    server's context and a client context that trusts exactly that certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={host_name}",
            "-addext",
            f"subjectAltName=DNS:{host_name}",
        ],
        check=True,
        capture_output=True,
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _handler_for(server: LocalHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so a cut response ends in a closed connection
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_POST(self) -> None:
            self._answer(send_body=True)

        def _answer(self, send_body: bool) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            record = RecordedRequest(self.command, self.path, dict(self.headers.items()), body=body)
            with server._lock:
                server.requests.append(record)
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                self._respond(record, send_body)
            finally:
                with server._lock:
                    server.in_flight -= 1

        def _respond(self, record: RecordedRequest, send_body: bool) -> None:
            route = server._route(self.path)
            if route is None:
                record.status = 404
                self._simple(404, b'{"status": 404, "message": "not found"}', "application/json")
                return
            if route.delay:
                time.sleep(route.delay)
            if any(self.headers.get(name) != value for name, value in route.require_headers.items()):
                record.status = 401
                self._simple(401, b'{"status": 401, "message": "unauthorized"}', "application/json")
                return
            if route.handler is not None:
                status, headers, payload = route.handler(record)
                record.status = status
                self.send_response(status)
                headers = {"Content-Type": "application/json", **headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if send_body:
                    self.wfile.write(payload)
                    record.bytes_sent = len(payload)
                return
            if route.location is not None:
                record.status = route.status
                self.send_response(route.status)
                self.send_header("Location", route.location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, status, extra = route.body, route.status, dict(route.headers)
            if_none_match = self.headers.get("If-None-Match", "")
            if route.etag and status == 200 and route.etag in [t.strip() for t in if_none_match.split(",")]:
                record.status = 304
                self.send_response(304)
                self.send_header("ETag", route.etag)
                self.end_headers()
                return
            requested = _RANGE.match(self.headers.get("Range", ""))
            if_range = self.headers.get("If-Range")
            if requested and status == 200 and (if_range is None or if_range == route.etag):
                start = int(requested.group(1))
                end = int(requested.group(2)) if requested.group(2) else len(body) - 1
                if start >= len(body):
                    record.status = 416
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                end = min(end, len(body) - 1)
                extra["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
                body, status = body[start : end + 1], 206
            record.status = status
            self.send_response(status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if route.etag:
                self.send_header("ETag", route.etag)
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            if not send_body:
                return
            with server._lock:
                cut = route.cut_at if route.cuts_left > 0 and route.cut_at is not None else None
                if cut is not None:
                    route.cuts_left -= 1
            payload = body if cut is None else body[:cut]
            if route.rate is None:
                self.wfile.write(payload)
                self.wfile.flush()
                record.bytes_sent = len(payload)
            else:
                piece = max(1, route.rate // 10)
                try:
                    for start in range(0, len(payload), piece):
                        self.wfile.write(payload[start : start + piece])
                        self.wfile.flush()
                        record.bytes_sent += len(payload[start : start + piece])
                        time.sleep(0.1)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client hung up: what it got is in bytes_sent
                    return
            if cut is not None:
                self.close_connection = True

        def _simple(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
