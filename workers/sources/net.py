"""Every HTTP request a worker makes goes through here: the host is resolved and checked (workers.safety) on
every hop, redirects included, and the connection goes to the checked address, not to a fresh DNS answer."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from app.core.config import Settings
from workers.safety import UnsafeSourceError, resolve_checked
from workers.sources.base import SourceError

MAX_REDIRECTS = 5


def new_client() -> httpx.Client:
    # redirects are followed by open_response, which checks each hop's address
    return httpx.Client(
        follow_redirects=False,
        timeout=httpx.Timeout(30.0, read=120.0),
        headers={"User-Agent": "imagingx-worker"},
    )


def _pinned_request(
    client: httpx.Client, url: str, address: str, headers: dict[str, str] | None
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
        "GET",
        urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
        headers={**(headers or {}), "Host": host_header},
        extensions=extensions,
    )


def open_response(
    client: httpx.Client, url: str, settings: Settings, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, str]:
    """GET `url` as a stream, following redirects; returns the open response (the caller closes it) and the
    final URL. Raises UnsafeSourceError for a refused address on any hop."""
    for _ in range(MAX_REDIRECTS + 1):
        addresses = resolve_checked(url, settings)
        response = client.send(_pinned_request(client, url, addresses[0], headers), stream=True)
        if response.is_redirect and "location" in response.headers:
            response.close()
            url = urljoin(url, response.headers["location"])
            continue
        return response, url
    raise SourceError(f"GET {url}: more than {MAX_REDIRECTS} redirects")


def fetch_json(client: httpx.Client, url: str, settings: Settings, what: str) -> tuple[Any, httpx.Response]:
    """GET a JSON document; `what` names it in errors ("Zenodo record 123")."""
    try:
        response, final_url = open_response(client, url, settings, {"Accept": "application/json"})
        try:
            body = response.read()
        finally:
            response.close()
    except UnsafeSourceError as exc:
        raise SourceError(f"{what}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise SourceError(f"{what}: GET {url} failed: {exc}") from exc
    if response.status_code != 200:
        raise SourceError(f"{what}: GET {final_url} answered HTTP {response.status_code}")
    try:
        return json.loads(body), response
    except ValueError as exc:
        raise SourceError(f"{what}: GET {final_url} did not return JSON") from exc
