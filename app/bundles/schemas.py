"""JSON shapes of bundle jobs: what a client submits and the status it polls."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from app.common.jobs import BuildOptions, ItemStage, ItemState, JobState, SourceState
from app.core.envelope import Ok
from app.core.urls import urls

MAX_DATASETS = 1000  # as many as a selection holds
SKIPPED_SHOWN = 100  # skipped items a job's status lists (all of them: GET .../items?state=skipped)


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
    items_skipped: int = Field(description="Skipped at any stage (once the job is done, packaging's too)")


class SkippedItemOut(BaseModel):
    item_id: str = Field(
        description="The item's id in the bundle; for a file no case used, `<source>/unused/<file>`"
    )
    source: str
    stage: ItemStage | None = Field(
        default=None,
        description="Where it was left out: fetch, unpack, read, harmonise, deduplicate, package",
    )
    file: str = Field(default="", description="The file relative to its source")
    reason: str


class Progress(BaseModel):
    sources_total: int
    sources_finished: int
    items_total: int
    items_finished: int = Field(description="Items harmonised or skipped")
    fraction: float = Field(description="0..1, for a progress bar")


class BundleResult(BaseModel):
    """What a finished bundle holds: its counts are the bundle's own (report.json `counts`, the datacard).

    The bundle's manifest (manifest.parquet / .csv) has one row per item. Axis orders differ by column, as
    in the files: `spacing` is in index order fastest axis first, (x, y, z) for 3D and (x, y) for 2D, in mm,
    as NIfTI's pixdim and ITK's GetSpacing give it; `shape` is in array order slowest axis first, (z, y, x)
    for 3D and (y, x) or (y, x, 3) for 2D, as numpy and SimpleITK's GetArrayFromImage give it (nibabel's
    `img.shape` is (x, y, z)). 3D images are reoriented to RAS: x runs towards the patient's Right, y
    Anterior, z Superior. The bundle's README.md describes every column."""

    items: int = Field(description="Items in the bundle (cases, images and 2D slices)")
    skipped: int = Field(
        description="Items left out at any stage (sources that could not be fetched are counted apart)"
    )
    skipped_by_stage: dict[str, int] = Field(default_factory=dict, description="`skipped` per stage")
    sources_not_fetched: int = Field(default=0, description="Sources left out whole")
    altered: int = Field(
        default=0,
        description="Items packaged after a change beyond the reorientation to RAS (see report.json)",
    )
    nnunet_ids: list[int] = Field(
        default_factory=list, description="The nnU-Net dataset ids of the bundle's nnU-Net datasets"
    )
    files: int
    archive_bytes: int
    archive_sha256: str
    sha256sums_sha256: str = Field(
        description="sha256 of the bundle's SHA256SUMS: equal bundles, equal value"
    )


class JobLinks(BaseModel):
    """A job's id and where it is followed; the links follow from the id, made by the one URL builder (never by
    the service)."""

    id: str

    @computed_field(description="This job's status in JSON")  # type: ignore[prop-decorator]
    @property
    def status_url(self) -> str:
        return urls.bundle(self.id)

    @computed_field(description="This job's page")  # type: ignore[prop-decorator]
    @property
    def page_url(self) -> str:
        return urls.page_bundle(self.id)


class BundleJobOut(Ok, JobLinks):
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

    @computed_field(description="The bundle as one tar, once the job is done")  # type: ignore[prop-decorator]
    @property
    def download_url(self) -> str | None:
        return urls.bundle_download(self.id) if self.state == JobState.done else None


class BundleJobSummary(JobLinks):
    name: str
    state: JobState
    created_at: datetime
    finished_at: datetime | None
    progress: Progress


class BundleJobList(Ok):
    count: int
    results: list[BundleJobSummary] = Field(description="Newest first")


class BundleItemOut(BaseModel):
    item_id: str
    source: str
    state: ItemState
    stage: ItemStage | None = Field(default=None, description="For a skipped item, where it was left out")
    reason: str | None


class BundleItemsPage(Ok):
    items: list[BundleItemOut]
    total: int
    next_url: str | None
