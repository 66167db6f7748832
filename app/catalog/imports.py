"""Importing a catalog file into the database: datasets, the redirects of merged slugs, vocabularies, the
catalog version and the import report. The plan itself (what the file says) is app/catalog/importer.py."""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.catalog.importer import SEED_FILE, ImportPlan, load_rows, plan_import
from app.catalog.models import CatalogState, Dataset, DatasetRedirect, Vocabulary
from app.common.vocabularies import ALL
from app.sources.service import resolve_sources

# Columns the importer owns. Everything else (source descriptor, licence, organisation, formats) may have been
# curated by hand and survives a re-import.
IMPORTED_COLUMNS = (
    "name", "aliases", "url", "host", "section", "year", "dims", "modalities", "anatomies", "anatomy_closure",
    "tasks", "diseases", "labeled", "access", "images", "size_bucket", "quality_flags", "completeness",
    "variant_group", "raw_records", "search_document", "parts", "contradictions", "notes", "merge_reasons",
)  # fmt: skip


@dataclass
class ImportSummary:
    rows: int
    text_distinct: int
    datasets: int
    created: int
    updated: int
    unchanged: int
    removed: int
    catalog_version: int
    parts: int = 0
    redirects: int = 0
    flags: dict[str, int] = field(default_factory=dict)
    unmatched: dict[str, dict[str, int]] = field(default_factory=dict)
    merges_by_rule: dict[str, int] = field(default_factory=dict)
    merge_lines: list[str] = field(default_factory=list)
    decisions: dict[str, int] = field(default_factory=dict)
    inferred_anatomy: int = 0

    def as_lines(self) -> list[str]:
        merged = len(self.merge_lines)
        lines = [
            f"{self.rows} rows read; {self.text_distinct} distinct as written; {self.parts} records once each "
            f"fact is normalised; {self.datasets} datasets once the records of one real dataset are merged",
            f"{merged} datasets merged from {self.parts - self.datasets + merged} records; by rule (a dataset "
            "may be merged by several): "
            + (", ".join(f"{rule} {n}" for rule, n in sorted(self.merges_by_rule.items())) or "none"),
            f"{self.redirects} old slugs redirect to the dataset they were merged into",
            f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.removed} removed (no longer in the file); "
            f"catalog version {self.catalog_version}",
            f"{self.inferred_anatomy} datasets without an anatomy took the body part their name states",
        ]
        lines += [f"{n} x {kind}" for kind, n in sorted(self.decisions.items(), key=lambda i: (-i[1], i[0]))]
        lines += [f"merged {line}" for line in self.merge_lines]
        lines += [f"flag {name}: {count}" for name, count in sorted(self.flags.items(), key=lambda i: -i[1])]
        for key, parts in self.unmatched.items():
            shown = ", ".join(f"{part!r} x{n}" for part, n in parts.items())
            lines.append(f"not in the {key} vocabulary (kept in the raw record): {shown}")
        return lines


def sync_vocabularies(session: Session) -> None:
    """Write the vocabulary tables into the database (parents first, so the foreign key holds)."""
    for vocabulary in ALL.values():
        for position, term in enumerate(vocabulary.terms):
            row = {
                "kind": vocabulary.kind,
                "id": term.id,
                "label": term.label,
                "synonyms": list(term.synonyms),
                "parent_id": term.parent,
                "code": term.code,
                "code_system": term.code_system,
                "description": term.description,
                "position": position,
            }
            statement = insert(Vocabulary).values(**row)
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["kind", "id"],
                    set_={k: v for k, v in row.items() if k not in ("kind", "id")},
                )
            )


def import_catalog(session: Session, path: Path | None = None) -> ImportSummary:
    """Import (or re-import) a survey-format catalog file. Idempotent: slugs are derived from the facts."""
    path = path or SEED_FILE
    plan: ImportPlan = plan_import(load_rows(path))
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    # one transaction, without the search statement timeout: a bulk import on a busy machine may take longer
    # than any search is allowed to
    session.execute(text("SET LOCAL statement_timeout = 0"))
    sync_vocabularies(session)

    existing = {
        row.slug: row
        for row in session.execute(select(Dataset.slug, *[getattr(Dataset, c) for c in IMPORTED_COLUMNS]))
    }
    created = updated = unchanged = 0
    for record in plan.records:
        current = existing.get(record.slug)
        if current is None:
            session.add(Dataset(**record.values))
            created += 1
        elif any(getattr(current, c) != record.values[c] for c in IMPORTED_COLUMNS):
            session.execute(
                Dataset.__table__.update()
                .where(Dataset.slug == record.slug)
                .values(**{c: record.values[c] for c in IMPORTED_COLUMNS}, updated_at=func.now())
            )
            updated += 1
        else:
            unchanged += 1
    # Datasets the file no longer states (e.g. a fixed URL gave a variant a new slug) leave the catalog, and
    # the summary says how many: the file is the source of truth for imported datasets.
    stale = set(existing) - {record.slug for record in plan.records}
    if stale:
        session.flush()
        _carry_curated(session, plan, stale)
        session.execute(Dataset.__table__.delete().where(Dataset.slug.in_(stale)))
    redirects_changed = _write_redirects(session, plan)
    session.flush()

    state = locked_state(session)
    if created or updated or stale or redirects_changed:
        state.version += 1
    state.source_sha256 = sha256
    summary = ImportSummary(
        rows=plan.rows,
        text_distinct=plan.text_distinct,
        datasets=len(plan.records),
        created=created,
        updated=updated,
        unchanged=unchanged,
        removed=len(stale),
        catalog_version=state.version,
        parts=plan.parts,
        redirects=len(plan.redirects),
        flags=dict(plan.flags),
        unmatched={k: dict(v) for k, v in plan.unmatched.items()},
        merges_by_rule=dict(plan.merges_by_rule),
        merge_lines=plan.merge_lines,
        decisions={**plan.modality_notes, **plan.task_notes},
        inferred_anatomy=plan.inferred_anatomy,
    )
    state.summary = {k: v for k, v in summary.__dict__.items()}
    session.commit()
    # new and changed datasets get their sources now (the rules read names and URLs the import may change)
    resolve_sources(session)
    return summary


# What a person set by hand on a record and the rules would not find again: an operator's source descriptor
# (`imagingx catalog set-source`), an organisation, file formats
_CURATED_SOURCE = ("source", "fetch_method", "fetch_note", "source_provenance", "download_bytes")


def _carry_curated(session: Session, plan: ImportPlan, stale: set[str]) -> None:
    """A record merged into another hands what was set on it by hand to the record it was merged into, unless
    that record has its own (the first part in slug order wins)."""
    merged_into = {r.old_slug: r.slug for r in plan.redirects if r.old_slug in stale}
    if not merged_into:
        return
    columns = [
        Dataset.slug,
        *(getattr(Dataset, c) for c in _CURATED_SOURCE),
        Dataset.organisation,
        Dataset.formats,
    ]
    rows = session.execute(select(*columns).where(Dataset.slug.in_(sorted(merged_into)))).all()
    targets = {
        row.slug: row
        for row in session.execute(
            select(Dataset.slug, Dataset.source_provenance, Dataset.organisation, Dataset.formats).where(
                Dataset.slug.in_(set(merged_into.values()))
            )
        )
    }
    done: dict[str, set[str]] = {}
    for row in sorted(rows, key=lambda r: r.slug):
        target = merged_into[row.slug]
        taken = done.setdefault(target, set())
        current = targets.get(target)
        values: dict[str, Any] = {}
        operator = (row.source_provenance or {}).get("resolver") == "operator"
        if (
            operator
            and "source" not in taken
            and (current is None or (current.source_provenance or {}).get("resolver") != "operator")
        ):
            values.update({c: getattr(row, c) for c in _CURATED_SOURCE})
        if row.organisation and "organisation" not in taken and not (current and current.organisation):
            values["organisation"] = row.organisation
        if row.formats and "formats" not in taken and not (current and current.formats):
            values["formats"] = row.formats
        if values:
            taken.update("source" if c in _CURATED_SOURCE else c for c in values)
            session.execute(Dataset.__table__.update().where(Dataset.slug == target).values(**values))


def _write_redirects(session: Session, plan: ImportPlan) -> bool:
    """Make the redirect table say what the plan says (old slug -> merged record); True if it changed. A slug
    that names a record again (the file changed back) stops redirecting."""
    wanted = {r.old_slug: (r.slug, r.reason) for r in plan.redirects}
    current = {
        row.old_slug: (row.slug, row.reason)
        for row in session.execute(
            select(DatasetRedirect.old_slug, DatasetRedirect.slug, DatasetRedirect.reason)
        )
    }
    if wanted == current:
        return False
    session.execute(DatasetRedirect.__table__.delete())
    if wanted:
        session.execute(
            insert(DatasetRedirect),
            [{"old_slug": old, "slug": slug, "reason": reason} for old, (slug, reason) in wanted.items()],
        )
    return True


def locked_state(session: Session) -> CatalogState:
    """The catalog state row, locked for this transaction (created on first use)."""
    state = session.get(CatalogState, 1, with_for_update=True)
    if state is None:
        state = CatalogState(id=1, version=0, summary={})
        session.add(state)
        session.flush()
    return state
