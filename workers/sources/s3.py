"""A small anonymous S3 client over plain HTTPS: list a prefix (ListObjectsV2) and name the URL of an object.

Path-style addressing only (`{endpoint}/{bucket}?list-type=2&prefix=...` and `{endpoint}/{bucket}/{key}`), no
request signing: it reads public buckets, such as NCI Imaging Data Commons' (`idc` sources). Every request goes
through `net.open_response`, so each hop's address is checked like any other source's.

A bucket in another region than the endpoint's answers 301 (or 307) with its region in the
`x-amz-bucket-region` header or an `<Endpoint>` in the error body. The client follows that only when it was
given a `regional_endpoint` rule, which by default it has for AWS's global endpoint `https://s3.amazonaws.com`
alone (then `https://s3.<region>.amazonaws.com`): an operator's mirror that redirects is reported, not chased.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import httpx

from app.core.config import Settings
from workers.safety import UnsafeSourceError
from workers.sources.base import SourceError
from workers.sources.net import open_response

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
AWS_GLOBAL_ENDPOINT = "https://s3.amazonaws.com"
# a page of 1,000 keys is ~300 kB of XML; anything far larger is not a listing
MAX_LISTING_BYTES = 16 * 2**20
TRANSIENT_STATUS = {500, 502, 503, 504}  # S3's InternalError and SlowDown: worth another try
_REGION = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+-\d+$")  # us-east-1, eu-west-2, us-gov-west-1, ap-southeast-4
_ENDPOINT_REGION = re.compile(r"(?:^|\.)s3[.-]([a-z0-9-]+)\.amazonaws\.com$")
_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART = re.compile(r"^[0-9a-f]{32}-\d+$")


@dataclass(frozen=True)
class S3Object:
    """One object of a listing: its key, size in bytes, and ETag without the quotes S3 puts around it."""

    key: str
    size: int
    etag: str

    @property
    def md5(self) -> str | None:
        """The content's MD5, when the ETag is one: a plain 32-hex ETag of an object uploaded in one piece
        (without SSE-KMS). None otherwise; `multipart` says whether that is because of a multipart upload."""
        etag = self.etag.lower()
        return etag if _PLAIN_MD5.match(etag) else None

    @property
    def multipart(self) -> bool:
        """An ETag `<hex>-<parts>`: the MD5 of the parts' MD5s, which depends on the unknown part size, so it
        cannot verify the content."""
        return bool(_MULTIPART.match(self.etag.lower()))


def aws_regional_endpoint(region: str) -> str:
    return f"https://s3.{region}.amazonaws.com"


def _tag(name: str) -> str:
    return f"{{{S3_NAMESPACE}}}{name}"


def _text(element: ElementTree.Element, name: str, namespaced: bool = True) -> str | None:
    child = element.find(_tag(name) if namespaced else name)
    return None if child is None or child.text is None else child.text


def _parse_xml(body: bytes, what: str) -> ElementTree.Element:
    # no DTDs: a listing never has one, and refusing them rules out entity expansion tricks
    if b"<!DOCTYPE" in body[:4096].upper():
        raise SourceError(f"{what}: the answer carries a DOCTYPE; not an S3 document")
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise SourceError(f"{what}: the answer is not XML ({exc})") from exc


def _error_summary(body: bytes) -> str:
    """`Code: Message` of an S3 error document (which has no namespace), or '' when the body is not one."""
    with contextlib.suppress(SourceError):
        root = _parse_xml(body, "")
        if root.tag == "Error":
            code, message = _text(root, "Code", False), _text(root, "Message", False)
            return ": ".join(part for part in (code, message) if part)
    return ""


def redirect_region(response: httpx.Response, body: bytes) -> str | None:
    """The bucket's region a redirect names: the `x-amz-bucket-region` header, else the error body's
    `<Endpoint>` (e.g. `bucket.s3.us-west-2.amazonaws.com`). None when neither says one."""
    header: str = response.headers.get("x-amz-bucket-region", "").strip()
    if _REGION.match(header):
        return header
    with contextlib.suppress(SourceError):
        root = _parse_xml(body, "")
        endpoint = (_text(root, "Endpoint", False) or "").strip().lower()
        match = _ENDPOINT_REGION.search(endpoint)
        region: str = match.group(1) if match else ""  # the pattern's one group always takes part
        if _REGION.match(region):
            return region
    return None


class AnonymousS3:
    """Lists public buckets and names their objects' URLs. Thread-safe: listings may run in parallel; the
    region learnt for a bucket from a redirect is kept for every later request to it."""

    def __init__(
        self,
        client: httpx.Client,
        settings: Settings,
        endpoint: str,
        regional_endpoint: Callable[[str], str] | None = None,
        attempts: int = 3,
        retry_delay: float = 0.5,
    ) -> None:
        """`regional_endpoint`: region -> endpoint to retry a region redirect at; by default AWS's rule, and
        only when `endpoint` is AWS's global one (no redirect is followed for any other endpoint)."""
        self.client = client
        self.settings = settings
        self.endpoint = endpoint.rstrip("/")
        if regional_endpoint is None and self.endpoint == AWS_GLOBAL_ENDPOINT:
            regional_endpoint = aws_regional_endpoint
        self.regional_endpoint = regional_endpoint
        self.attempts = max(1, attempts)
        self.retry_delay = retry_delay
        self._bucket_endpoints: dict[str, str] = {}
        self._lock = threading.Lock()

    def endpoint_for(self, bucket: str) -> str:
        with self._lock:
            return self._bucket_endpoints.get(bucket, self.endpoint)

    def object_url(self, bucket: str, key: str) -> str:
        """Where GET fetches the object (path-style, at the bucket's regional endpoint once one is known)."""
        return f"{self.endpoint_for(bucket)}/{quote(bucket, safe='')}/{quote(key, safe='/')}"

    def list_objects(self, bucket: str, prefix: str) -> list[S3Object]:
        """Every object whose key starts with `prefix`, following continuation tokens page by page."""
        objects: list[S3Object] = []
        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token is not None:
                query["continuation-token"] = token
            root = self._get_listing(bucket, urlencode(query), f"s3://{bucket}/{prefix}")
            for entry in root.findall(_tag("Contents")):
                key, size, etag = _text(entry, "Key"), _text(entry, "Size"), _text(entry, "ETag")
                if key is None or size is None or not size.isdigit():
                    raise SourceError(f"s3://{bucket}/{prefix}: a listed object has no key or size")
                objects.append(S3Object(key, int(size), (etag or "").strip().strip('"')))
            if (_text(root, "IsTruncated") or "false").lower() != "true":
                return objects
            token = _text(root, "NextContinuationToken")
            if not token or token in seen_tokens:
                raise SourceError(f"s3://{bucket}/{prefix}: the listing is truncated but gives no new token")
            seen_tokens.add(token)

    def _get_listing(self, bucket: str, query: str, what: str) -> ElementTree.Element:
        attempt, redirected = 1, False
        while True:
            url = f"{self.endpoint_for(bucket)}/{quote(bucket, safe='')}?{query}"
            try:
                response, final_url = open_response(self.client, url, self.settings)
                try:
                    body = self._read_limited(response, what)
                finally:
                    response.close()
            except UnsafeSourceError as exc:
                raise SourceError(f"{what}: {exc}") from exc
            except httpx.TransportError as exc:
                if attempt >= self.attempts:
                    raise SourceError(f"{what}: GET {url} failed: {exc}") from exc
                time.sleep(self.retry_delay * 2 ** (attempt - 1))
                attempt += 1
                continue
            if response.status_code == 200:
                root = _parse_xml(body, what)
                if root.tag != _tag("ListBucketResult"):
                    raise SourceError(f"{what}: GET {final_url} did not answer an S3 listing ({root.tag})")
                return root
            if response.status_code in (301, 307) and not redirected:
                self._learn_region(bucket, response, body, what, final_url)
                redirected = True  # one region hop: a regional endpoint that redirects again is an error
                continue
            if response.status_code in TRANSIENT_STATUS and attempt < self.attempts:
                time.sleep(self.retry_delay * 2 ** (attempt - 1))
                attempt += 1
                continue
            detail = _error_summary(body)
            raise SourceError(
                f"{what}: GET {final_url} answered HTTP {response.status_code}"
                + (f" ({detail})" if detail else "")
            )

    def _learn_region(self, bucket: str, response: httpx.Response, body: bytes, what: str, url: str) -> None:
        region = redirect_region(response, body)
        if region is None:
            raise SourceError(f"{what}: GET {url} answered HTTP {response.status_code} without saying where")
        if self.regional_endpoint is None:
            raise SourceError(
                f"{what}: the bucket is in region {region} and the endpoint {self.endpoint} is not AWS's "
                f"global one, so its redirect is not followed; use {aws_regional_endpoint(region)} "
                "(or a mirror of that bucket) as the endpoint"
            )
        with self._lock:
            self._bucket_endpoints[bucket] = self.regional_endpoint(region).rstrip("/")

    @staticmethod
    def _read_limited(response: httpx.Response, what: str) -> bytes:
        chunks, total = [], 0
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > MAX_LISTING_BYTES:
                raise SourceError(f"{what}: the answer is larger than {MAX_LISTING_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
