"""The application factory: middlewares, error handlers, every domain's routers (app/api/routes.py), static
files and the API docs page."""

from html import escape
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app import __version__
from app.api.routes import API_PREFIX, include_routers
from app.core.admission import AdmissionMiddleware
from app.core.errors import install_error_handlers
from app.core.limits import install_input_limits
from app.core.security import SecurityMiddleware, counted_kind
from app.core.templating import STATIC_DIR


def create_app() -> FastAPI:
    app = FastAPI(
        title="Imaging-X Portal API",
        version=__version__,
        description=(
            "Search 1,000+ open medical imaging datasets (Project Imaging-X survey) with facets, "
            "and read each dataset's normalised facts. Every HTML page has a JSON twin here."
        ),
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # served by _install_docs from vendored files: FastAPI's page loads Swagger UI from a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    install_input_limits(app)  # oversized bodies (413) and unstorable characters (422) before any route
    include_routers(app)
    _document_common_responses(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _install_docs(app)
    # beyond capacity: 503 + Retry-After within about a second, before any body is read or route runs
    app.add_middleware(AdmissionMiddleware)
    # outermost: headers on every response, and cross-site writes or over-limit creations refused first
    app.add_middleware(SecurityMiddleware)
    return app


# -- statuses every JSON route may answer, documented once here rather than on each route -----------------------
_ENVELOPE = {
    "type": "object",
    "required": ["ok", "status", "error", "errors"],
    "properties": {
        "ok": {"const": False},
        "status": {"type": "integer"},
        "error": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}
}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ENVELOPE}}, **extra}


def _document_common_responses(app: FastAPI) -> None:
    """Add to each JSON operation of the OpenAPI the error statuses that code shared by every route answers
    (the middlewares, the error handlers, path lookups), so that a client and Schemathesis see every status an
    operation can give. An operation's own description of a status wins."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = app.openapi_schema
        if schema is None:
            schema = generate()  # which keeps it as app.openapi_schema
            for path, operations in schema.get("paths", {}).items():
                for method, operation in operations.items():
                    responses = operation.setdefault("responses", {})
                    common = _common_responses(path, method.upper(), "requestBody" in operation)
                    for status, response in common.items():
                        responses.setdefault(str(status), response)
        return schema

    # Replacing the method is how FastAPI documents extending its OpenAPI document; mypy refuses assignments
    # to methods whatever their signature
    app.openapi = openapi  # type: ignore[method-assign]


def _common_responses(path: str, method: str, has_body: bool) -> dict[int, dict[str, Any]]:
    common = {
        422: _error("Invalid input: a parameter out of range, or a character that cannot be stored (NUL)"),
        503: _error("The database is unavailable, or the server is at capacity", headers=_RETRY_AFTER),
    }
    if "{" in path or has_body:
        common[404] = _error("Nothing with this id or name (in the path, or named in the body)")
    if has_body:
        common[400] = _error("The body is not valid JSON")
        common[413] = _error("The body is larger than the limit for this route")
    if method in {"POST", "PUT", "PATCH", "DELETE"}:
        common[403] = _error("Sent by a page of another site (Origin / Sec-Fetch-Site), or not the owner")
    if counted_kind({"type": "http", "method": method, "path": path, "headers": []}):
        common[429] = _error("Too many created from this address: see Retry-After", headers=_RETRY_AFTER)
    return common


def _install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /api/v1/docs from same-origin files only (static/vendor/, static/api-docs.js), so the
    page works offline and without an inline script."""
    page = DOCS_PAGE.format(
        title=escape(f"{app.title} - Swagger UI"), openapi_url=escape(app.openapi_url or "", quote=True)
    )

    @app.get(f"{API_PREFIX}/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:  # no I/O: stays off the thread pool
        return HTMLResponse(page)


DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/vendor/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="/static/vendor/swagger-ui-bundle.js"></script>
<script src="/static/api-docs.js"></script>
</body>
</html>
"""
