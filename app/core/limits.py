"""Bounded input on every route, checked in one place before any route runs.

One pure ASGI middleware (`InputLimitsMiddleware`, installed by app/main.py) and one exception handler
(`install_input_limits`):

- **Body size.** A request body may hold at most `IMAGINGX_MAX_FORM_BODY_BYTES` when it is an HTML form
  (urlencoded or multipart) and `IMAGINGX_MAX_JSON_BODY_BYTES` otherwise (JSON API bodies). A declared
  Content-Length over the limit is refused before one byte is read; a chunked body (no Content-Length) is
  counted as it arrives and refused at the first chunk past the limit. Either way: 413 in the error envelope.
  Routes read the body from memory afterwards (at most the limit per request).
- **Unstorable characters.** PostgreSQL text cannot hold U+0000, and lone UTF-16 surrogates (U+D800-U+DFFF,
  which a JSON `\\ud800` escape produces) cannot be encoded as UTF-8 at all. Such a character in the path, in
  a query string value or name, in a JSON string (keys too) or in a form field answers 422 naming where it
  is, instead of a 500 from the database or the encoder on whichever route meets it first.
- **Length limits answer 422.** A model validated inside a route (a search filter read from the query string,
  whose `q` allows 200 characters) raises pydantic's ValidationError, which no FastAPI handler catches: it
  is answered as the request validation error it is, 422 with the same envelope.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from inspect import isawaitable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import Headers

from app.core.config import get_settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# characters no text column can store: NUL (PostgreSQL) and lone surrogates (no UTF-8 encoding)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# a JSON escape that may decode to one of them; only bodies holding one are parsed here (`\\\\` pairs first,
# so an escaped backslash followed by `u0000` is not taken for an escape)
_SUSPECT_ESCAPE = re.compile(rb"\\\\|\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


class BodyTooLarge(Exception):
    """The body grew past its limit while arriving (a chunked body)."""


class _Disconnected(Exception):
    """The client went away before its body was complete."""


def unstorable_at(value: str) -> int | None:
    """Index of the first character of `value` that a text column cannot store, or None."""
    found = _UNSTORABLE.search(value)
    return None if found is None else found.start()


def body_limit(headers: Headers) -> tuple[int, str]:
    """The largest body allowed for a request with these headers, and the class of route it belongs to."""
    settings = get_settings()
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type in FORM_TYPES:
        return settings.max_form_body_bytes, "form"
    return settings.max_json_body_bytes, "JSON"


def _json_strings(value: Any, loc: list[str | int]) -> Iterator[tuple[list[str | int], str]]:
    """Every string in a parsed JSON document (keys included) with its location."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield [*loc, key], key
            yield from _json_strings(item, [*loc, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _json_strings(item, [*loc, index])


def unstorable_input(scope: Scope, body: bytes, content_type: str) -> tuple[list[str | int], str] | None:
    """Where the request holds a character no text column can store, and a message; None when it holds none.

    The path and query string are always checked (already decoded by the server, `%00` included); a JSON body
    only when a suspect escape appears in it (a literal NUL byte is invalid JSON and left to the parser's 422),
    a urlencoded form always."""
    where = unstorable_at(scope.get("path", ""))
    if where is not None:
        return ["path"], f"the path holds an unstorable character at position {where}"
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True, errors="replace"):
        if unstorable_at(name) is not None or unstorable_at(value) is not None:
            return ["query", name], f"query parameter {name!r} holds an unstorable character (NUL)"
    if not body:
        return None
    if content_type == "application/x-www-form-urlencoded":
        text = body.decode("utf-8", "replace")
        for name, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
            if unstorable_at(name) is not None or unstorable_at(value) is not None:
                return ["body", name], f"form field {name!r} holds an unstorable character (NUL)"
    elif content_type not in FORM_TYPES and any(
        match.group() != b"\\\\" for match in _SUSPECT_ESCAPE.finditer(body)
    ):
        try:
            document = json.loads(body)
        except ValueError:
            return None  # not JSON after all: the route's own parsing answers
        for loc, text in _json_strings(document, ["body"]):
            where = unstorable_at(text)
            if where is not None:
                kind = "NUL" if text[where] == "\x00" else "a lone surrogate"
                return loc, f"{'.'.join(map(str, loc))}: holds an unstorable character ({kind})"
    return None


class InputLimitsMiddleware:
    """Body size limits (413) and unstorable characters (422) before a request reaches its route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit, kind = body_limit(headers)
        too_large = f"the request body is larger than the {kind} limit of {limit} bytes"
        declared = headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _refuse(scope, send, 413, too_large, ["body"])
            return
        try:
            body = await _read_body(receive, limit)
        except BodyTooLarge:
            await _refuse(scope, send, 413, too_large, ["body"])
            return
        except _Disconnected:
            return  # the client left before sending its body: nobody is there to answer
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        problem = unstorable_input(scope, body, content_type)
        if problem is not None:
            await _refuse(scope, send, 422, problem[1], problem[0])
            return
        await self.app(scope, _replay(body, receive), send)


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, raising BodyTooLarge as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the route the body read here, then waits on the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(scope: Scope, send: Send, status: int, message: str, loc: list[str | int]) -> None:
    """The error envelope (JSON, or the error page for a browser's page request), as every other error. Built in
    a worker thread: the error page's header reads the visitor's selection from the database."""
    import anyio

    from app.core.errors import _respond

    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    errors = [{"loc": loc, "msg": message}]
    response = await anyio.to_thread.run_sync(_respond, Request(scope, no_body), status, message, errors)
    await response(scope, no_body, send)


def install_input_limits(app: FastAPI) -> None:
    """The middleware, and pydantic's ValidationError from inside a route answered as a 422 (module doc)."""
    app.add_middleware(InputLimitsMiddleware)

    @app.exception_handler(ValidationError)
    async def model_validation_error(request: Request, exc: ValidationError) -> Any:
        handler = app.exception_handlers[RequestValidationError]
        response = handler(request, RequestValidationError(exc.errors()))
        # the handler app/core/errors.py installs is async; Starlette's type allows a plain function too
        return await response if isawaitable(response) else response


__all__ = [
    "InputLimitsMiddleware",
    "body_limit",
    "install_input_limits",
    "unstorable_at",
    "unstorable_input",
]
