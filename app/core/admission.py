"""Graceful overload: each web process works on at most `IMAGINGX_WEB_CONCURRENCY` requests at once.

Without a bound, every arriving request took a thread and then waited up to 30 s for a database connection
while holding it; sessions sat idle in transaction and throughput collapsed to a few requests per second
past about 60 clients. Here a request first takes a turn:

- a free turn: it runs at once;
- none free: it waits, first come first served, at most `IMAGINGX_WEB_QUEUE_SECONDS`;
- still none then, or already `IMAGINGX_WEB_QUEUE_MAX` requests waiting: 503 with `Retry-After` (the error
  envelope, or the error page), so a client beyond capacity hears "come back in a second" within about a
  second, never a stall or a 500.

The database pool is sized from the same number (app/core/db.py), so a running request never waits for a
connection. A turn is given back when the route has finished (a response streamed in pieces, such as a
bundle download, gives it back at its first piece: sending bytes needs no database). Static files and the
API docs page do no database work and skip the queue.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app.core.config import get_settings
from app.core.urls import API_PREFIX

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("imagingx.admission")

EXEMPT_PREFIXES = ("/static/", f"{API_PREFIX}/docs")
RETRY_AFTER_SECONDS = 1


class Turns:
    """At most `slots` holders at once; others wait in arrival order up to `wait_seconds` each.

    Lives on one event loop (one web process): no locks, every method runs between awaits.
    """

    def __init__(self, slots: int, wait_seconds: float, max_waiting: int) -> None:
        self.slots = slots
        self.wait_seconds = wait_seconds
        self.max_waiting = max_waiting
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def acquire(self) -> bool:
        """True when the caller holds a turn (and must `release()` it); False when it was refused."""
        if self.in_flight < self.slots and not self._waiters:
            self.in_flight += 1
            return True
        if self.waiting >= self.max_waiting:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.wait_seconds)
            return True
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return True  # handed over just as the wait ran out
            waiter.cancel()
            return False
        except asyncio.CancelledError:  # the client left while waiting
            if waiter.done() and not waiter.cancelled():
                self.release()
            else:
                waiter.cancel()
            raise

    def release(self) -> None:
        """Hand the turn to the longest waiter still waiting, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the turn passes on: in_flight stays the same
                return
        self.in_flight -= 1


class AdmissionMiddleware:
    """Runs each request in a turn of `Turns`, or answers 503 + Retry-After (module doc)."""

    def __init__(self, app: ASGIApp, turns: Turns | None = None) -> None:
        self.app = app
        settings = get_settings()
        self.turns = turns or Turns(
            settings.web_concurrency, settings.web_queue_seconds, settings.web_queue_max
        )
        self._last_warning = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        if not await self.turns.acquire():
            self._warn()
            await _overloaded(scope, send)
            return
        held = True

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                self.turns.release()

        async def send_and_give_back_when_streaming(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("more_body", False):
                give_back()  # a streamed body: the route's work is done, only bytes remain to send
            await send(message)

        try:
            await self.app(scope, receive, send_and_give_back_when_streaming)
        finally:
            give_back()

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:  # one line per 10 s, not one per refused request
            self._last_warning = now
            log.warning(
                "at capacity: %d requests running, %d waiting; answering 503 with Retry-After",
                self.turns.in_flight,
                self.turns.waiting,
            )


async def _overloaded(scope: Scope, send: Send) -> None:
    """503 in the one error contract. No database work: the page header's selection is not looked up."""
    from fastapi import Request

    from app.core.errors import _respond

    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    scope.setdefault("state", {})["degraded"] = True
    request = Request(scope, no_body)
    message = "the server is at capacity: try again in a second"
    response = _respond(request, 503, message, [], {"Retry-After": str(RETRY_AFTER_SECONDS)})
    await response(scope, no_body, send)


__all__ = ["AdmissionMiddleware", "Turns"]
