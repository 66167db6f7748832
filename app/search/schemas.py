"""The search filter object and the shapes of search responses (shared by pages, the API and the CLI)."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from app.catalog.schemas import DatasetSummary
from app.core.envelope import Ok


@dataclass(frozen=True)
class FacetSpec:
    """A facet: which dataset column it reads, which vocabulary names its values, how it is ordered."""

    name: str
    label: str
    column: str
    vocabulary: str | None
    multi: bool  # an array column (a dataset can have several values)
    order: str = "count"  # count | vocabulary | value_desc


FACETS: dict[str, FacetSpec] = {
    spec.name: spec
    for spec in (
        FacetSpec("modality", "Modality", "modalities", "modality", True),
        FacetSpec("anatomy", "Anatomy", "anatomy_closure", "anatomy", True),
        FacetSpec("task", "Task", "tasks", "task", True),
        FacetSpec("dim", "Dimensionality", "dims", "dim", True, order="vocabulary"),
        FacetSpec("access", "Access", "access", "access", False, order="vocabulary"),
        FacetSpec("labeled", "Labels", "labeled", "labeled", False, order="vocabulary"),
        FacetSpec("host", "Host", "host", "host", False),
        FacetSpec("year", "Year", "year", None, False, order="value_desc"),
        FacetSpec("size", "Size", "size_bucket", "size", False, order="vocabulary"),
        FacetSpec("licence", "Licence", "licence", "licence", False),
        FacetSpec("fetch", "Fetch", "fetch_method", "fetch", False, order="vocabulary"),
        FacetSpec("quality", "Quality flags", "quality_flags", "quality", True),
    )
}

RANGE_FIELDS = {"year": "Year", "images": "Images or cases"}
RANGE_OPS = {"gte": ">=", "lte": "<="}


class Sort(StrEnum):
    relevance = "relevance"
    images = "images"
    year = "year"
    name = "name"


class Order(StrEnum):
    asc = "asc"
    desc = "desc"


class Range(BaseModel):
    """Inclusive bounds; either may be missing."""

    gte: int | None = None
    lte: int | None = None


class SearchFilter(BaseModel):
    """What to search for. The same object arrives as a query string (GET) or a JSON body (plans, exports)."""

    q: str | None = Field(default=None, max_length=200, description="Free text, typo tolerant")
    terms: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Facet selections: OR within a facet, AND across facets. Values accept synonyms.",
        examples=[{"modality": ["MRI"], "anatomy": ["brain"]}],
    )
    ranges: dict[str, Range] = Field(
        default_factory=dict, examples=[{"year": {"gte": 2018}, "images": {"gte": 100}}]
    )
    sort: Sort = Sort.relevance
    order: Order | None = None
    prefer_open: bool = Field(default=False, description="Rank open-access datasets first")
    notes: list[str] = Field(
        default_factory=list,
        description="How typed facet values were read, e.g. an ambiguous abbreviation ('reg') searched under "
        "each of its meanings; written by the server (anything sent here is replaced)",
    )


class FacetValue(BaseModel):
    value: str
    label: str
    count: int
    selected: bool
    toggle_url: str
    parent: str | None = None


class Facet(BaseModel):
    name: str
    label: str
    results: list[FacetValue]
    truncated: bool


class FacetList(Ok):
    facets: list[Facet]


class NearMatch(BaseModel):
    dataset: DatasetSummary
    missed: list[str] = Field(description="Why it is not a strict match, one reason per missed constraint")


class TextInterpretation(BaseModel):
    """How the text query was read: what it matched besides its own words, so the user can see it."""

    concepts: list[str] = Field(
        default_factory=list, description="Diseases or findings recognised in the query, e.g. 'Brain tumor'"
    )
    also_matching: list[str] = Field(
        default_factory=list,
        description="Narrower concepts the query was widened to that found datasets, e.g. 'Glioma'",
    )
    spelling: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Query words matched through close spellings, with the catalog words they matched",
    )
    optional: list[str] = Field(
        default_factory=list,
        description="Words such as 'dataset' or 'challenge' that rank results but are not required",
    )


class Suggestion(BaseModel):
    """One way out of an empty result: a corrected word, a word to drop or a filter to relax."""

    kind: str = Field(description="spelling | drop_word | relax")
    label: str = Field(description="What changes, in words: 'kidney' for 'kidny', 'without \"foo\"'")
    count: int = Field(description="How many datasets the changed search finds")
    url: str = Field(description="The changed search")


class ZeroResultHelp(BaseModel):
    did_you_mean: list[Suggestion] = Field(default_factory=list)
    drop_words: list[Suggestion] = Field(default_factory=list)
    relax: list[Suggestion] = Field(default_factory=list)


class SearchResponse(Ok):
    count: int
    results: list[DatasetSummary]
    facets: list[Facet]
    near_matches: list[NearMatch]
    next_url: str | None
    filter: SearchFilter
    catalog_version: int
    timing_ms: float
    interpretation: TextInterpretation | None = Field(
        default=None, description="How the text query was read (only with a text query)"
    )
    zero_results: ZeroResultHelp | None = Field(
        default=None, description="Suggestions with their counts when nothing matched"
    )


class ErrorItem(BaseModel):
    loc: list[Any]
    msg: str


class ErrorResponse(BaseModel):
    ok: bool = False
    status: int
    error: str
    errors: list[ErrorItem]


class CatalogStatistics(Ok):
    """Distributions over the whole catalog and the survey's taxonomy as a tree."""

    catalog_version: int
    datasets: int
    images_known: int = Field(description="Datasets whose number of images or cases is known")
    images_total: int = Field(description="Images or cases summed over those datasets")
    distributions: dict[str, Facet] = Field(
        description="modality, dim, task, anatomy, access, year, size, host"
    )
    taxonomy: dict[str, Any] = Field(
        description="dimension > modality > task or organ, each node with its search URL"
    )
