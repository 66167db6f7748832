"""The application factory: mounts each domain's JSON router under /api/v1 and its pages at the root."""

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app import __version__
from app.catalog import api as catalog_api
from app.core.errors import install_error_handlers
from app.core.templating import STATIC_DIR
from app.search import api as search_api

API_PREFIX = "/api/v1"


def create_app() -> FastAPI:
    app = FastAPI(
        title="Imaging-X Portal API",
        version=__version__,
        description=(
            "Search 1,000+ open medical imaging datasets (Project Imaging-X survey) with facets, "
            "and read each dataset's normalised facts. Every HTML page has a JSON twin here."
        ),
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(search_api.router, prefix=API_PREFIX)
    app.include_router(catalog_api.router, prefix=API_PREFIX)
    _include_pages(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _include_pages(app: FastAPI) -> None:
    """HTML routers; each domain's pages.py calls the same service functions as its api.py."""
    import importlib

    for module in ("app.search.pages", "app.catalog.pages"):
        try:
            pages = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        app.include_router(pages.router)
