"""Dependencies injected into routes: the database session and the search filter read from the query string."""

from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from app.core.db import get_session
from app.search.schemas import SearchFilter
from app.search.service import parse_filter

SessionDep = Annotated[Session, Depends(get_session)]


async def search_filter_from_query(
    request: Request,
    q: Annotated[
        str | None, Query(description="Free text (typo tolerant)", examples=["liver tumour"])
    ] = None,
    modality: Annotated[
        list[str] | None, Query(description="Modality; repeat for OR; synonyms accepted", examples=["MRI"])
    ] = None,
    anatomy: Annotated[
        list[str] | None,
        Query(description="Anatomy, hierarchy-aware (thorax includes lung)", examples=["chest"]),
    ] = None,
    task: Annotated[list[str] | None, Query(description="Task", examples=["seg"])] = None,
    dim: Annotated[list[str] | None, Query(description="2D, 3D, 4D, video", examples=["3D"])] = None,
    access: Annotated[list[str] | None, Query(description="open, registration, application, unknown")] = None,
    labeled: Annotated[list[str] | None, Query(description="true or false")] = None,
    host: Annotated[list[str] | None, Query(description="Host platform, e.g. tcia, kaggle, zenodo")] = None,
    year: Annotated[list[str] | None, Query(description="Release year, or 'unknown'")] = None,
    size: Annotated[
        list[str] | None, Query(description="lt100, 100-1k, 1k-10k, 10k-100k, 100k+, unknown")
    ] = None,
    licence: Annotated[list[str] | None, Query(description="SPDX licence id, or 'unknown'")] = None,
    quality: Annotated[list[str] | None, Query(description="Quality flag id, or 'none'")] = None,
    year__gte: Annotated[str | None, Query(description="Released in or after", examples=["2018"])] = None,
    year__lte: Annotated[str | None, Query(description="Released in or before")] = None,
    images__gte: Annotated[str | None, Query(description="At least this many images or cases")] = None,
    images__lte: Annotated[str | None, Query(description="At most this many images or cases")] = None,
    sort: Annotated[str | None, Query(description="relevance, images, year or name")] = None,
    order: Annotated[str | None, Query(description="asc or desc (default: desc, name asc)")] = None,
    prefer_open: Annotated[str | None, Query(description="true ranks open-access datasets first")] = None,
) -> SearchFilter:
    """Every parameter is declared for the OpenAPI document; one parser reads them all, as pages do.

    async, as it never waits: FastAPI runs sync dependencies in its thread pool, one hop each per request."""
    ignored = {"page_size", "_next", "_facet_size"}
    return parse_filter((k, v) for k, v in request.query_params.multi_items() if k not in ignored)


SearchFilterDep = Annotated[SearchFilter, Depends(search_filter_from_query)]


async def facet_size_param(
    _facet_size: Annotated[str | None, Query(description="Values per facet, or 'max'")] = None,
) -> int | None:
    from app.core.errors import InvalidInput

    if _facet_size is None:
        return None
    if _facet_size == "max":
        return 10_000
    if not _facet_size.isdigit() or int(_facet_size) < 1:
        raise InvalidInput(["query", "_facet_size"], "_facet_size must be a positive integer or 'max'")
    return int(_facet_size)


FacetSizeDep = Annotated[int | None, Depends(facet_size_param)]
