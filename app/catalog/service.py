"""Catalog operations: reading datasets (and the slugs merged into them) and vocabularies, the catalog version.
Importing a catalog file is app/catalog/imports.py, re-exported here."""

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, event, select, text
from sqlalchemy.orm import Session

from app.catalog.imports import (
    IMPORTED_COLUMNS as IMPORTED_COLUMNS,
)
from app.catalog.imports import (
    ImportSummary as ImportSummary,
)
from app.catalog.imports import (
    import_catalog as import_catalog,
)
from app.catalog.imports import (
    locked_state,
)
from app.catalog.imports import (
    sync_vocabularies as sync_vocabularies,
)
from app.catalog.models import CatalogState, Dataset, DatasetRedirect, Vocabulary
from app.catalog.schemas import (
    Contradiction,
    DatasetDetail,
    DatasetPart,
    DatasetSummary,
    MergeReason,
    NormalisationNote,
    QualityFlag,
    RelatedDataset,
)
from app.common.descriptors import SourceError, parse_source
from app.common.errors import InvalidInput, NotFound
from app.common.vocabularies import ALL, HOST
from app.core.cache import on_forget
from app.core.urls import urls
from app.sources.service import dataset_source, set_operator_source

# the name the catalog state's lock had before importing moved to app/catalog/imports.py (tests use it)
_state = locked_state


def catalog_is_empty(session: Session) -> bool:
    return session.execute(select(Dataset.id).limit(1)).first() is None


# Every search, page and plan reads the catalog version, so it is read from the database at most once per
# CATALOG_VERSION_TTL seconds per process and database: a change committed by another process (an import run
# from the command line) shows within that time, one committed in this process at once (see below).
CATALOG_VERSION_TTL = 1.0
_versions: dict[Any, tuple[float, int]] = {}


def catalog_version(session: Session) -> int:
    """The catalog's version number (bumped by every change that can alter search results)."""
    key = session.get_bind().engine.url  # a session may be bound to a Connection, which has no .url
    now = time.monotonic()
    cached = _versions.get(key)
    if cached is not None and now - cached[0] < CATALOG_VERSION_TTL:
        return cached[1]
    version: int = session.execute(text("SELECT coalesce(max(version), 0) FROM catalog_state")).scalar_one()
    _versions[key] = (now, version)
    return version


def catalog_key(session: Session) -> tuple[Any, int]:
    """(database, catalog version): what every answer derived from the catalog alone depends on, and so the
    key of every cache of such answers."""
    return session.get_bind().engine.url, catalog_version(session)


@on_forget
def forget_catalog_version() -> None:
    """Read the version from the database on next use (after a change made behind the ORM's back)."""
    _versions.clear()


@event.listens_for(Session, "after_flush")
def _note_catalog_change(session: Session, _context: Any) -> None:
    if any(isinstance(obj, CatalogState) for obj in (*session.new, *session.dirty)):
        session.info["catalog_changed"] = True


@event.listens_for(Session, "after_commit")
def _forget_version_after_change(session: Session) -> None:
    if session.info.pop("catalog_changed", False):
        forget_catalog_version()


def get_dataset(session: Session, slug: str) -> Dataset:
    dataset = session.execute(select(Dataset).where(Dataset.slug == slug)).scalar_one_or_none()
    if dataset is None:
        raise NotFound(f"dataset {slug!r}")
    return dataset


def canonical_slug(session: Session, slug: str) -> str | None:
    """The slug that names this dataset now: the slug itself for a record, the merged record's for a slug
    that was merged into another (see `dataset_redirect`), None for a slug that never named a dataset."""
    if session.execute(select(Dataset.id).where(Dataset.slug == slug)).first() is not None:
        return slug
    target: str | None = session.execute(
        select(DatasetRedirect.slug).where(DatasetRedirect.old_slug == slug)
    ).scalar_one_or_none()
    return target


def canonical_slugs(session: Session, slugs: Sequence[str]) -> dict[str, str]:
    """`canonical_slug` for many slugs in two queries: each slug that names a dataset now or was merged into one,
    mapped to the slug of that dataset (stored lists of slugs, such as selections and plans, read through it)."""
    wanted = list(dict.fromkeys(slugs))
    if not wanted:
        return {}
    found = {s: s for s in session.scalars(select(Dataset.slug).where(Dataset.slug.in_(wanted)))}
    missing = [s for s in wanted if s not in found]
    if missing:
        rows = session.execute(
            select(DatasetRedirect.old_slug, DatasetRedirect.slug).where(
                DatasetRedirect.old_slug.in_(missing)
            )
        )
        found.update({old: new for old, new in rows})
    return found


def moved_to(session: Session, slug: str) -> str | None:
    """The slug a request for `slug` should be redirected to, or None when it should be answered as asked
    (a record, or an unknown slug, which gets its 404)."""
    target = canonical_slug(session, slug)
    return target if target is not None and target != slug else None


def related_datasets(session: Session, dataset: Dataset) -> dict[str, list[tuple[str, str]]]:
    """Other entries with the same name (variants) and other datasets listed at the same URL."""
    variants: Sequence[Row[str, str]] = []
    if dataset.variant_group:
        variants = session.execute(
            select(Dataset.slug, Dataset.name)
            .where(Dataset.variant_group == dataset.variant_group, Dataset.id != dataset.id)
            .order_by(Dataset.slug)
        ).all()
    same_url: Sequence[Row[str, str]] = []
    if dataset.url:
        same_url = session.execute(
            select(Dataset.slug, Dataset.name)
            .where(Dataset.url == dataset.url, Dataset.id != dataset.id)
            .order_by(Dataset.name)
            .limit(50)
        ).all()
    return {
        "variants": [(s, n) for s, n in variants],
        "same_url": [(s, n) for s, n in same_url],
    }


def list_vocabularies(session: Session, kind: str | None = None) -> list[Vocabulary]:
    query = select(Vocabulary).order_by(Vocabulary.kind, Vocabulary.position)
    if kind is not None:
        if kind not in ALL:
            raise NotFound(f"vocabulary {kind!r}")
        query = query.where(Vocabulary.kind == kind)
    return list(session.execute(query).scalars())


_HOST_STEPS = {
    "tcia": "Download with the NBIA Data Retriever or the TCIA REST API (a .tcia manifest from the collection "
    "page); some collections need a signed data use agreement first.",
    "kaggle": "Sign in to Kaggle, accept the dataset or competition rules, then download from the page or with "
    "`kaggle datasets download` / `kaggle competitions download` and your API token.",
    "grand_challenge": "Create a Grand Challenge account and join the challenge; data links appear on the "
    "challenge's data page once your request is accepted.",
    "synapse": "Register on Synapse, accept the project's conditions of use, then download with the Synapse "
    "client (`synapse get`).",
    "tianchi": "Sign in to Aliyun Tianchi (a phone number is needed) and accept the dataset terms.",
    "physionet": "Create a PhysioNet account; credentialed datasets also need the CITI training and a signed "
    "data use agreement.",
    "openneuro": "Open data: download with the OpenNeuro CLI, DataLad, or from the public S3 bucket.",
    "zenodo": "Open record: download the files listed on the Zenodo record (each has an md5 checksum).",
    "huggingface": "Download with `huggingface-cli download` or the `datasets` library; gated repos need you to "
    "accept terms while signed in.",
    "github": "Clone the repository or download its release assets; large files may sit behind links in the "
    "README.",
    "figshare": "Download the files from the figshare item (md5 checksums are listed).",
    "mendeley": "Download the files from the Mendeley Data page (no account needed for public datasets).",
}

_ACCESS_STEPS = {
    "open": "Download directly from the landing page.",
    "registration": "Create an account on the host and accept its terms before downloading.",
    "application": "Apply to the data owner (usually a data use agreement reviewed by a committee) and wait "
    "for approval before any download.",
    "unknown": "The survey could not tell how access works: open the landing page to find out.",
}


def access_next_step(dataset: Dataset) -> str:
    """What a user must do to get the data, in concrete terms for the host it lives on."""
    if not dataset.url:
        return "No landing page is recorded: search for the dataset's paper to find where it is published."
    host_step = _HOST_STEPS.get(dataset.host)
    access_step = _ACCESS_STEPS.get(dataset.access, _ACCESS_STEPS["unknown"])
    return f"{access_step} {host_step}" if host_step else access_step


def host_label(host_id: str) -> str:
    return HOST.term(host_id).label if host_id in HOST else host_id


def dataset_json_ld(dataset: Dataset, page_url: str) -> dict[str, Any]:
    """schema.org Dataset description for the dataset page's <head> (search engines and crawlers read it)."""
    data: dict[str, Any] = {
        "@context": "https://schema.org",
        "@type": "Dataset",
        "name": dataset.name,
        "url": page_url,
        "identifier": dataset.slug,
        "description": describe(dataset),
        "keywords": [*dataset.modalities, *dataset.anatomies, *dataset.tasks, *dataset.diseases],
        "isAccessibleForFree": dataset.access == "open",
        "includedInDataCatalog": {"@type": "DataCatalog", "name": "Imaging-X Portal"},
    }
    if dataset.url:
        data["sameAs"] = dataset.url
    if dataset.aliases:
        data["alternateName"] = dataset.aliases
    if dataset.year:
        data["datePublished"] = str(dataset.year)
    if dataset.licence:
        data["license"] = f"https://spdx.org/licenses/{dataset.licence}.html"
    if dataset.images is not None:
        data["size"] = f"{dataset.images} images or cases"
    return data


def describe(dataset: Dataset) -> str:
    """One sentence a person can read: '3D CT segmentation dataset of the liver, 131 cases, 2017.'"""
    parts = [
        "/".join(dataset.dims) or None,
        "/".join(ALL["modality"].term(m).label for m in dataset.modalities) or None,
        "/".join(dataset.tasks) or None,
        "dataset",
    ]
    sentence = " ".join(p for p in parts if p)
    if dataset.anatomies:
        sentence += " of the " + ", ".join(ALL["anatomy"].term(a).label.lower() for a in dataset.anatomies)
    if dataset.images is not None:
        sentence += f", {dataset.images:,} images or cases"
    if dataset.year:
        sentence += f", {dataset.year}"
    return sentence[0].upper() + sentence[1:] + "."


def dataset_detail(session: Session, slug: str) -> DatasetDetail:
    """Everything the dataset page and its JSON twin show."""
    version = catalog_version(session)
    dataset = get_dataset(session, slug)
    related = related_datasets(session, dataset)
    quality = ALL["quality"]
    return DatasetDetail(
        **summarise(dataset).model_dump(),
        aliases=dataset.aliases,
        section=dataset.section,
        anatomy_closure=dataset.anatomy_closure,
        organisation=dataset.organisation,
        formats=dataset.formats,
        size_bucket=dataset.size_bucket,
        flags=[
            QualityFlag(id=f, label=quality.term(f).label, description=quality.term(f).description)
            for f in dataset.quality_flags
            if f in quality
        ],
        access_next_step=access_next_step(dataset),
        source=dataset_source(dataset),
        automated_source=(dataset.source or {}).get("kind"),
        description=describe(dataset),
        variants=[RelatedDataset(slug=s, name=n) for s, n in related["variants"]],
        parts=[DatasetPart.model_validate(p) for p in dataset.parts],
        contradictions=[Contradiction.model_validate(c) for c in dataset.contradictions],
        notes=[NormalisationNote.model_validate(n) for n in dataset.notes],
        merge_reasons=[MergeReason.model_validate(m) for m in dataset.merge_reasons],
        same_url=[RelatedDataset(slug=s, name=n) for s, n in related["same_url"]],
        raw_records=dataset.raw_records,
        json_ld=dataset_json_ld(dataset, urls.page_dataset(dataset.slug)),
        catalog_version=version,
    )


# The columns summarise() reads, so that lists can select just these.
SUMMARY_COLUMNS = (
    Dataset.slug, Dataset.name, Dataset.url, Dataset.year, Dataset.dims, Dataset.modalities, Dataset.anatomies,
    Dataset.tasks, Dataset.diseases, Dataset.labeled, Dataset.access, Dataset.host, Dataset.licence,
    Dataset.fetch_method, Dataset.images, Dataset.quality_flags, Dataset.completeness,
)  # fmt: skip


def summarise(row: Dataset) -> DatasetSummary:
    return DatasetSummary(
        slug=row.slug,
        name=row.name,
        url=row.url,
        year=row.year,
        dims=row.dims,
        modalities=row.modalities,
        anatomies=row.anatomies,
        tasks=row.tasks,
        diseases=row.diseases,
        labeled=row.labeled,
        access=row.access,
        host=row.host,
        licence=row.licence,
        fetch=row.fetch_method,
        images=row.images,
        quality_flags=row.quality_flags,
        completeness=row.completeness,
    )


def set_source(session: Session, slug: str, descriptor: Any | None) -> Dataset:
    """Attach (or with None, remove) the source descriptor that lets workers fetch a dataset automatically.

    The descriptor is validated first (app/common/descriptors.py); an invalid one is a 422 listing every
    problem, and the dataset keeps its previous source. Re-imports of the catalog and re-resolutions of the
    sources leave a descriptor set here alone (its provenance is `operator`); removing it hands the dataset
    back to the rules (app/sources), which decide its source again at once."""
    dataset = get_dataset(session, slug)
    if descriptor is not None:
        try:
            parsed = parse_source(descriptor)
        except SourceError as error:
            raise InvalidInput(["source"], str(error)) from error
        descriptor = parsed.model_dump(mode="json", exclude_defaults=False)
    set_operator_source(dataset, descriptor)
    locked_state(session).version += 1  # the fetch facet's counts change with it
    session.commit()
    return dataset
