"""What every response and every write of the portal goes through: security headers, a same-origin check on
state-changing requests, and per-client rate limits with quotas kept in Redis.

One pure ASGI middleware (`SecurityMiddleware`, installed by app/main.py) does all three, before any route reads
its body:

- **Headers.** Every response carries a Content-Security-Policy (scripts, styles, images, fonts and fetches
  from this origin only; no frames of this site anywhere: `frame-ancestors 'none'`), `X-Frame-Options: DENY`
  for browsers without CSP level 2, `X-Content-Type-Options: nosniff` and `Referrer-Policy`. The API docs page
  is no exception: its Swagger UI is vendored under static/ and started by a static script.
- **Same origin.** A POST, PUT, PATCH or DELETE that a browser marks as sent from another site
  (`Sec-Fetch-Site: cross-site` or `same-site`), or whose `Origin` is neither this server nor one of
  `IMAGINGX_TRUSTED_ORIGINS`, is refused with 403 in the error envelope. Clients that send neither header
  (curl, scripts, the CLI) are not browsers acting for someone else, and pass.
- **Rate limits.** Creating plans, selections and bundle jobs is counted per client IP address in fixed windows
  (`IMAGINGX_RATE_LIMIT_PLANS` etc., e.g. `20/minute, 300/day`: a burst limit and a daily quota). Over a
  limit: 429 with `Retry-After` (seconds until the window ends). Counters live in Redis so that every web
  process shares them; when Redis cannot be reached, requests pass (logged): limits protect the portal, they
  must not take it down.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request

from app.core.config import Settings, get_settings
from app.core.urls import API_PREFIX

log = logging.getLogger("imagingx")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REFUSED_FETCH_SITES = frozenset({"cross-site", "same-site"})  # a sibling subdomain is another site's code too

# Pages use only files from /static: no inline script or style element, no script from elsewhere. Inline
# style *attributes* stay allowed (they carry layout values such as a table's column count, never code).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
)


# -- rate limits --------------------------------------------------------------------------------------------------
WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")


@dataclass(frozen=True)
class Limit:
    count: int
    window_seconds: int


def parse_limits(text: str) -> list[Limit]:
    """`"20/minute, 300/day"` -> [Limit(20, 60), Limit(300, 86400)]; an empty text means no limit."""
    limits = []
    for part in filter(str.strip, text.split(",")):
        match = _LIMIT.match(part)
        if match is None:
            raise ValueError(f"rate limit {part.strip()!r}: write N/second, N/minute, N/hour or N/day")
        limits.append(Limit(int(match[1]), WINDOWS[match[2]]))
    return limits


@dataclass(frozen=True)
class Counted:
    """Requests that create something of one kind: `method` on a path matching `path`, and, when
    `creates_without_cookie` is set, only those without that cookie (the HTML selection forms create a
    selection only for a visitor who has none)."""

    kind: str
    method: str
    path: re.Pattern[str]
    creates_without_cookie: str | None = None


_API = re.escape(API_PREFIX)
COUNTED = (
    Counted("plans", "POST", re.compile(rf"^({_API})?/plans/?$")),
    Counted("selections", "POST", re.compile(rf"^{_API}/selections/?$")),
    Counted(
        "selections",
        "POST",
        re.compile(r"^/selection/(add|add-plan|name)$"),
        creates_without_cookie="imagingx_selection",
    ),
    Counted("bundles", "POST", re.compile(rf"^({_API})?/bundles/?$")),
)


def limits_of(kind: str, settings: Settings) -> list[Limit]:
    return parse_limits(getattr(settings, f"rate_limit_{kind}"))


def counted_kind(scope: Scope) -> str | None:
    """The kind of thing this request would create, if it is a counted one."""
    method, path = scope["method"], scope["path"]
    for rule in COUNTED:
        if rule.method == method and rule.path.match(path):
            if rule.creates_without_cookie and f"{rule.creates_without_cookie}=" in Headers(scope=scope).get(
                "cookie", ""
            ):
                return None
            return rule.kind
    return None


def client_key(scope: Scope) -> str | None:
    """Who is counted: the client's IP address (uvicorn puts a trusted proxy's forwarded address there). None
    for a client without one, which cannot be told from any other: an in-process ASGI client (the test
    suite's) or a peer on a Unix socket (a proxy there must forward the address for limits to apply)."""
    client = scope.get("client")
    if not client:
        return None
    try:
        return str(ipaddress.ip_address(client[0]))
    except ValueError:
        return None


def counter_prefix(settings: Settings) -> str:
    """Start of every rate-limit counter key of this portal. The database names the portal: portals (and test
    runs) sharing one Redis count apart."""
    portal = hashlib.sha256((settings.database_url or "").encode()).hexdigest()[:12]
    return f"imagingx:ratelimit:{portal}:"


async def retry_after(kind: str, client: str, settings: Settings, now: float | None = None) -> int | None:
    """Count one request of `kind` by `client` in every window; None when all are within their limit, else the
    seconds until the tightest exceeded window ends. Redis unreachable: None (logged)."""
    limits = limits_of(kind, settings)
    if not limits or not settings.redis_url:
        return None
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    now = time.time() if now is None else now
    prefix = counter_prefix(settings)
    keys = []
    for limit in limits:
        window = int(now // limit.window_seconds)
        keys.append(f"{prefix}{kind}:{limit.window_seconds}:{client}:{window}")
    try:
        # one short-lived connection: creations are rare, and a pooled client would be bound to one event loop
        async with aioredis.Redis.from_url(settings.redis_url, socket_timeout=2) as redis:
            pipe = redis.pipeline(transaction=False)
            for key, limit in zip(keys, limits, strict=True):
                pipe.incr(key)
                pipe.expire(key, limit.window_seconds + 1, nx=True)
            counts = (await pipe.execute())[::2]
    except (RedisError, OSError):
        log.warning("rate limits not checked: Redis is unreachable", exc_info=True)
        return None
    waits = [
        limit.window_seconds - int(now % limit.window_seconds)
        for limit, count in zip(limits, counts, strict=True)
        if count > limit.count
    ]
    return max(waits) if waits else None


# -- same origin ----------------------------------------------------------------------------------------------------
def _origin_of_url(url: str) -> str | None:
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = parts.port if parts.port not in (None, default) else None
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")


def cross_site_reason(scope: Scope, settings: Settings) -> str | None:
    """Why a state-changing request is refused as coming from another site, or None."""
    headers = Headers(scope=scope)
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site in REFUSED_FETCH_SITES:
        return "this request can only be sent from this site's pages"
    origin = headers.get("origin")
    if origin is None:
        return None
    own = _origin_of_url(f"{scope.get('scheme', 'http')}://{headers.get('host', '')}")
    trusted = {_origin_of_url(o) for o in settings.trusted_origins} | {own}
    if _origin_of_url(origin) not in trusted - {None}:
        return "this request can only be sent from this site's pages (its Origin is another site)"
    return None


# -- the middleware -------------------------------------------------------------------------------------------------
class SecurityMiddleware:
    """Headers on every HTTP response; same-origin check and rate limits before a write reaches its route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers.setdefault("content-security-policy", CONTENT_SECURITY_POLICY)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name.decode(), value.decode())
            await send(message)

        if scope["method"] in UNSAFE_METHODS:
            settings = get_settings()
            reason = cross_site_reason(scope, settings)
            if reason is not None:
                await _refuse(scope, receive, send_with_headers, 403, reason, {})
                return
            kind, client = counted_kind(scope), client_key(scope)
            if kind is not None and client is not None:
                wait = await retry_after(kind, client, settings)
                if wait is not None:
                    message = f"too many {kind} created from this address: try again in {wait} s"
                    await _refuse(scope, receive, send_with_headers, 429, message, {"Retry-After": str(wait)})
                    return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # Starlette's outermost middleware would answer the 500 past this one, without the headers: answer it
            # here (the same envelope) and re-raise, so that it still logs the failure and sends nothing more.
            if not started:
                await _refuse(
                    scope, receive, send_with_headers, 500, "internal error: the failure was logged", {}
                )
            raise


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, message: str, headers: dict[str, str]
) -> None:
    """The error envelope (JSON, or the error page for a browser's page request), as every other error. Built in
    a worker thread: the error page's header reads the visitor's selection from the database."""
    import anyio

    from app.core.errors import _respond

    response = await anyio.to_thread.run_sync(_respond, Request(scope, receive), status, message, [])
    response.headers.update(headers)
    await response(scope, receive, send)
