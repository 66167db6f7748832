"""Resolving the catalog's sources: every dataset gets how it is fetched, with provenance, before any job runs.

`resolve_sources` runs the rules (app/sources/rules.py) over every dataset and stores, per dataset: the fetch
method and its note, the source descriptor a worker will use, where that came from (rule, what matched, index
version, when), the facts the source states (IDC) and the licence the source states, with its origin.

What an operator set by hand wins: a descriptor set with `imagingx catalog set-source` (provenance `operator`)
is never replaced, and a licence is only written where none is recorded or where an earlier resolution wrote it.
The resolution is idempotent, and it is redone when the resolver or the IDC index changes (`sources_key`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.catalog.models import CatalogState, Dataset
from app.common.errors import InvalidInput
from app.sources.idc import index_version, load_entries
from app.sources.rules import CREDENTIAL_SETTINGS, DatasetKeys, IdcIndex, Resolution, resolve_dataset
from app.sources.schemas import (
    DatasetSource,
    FetchEntry,
    FetchMethod,
    FetchOverview,
    SourceProvenance,
    SourcesSummary,
)

# Bump when a rule changes what it resolves: the next start re-resolves every dataset.
RESOLVER_VERSION = "1"
OPERATOR = "operator"
# descriptor kinds that need the operator's account on the host
CREDENTIAL_KINDS = frozenset(CREDENTIAL_SETTINGS)


def sources_key() -> str:
    """What a resolution depends on besides the catalog: the rules' version and the IDC index's."""
    return f"resolver {RESOLVER_VERSION}; idc-index-data {index_version()}"


def _keys(row: Any) -> DatasetKeys:
    urls = [row.url or ""] + [str(r.get("url") or "") for r in row.raw_records or []]
    return DatasetKeys(
        row.slug,
        row.name,
        tuple(row.aliases or ()),
        tuple(dict.fromkeys(u for u in urls if u)),
        tuple(row.modalities or ()),
    )


def _values(resolution: Resolution, now: datetime) -> dict[str, Any]:
    index = (resolution.facts or {}).get("index")
    provenance = SourceProvenance(
        resolver=resolution.rule, matched=resolution.matched, index=index, resolved_at=now
    )
    return {
        "fetch_method": resolution.fetch.value,
        "fetch_note": resolution.note,
        "source": resolution.descriptor,
        "source_provenance": provenance.model_dump(mode="json"),
        "download_bytes": resolution.download_bytes,
    }


def resolve_sources(session: Session, *, only_if_changed: bool = False) -> SourcesSummary | None:
    """Resolve every dataset's source (module docstring), bumping the catalog version when anything changed;
    with `only_if_changed`, nothing happens (None) when the sources were last resolved with the same resolver
    and index versions."""
    state = session.get(CatalogState, 1, with_for_update=True)
    key = sources_key()
    if state is None or (only_if_changed and state.sources_key == key):
        return None
    idc = IdcIndex.build(load_entries())
    idc_version = index_version()
    now = datetime.now(UTC)
    columns = (
        Dataset.fetch_method,
        Dataset.fetch_note,
        Dataset.source,
        Dataset.source_provenance,
        Dataset.download_bytes,
        Dataset.source_facts,
        Dataset.licence,
        Dataset.licence_source,
    )
    keys = (Dataset.id, Dataset.slug, Dataset.name, Dataset.aliases, Dataset.url, Dataset.modalities)
    rows = session.execute(select(*keys, Dataset.raw_records, *columns)).all()
    changes = []
    for row in rows:
        resolution = resolve_dataset(_keys(row), idc, idc_version)
        values: dict[str, Any] = {"source_facts": resolution.facts}
        if (row.source_provenance or {}).get("resolver") != OPERATOR:
            values |= _values(resolution, now)
        # a licence the source states replaces only what an earlier resolution wrote, never a curated one
        if row.licence is None or row.licence_source is not None:
            values |= {"licence": resolution.licence, "licence_source": resolution.licence_source}
        if _changed(row, values):
            changes.append({"id": row.id, **values})
    if changes:
        session.execute(update(Dataset), changes)
        state.version += 1  # facets (fetch, licence) and pages change with them
    state.sources_key = key
    session.commit()
    return sources_summary(session)


def _changed(row: Any, values: dict[str, Any]) -> bool:
    """Whether the new values differ from the row's, ignoring when the provenance was written (a resolution
    that finds the same source again changes nothing, and leaves the catalog version alone)."""
    for column, value in values.items():
        current = getattr(row, column)
        if column == "source_provenance":
            current = {k: v for k, v in (current or {}).items() if k != "resolved_at"}
            value = {k: v for k, v in (value or {}).items() if k != "resolved_at"}
        if current != value:
            return True
    return False


def sources_summary(session: Session) -> SourcesSummary:
    """Counts by fetch method and by descriptor kind, licences known, and every non-automatic dataset with its
    reason (the note)."""
    rows = session.execute(
        select(
            Dataset.slug,
            Dataset.name,
            Dataset.fetch_method,
            Dataset.fetch_note,
            Dataset.source,
            Dataset.licence,
        ).order_by(Dataset.fetch_method, Dataset.slug)
    ).all()
    state = session.get(CatalogState, 1)
    counts = Counter(row.fetch_method for row in rows)
    return SourcesSummary(
        catalog_version=state.version if state else 0,
        resolved_with=(state.sources_key if state else None) or "not resolved yet",
        counts={method.value: counts.get(method.value, 0) for method in FetchMethod},
        by_kind=dict(Counter((row.source or {}).get("kind") or "none" for row in rows).most_common()),
        licences_known=sum(1 for row in rows if row.licence),
        unresolved=[
            {"slug": row.slug, "name": row.name, "fetch": row.fetch_method, "reason": row.fetch_note or ""}
            for row in rows
            if row.fetch_method != FetchMethod.automatic
        ],
    )


def set_operator_source(dataset: Dataset, descriptor: dict[str, Any] | None) -> None:
    """An operator's `set-source`: the descriptor wins over every rule from now on. With None, the hand-set
    descriptor goes and the rules decide again, at once. The caller validates and commits."""
    if descriptor is None:
        resolution = resolve_dataset(_keys(dataset), IdcIndex.build(load_entries()), index_version())
        values = _values(resolution, datetime.now(UTC))
    else:
        kind = str(descriptor.get("kind"))
        credentials = kind in CREDENTIAL_KINDS
        provenance = SourceProvenance(resolver=OPERATOR, matched=None, resolved_at=datetime.now(UTC))
        values = {
            "source": descriptor,
            "fetch_method": (FetchMethod.credentials if credentials else FetchMethod.automatic).value,
            "fetch_note": f"set by the operator ({kind})"
            + (f"; needs {CREDENTIAL_SETTINGS[kind]}" if credentials else ""),
            "source_provenance": provenance.model_dump(mode="json"),
            "download_bytes": None,
        }
    for column, value in values.items():
        setattr(dataset, column, value)


def dataset_source(dataset: Dataset) -> DatasetSource:
    """How one dataset will be fetched, for its page and its JSON twin."""
    provenance = dataset.source_provenance
    return DatasetSource(
        fetch=FetchMethod(dataset.fetch_method),
        note=dataset.fetch_note or "not resolved yet: run `imagingx catalog resolve-sources`",
        kind=(dataset.source or {}).get("kind"),
        descriptor=dataset.source,
        provenance=SourceProvenance.model_validate(provenance) if provenance else None,
        download_bytes=dataset.download_bytes,
        facts=dataset.source_facts,
        licence_source=dataset.licence_source,
    )


def fetch_overview_of(
    session: Session, slugs: Sequence[str], max_subjects: int | None = None
) -> FetchOverview:
    """fetch_overview() of the datasets with these slugs, in that order (one query)."""
    columns = (
        Dataset.slug,
        Dataset.name,
        Dataset.fetch_method,
        Dataset.fetch_note,
        Dataset.download_bytes,
        Dataset.source_facts["subjects"].as_integer().label("subjects"),
    )
    rows = {row.slug: row for row in session.execute(select(*columns).where(Dataset.slug.in_(list(slugs))))}
    return fetch_overview([rows[slug] for slug in slugs if slug in rows], max_subjects)


def estimate_fetch(session: Session, slugs: Sequence[str], max_subjects: int | None = None) -> FetchOverview:
    """fetch_overview_of() for slugs a client sent: each must be a catalog dataset, else a 422 naming them."""
    wanted = list(dict.fromkeys(s.strip() for s in slugs if s.strip()))
    known = set(session.scalars(select(Dataset.slug).where(Dataset.slug.in_(wanted)))) if wanted else set()
    unknown = [s for s in wanted if s not in known]
    if not wanted or unknown:
        raise InvalidInput(
            ["query", "d"], f"unknown datasets: {', '.join(unknown)}" if unknown else "no dataset"
        )
    return fetch_overview_of(session, wanted, max_subjects)


def fetch_overview(datasets: Sequence[Any], max_subjects: int | None = None) -> FetchOverview:
    """How a bundle of these datasets would fetch each one, with the estimated download (selection and plan
    pages, the selection's JSON, and the build form's warning when nothing can be fetched). With
    `max_subjects`, a source that states its subjects (IDC) is estimated at its share: bytes x cap / subjects;
    the others are taken whole."""
    entries = []
    for d in datasets:
        size, subjects = d.download_bytes, getattr(d, "subjects", None)
        if size is not None and subjects and max_subjects and max_subjects < subjects:
            size = round(size * max_subjects / subjects)
        entries.append(
            FetchEntry(
                slug=d.slug,
                name=d.name,
                fetch=FetchMethod(d.fetch_method),
                note=d.fetch_note or "",
                download_bytes=size,
                subjects=subjects,
            )
        )
    fetchable = [e for e in entries if e.fetch is not FetchMethod.manual]
    counts = Counter(e.fetch.value for e in entries)
    return FetchOverview(
        counts={method.value: counts.get(method.value, 0) for method in FetchMethod},
        download_bytes=sum(e.download_bytes or 0 for e in fetchable),
        sizes_unknown=sum(1 for e in fetchable if e.download_bytes is None),
        can_fetch=bool(fetchable),
        max_subjects=max_subjects,
        datasets=entries,
    )
