"""One error shape for every JSON error: {ok, status, error, errors: [{loc, msg}]}.

HTML pages render the same message with templates/error.html; htmx partials get it as a swap-able fragment.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg.errors import QueryCanceled
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """An error a user can act on. `errors` points at the offending inputs."""

    def __init__(self, status: int, error: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.errors = errors or []


class InvalidInput(ApiError):
    def __init__(self, loc: list[str | int], msg: str) -> None:
        super().__init__(422, msg, [{"loc": loc, "msg": msg}])


class NotFound(ApiError):
    def __init__(self, what: str) -> None:
        super().__init__(404, f"{what} not found")


def error_body(status: int, error: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"ok": False, "status": status, "error": error, "errors": errors or []}


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def _respond(request: Request, status: int, error: str, errors: list[dict[str, Any]]) -> Any:
    if _wants_html(request):
        from app.core.templating import templates

        template = "_error.html" if request.headers.get("hx-request") else "error.html"
        return templates.TemplateResponse(
            request, template, {"status": status, "error": error, "errors": errors}, status_code=status
        )
    return JSONResponse(error_body(status, error, errors), status_code=status)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in exc.errors()]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Any:
        return _respond(request, exc.status, exc.error, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        errors = _validation_errors(exc)
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        return _respond(request, 422, f"{where}: {first['msg']}" if where else first["msg"], errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        messages = {404: "not found", 405: "method not allowed"}
        detail = exc.detail if isinstance(exc.detail, str) else messages.get(exc.status_code, "error")
        return _respond(request, exc.status_code, detail, [])

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

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Any:
        import logging

        logging.getLogger("imagingx").exception("unhandled error on %s", request.url.path)
        return _respond(request, 500, "internal error: the failure was logged", [])


__all__ = ["ApiError", "InvalidInput", "NotFound", "error_body", "install_error_handlers"]
