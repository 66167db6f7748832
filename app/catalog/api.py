"""JSON routes of the catalog: one dataset, the vocabularies."""

from fastapi import APIRouter

from app.api.deps import SessionDep
from app.catalog import service
from app.catalog.models import Vocabulary
from app.catalog.schemas import DatasetDetail, VocabularyList, VocabularyTerm

router = APIRouter()


@router.get("/datasets/{slug}", operation_id="get_dataset", response_model=DatasetDetail)
def get_dataset(session: SessionDep, slug: str) -> DatasetDetail:
    """One dataset: normalised facts, quality flags, access next step, variants and the raw survey rows."""
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
