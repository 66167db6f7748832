"""JSON routes of the catalog: one dataset, the vocabularies."""

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from app.api.deps import SessionDep
from app.catalog import service
from app.catalog.models import Vocabulary
from app.catalog.schemas import DatasetDetail, VocabularyList, VocabularyTerm
from app.core.urls import urls

router = APIRouter()


@router.get(
    "/datasets/{slug}",
    operation_id="get_dataset",
    response_model=DatasetDetail,
    responses={308: {"description": "The slug was merged into another dataset: Location names it"}},
)
def get_dataset(session: SessionDep, slug: str) -> DatasetDetail | RedirectResponse:
    """One dataset: normalised facts, quality flags, access next step, its merged parts with the facts they
    disagree on, how ambiguous values were decided, and the raw survey rows. A slug merged into another
    dataset answers 308 with the dataset's URL."""
    if (target := service.moved_to(session, slug)) is not None:
        return RedirectResponse(urls.dataset(target), status_code=308)
    return service.dataset_detail(session, slug)


@router.get("/vocabularies", operation_id="list_vocabularies", response_model=VocabularyList)
def list_vocabularies(session: SessionDep) -> VocabularyList:
    """Every controlled vocabulary term with its synonyms, parent and public code."""
    return _as_list(service.list_vocabularies(session))


@router.get("/vocabularies/{kind}", operation_id="get_vocabulary", response_model=VocabularyList)
def get_vocabulary(session: SessionDep, kind: str) -> VocabularyList:
    """One vocabulary (modality, anatomy, task, dim, access, labeled, size, host, licence, quality)."""
    return _as_list(service.list_vocabularies(session, kind))


def _as_list(terms: list[Vocabulary]) -> VocabularyList:
    results = [VocabularyTerm.model_validate(t, from_attributes=True) for t in terms]
    return VocabularyList(count=len(results), results=results)
