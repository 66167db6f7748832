"""HTML pages of search: the faceted search page and the statistics page.

Routes stay thin: they call the same service functions as app/search/api.py and only arrange the answer for
templates. An htmx request (header HX-Request) gets the swappable region alone; everything else, including
htmx's history-restore request after a cache miss, gets the whole page.
"""

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.api.deps import FacetSizeDep, QueryStringFilterDep, SessionDep
from app.catalog.pages import vocabulary_label
from app.common.vocabularies import ALL
from app.core.config import get_settings
from app.core.templating import PageContext, page_response
from app.core.urls import urls
from app.search import service
from app.search.schemas import FACETS, RANGE_FIELDS, Facet, FacetValue, Range, SearchFilter, SearchResponse

router = APIRouter(include_in_schema=False)

SEARCH_PATH = urls.page_search_path
# Facets open in the sidebar even with nothing selected; the others open once they hold a selection.
OPEN_FACETS = {"modality", "anatomy", "task", "dim", "access", "labeled"}
RANGE_SIGNS = {"gte": "≥", "lte": "≤"}
SORT_CHOICES = [
    ("relevance", "Relevance"),
    ("images", "Most images"),
    ("year", "Newest"),
    ("name", "Name (A to Z)"),
]


@dataclass
class Chip:
    """An active filter the user can remove with one click."""

    label: str
    value: str
    remove_url: str


@dataclass
class FacetRow:
    value: FacetValue
    depth: int


def wants_partial(request: Request) -> bool:
    headers = request.headers
    return headers.get("hx-request") == "true" and headers.get("hx-history-restore-request") != "true"


def facet_rows(facet: Facet) -> list[FacetRow]:
    """Facet values in display order; anatomy nests each value under its nearest ancestor that is shown."""
    if facet.name != "anatomy":
        return [FacetRow(value, 0) for value in facet.results]
    vocabulary = ALL["anatomy"]
    shown = {v.value for v in facet.results}
    children: dict[str | None, list[FacetValue]] = {}
    for value in facet.results:
        ancestors = vocabulary.ancestors(value.value) if value.value in vocabulary else []
        parent = next((a for a in ancestors if a in shown), None)
        children.setdefault(parent, []).append(value)
    rows: list[FacetRow] = []

    def walk(parent: str | None, depth: int) -> None:
        for value in children.get(parent, []):
            rows.append(FacetRow(value, depth))
            walk(value.value, depth + 1)

    walk(None, 0)
    return rows


def active_filters(search: SearchFilter, facets: list[Facet]) -> list[Chip]:
    """Every selection as a chip whose link removes just that selection (the toggle link of a selected value)."""
    toggles = {(f.name, v.value): v.toggle_url for f in facets for v in f.results}
    chips: list[Chip] = []
    if search.q:
        chips.append(Chip("Text", search.q, _url(search.model_copy(update={"q": None}))))
    for name in FACETS:
        for value in search.terms.get(name, []):
            remove = toggles.get((name, value)) or _url(service.toggled(search, name, value))
            chips.append(Chip(FACETS[name].label, _facet_value_label(name, value), remove))
    for name, bounds in search.ranges.items():
        for op in ("gte", "lte"):
            bound = getattr(bounds, op)
            if bound is None:
                continue
            kept = bounds.model_copy(update={op: None})
            ranges = {k: v for k, v in search.ranges.items() if k != name}
            if kept.gte is not None or kept.lte is not None:
                ranges[name] = kept
            shown = f"{bound:,}" if name == "images" else str(bound)
            chips.append(
                Chip(
                    RANGE_FIELDS[name],
                    f"{RANGE_SIGNS[op]} {shown}",
                    _url(search.model_copy(update={"ranges": ranges})),
                )
            )
    return chips


def _facet_value_label(facet: str, value: str) -> str:
    return service.value_label(facet, value) if facet == "year" else vocabulary_label(facet, value)


def _url(search: SearchFilter, extra: list[tuple[str, str]] | None = None, path: str = SEARCH_PATH) -> str:
    return path + service.query_string([*service.filter_pairs(search), *(extra or [])])


@router.get("/", response_class=RedirectResponse)
def home(request: Request) -> RedirectResponse:
    query = request.url.query
    return RedirectResponse(SEARCH_PATH + (f"?{query}" if query else ""), status_code=307)


@router.get(SEARCH_PATH, response_class=HTMLResponse)
def search_page(
    request: Request,
    session: SessionDep,
    search: QueryStringFilterDep,  # an HTML page: no OpenAPI parameters to document
    facet_size: FacetSizeDep,
    page_size: Annotated[int | None, Query()] = None,
    _next: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    def context() -> SearchPage:
        response = service.search_datasets(
            session, search, page_size=page_size, cursor=_next, facet_size=facet_size, base_path=SEARCH_PATH
        )
        return search_page_context(request, search, response, page_size, _next, partial)

    partial = wants_partial(request)
    template = "search/_region.html" if partial else "search/index.html"
    html = page_response(request, template, context, service.catalog_key(session))
    if partial:
        # The address bar shows the canonical query string, not the raw form fields (empty inputs and all).
        html.headers["HX-Push-Url"] = _page_url(request, search, page_size, _next)
    return html


def _paging(
    request: Request, page_size: int | None, _next: str | None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The page's own paging parameters, and the facet expansion (`_facet_size`) it asked for."""
    facet_size_raw = request.query_params.get("_facet_size")
    paging = [("page_size", str(page_size))] if page_size is not None else []
    if _next:
        paging.append(("_next", _next))
    expanded = [("_facet_size", facet_size_raw)] if facet_size_raw else []
    return paging, expanded


def _page_url(request: Request, search: SearchFilter, page_size: int | None, _next: str | None) -> str:
    paging, expanded = _paging(request, page_size, _next)
    return _url(search, paging + expanded)


@dataclass(frozen=True)
class FacetPanel:
    facet: Facet
    rows: list[FacetRow]
    open: bool  # unfolded: a main facet, or one with a value chosen


@dataclass(frozen=True)
class SearchPage(PageContext):
    """What search/index.html and its htmx region (search/_region.html) render."""

    response: SearchResponse
    search: SearchFilter
    facets: list[FacetPanel]
    chips: list[Chip]
    page_url: str
    json_url: str
    clear_url: str
    first_page_url: str | None
    more_url: str | None
    fewer_url: str | None
    sort_choices: list[tuple[str, str]]
    ranges: dict[str, Range]
    range_labels: dict[str, str]
    page_size: int | None
    offset: int
    facet_size_default: int
    partial: bool


def search_page_context(
    request: Request,
    search: SearchFilter,
    response: SearchResponse,
    page_size: int | None,
    _next: str | None,
    partial: bool,
) -> SearchPage:
    paging, expanded = _paging(request, page_size, _next)
    facet_size_raw = request.query_params.get("_facet_size")
    return SearchPage(
        response=response,
        search=search,
        facets=[
            FacetPanel(
                facet=facet,
                rows=facet_rows(facet),
                open=facet.name in OPEN_FACETS or bool(search.terms.get(facet.name)),
            )
            for facet in response.facets
        ],
        chips=active_filters(search, response.facets),
        page_url=_url(search, paging + expanded),
        json_url=_url(search, paging + expanded, path=urls.search_path),
        clear_url=_url(SearchFilter(sort=search.sort, order=search.order, prefer_open=search.prefer_open)),
        first_page_url=_url(search, expanded) if _next else None,
        more_url=None if facet_size_raw == "max" else _url(search, [("_facet_size", "max")]),
        fewer_url=_url(search) if facet_size_raw == "max" else None,
        sort_choices=SORT_CHOICES,
        ranges={name: search.ranges.get(name, Range()) for name in RANGE_FIELDS},
        range_labels=RANGE_FIELDS,
        page_size=page_size,
        offset=service.decode_cursor(_next),
        facet_size_default=get_settings().facet_size,
        partial=partial,
    )


@router.get("/statistics", response_class=HTMLResponse)
def statistics_page(request: Request, session: SessionDep) -> HTMLResponse:
    return page_response(
        request,
        "search/statistics.html",
        lambda: statistics_context(service.catalog_statistics(session)),
        service.catalog_key(session),
    )


@dataclass(frozen=True)
class StatisticsPage(PageContext):
    """What search/statistics.html renders."""

    stats: dict[str, Any]
    distributions: dict[str, Facet]
    chart_data: dict[str, Any]  # the charts' data, embedded as JSON
    json_url: str


def statistics_context(stats: dict[str, Any]) -> StatisticsPage:
    distributions: dict[str, Facet] = stats["distributions"]
    chart_data = {
        "distributions": {name: facet.model_dump() for name, facet in distributions.items()},
        "taxonomy": stats["taxonomy"],
    }
    return StatisticsPage(
        stats=stats, distributions=distributions, chart_data=chart_data, json_url=urls.api("/statistics")
    )
