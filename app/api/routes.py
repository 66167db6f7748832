"""Every router of the portal, with its prefix and its OpenAPI tag, in one place: this file is the whole HTTP
surface. Domains declare routes (`router` in their api.py and pages.py); where they are mounted and how the
API documents them is decided here, once.

Order matters where paths overlap: each domain's JSON routes, then its pages, domain by domain, as listed.
"""

from dataclasses import dataclass

from fastapi import APIRouter, FastAPI

from app.bundles import api as bundles_api
from app.bundles import pages as bundles_pages
from app.catalog import api as catalog_api
from app.catalog import pages as catalog_pages
from app.core.templating import install_template_helpers
from app.core.urls import API_PREFIX
from app.mdfp import api as mdfp_api
from app.mdfp import pages as mdfp_pages
from app.search import api as search_api
from app.search import pages as search_pages
from app.selections import api as selections_api
from app.selections import pages as selections_pages
from app.sources import api as sources_api


@dataclass(frozen=True)
class Mount:
    router: APIRouter
    prefix: str
    tag: str | None  # OpenAPI tag of a JSON router; pages are not in the OpenAPI


MOUNTS = (
    Mount(search_api.router, API_PREFIX, "search"),
    Mount(search_pages.router, "", None),
    Mount(catalog_api.router, API_PREFIX, "catalog"),
    Mount(catalog_pages.router, "", None),
    Mount(sources_api.router, API_PREFIX, "sources"),
    Mount(mdfp_api.router, API_PREFIX, "plans"),
    Mount(mdfp_pages.router, "", None),
    Mount(selections_api.router, API_PREFIX, "selections"),
    Mount(selections_api.exports_router, API_PREFIX, "exports"),
    Mount(selections_pages.router, "", None),
    Mount(bundles_api.router, API_PREFIX, "bundles"),
    Mount(bundles_pages.router, "", None),
)


# What the domains offer to every template, installed once (app/core/templating.py)
TEMPLATE_HELPERS = (
    catalog_pages.TEMPLATE_HELPERS,
    selections_pages.TEMPLATE_HELPERS,
    bundles_pages.TEMPLATE_HELPERS,
)


def include_routers(app: FastAPI) -> None:
    """Mount every router, and give the templates every domain's helpers."""
    install_template_helpers(*TEMPLATE_HELPERS)
    for mount in MOUNTS:
        app.include_router(mount.router, prefix=mount.prefix, tags=[mount.tag] if mount.tag else None)


__all__ = ["API_PREFIX", "MOUNTS", "TEMPLATE_HELPERS", "Mount", "include_routers"]
