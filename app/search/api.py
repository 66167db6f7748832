"""JSON routes of search: thin wrappers around app.search.service."""

from typing import Annotated

from fastapi import APIRouter, Body, Query
from fastapi.responses import Response

from app.api.deps import SEARCH_FILTER_OPENAPI, FacetSizeDep, QueryStringFilterDep, SessionDep
from app.core.urls import urls
from app.search import service
from app.search.schemas import CatalogStatistics, FacetList, SearchFilter, SearchResponse

router = APIRouter()


def json_bytes(body: bytes) -> Response:
    """JSON the service serialised already (in pydantic's core, and kept per catalog version): FastAPI would
    validate the model again and encode it in Python, which costs more than the search itself. The models are
    documented through response_model all the same."""
    return Response(content=body, media_type="application/json")


@router.get(
    "/datasets",
    operation_id="search_datasets",
    response_model=SearchResponse,
    openapi_extra=SEARCH_FILTER_OPENAPI,
)
def search_datasets(
    session: SessionDep,
    search: QueryStringFilterDep,
    facet_size: FacetSizeDep,
    page_size: Annotated[int | None, Query(description="Results per page (max 200)")] = None,
    _next: Annotated[str | None, Query(description="Cursor from a previous response's next_url")] = None,
) -> Response:
    """Faceted search: strict matches, facet counts (disjunctive) and near matches that miss one or two filters."""
    return json_bytes(
        service.search_json(
            session,
            search,
            page_size=page_size,
            cursor=_next,
            facet_size=facet_size,
            base_path=urls.search_path,
        )
    )


@router.post("/datasets/search", operation_id="search_datasets_by_body", response_model=SearchResponse)
def search_datasets_by_body(
    session: SessionDep,
    search: Annotated[
        SearchFilter,
        Body(
            examples=[
                {"terms": {"modality": ["MRI"], "anatomy": ["brain"]}, "ranges": {"year": {"gte": 2018}}}
            ]
        ),
    ],
    page_size: Annotated[int | None, Query(description="Results per page (max 200)")] = None,
    _next: Annotated[str | None, Query()] = None,
) -> Response:
    """The same search with the filter as a JSON body `{terms, ranges, q}`."""
    return json_bytes(
        service.search_json(
            session,
            service.normalise_filter(search),
            page_size=page_size,
            cursor=_next,
            base_path=urls.search_path,
        )
    )


@router.get(
    "/facets", operation_id="facet_counts", response_model=FacetList, openapi_extra=SEARCH_FILTER_OPENAPI
)
def facets(session: SessionDep, search: QueryStringFilterDep, facet_size: FacetSizeDep) -> Response:
    """Only the facets of a search (same parameters as /datasets)."""
    return json_bytes(service.facets_json(session, search, facet_size=facet_size, base_path=urls.search_path))


@router.get("/statistics", operation_id="catalog_statistics", response_model=CatalogStatistics)
def statistics(session: SessionDep) -> CatalogStatistics:
    """Distributions by modality, dim, task, anatomy, access, year, size and host, plus the taxonomy tree."""
    return CatalogStatistics(**service.catalog_statistics(session))
