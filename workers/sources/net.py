"""Every HTTP request a worker makes goes through here: the host is resolved and checked (workers.safety) on
every hop, redirects included, and the connection goes to the checked address, not to a fresh DNS answer.

GET and POST (a JSON body: GraphQL, Synapse's listing calls). The operator's credentials for a host
(base.Credential) go only to that host's origin, only over https or to a loopback address, and never again in a
redirect chain once it has left the origin, so a presigned storage URL on another host receives nothing.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Collection
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from app.core.config import Settings
from workers.safety import UnsafeSourceError, resolve_checked
from workers.sources.base import Credential, SourceError

MAX_REDIRECTS = 5
# a redirect that keeps the method and body (RFC 9110 15.4.8/15.4.9); the others turn a POST into a GET
_METHOD_KEEPING_REDIRECTS = {307, 308}


class HttpStatusError(SourceError):
    """A JSON request answered with an HTTP status other than 200; `status` lets an adapter say why (401/403:
    the account, 404: no such record) without reading the message."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def new_client() -> httpx.Client:
    # redirects are followed by open_response, which checks each hop's address
    return httpx.Client(
        follow_redirects=False,
        timeout=httpx.Timeout(30.0, read=120.0),
        headers={"User-Agent": "imagingx-worker"},
    )


def _pinned_request(
    client: httpx.Client,
    url: str,
    address: str,
    headers: dict[str, str] | None,
    method: str = "GET",
    body: bytes | None = None,
    timeout: float | None = None,
) -> httpx.Request:
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    host_header = parts.hostname or ""
    if ":" in host_header:
        host_header = f"[{host_header}]"
    if parts.port:
        host_header = f"{host_header}:{parts.port}"
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return client.build_request(
        method,
        urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
        headers={**(headers or {}), "Host": host_header},
        content=body,
        extensions=extensions,
        # every wait of this request (connect, each read) ends within `timeout`; else the client's defaults
        timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else httpx.Timeout(timeout),
    )


def _loopback(addresses: list[str]) -> bool:
    return all(ipaddress.ip_address(address.split("%", 1)[0]).is_loopback for address in addresses)


def open_response(
    client: httpx.Client,
    url: str,
    settings: Settings,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    json_body: Any = None,
    credential: Credential | None = None,
    https_only: bool = False,
    follow_redirects: bool = True,
    timeout: float | None = None,
) -> tuple[httpx.Response, str]:
    """Send `method` to `url` (with `json_body` as a JSON body) as a stream, following redirects unless told
    not to; returns the open response (the caller closes it) and the final URL. Raises UnsafeSourceError for a
    refused address on any hop.

    `credential`: its headers go to the hops on its origin until the first hop that leaves it (module
    docstring); SourceError if its origin would get them over plain http to a non-loopback address.
    `https_only`: every hop must be https (or loopback), for content that no published checksum protects.
    `timeout`: seconds any single wait (connect, a read of the streamed body) may take, instead of the
    client's (a download past its deadline must not block in a read for the client's 120 s)."""
    body = None if json_body is None else json.dumps(json_body).encode()
    if body is not None:
        headers = {**(headers or {}), "Content-Type": "application/json"}
    authenticated = credential is not None
    for _ in range(MAX_REDIRECTS + 1):
        addresses = resolve_checked(url, settings)
        secure = urlsplit(url).scheme == "https" or _loopback(addresses)
        if https_only and not secure:
            raise SourceError(
                f"refused {url}: a file without a published checksum is fetched over https only"
            )
        hop_headers = dict(headers or {})
        authenticated = authenticated and credential is not None and credential.applies_to(url)
        if authenticated and credential is not None:
            if not secure:
                raise SourceError(
                    f"refused to send the account for {credential.origin} over plain http ({url})"
                )
            hop_headers.update(credential.headers)
        request = _pinned_request(client, url, addresses[0], hop_headers, method, body, timeout)
        response = client.send(request, stream=True)
        if follow_redirects and response.is_redirect and "location" in response.headers:
            response.close()
            if response.status_code not in _METHOD_KEEPING_REDIRECTS:
                method, body = "GET", None
                headers = {k: v for k, v in (headers or {}).items() if k.lower() != "content-type"}
            url = urljoin(url, response.headers["location"])
            continue
        return response, url
    raise SourceError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")


def request_json(
    client: httpx.Client,
    url: str,
    settings: Settings,
    what: str,
    *,
    json_body: Any = None,
    credential: Credential | None = None,
    ok_statuses: Collection[int] = (200,),
) -> tuple[Any, httpx.Response]:
    """GET a JSON document, or POST `json_body` and read the JSON answer; `what` names it in errors ("Zenodo
    record 123"). A status not in `ok_statuses` raises HttpStatusError (a GraphQL server answers its errors
    with 400 and a JSON body, which its caller then reads)."""
    method = "GET" if json_body is None else "POST"
    try:
        response, final_url = open_response(
            client,
            url,
            settings,
            {"Accept": "application/json"},
            method=method,
            json_body=json_body,
            credential=credential,
        )
        try:
            body = response.read()
        finally:
            response.close()
    except UnsafeSourceError as exc:
        raise SourceError(f"{what}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise SourceError(f"{what}: {method} {url} failed: {exc}") from exc
    if response.status_code not in ok_statuses:
        raise HttpStatusError(
            f"{what}: {method} {final_url} answered HTTP {response.status_code}", response.status_code
        )
    try:
        return json.loads(body), response
    except ValueError as exc:
        raise SourceError(f"{what}: {method} {final_url} did not return JSON") from exc


def fetch_json(client: httpx.Client, url: str, settings: Settings, what: str) -> tuple[Any, httpx.Response]:
    """GET a JSON document; `what` names it in errors ("Zenodo record 123")."""
    return request_json(client, url, settings, what)
