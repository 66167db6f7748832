"""One error shape for every JSON error: {ok, status, error, errors: [{loc, msg}]}.

HTML pages render the same message with templates/error.html; htmx partials get it as a swap-able fragment.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg.errors import QueryCanceled
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles

from app.common.errors import (
    Conflict,
    DomainError,
    Gone,
    InvalidInput,
    NotAllowed,
    NotFound,
    NotOffered,
    UnknownItems,
)
from app.core.templating import PageContext, render


class ApiError(Exception):
    """An error of the HTTP layer itself (a form from another site, a body too large): it has a status.
    Services raise the domain errors of app/common/errors.py instead, mapped to statuses by STATUS_OF."""

    def __init__(self, status: int, error: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.errors = errors or []


# The one place a domain error becomes an HTTP status.
STATUS_OF: dict[type[DomainError], int] = {
    InvalidInput: 422,
    UnknownItems: 422,
    NotFound: 404,
    NotAllowed: 403,
    Conflict: 409,
    Gone: 410,
    NotOffered: 501,
}


def status_of(error: DomainError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS_OF:
            return STATUS_OF[kind]
    return 400


def error_body(status: int, error: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"ok": False, "status": status, "error": error, "errors": errors or []}


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def _respond(
    request: Request,
    status: int,
    error: str,
    errors: list[dict[str, Any]],
    headers: Mapping[str, str] | None = None,
) -> Any:
    if _wants_html(request):
        template = "_error.html" if request.headers.get("hx-request") else "error.html"
        return render(
            request, template, ErrorPage(status, error, errors), status_code=status, headers=headers
        )
    return JSONResponse(error_body(status, error, errors), status_code=status, headers=headers)


@dataclass(frozen=True)
class ErrorPage(PageContext):
    """What error.html (and its htmx fragment _error.html) renders: the error envelope, for a person."""

    status: int
    error: str
    errors: list[dict[str, Any]]


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in exc.errors()]


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at this path (RFC 9110 asks a 405 to list them in Allow). Starlette names
    only the first route whose path matches, which is wrong when a path's methods are separate routes. Each
    method is tried on a fresh scope through the routes' public `matches`, whatever their nesting; a mount
    matches whatever the method, so a mount of static files counts for the two methods they take."""
    path = request.scope["path"]
    openapi = getattr(request.app, "openapi", None)
    documented = openapi().get("paths", {}).get(path) if openapi else None
    if documented:
        # a path the OpenAPI names literally: its operations, since a literal path beats a template there
        # (GET /api/v1/datasets/search reaches /api/v1/datasets/{slug}, yet no dataset is called "search")
        return ", ".join(method for method in METHODS if method.lower() in documented)
    allowed: set[str] = set()
    for method in METHODS:
        probe = {
            "type": "http",
            "method": method,
            "path": path,
            "root_path": "",
            "headers": [],
            "query_string": b"",
        }
        for route in request.app.router.routes:
            if route.matches(probe)[0] is not Match.FULL:
                continue
            if not isinstance(route, Mount):
                allowed.add(method)
            elif isinstance(route.app, StaticFiles):
                allowed |= {"GET", "HEAD"}
    return ", ".join(method for method in METHODS if method in allowed)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Any:
        return _respond(request, exc.status, exc.error, exc.errors)

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> Any:
        return _respond(request, status_of(exc), exc.error, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        errors = _validation_errors(exc)
        first: dict[str, Any] = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        return _respond(request, 422, f"{where}: {first['msg']}" if where else first["msg"], errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        messages = {404: "not found", 405: "method not allowed"}
        detail = exc.detail if isinstance(exc.detail, str) else messages.get(exc.status_code, "error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return _respond(request, exc.status_code, detail, [], headers)

    @app.exception_handler(OperationalError)
    async def database_error(request: Request, exc: OperationalError) -> Any:
        import logging

        if isinstance(exc.orig, QueryCanceled):
            # a query over the statement time limit: the server is fine, this request asked too much
            return _respond(
                request, 503, "the query took longer than the time limit (IMAGINGX_QUERY_TIMEOUT_MS)", []
            )
        logging.getLogger("imagingx").exception("database error on %s", request.url.path)
        return _respond(request, 503, "the database is unavailable: the failure was logged", [])

    @app.exception_handler(PoolTimeout)
    async def pool_exhausted(request: Request, exc: PoolTimeout) -> Any:
        return _respond(
            request, 503, "the server is at capacity: try again in a second", [], {"Retry-After": "1"}
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Any:
        import logging

        logging.getLogger("imagingx").exception("unhandled error on %s", request.url.path)
        return _respond(request, 500, "internal error: the failure was logged", [])


__all__ = ["STATUS_OF", "ApiError", "error_body", "install_error_handlers", "status_of"]
