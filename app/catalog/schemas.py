"""JSON shapes of catalog resources."""

from typing import Any

from pydantic import BaseModel, Field, computed_field

from app.core.envelope import Ok
from app.core.urls import urls
from app.sources.schemas import DatasetSource


class DatasetSummary(BaseModel):
    slug: str
    name: str
    url: str | None
    year: int | None
    dims: list[str]
    modalities: list[str]
    anatomies: list[str]
    tasks: list[str]
    diseases: list[str]
    labeled: bool | None
    access: str
    host: str
    licence: str | None
    fetch: str = Field(description="How a bundle job gets its files: automatic, credentials or manual")
    images: int | None
    quality_flags: list[str]
    completeness: float

    # Links follow from the slug: made here by the one URL builder, never by the service.
    @computed_field(description="This dataset in JSON")  # type: ignore[prop-decorator]
    @property
    def api_url(self) -> str:
        return urls.dataset(self.slug)

    @computed_field(description="This dataset's page")  # type: ignore[prop-decorator]
    @property
    def html_url(self) -> str:
        return urls.page_dataset(self.slug)


class QualityFlag(BaseModel):
    id: str
    label: str
    description: str | None


class RelatedDataset(BaseModel):
    slug: str
    name: str


class DatasetPart(BaseModel):
    """One record the survey's rows made before the records of one real dataset were merged."""

    slug: str = Field(description="The slug it was published under; it redirects to this dataset")
    name: str
    sections: list[str] = Field(description="The survey tables its rows came from")
    url: str | None
    year: int | None
    images: int | None
    modalities: list[str]
    tasks: list[str]
    rows: int = Field(description="How many survey rows it holds")


class ContradictionValue(BaseModel):
    value: Any
    parts: list[str] = Field(description="Slugs of the parts that state this value")


class Contradiction(BaseModel):
    field: str
    values: list[ContradictionValue]


class NormalisationNote(BaseModel):
    """Why an ambiguous survey value ('Multi', 'Reg', 'QA') was read as it was."""

    field: str
    raw: str
    value: list[str]
    reason: str


class MergeReason(BaseModel):
    rule: str = Field(description="same_name, same_page_and_facts, alias or curated")
    names: list[str]
    detail: str


class DatasetDetail(DatasetSummary, Ok):
    aliases: list[str]
    section: str | None
    anatomy_closure: list[str] = Field(description="The anatomies and every region that contains them")
    organisation: str | None
    formats: list[str]
    size_bucket: str
    flags: list[QualityFlag]
    access_next_step: str
    source: DatasetSource = Field(
        description="How it is fetched: method, what or why, the source descriptor, its provenance (rule, what "
        "matched, index version, when), estimated download size, and the facts the source states (IDC)"
    )
    automated_source: str | None = Field(
        description="The kind of source descriptor (idc, tcia, openneuro, zenodo, http, ...) that lets workers "
        "fetch this dataset into a bundle; null when a bundle can only list it as a manual step"
    )
    description: str
    variants: list[RelatedDataset] = Field(description="Other entries of the survey with the same name")
    same_url: list[RelatedDataset] = Field(description="Other datasets listed at the same landing page")
    parts: list[DatasetPart] = Field(
        description="The survey's records merged into this one (sub-tasks, editions, mirrors); empty if none"
    )
    contradictions: list[Contradiction] = Field(description="Facts the merged parts state differently")
    notes: list[NormalisationNote] = Field(description="How ambiguous survey values were decided, and why")
    merge_reasons: list[MergeReason] = Field(description="The rules that joined the parts")
    raw_records: list[dict[str, Any]] = Field(
        description="The survey rows this dataset was built from, verbatim"
    )
    json_ld: dict[str, Any]
    catalog_version: int


class VocabularyTerm(BaseModel):
    kind: str
    id: str
    label: str
    synonyms: list[str]
    parent_id: str | None
    code: str | None
    code_system: str | None
    description: str | None


class VocabularyList(Ok):
    count: int
    results: list[VocabularyTerm]
