"""HTML pages of search: the faceted search page and the statistics page.

Routes stay thin: they call the same service functions as app/search/api.py and only arrange the answer for
templates. A request without HX-Request, and htmx's history-restore request after a cache miss, get the whole
page. An htmx request gets only what changes, chosen by its HX-Target: `results` (a facet click, a query, a
chip, sort, paging) gets the results section plus, out of band, the facet panels, the form's fields, the
drawer's count, the title and the JSON twin's link; `facet-panels` (a facet's "show all" or "show fewer")
gets the panels, with the form's fields out of band; any other target (a page rendered by an older version)
gets the whole swappable region.
"""

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.api.deps import PAGING_PARAMS, FacetSizeDep, SessionDep
from app.catalog.pages import vocabulary_label
from app.common.errors import InvalidInput
from app.common.vocabularies import ALL
from app.core.templating import PageContext, page_response
from app.core.urls import urls
from app.search import service
from app.search.filters import parse_filter
from app.search.schemas import FACETS, RANGE_FIELDS, Facet, FacetValue, Range, SearchFilter, SearchResponse

router = APIRouter(include_in_schema=False)

SEARCH_PATH = urls.page_search_path
# Facets open in the sidebar even with nothing selected; the others open once they hold a selection.
OPEN_FACETS = {"modality", "anatomy", "task", "dim", "access", "labeled"}
# Values a facet shows before its "show all" link: the reply of a facet click stays small, and the long tails
# (hosts, years, anatomy's leaves) are one click away. Selected values are always shown.
FACET_VALUES_SHOWN = 8
# `_more=<facet>`: the page's own parameter (never the API's) that unfolds one facet's every value.
MORE_PARAM = "_more"
MAX_FACET_SIZE = 10_000  # what `_facet_size=max` means
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


def partial_template(request: Request) -> str:
    """The template an htmx request gets, by the element it will swap (HX-Target)."""
    target = request.headers.get("hx-target") or ""
    if target == "results":
        return "search/_results_partial.html"
    if target == "facet-panels":
        return "search/_facet_partial.html"
    return "search/_region.html"


def expanded_facets(request: Request) -> list[str]:
    """The facets unfolded with `_more`, in order, each once (an unknown name is a 422)."""
    names: list[str] = []
    for name in request.query_params.getlist(MORE_PARAM):
        if name not in FACETS:
            raise InvalidInput(["query", MORE_PARAM], f"unknown facet {name!r}; one of {', '.join(FACETS)}")
        if name not in names:
            names.append(name)
    return names


async def page_search_filter(request: Request) -> SearchFilter:
    """The filter of the query string, as the API reads it, less the page's own `_more`."""
    skipped = PAGING_PARAMS | {MORE_PARAM}
    return parse_filter((k, v) for k, v in request.query_params.multi_items() if k not in skipped)


PageFilterDep = Annotated[SearchFilter, Depends(page_search_filter)]


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
    search: PageFilterDep,  # an HTML page: no OpenAPI parameters to document
    facet_size: FacetSizeDep,
    page_size: Annotated[int | None, Query()] = None,
    _next: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    more = expanded_facets(request)

    def context() -> SearchPage:
        # an unfolded facet needs every value: ask for them all (counting them is the same work)
        size = facet_size if facet_size is not None or not more else MAX_FACET_SIZE
        response = service.search_datasets(
            session, search, page_size=page_size, cursor=_next, facet_size=size, base_path=SEARCH_PATH
        )
        return search_page_context(request, search, response, page_size, _next, more)

    partial = wants_partial(request)
    template = partial_template(request) if partial else "search/index.html"
    html = page_response(request, template, context, service.catalog_key(session))
    if partial:
        # The address bar shows the canonical query string, not the raw form fields (empty inputs and all).
        html.headers["HX-Push-Url"] = _page_url(request, search, page_size, _next)
    return html


def _paging(
    request: Request, page_size: int | None, _next: str | None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The page's own paging parameters, and the facet expansion (`_facet_size`, `_more`) it asked for."""
    facet_size_raw = request.query_params.get("_facet_size")
    paging = [("page_size", str(page_size))] if page_size is not None else []
    if _next:
        paging.append(("_next", _next))
    expanded = [("_facet_size", facet_size_raw)] if facet_size_raw else []
    expanded += [(MORE_PARAM, name) for name in expanded_facets(request)]
    return paging, expanded


def _page_url(request: Request, search: SearchFilter, page_size: int | None, _next: str | None) -> str:
    paging, expanded = _paging(request, page_size, _next)
    return _url(search, paging + expanded)


@dataclass(frozen=True)
class FacetPanel:
    """One facet as the sidebar shows it: the rows shown, and the link that unfolds or folds the rest."""

    facet: Facet
    rows: list[FacetRow]
    open: bool  # unfolded: a main facet, or one with a value chosen
    hidden: int | None  # values not shown; None when unknown (the service sent only the first facet_size)
    more_url: str | None  # shows every value (None when all are shown)
    fewer_url: str | None  # folds it back (None unless unfolded by `_more`)


def facet_panel(
    facet: Facet, search: SearchFilter, more: list[str], everything: bool, base: list[tuple[str, str]]
) -> FacetPanel:
    """`facet` folded to FACET_VALUES_SHOWN rows (plus its selected values) unless `_more` names it or
    `_facet_size` asked for every facet's values. `base` is the page's query string as pairs."""
    rows = facet_rows(facet)
    unfolded = everything or facet.name in more
    shown = (
        rows if unfolded else [r for i, r in enumerate(rows) if i < FACET_VALUES_SHOWN or r.value.selected]
    )
    if more and not everything:
        # a value's link keeps the unfolded facets unfolded
        extra = "&".join(f"{MORE_PARAM}={name}" for name in more)
        shown = [FacetRow(_with_query(r.value, extra), r.depth) for r in shown]
    hidden = None if facet.truncated else len(rows) - len(shown)
    more_url = None
    if not unfolded and (len(rows) > len(shown) or facet.truncated):
        more_url = _query_url([*base, (MORE_PARAM, facet.name)])
    fewer_url = None
    if facet.name in more and not everything:
        fewer_url = _query_url([pair for pair in base if pair != (MORE_PARAM, facet.name)])
    return FacetPanel(
        facet=facet,
        rows=shown,
        open=facet.name in OPEN_FACETS or bool(search.terms.get(facet.name)),
        hidden=hidden,
        more_url=more_url,
        fewer_url=fewer_url,
    )


def _with_query(value: FacetValue, extra: str) -> FacetValue:
    url = value.toggle_url
    joined = url + extra if url.endswith("?") else f"{url}{'&' if '?' in url else '?'}{extra}"
    return value.model_copy(update={"toggle_url": joined})


def _query_url(pairs: list[tuple[str, str]]) -> str:
    return SEARCH_PATH + service.query_string(pairs)


@dataclass(frozen=True)
class SearchPage(PageContext):
    """What search/index.html and its htmx replies (search/_region.html, _results_partial.html,
    _facet_partial.html) render."""

    response: SearchResponse
    search: SearchFilter
    facets: list[FacetPanel]
    chips: list[Chip]
    page_url: str
    json_url: str
    clear_url: str
    first_page_url: str | None
    sort_choices: list[tuple[str, str]]
    ranges: dict[str, Range]
    range_labels: dict[str, str]
    page_size: int | None
    offset: int
    more: list[str]  # the facets unfolded with `_more` (hidden inputs keep them across a new query)
    partial: bool


def search_page_context(
    request: Request,
    search: SearchFilter,
    response: SearchResponse,
    page_size: int | None,
    _next: str | None,
    more: list[str],
) -> SearchPage:
    paging, expanded = _paging(request, page_size, _next)
    everything = request.query_params.get("_facet_size") is not None
    base = [*service.filter_pairs(search), *expanded]
    return SearchPage(
        response=response,
        search=search,
        facets=[facet_panel(facet, search, more, everything, base) for facet in response.facets],
        chips=active_filters(search, response.facets),
        page_url=_url(search, paging + expanded),
        # the API takes `_facet_size` but not the page's own `_more`
        json_url=_url(search, paging + [p for p in expanded if p[0] != MORE_PARAM], path=urls.search_path),
        clear_url=_url(SearchFilter(sort=search.sort, order=search.order, prefer_open=search.prefer_open)),
        first_page_url=_url(search, expanded) if _next else None,
        sort_choices=SORT_CHOICES,
        ranges={name: search.ranges.get(name, Range()) for name in RANGE_FIELDS},
        range_labels=RANGE_FIELDS,
        page_size=page_size,
        offset=service.decode_cursor(_next),
        more=more,
        partial=wants_partial(request),
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
