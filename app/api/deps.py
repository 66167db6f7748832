"""Dependencies injected into routes: the database session and the search filter read from the query string."""

from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import Depends, Query, Request
from pydantic import BaseModel, Field, TypeAdapter
from sqlalchemy.orm import Session

from app.core.db import new_session
from app.search.filters import parse_filter
from app.search.schemas import SearchFilter


async def session_per_request() -> AsyncIterator[Session]:
    """One session per request. async: a sync generator dependency costs two thread-pool hops per request
    (enter and exit); creating a Session does no I/O, and closing it (a rollback round trip as the connection
    goes back to the pool) takes one hop, shielded so that a cancelled request still returns its connection."""
    session = new_session()
    try:
        yield session
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(session.close)


SessionDep = Annotated[Session, Depends(session_per_request)]


class SearchFilterQuery(BaseModel):
    """The query-string form of a search filter, as documented; `parse_filter` reads the values."""

    q: str | None = Field(None, description="Free text (typo tolerant)", examples=["liver tumour"])
    modality: list[str] | None = Field(
        None, description="Modality; repeat for OR; synonyms accepted", examples=["MRI"]
    )
    anatomy: list[str] | None = Field(
        None, description="Anatomy, hierarchy-aware (thorax includes lung)", examples=["chest"]
    )
    task: list[str] | None = Field(None, description="Task", examples=["seg"])
    dim: list[str] | None = Field(None, description="2D, 3D, 4D, video", examples=["3D"])
    access: list[str] | None = Field(None, description="open, registration, application, unknown")
    labeled: list[str] | None = Field(None, description="true or false")
    host: list[str] | None = Field(None, description="Host platform, e.g. tcia, kaggle, zenodo")
    year: list[str] | None = Field(None, description="Release year, or 'unknown'")
    size: list[str] | None = Field(None, description="lt100, 100-1k, 1k-10k, 10k-100k, 100k+, unknown")
    licence: list[str] | None = Field(None, description="SPDX licence id, or 'unknown'")
    quality: list[str] | None = Field(None, description="Quality flag id, or 'none'")
    year__gte: str | None = Field(None, description="Released in or after", examples=["2018"])
    year__lte: str | None = Field(None, description="Released in or before")
    images__gte: str | None = Field(None, description="At least this many images or cases")
    images__lte: str | None = Field(None, description="At most this many images or cases")
    sort: str | None = Field(None, description="relevance, images, year or name")
    order: str | None = Field(None, description="asc or desc (default: desc, name asc)")
    prefer_open: str | None = Field(None, description="true ranks open-access datasets first")


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI parameter objects for a model's fields, as FastAPI writes declared query parameters."""
    parameters = []
    for name, field in model.model_fields.items():
        # None stands for "not annotated", which a model's field never is
        assert field.annotation is not None
        schema = TypeAdapter(field.annotation).json_schema()
        # A query string has no null (a parameter left out takes its default), so `X | None` is documented as X:
        # the anyOf with null made generators send values no query string can tell from valid ones.
        branches = [branch for branch in schema.pop("anyOf", [schema]) if branch != {"type": "null"}]
        if len(branches) == 1:
            schema.update(branches[0])
        else:
            schema["anyOf"] = branches
        schema.update(description=field.description, title=name.replace("_", " ").title())
        if field.examples:
            schema["examples"] = field.examples
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": schema,
                "description": field.description,
            }
        )
    return parameters


# `openapi_extra` of every route that takes QueryStringFilterDep: the parameters it reads, documented
SEARCH_FILTER_OPENAPI: dict[str, Any] = {"parameters": _query_parameters(SearchFilterQuery)}

PAGING_PARAMS = frozenset({"page_size", "_next", "_facet_size"})


async def search_filter_from_query(request: Request) -> SearchFilter:
    """The filter, parsed once from the raw query string (a 422 names the bad parameter).

    No parameters are declared: FastAPI would parse and validate ~20 of them on every request only for
    `parse_filter` to read the query string again (~0.3 ms per request, bench/search/overhead.py). Routes
    document them with `openapi_extra=SEARCH_FILTER_OPENAPI`. async, as it never waits: FastAPI runs sync
    dependencies in its thread pool, one hop each."""
    return parse_filter((k, v) for k, v in request.query_params.multi_items() if k not in PAGING_PARAMS)


QueryStringFilterDep = Annotated[SearchFilter, Depends(search_filter_from_query)]


async def documented_search_filter(
    request: Request, _params: Annotated[SearchFilterQuery, Query()]
) -> SearchFilter:
    """The same filter with its parameters declared, so any route that takes it documents them without
    `openapi_extra`, at the cost of FastAPI validating them first (~0.2 ms). The search routes, where that
    counts, take QueryStringFilterDep."""
    return await search_filter_from_query(request)


SearchFilterDep = Annotated[SearchFilter, Depends(documented_search_filter)]


async def facet_size_param(
    _facet_size: Annotated[str | None, Query(description="Values per facet, or 'max'")] = None,
) -> int | None:
    from app.common.errors import InvalidInput

    if _facet_size is None:
        return None
    if _facet_size == "max":
        return 10_000
    if not _facet_size.isdigit() or int(_facet_size) < 1:
        raise InvalidInput(["query", "_facet_size"], "_facet_size must be a positive integer or 'max'")
    return int(_facet_size)


FacetSizeDep = Annotated[int | None, Depends(facet_size_param)]
