"""JSON shapes of selections (the cart), comparisons and export formats."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, computed_field, model_validator

from app.catalog.schemas import DatasetSummary
from app.core.envelope import Ok
from app.core.urls import urls
from app.sources.schemas import FetchOverview

SLUG_EXAMPLES = ["lits", "brats-2021"]
COMPARE_MIN, COMPARE_MAX = 2, 6  # datasets side by side


class SelectionCreate(BaseModel):
    """A new selection: empty, from a list of dataset slugs, or seeded from a saved MDFP plan's final list."""

    name: str | None = Field(default=None, max_length=200, examples=["Liver CT for a segmentation model"])
    dataset_slugs: list[str] | None = Field(
        default=None, description="Datasets in the order to keep them", examples=[SLUG_EXAMPLES]
    )
    plan_id: str | None = Field(
        default=None, max_length=64, description="Seed from the final dataset list of a saved MDFP plan"
    )

    @model_validator(mode="after")
    def one_source(self) -> "SelectionCreate":
        if self.dataset_slugs is not None and self.plan_id is not None:
            raise ValueError("give dataset_slugs or plan_id, not both")
        return self


class SelectionReplace(BaseModel):
    """The whole selection: its name (null for none) and its datasets, in order."""

    name: str | None = Field(default=None, max_length=200, examples=["Brain MR, open access"])
    dataset_slugs: list[str] = Field(examples=[SLUG_EXAMPLES])


class SelectionAdd(BaseModel):
    slug: str = Field(max_length=200, examples=["lits"])


class CountedValue(BaseModel):
    value: str
    label: str
    count: int


class SelectionTotals(BaseModel):
    datasets: int
    images_known: int = Field(description="Sum of image or case counts over the datasets that state one")
    images_unknown: int = Field(description="Datasets whose image or case count is unknown")
    modalities: list[CountedValue] = Field(description="Datasets per modality (a dataset may have several)")
    licences: list[CountedValue] = Field(description="Datasets per licence; 'unknown' counts those without")
    access: list[CountedValue] = Field(description="Datasets per access tier")


class SelectionEntry(DatasetSummary):
    access_next_step: str = Field(description="What must be done before this dataset can be fetched")


class SelectionDetail(Ok):
    id: str = Field(
        description="The id this selection was read with: its owner key for the owner (keep it private: it "
        "changes the selection), its read-only share id for anyone given the share link"
    )
    read_id: str = Field(
        description="The read-only share id: reads and exports the selection, never changes it"
    )
    owner: bool = Field(description="Whether this was read with the owner key (writes allowed)")
    name: str | None
    dataset_slugs: list[str]
    missing_slugs: list[str] = Field(
        description="Slugs kept in the selection that the catalog no longer has (renamed or removed)"
    )
    totals: SelectionTotals
    fetch: FetchOverview = Field(description="How a bundle of this selection would fetch each dataset")
    datasets: list[SelectionEntry]
    created_at: datetime
    updated_at: datetime

    # Links follow from the ids: made here by the one URL builder, never stored or passed in.
    @computed_field(description="The read-only share link (JSON); exports hang below it")  # type: ignore[prop-decorator]
    @property
    def share_url(self) -> str:
        return urls.selection(self.read_id)

    @computed_field(description="The read-only share link as a web page")  # type: ignore[prop-decorator]
    @property
    def share_page(self) -> str:
        return urls.page_selection(self.read_id)

    @computed_field(description="This selection in JSON, under the id it was read with")  # type: ignore[prop-decorator]
    @property
    def api_url(self) -> str:
        return urls.selection(self.id)

    @computed_field(  # type: ignore[prop-decorator]
        description=f"Side-by-side comparison, when it holds {COMPARE_MIN} to {COMPARE_MAX} datasets"
    )
    @property
    def compare_url(self) -> str | None:
        if COMPARE_MIN <= len(self.datasets) <= COMPARE_MAX:
            return urls.page_compare(entry.slug for entry in self.datasets)
        return None

    @computed_field(  # type: ignore[prop-decorator]
        description="Download links by format (csv, json, bib, jsonld, manifest), under the read-only share id"
    )
    @property
    def exports(self) -> dict[str, str]:
        return {fmt.name: urls.selection_export(self.read_id, fmt.suffix) for fmt in ExportFormat}


class CompareField(BaseModel):
    name: str
    label: str
    vocabulary: str | None = Field(
        description="The vocabulary the values are ids of (see /vocabularies/{kind})"
    )
    values: list[Any] = Field(description="One value per dataset, in the order of `datasets`")
    differs: bool = Field(description="True when the datasets do not all have the same value")


class CompareResponse(Ok):
    count: int
    datasets: list[DatasetSummary]
    fields: list[CompareField]

    @computed_field(description="This comparison as a web page")  # type: ignore[prop-decorator]
    @property
    def html_url(self) -> str:
        return urls.page_compare(dataset.slug for dataset in self.datasets)


class ExportFormat(StrEnum):
    """Export formats, chosen by the suffix of the URL."""

    csv = "csv"
    json = "json"
    bib = "bib"
    jsonld = "jsonld"
    manifest = "manifest.json"

    @property
    def media_type(self) -> str:
        return _MEDIA_TYPES[self]

    @property
    def suffix(self) -> str:
        return self.value


_MEDIA_TYPES = {
    ExportFormat.csv: "text/csv; charset=utf-8",
    ExportFormat.json: "application/json",
    ExportFormat.bib: "application/x-bibtex; charset=utf-8",
    ExportFormat.jsonld: "application/ld+json",
    ExportFormat.manifest: "application/json",
}
