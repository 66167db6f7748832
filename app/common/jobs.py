"""What a bundle job is made of, shared by the web side (which records and shows it) and the workers (which
advance it): the states of a job, of its sources and of its items, and the build options a request gives."""

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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


class ItemStage(StrEnum):
    """Where in a build an item was skipped or altered: the bundle's report groups its account by stage."""

    fetch = "fetch"  # the download (or the host) failed
    unpack = "unpack"  # the archive or folder could not be opened safely
    read = "read"  # the file could not be read as an image (truncated, corrupt, a localizer, a gappy series)
    harmonise = "harmonise"  # read, but refused or changed while harmonising (grid, orientation, labels)
    deduplicate = "deduplicate"  # the same voxels as an item already kept
    package = "package"  # refused while writing the bundle


class AlterationKind(StrEnum):
    """How harmonising changed an item beyond the lossless reorientation to RAS that every 3D case gets."""

    resampled = "resampled"
    cast = "cast"
    rescaled = "rescaled"
    relabelled = "relabelled"
    reoriented = "reoriented"  # beyond RAS: axes swapped or flipped where the closest canonical was not exact


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

    resample_mismatched_labels: bool = Field(
        default=False,
        description="A label whose grid (size, spacing, origin, direction) differs from its image's is refused "
        "(the item is skipped, saying why) unless this is set; then it is resampled onto the image's grid by "
        "nearest neighbour and the item records a `resampled` alteration",
    )

    nnunet_dataset_id: int | None = Field(
        default=None,
        ge=1,
        le=999,
        description="The bundle's nnU-Net dataset id (nnU-Net's rule: three digits, 1..999; its authors keep "
        "500 and above for people's own datasets). A bundle with several modalities numbers its other datasets "
        "with the next ids its owner's other bundles do not use. Default: the smallest id from 500 up that none "
        "of the same owner's bundles uses, so their datasets can share one nnUNet_raw folder",
    )

    @model_validator(mode="after")
    def _fractions(self) -> "BuildOptions":
        if (self.test_fraction or 0) + self.val_fraction > 0.9:
            raise ValueError("test_fraction + val_fraction must leave at least 10 % for training")
        return self
