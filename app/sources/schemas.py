"""Shapes of the sources domain: how a dataset is fetched, as the API, pages and exports show it."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from app.core.envelope import Ok


class FetchMethod(StrEnum):
    """How a bundle job gets a dataset's files (the `fetch` facet)."""

    automatic = "automatic"  # a worker fetches it with no set-up
    credentials = "credentials"  # a worker fetches it with the operator's account on the host (settings)
    manual = "manual"  # the user must get the files and point a `local` source at them


class SourceProvenance(BaseModel):
    """Which rule or index resolved a dataset's source, from what, and when; `operator` for a hand-set one."""

    resolver: str = Field(description="rule id: idc, msd, medmnist, openneuro, zenodo, ..., manual, operator")
    matched: str | None = Field(default=None, description="what matched: a DOI, a URL or a name")
    index: str | None = Field(
        default=None, description="the index and its version, e.g. idc-index-data 25.0.5"
    )
    resolved_at: datetime


class DatasetSource(BaseModel):
    """How one dataset will be fetched, said before any job runs."""

    fetch: FetchMethod
    note: str = Field(description="what will be fetched; or the settings to set; or the reason and next step")
    kind: str | None = Field(default=None, description="the source descriptor's kind (idc, zenodo, ...)")
    descriptor: dict[str, Any] | None = None
    provenance: SourceProvenance | None = None
    download_bytes: int | None = Field(default=None, description="estimated download size, when known")
    facts: dict[str, Any] | None = Field(
        default=None, description="facts the source states (IDC: licences...)"
    )
    licence_source: str | None = Field(default=None, description="where the dataset's licence comes from")


class SourcesSummary(Ok):
    """`imagingx catalog sources` and GET /api/v1/sources: counts by fetch method and adapter, and every
    dataset that is not automatic with its reason."""

    catalog_version: int
    resolved_with: str
    counts: dict[str, int]
    by_kind: dict[str, int]
    licences_known: int
    unresolved: list[dict[str, str]]


class FetchEntry(BaseModel):
    slug: str
    name: str
    fetch: FetchMethod
    note: str
    download_bytes: int | None = Field(
        default=None, description="estimated download, when the source states it"
    )
    subjects: int | None = Field(
        default=None,
        description="subjects the source states (IDC): a subject cap scales the download by cap / subjects",
    )


class FetchOverview(Ok):
    """How a list of datasets (a selection, a plan's final list) would be fetched by a bundle job."""

    counts: dict[str, int] = Field(description="datasets by fetch method")
    download_bytes: int = Field(
        description="sum of the known estimates (automatic and credentialed datasets)"
    )
    sizes_unknown: int = Field(
        description="fetchable datasets whose host states its size only when the job runs"
    )
    can_fetch: bool = Field(description="false when no dataset can be fetched: a bundle would hold no data")
    max_subjects: int | None = Field(default=None, description="the subject cap the estimate assumes, if any")
    datasets: list[FetchEntry]
