"""The one Jinja2 environment shared by every domain's pages."""

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.core.cache import VersionedCache

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
# Templates ship with the code: checking every file's mtime on each render cost about a tenth of a page's time.
templates.env.auto_reload = False
templates.env.filters["urlencode_pairs"] = lambda pairs: urlencode(list(pairs))


def thousands(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


templates.env.filters["thousands"] = thousands


def human_bytes(size: int | None) -> str:
    """1234567 -> '1.2 MB' (decimal units, as download tools, disks and hosts count)."""
    if size is None:
        return "unknown"
    units = ("B", "kB", "MB", "GB", "TB")
    value, index = float(size), 0
    while value >= 1000 and index < len(units) - 1:
        value /= 1000
        index += 1
    return f"{size} B" if index == 0 else f"{value:.1f} {units[index]}"


templates.env.filters["human_bytes"] = human_bytes


# -- helpers the domains offer to every template -----------------------------------------------------------------
@dataclass(frozen=True)
class TemplateHelpers:
    """Functions and values one domain offers to every template (its pages module declares them; the route
    registry installs them all when the app is created, so no template depends on which module was imported
    first)."""

    globals: Mapping[str, Any] = field(default_factory=dict)
    filters: Mapping[str, Callable[..., Any]] = field(default_factory=dict)


def install_template_helpers(*offered: TemplateHelpers) -> None:
    """Add every domain's helpers to the one environment; two domains offering the same name is an error."""
    for helpers in offered:
        for kind, target, items in (
            ("global", templates.env.globals, helpers.globals),
            ("filter", templates.env.filters, helpers.filters),
        ):
            for name, value in items.items():
                if name in target and target[name] is not value:
                    raise RuntimeError(f"two template {kind}s are named {name!r}")
                target[name] = value


# -- typed page contexts ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PageContext:
    """Base of every template's context: one dataclass per template (or per family of templates sharing
    their inputs), whose fields are exactly what the template reads, so its inputs are visible and checked."""

    def as_template_vars(self) -> dict[str, Any]:
        """The fields as the template's variables (shallow: values are passed as they are)."""
        return {item.name: getattr(self, item.name) for item in fields(self)}


def render(
    request: Request,
    template: str,
    context: PageContext,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """`template` rendered with `context` (the request is added, as every template's header needs it)."""
    return templates.TemplateResponse(
        request, template, context.as_template_vars(), status_code=status_code, headers=headers
    )


# -- pages that every visitor without cookies sees alike -------------------------------------------------------
# A search, dataset or statistics page depends on its URL, the catalog version and, through the header's
# selection and the add/remove buttons, on the visitor's cookies. A visitor with no cookie at all (a first
# visit, a crawler, a shared link) gets the same bytes as every other such visitor, so they are rendered once
# per catalog version. Rendering was a third of a page's time.
# a search page is about 100 KB: 64 MB keeps several hundred of them per web process
_anonymous_pages: VersionedCache[bytes] = VersionedCache(maxsize=3000, max_bytes=64 * 2**20)
VARY = "HX-Request, HX-Target, HX-History-Restore-Request"


def page_response(
    request: Request, name: str, context: Callable[[], PageContext], catalog_key: Hashable
) -> HTMLResponse:
    """`name` rendered with the context `context()` builds, as `render` would, plus `Vary` (the same URL
    answers with a full page or an htmx fragment, which depends on the element it replaces: HX-Target).
    `catalog_key` (database, catalog version) is what the
    context is computed from: a cookie-less request is served from the cache under it, and then `context` is
    not even called."""
    headers = {"Vary": VARY}
    if request.cookies:
        return render(request, name, context(), headers=headers)
    key = (
        catalog_key,
        name,
        str(request.url),
        request.headers.get("hx-request"),
        request.headers.get("hx-target"),
        request.headers.get("hx-history-restore-request"),
    )
    body = _anonymous_pages.get_or_compute(
        key,
        lambda: (
            templates.get_template(name).render({**context().as_template_vars(), "request": request}).encode()
        ),
    )
    return HTMLResponse(body, headers=headers)
