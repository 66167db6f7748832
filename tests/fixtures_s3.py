"""A real S3-speaking HTTP server on 127.0.0.1 standing in for public buckets (NCI Imaging Data Commons').

Path-style requests, as workers/sources/s3.py makes them:

- `GET /{bucket}?list-type=2&prefix=P[&max-keys=N][&continuation-token=T]`: a ListObjectsV2 document (namespace
  `http://s3.amazonaws.com/doc/2006-03-01/`), keys in order, `page_size` keys a page unless `max-keys` asks
  for fewer, continuation tokens opaque (base64 of the last key sent);
- `GET` / `HEAD /{bucket}/{key}`: the object, with `ETag: "<md5>"` (or the ETag a test sets), Content-Length;
- `region`: set, every request to the bucket answers `301 PermanentRedirect` with `x-amz-bucket-region` and an
  `<Endpoint>` in the error body and no Location, as S3 does for a bucket in another region.

    with LocalS3Server() as s3:
        s3.put("idc-open-data", "uuid/1.dcm", data)
        s3.base_url  # the endpoint
        s3.requests  # (method, path with query) of every request
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"


@dataclass
class StoredObject:
    body: bytes
    etag: str  # without quotes


@dataclass
class BucketRedirect:
    region: str
    header: bool = True  # send x-amz-bucket-region; else only the body's <Endpoint> says it


class LocalS3Server:
    def __init__(self, page_size: int = 1000) -> None:
        self.page_size = page_size
        self.buckets: dict[str, dict[str, StoredObject]] = {}
        self.redirects: dict[str, BucketRedirect] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def put(self, bucket: str, key: str, body: bytes, etag: str | None = None) -> StoredObject:
        """Store an object; its ETag is the MD5 of `body` unless `etag` is given (a wrong or multipart one)."""
        stored = StoredObject(body, etag if etag is not None else hashlib.md5(body).hexdigest())
        self.buckets.setdefault(bucket, {})[key] = stored
        return stored

    def redirect_bucket(self, bucket: str, region: str, header: bool = True) -> None:
        """Answer every request to `bucket` with S3's 301 PermanentRedirect naming `region`."""
        self.redirects[bucket] = BucketRedirect(region, header)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "the server is not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def requests_for(self, method: str, path_prefix: str) -> list[str]:
        return [path for m, path in self.requests if m == method and path.startswith(path_prefix)]

    def __enter__(self) -> LocalS3Server:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # --- documents ---------------------------------------------------------------------------------------

    def listing(self, bucket: str, query: dict[str, list[str]]) -> bytes:
        prefix = query.get("prefix", [""])[0]
        limit = min(self.page_size, int(query.get("max-keys", [str(self.page_size)])[0]))
        keys = sorted(key for key in self.buckets.get(bucket, {}) if key.startswith(prefix))
        token = query.get("continuation-token", [None])[0]
        if token is not None:
            after = base64.urlsafe_b64decode(token.encode()).decode()
            keys = [key for key in keys if key > after]
        page, rest = keys[:limit], keys[limit:]
        contents = "".join(
            f"<Contents><Key>{escape(key)}</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
            f"<ETag>&quot;{escape(self.buckets[bucket][key].etag)}&quot;</ETag>"
            f"<Size>{len(self.buckets[bucket][key].body)}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            for key in page
        )
        truncated = bool(rest) and bool(page)
        next_token = (
            f"<NextContinuationToken>{base64.urlsafe_b64encode(page[-1].encode()).decode()}</NextContinuationToken>"
            if truncated
            else ""
        )
        given = f"<ContinuationToken>{escape(token)}</ContinuationToken>" if token else ""
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{NAMESPACE}"><Name>{escape(bucket)}'
            f"</Name><Prefix>{escape(prefix)}</Prefix>{given}<KeyCount>{len(page)}</KeyCount><MaxKeys>{limit}"
            f"</MaxKeys><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{contents}{next_token}"
            "</ListBucketResult>"
        ).encode()


def _error(code: str, message: str, **extra: str) -> bytes:
    fields = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in extra.items())
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(message)}</Message>'
        f"{fields}<RequestId>0</RequestId></Error>"
    ).encode()


def _handler_for(server: LocalS3Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def _send(self, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _answer(self, send_body: bool) -> None:
            with server._lock:
                server.requests.append((self.command, self.path))
            parts = urlsplit(self.path)
            bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
            xml = {"Content-Type": "application/xml"}
            redirect = server.redirects.get(bucket)
            if redirect is not None:
                headers = {**xml, **({"x-amz-bucket-region": redirect.region} if redirect.header else {})}
                body = _error(
                    "PermanentRedirect",
                    "The bucket you are attempting to access must be addressed using the specified endpoint.",
                    Endpoint=f"{bucket}.s3.{redirect.region}.amazonaws.com",
                    Bucket=bucket,
                )
                self._send(301, body, headers, send_body)
                return
            if bucket not in server.buckets:
                self._send(404, _error("NoSuchBucket", "The specified bucket does not exist"), xml, send_body)
                return
            if not key:
                query = parse_qs(parts.query)
                if query.get("list-type") != ["2"]:
                    self._send(400, _error("InvalidArgument", "only ListObjectsV2"), xml, send_body)
                    return
                self._send(200, server.listing(bucket, query), xml, send_body)
                return
            stored = server.buckets[bucket].get(key)
            if stored is None:
                self._send(404, _error("NoSuchKey", "The specified key does not exist."), xml, send_body)
                return
            headers = {
                "Content-Type": "application/dicom",
                "ETag": f'"{stored.etag}"',
                "Accept-Ranges": "bytes",
            }
            self._send(200, stored.body, headers, send_body)

    return Handler
