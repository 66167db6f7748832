"""JSON routes of the sources domain: how the catalog's datasets are fetched."""

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import SessionDep
from app.sources import service
from app.sources.schemas import FetchOverview, SourcesSummary

router = APIRouter()


@router.get("/sources", operation_id="get_sources_summary", response_model=SourcesSummary)
def get_sources_summary(session: SessionDep) -> SourcesSummary:
    """Datasets by fetch method (automatic, credentials, manual) and by adapter, licences known, and every
    dataset that is not fetched automatically with its reason (as `imagingx catalog sources`)."""
    return service.sources_summary(session)


@router.get("/sources/estimate", operation_id="estimate_fetch", response_model=FetchOverview)
def estimate_fetch(
    session: SessionDep,
    d: Annotated[list[str], Query(description="A dataset slug; repeat for each", max_length=1000)],
    max_subjects_per_dataset: Annotated[
        int | None, Query(ge=1, le=1_000_000, description="the bundle option of that name")
    ] = None,
) -> FetchOverview:
    """How a bundle of these datasets would fetch each one, and the estimated download with a subject cap."""
    return service.estimate_fetch(session, d, max_subjects_per_dataset)
