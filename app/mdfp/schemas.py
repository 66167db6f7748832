"""The MDFP rule spec (what a user asks for) and the JSON shapes of a plan (what the planner answers).

Vocabulary values accept any spelling the vocabularies know (ids, labels, synonyms, any case) and are stored
canonical, deduplicated and in vocabulary order, so that two spellings of the same request are the same spec
and give the same plan. Unknown keys are rejected everywhere: a misspelt rule must not be silently ignored.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator
from pydantic_core import PydanticCustomError

from app.common.vocabularies import ALL
from app.core.envelope import Ok

STRICT = ConfigDict(extra="forbid")
# The spec's numbers and switches take JSON's own types only (StrictInt, StrictBool): pydantic's lax mode would
# read `true` as 1, 1.0 as 1 and "0" as False, so a typo'd spec would plan something else than it says. The
# planner form's quick filters send text, and are validated with strict=False (app/mdfp/pages.py).


def _vocabulary_value(kind: str) -> Callable[[str], str]:
    vocabulary = ALL[kind]

    def resolve(value: str) -> str:
        resolved = vocabulary.resolve(value)
        if resolved is None:
            allowed = ", ".join(vocabulary.ids)
            raise PydanticCustomError(
                "vocabulary",
                f"unknown {kind} {value!r}; allowed values: {allowed} (synonyms and any case accepted)",
            )
        return resolved

    return resolve


def _allowed(kind: str) -> str:
    return ", ".join(ALL[kind].ids)


def _canonical_order(kind: str) -> Callable[[list[str] | None], list[str] | None]:
    order = {term_id: i for i, term_id in enumerate(ALL[kind].ids)}

    def canonical(values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        return sorted(set(values), key=order.__getitem__)

    return canonical


Modality = Annotated[str, AfterValidator(_vocabulary_value("modality"))]
Task = Annotated[str, AfterValidator(_vocabulary_value("task"))]
Dim = Annotated[str, AfterValidator(_vocabulary_value("dim"))]
Anatomy = Annotated[str, AfterValidator(_vocabulary_value("anatomy"))]
Licence = Annotated[str, AfterValidator(_vocabulary_value("licence"))]
Access = Annotated[str, AfterValidator(_vocabulary_value("access"))]


class SelectionSpec(BaseModel):
    """Constraints on the final choice, applied after the per-dataset rules (only when `enable` is true)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"enable": True, "min_datasets_per_modality": 3}]},
    )

    enable: StrictBool = Field(default=False, description="Apply the constraints below")
    min_datasets_per_modality: StrictInt | None = Field(
        default=None,
        ge=0,
        description="A target modality with fewer eligible datasets is dropped (its datasets are rejected "
        "unless another kept modality holds them)",
    )
    min_orgs_per_modality: StrictInt | None = Field(
        default=None,
        ge=0,
        description="A target modality whose datasets come from fewer organisations is dropped. Unknown "
        "organisations are never assumed: when they make the check undecidable the modality is kept and "
        "marked unverified",
    )
    max_datasets: StrictInt | None = Field(
        default=None, ge=1, description="Keep at most this many datasets (best ranked first)"
    )
    max_total_images: StrictInt | None = Field(
        default=None,
        ge=1,
        description="Keep adding datasets (best ranked first) while the summed image count stays within "
        "this; datasets with an unknown count cannot be counted and are left out",
    )


class PlanSpec(BaseModel):
    """An MDFP goal refined into rules (the table of rules: docs/mdfp.md)."""

    model_config = ConfigDict(
        extra="forbid",
        title="MDFP plan spec",
        json_schema_extra={
            "examples": [
                {
                    "goal": "Pretrain a 2D medical foundation model over modalities [CT, MR, Fundus]",
                    "target_modalities": ["CT", "MRI", "fundus"],
                    "target_task_types": ["classification", "segmentation", "detection", "regression"],
                    "target_dims": ["2D"],
                    "allow_3d_as_2d_sources": True,
                    "min_valid_images_per_dataset": 100,
                }
            ]
        },
    )

    goal: str = Field(default="", max_length=1000, description="The goal in plain words")
    target_modalities: list[Modality] = Field(
        default_factory=list,
        max_length=50,
        description=f"Modalities wanted; empty = every modality. One of {_allowed('modality')} "
        "(synonyms such as MRI or fundus photo accepted, any case)",
    )
    target_task_types: list[Task] = Field(
        default_factory=list,
        max_length=50,
        description=f"A dataset must have at least one of these tasks; empty = any. One of {_allowed('task')}",
    )
    target_dims: list[Dim] = Field(
        default_factory=list,
        max_length=10,
        description=f"A dataset must have one of these dimensionalities; empty = any. One of {_allowed('dim')}",
    )
    allow_3d_as_2d_sources: StrictBool = Field(
        default=False, description="3D volumes may feed a 2D goal (sliced): they pass a target_dims of 2D"
    )
    anatomy_whitelist: list[Anatomy] | None = Field(
        default=None,
        max_length=100,
        description="Only these regions, hierarchy-aware (thorax admits lung and heart datasets); "
        "null or empty = any",
    )
    licence_allowlist: list[Licence] | None = Field(
        default=None,
        max_length=50,
        description="Only these licences; null or empty = any. An unknown licence is not assumed to be "
        "allowed: list 'unknown' to admit datasets whose licence the catalog does not record. "
        f"One of {_allowed('licence')}",
    )
    access_allowlist: list[Access] | None = Field(
        default=None,
        max_length=10,
        description=f"Only these access modes; null or empty = any. One of {_allowed('access')}",
    )
    include_unlabeled: StrictBool = Field(
        default=True, description="Unlabeled datasets (and datasets whose label status is unknown) may enter"
    )
    prefer_labeled: StrictBool = Field(
        default=True,
        description="Labeled datasets rank first when a cap (max_datasets, max_total_images) bites",
    )
    min_valid_images_per_dataset: StrictInt = Field(
        default=0,
        ge=0,
        description="Drop datasets with fewer images (or cases, as the survey counts them); a dataset with "
        "an unknown count is dropped when this is above 0",
    )
    release_year_min: StrictInt | None = Field(
        default=None,
        ge=1900,
        le=2100,
        description="Drop datasets released before this year (or of unknown year)",
    )
    selection: SelectionSpec = Field(default_factory=SelectionSpec)

    @field_validator("target_modalities")
    @classmethod
    def _modalities(cls, values: list[str]) -> list[str]:
        return _canonical_order("modality")(values) or []

    @field_validator("target_task_types")
    @classmethod
    def _tasks(cls, values: list[str]) -> list[str]:
        return _canonical_order("task")(values) or []

    @field_validator("target_dims")
    @classmethod
    def _dims(cls, values: list[str]) -> list[str]:
        return _canonical_order("dim")(values) or []

    @field_validator("anatomy_whitelist")
    @classmethod
    def _anatomy(cls, values: list[str] | None) -> list[str] | None:
        return _canonical_order("anatomy")(values) or None

    @field_validator("licence_allowlist")
    @classmethod
    def _licence(cls, values: list[str] | None) -> list[str] | None:
        return _canonical_order("licence")(values) or None

    @field_validator("access_allowlist")
    @classmethod
    def _access(cls, values: list[str] | None) -> list[str] | None:
        return _canonical_order("access")(values) or None


class PlanRequest(BaseModel):
    model_config = STRICT

    spec: PlanSpec


# -- what a plan looks like ------------------------------------------------------------------------------------
class Column(BaseModel):
    key: str
    label: str
    kind: Literal["text", "int", "ratio", "list", "dataset", "bool", "notes"] = "text"


class Table(BaseModel):
    """A table of a phase. `columns` are the ones to show. Rows are objects keyed by field, except when
    `fields` is set (the final and the rejected lists, one row per dataset): then each row is an array of
    those fields, in that order, as in Datasette's `columns` + `rows` shape. `total_rows` counts them all."""

    id: str
    title: str
    columns: list[Column]
    fields: list[str] | None = None
    rows: list[dict[str, Any]] | list[list[Any]]
    total_rows: int
    note: str | None = None


class Series(BaseModel):
    name: str
    values: list[float | int | None]
    stack: str | None = None


class Chart(BaseModel):
    """Chart data, independent of the drawing library: categories along one axis, one or more series."""

    id: str
    title: str
    kind: Literal["bar", "stacked_bar", "grouped_bar", "pie", "horizontal_bar"]
    categories: list[str]
    series: list[Series]
    value_label: str
    note: str | None = None


class Fact(BaseModel):
    label: str
    value: int | float | str


class Phase(BaseModel):
    number: int
    id: Literal["harmonisation", "alignment", "blueprint", "indexing"]
    name: str
    description: str
    facts: list[Fact]
    tables: list[Table]
    charts: list[Chart]
    notes: list[str] = Field(default_factory=list)


class SummaryRow(BaseModel):
    """One row of the curated summary table (the survey's columns, plus the unknowns that qualify them)."""

    modality: str
    label: str
    n_datasets: int
    sum_images: int = Field(description="Summed image (or case) counts of the datasets whose count is known")
    images_unknown: int = Field(description="Datasets of this row whose image count is unknown")
    n_orgs: int = Field(description="Distinct known organisations")
    orgs_unknown: int = Field(description="Datasets of this row whose organisation is unknown")
    labeled_ratio: float | None = Field(description="Labeled datasets / datasets with a known label status")
    labeled: int
    labels_unknown: int
    shared: int = Field(description="Datasets of this row also counted in another row (several modalities)")
    status: Literal["kept", "dropped", "unverified"] = "kept"


class PlanOut(Ok):
    id: str
    url: str
    api_url: str
    catalog_version: int
    created_at: datetime | None
    spec: PlanSpec
    phases: list[Phase]
    summary: list[SummaryRow]


class Preset(BaseModel):
    id: str
    title: str
    description: str
    spec: PlanSpec


class PresetList(Ok):
    count: int
    results: list[Preset]
