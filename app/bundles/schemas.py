"""JSON shapes of bundle jobs: what a client submits and the status it polls."""

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_DATASETS = 1000  # as many as a selection holds
SKIPPED_SHOWN = 100  # skipped items a job's status lists (all of them: GET .../items?state=skipped)


class JobState(StrEnum):
    queued = "queued"  # waiting for a free slot (IMAGINGX_BUNDLE_MAX_RUNNING)
    fetching = "fetching"
    harmonising = "harmonising"
    packaging = "packaging"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobState.done, JobState.failed, JobState.cancelled})


class SourceState(StrEnum):
    pending = "pending"
    fetching = "fetching"
    fetched = "fetched"
    failed = "failed"
    manual = "manual"  # no automated source: the user must fetch it (detail gives the access step)
    cancelled = "cancelled"


class ItemState(StrEnum):
    pending = "pending"
    done = "done"
    skipped = "skipped"


SliceAxis = Literal["axial", "coronal", "sagittal"]
# arrays are (z, y, x) in the workers: axial slices run along z
SLICE_AXES: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}


class BuildOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    test_fraction: float | None = Field(
        default=None,
        ge=0,
        le=0.9,
        description="Share of subjects put in the test split (official test sets are always kept); "
        "default IMAGINGX_BUNDLE_TEST_FRACTION",
    )
    val_fraction: float = Field(default=0.0, ge=0, le=0.5, description="Share of subjects in validation")
    seed: str = Field(default="imagingx", min_length=1, max_length=64, description="Seed of the split hash")
    slices_2d: SliceAxis | None = Field(
        default=None, description="Also export 3D cases as 2D PNG slices along this axis"
    )
    skip_empty_slices: bool = Field(default=True, description="With slices_2d: drop slices without labels")
    max_subjects_per_dataset: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="At most this many subjects (patients) from each dataset whose source can sample them (IDC, "
        "TCIA): a deterministic sample (hash of the subject id with `seed`), so a larger cap takes a superset",
    )
    labelled_series_only: bool = Field(
        default=False,
        description="From DICOM sources (IDC, TCIA): only the segmentation and RTSTRUCT objects and the image "
        "series they label, not every series of every subject",
    )

    @model_validator(mode="after")
    def _fractions(self) -> "BuildOptions":
        if (self.test_fraction or 0) + self.val_fraction > 0.9:
            raise ValueError("test_fraction + val_fraction must leave at least 10 % for training")
        return self


class BundleRequest(BaseModel):
    """A bundle from a saved MDFP plan's final list or from an explicit list of dataset slugs."""

    model_config = ConfigDict(extra="forbid")

    plan_id: str | None = Field(
        default=None, max_length=32, description="A saved plan; its final list is used"
    )
    datasets: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_DATASETS,
        description="Dataset slugs, in the order to fuse them",
        examples=[["msd-liver", "ct-org"]],
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=80,
        pattern=r"^[\w][\w .()+-]*$",
        description="The bundle's name (letters, digits, spaces, `._()+-`); default from the plan or datasets",
    )
    options: BuildOptions = Field(default_factory=BuildOptions)

    @model_validator(mode="after")
    def _one_origin(self) -> "BundleRequest":
        if (self.plan_id is None) == (self.datasets is None):
            raise ValueError("give either plan_id or datasets")
        return self


class SourceProgress(BaseModel):
    slug: str
    name: str
    state: SourceState
    detail: str | None = Field(description="Why it failed, or for `manual` the step that gets the data")
    files: int
    bytes: int
    layout: str | None
    items_total: int
    items_done: int
    items_skipped: int


class SkippedItemOut(BaseModel):
    item_id: str
    source: str
    reason: str


class Progress(BaseModel):
    sources_total: int
    sources_finished: int
    items_total: int
    items_finished: int = Field(description="Items harmonised or skipped")
    fraction: float = Field(description="0..1, for a progress bar")


class BundleResult(BaseModel):
    items: int = Field(description="Items in the bundle (cases, images and 2D slices)")
    skipped: int
    files: int
    archive_bytes: int
    archive_sha256: str
    sha256sums_sha256: str = Field(
        description="sha256 of the bundle's SHA256SUMS: equal bundles, equal value"
    )


class BundleJobOut(BaseModel):
    id: str
    name: str
    state: JobState
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    plan_id: str | None
    request: BundleRequest
    progress: Progress
    sources: list[SourceProgress]
    skipped: list[SkippedItemOut] = Field(description=f"Items left out and why (first {SKIPPED_SHOWN})")
    warnings: list[str]
    error: str | None
    result: BundleResult | None
    status_url: str
    page_url: str
    download_url: str | None = Field(description="Set once the bundle is done")


class BundleJobSummary(BaseModel):
    id: str
    name: str
    state: JobState
    created_at: datetime
    finished_at: datetime | None
    progress: Progress
    status_url: str
    page_url: str


class BundleItemOut(BaseModel):
    item_id: str
    source: str
    state: ItemState
    reason: str | None


class BundleItemsPage(BaseModel):
    items: list[BundleItemOut]
    total: int
    next_url: str | None
