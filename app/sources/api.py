"""JSON routes of the sources domain: how the catalog's datasets are fetched."""

from fastapi import APIRouter

from app.api.deps import SessionDep
from app.sources import service
from app.sources.schemas import SourcesSummary

router = APIRouter(tags=["sources"])


@router.get("/sources", operation_id="get_sources_summary", response_model=SourcesSummary)
def get_sources_summary(session: SessionDep) -> SourcesSummary:
    """Datasets by fetch method (automatic, credentials, manual) and by adapter, licences known, and every
    dataset that is not fetched automatically with its reason (as `imagingx catalog sources`)."""
    return service.sources_summary(session)
