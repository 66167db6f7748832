"""HTML pages of selections: the selection page, add/remove buttons, and the comparison page.

Anonymous users keep their selection through a cookie holding its id, the owner key: only that browser changes
it. Others see it at its read-only share page, /selections/{read_id}. Add and remove are plain POST forms that
redirect back (303) without JavaScript; with htmx the button swaps itself and the header's "Selection (N)"
link is refreshed out of band. The same service functions answer the JSON API (app/selections/api.py).
"""

import hashlib
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

import app.catalog.pages  # noqa: F401  (registers the shared template helpers: vocab_label, code_spans...)
from app.api.deps import SessionDep
from app.common.errors import InvalidInput, NotFound
from app.core.db import new_session
from app.core.forms import same_site_form, set_visitor_cookie
from app.core.templating import PageContext, TemplateHelpers, render
from app.core.urls import urls
from app.search.filters import filter_pairs, query_string
from app.search.schemas import SearchFilter
from app.selections import service
from app.selections.schemas import COMPARE_MAX, COMPARE_MIN, CompareResponse, ExportFormat, SelectionDetail

router = APIRouter(include_in_schema=False)
log = logging.getLogger("imagingx")

COOKIE = "imagingx_selection"
SELECTION_PATH = "/selection"
EXPORT_LABELS = {
    ExportFormat.csv: "CSV",
    ExportFormat.json: "JSON",
    ExportFormat.bib: "BibTeX",
    ExportFormat.jsonld: "JSON-LD (Croissant)",
    ExportFormat.manifest: "Download manifest",
}


# -- the visitor's selection, for every page --------------------------------------------------------------------
def selection_id_of(request: Request) -> str | None:
    value = request.cookies.get(COOKIE, "")
    return value if 0 < len(value) <= service.ID_LENGTH else None


@dataclass
class VisitorSelection:
    id: str | None
    slugs: list[str]

    @property
    def count(self) -> int:
        return len(self.slugs)


def visitor_selection(request: Request) -> VisitorSelection:
    """The selection named by the cookie, read once per request (the header of every page shows its size)."""
    cached: VisitorSelection | None = getattr(request.state, "visitor_selection", None)
    if cached is not None:
        return cached
    if getattr(request.state, "degraded", False):  # an overload answer does no database work
        return VisitorSelection(None, [])
    selection_id = selection_id_of(request)
    slugs: list[str] | None = None
    if selection_id:
        try:
            with new_session() as session:
                slugs = service.find_selection_slugs(session, selection_id)
        except SQLAlchemyError:  # an error page must still render when the database is what failed
            log.exception("could not read the selection for the page header")
    found = VisitorSelection(selection_id if slugs is not None else None, list(slugs or []))
    request.state.visitor_selection = found
    return found


def _set_visitor_selection(request: Request, selection_id: str | None, slugs: list[str]) -> None:
    request.state.visitor_selection = VisitorSelection(selection_id, list(slugs))


def toggle_id(slug: str) -> str:
    """A stable element id for a dataset's add/remove form (htmx keeps focus on an id that survives a swap)."""
    return "sel-" + hashlib.sha256(slug.encode()).hexdigest()[:12]


def search_export_links(search: SearchFilter) -> list[tuple[str, str]]:
    """(label, URL) of every export of a search result: the search's own filter, without paging."""
    query = query_string(filter_pairs(search)).rstrip("?")
    return [(EXPORT_LABELS[fmt], urls.search_export(fmt.suffix, query)) for fmt in ExportFormat]


TEMPLATE_HELPERS = TemplateHelpers(
    globals={
        "visitor_selection": visitor_selection,
        "search_export_links": search_export_links,
        "selection_toggle_id": toggle_id,
        "compare_url": urls.page_compare,
        "export_labels": EXPORT_LABELS,
    }
)


# -- forms ------------------------------------------------------------------------------------------------------
async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a urlencoded form post (the only kind these pages send), from this site only."""
    return dict(await same_site_form(request, max_bytes=20_000))


FormDep = Annotated[dict[str, str], Depends(form_fields)]


def _local_path(url: str | None, fallback: str) -> str:
    """Where to send the browser back to: only a path on this site (never //host or a full URL)."""
    if url and url.startswith("/") and not url.startswith(("//", "/\\")):
        return url
    return fallback


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _remember(request: Request, response: Response, selection_id: str) -> None:
    set_visitor_cookie(request, response, COOKIE, selection_id)


def _after_change(
    request: Request,
    session: Session,
    fields: dict[str, str],
    slug: str,
    selection_id: str | None,
    slugs: list[str],
    created: bool,
) -> Response:
    """htmx: the swapped part and the header count; no JavaScript: back to the page the form was on."""
    _set_visitor_selection(request, selection_id, slugs)
    back = _local_path(fields.get("next"), SELECTION_PATH)
    response: Response
    if not _is_htmx(request):
        response = RedirectResponse(back, status_code=303)
    elif request.headers.get("hx-target") == "selection-region":
        response = _selection_page(request, session, partial=True)
    else:
        response = render(
            request, "selections/_toggled.html", ToggledFragment(slug, back, fields.get("section", ""))
        )
    if created and selection_id:
        _remember(request, response, selection_id)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- routes -----------------------------------------------------------------------------------------------------
@router.post(f"{SELECTION_PATH}/add")
def add_to_selection(request: Request, session: SessionDep, fields: FormDep) -> Response:
    slug = fields.get("slug", "").strip()
    if not slug:
        raise InvalidInput(["body", "slug"], "which dataset? the form sent no slug")
    selection_id = visitor_selection(request).id
    created = selection_id is None
    if selection_id is None:
        selection = service.create_selection(session, dataset_slugs=[slug])
    else:
        selection = service.add_dataset(session, selection_id, slug)
    return _after_change(request, session, fields, slug, selection.id, selection.dataset_slugs, created)


@router.post(f"{SELECTION_PATH}/remove")
def remove_from_selection(request: Request, session: SessionDep, fields: FormDep) -> Response:
    slug = fields.get("slug", "").strip()
    selection_id = visitor_selection(request).id
    if selection_id is None:  # nothing to remove from (an old tab, or cookies were cleared)
        return _after_change(request, session, fields, slug, None, [], False)
    selection = service.remove_dataset(session, selection_id, slug, missing_ok=True)
    return _after_change(request, session, fields, slug, selection.id, selection.dataset_slugs, False)


@router.post(f"{SELECTION_PATH}/add-plan")
def add_plan_to_selection(request: Request, session: SessionDep, fields: FormDep) -> Response:
    """Add a saved plan's final datasets to the visitor's selection (a form for the plan page)."""
    plan_id = fields.get("plan_id", "").strip()
    slugs = service.plan_slugs(session, plan_id)
    selection_id = visitor_selection(request).id
    response = RedirectResponse(SELECTION_PATH, status_code=303)
    if selection_id is None:
        selection = service.create_selection(session, plan_id=plan_id)
        _remember(request, response, selection.id)
    else:
        service.add_datasets(session, selection_id, slugs, ["body", "plan_id"])
    return response


@router.post(f"{SELECTION_PATH}/name")
def name_selection(request: Request, session: SessionDep, fields: FormDep) -> Response:
    selection_id = visitor_selection(request).id
    response = RedirectResponse(SELECTION_PATH, status_code=303)
    if selection_id is None:
        selection = service.create_selection(session, name=fields.get("name"))
        _remember(request, response, selection.id)
    else:
        service.rename_selection(session, selection_id, fields.get("name"))
    return response


@router.post(f"{SELECTION_PATH}/clear")
def clear_selection(request: Request, session: SessionDep) -> Response:
    selection_id = visitor_selection(request).id
    if selection_id is not None:
        service.clear_selection(session, selection_id)
    return RedirectResponse(SELECTION_PATH, status_code=303)


@router.get(SELECTION_PATH, response_class=HTMLResponse)
def selection_page(request: Request, session: SessionDep) -> Response:
    response = _selection_page(request, session, partial=False)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/selections/{read_id}", response_class=HTMLResponse)
def shared_selection_page(request: Request, session: SessionDep, read_id: str) -> Response:
    """A selection as it is shared: its datasets, totals, exports and comparison, with nothing that changes it.
    Only the share id opens it (the owner key is never put in a link)."""
    selection, owner = service.readable_selection(session, read_id)
    if owner:  # an owner key in a URL: not how this page is linked, and it must not become one
        raise NotFound(f"shared selection {read_id!r}")
    detail = service.selection_detail(session, selection, owner=False)
    response = _render_selection(request, detail, partial=False, read_only=True)
    response.headers["Cache-Control"] = "no-store"
    return response


def _selection_page(request: Request, session: Session, partial: bool) -> HTMLResponse:
    visitor = visitor_selection(request)
    detail = None
    if visitor.id is not None:
        detail = service.selection_detail(session, service.get_selection(session, visitor.id))
    return _render_selection(request, detail, partial=partial, read_only=False)


def _render_selection(
    request: Request, detail: SelectionDetail | None, *, partial: bool, read_only: bool
) -> HTMLResponse:
    context = SelectionPage(
        read_only=read_only,
        detail=detail,
        section="" if read_only else "selection",  # someone else's: not the header's "Selection"
        json_url=detail.api_url if detail else None,
        export_links=[(EXPORT_LABELS[fmt], detail.exports[fmt.name]) for fmt in ExportFormat]
        if detail
        else [],
        max_datasets=service.MAX_DATASETS,
        compare_max=COMPARE_MAX,
        partial=partial,
    )
    name = "selections/_region.html" if partial else "selections/index.html"
    return render(request, name, context)


@dataclass(frozen=True)
class SelectionPage(PageContext):
    """What selections/index.html and its htmx region render (the owner's page, or the shared one)."""

    read_only: bool
    detail: SelectionDetail | None  # None: the visitor has no selection yet
    section: str  # the header entry to mark as current
    json_url: str | None
    export_links: list[tuple[str, str]]
    max_datasets: int
    compare_max: int
    partial: bool


@dataclass(frozen=True)
class ToggledFragment(PageContext):
    """What selections/_toggled.html renders after an add or remove (htmx)."""

    slug: str
    next_url: str
    section: str


@dataclass(frozen=True)
class ComparePage(PageContext):
    """What selections/compare.html renders."""

    comparison: CompareResponse
    without: dict[str, str | None]  # per dataset: the comparison without it (None: too few would remain)
    json_url: str
    page_url: str
    differing: int


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    session: SessionDep,
    d: Annotated[list[str], Query()] = [],  # noqa: B006
) -> HTMLResponse:
    comparison = service.compare_datasets(session, d)
    slugs = [dataset.slug for dataset in comparison.datasets]
    without = {
        slug: urls.page_compare([s for s in slugs if s != slug]) if len(slugs) > COMPARE_MIN else None
        for slug in slugs
    }
    context = ComparePage(
        comparison=comparison,
        without=without,
        json_url=urls.compare(slugs),
        page_url=comparison.html_url,
        differing=sum(f.differs for f in comparison.fields),
    )
    return render(request, "selections/compare.html", context)
