"""From survey rows to dataset records: merging duplicates, linking variants, flagging defects. No database.

Rows that state the same facts (once each fact is normalised: 'PET/CT' and 'CT/PET', '2D, 3D' and '3D, 2D',
'31k' and '31.0k' are the same fact) become one dataset that keeps every raw row. Rows that share a name or
URL but differ in facts stay separate datasets, linked through `variant_group`.
"""

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.catalog.normalise import (
    FACT_KEYS,
    Normalised,
    aliases_of,
    anatomy_terms_in,
    clean_text,
    clean_url,
    fact_hash,
    normalise_row,
    size_bucket,
    slugify,
)
from app.common.vocabularies import ALL, ANATOMY

SEED_FILE = Path(__file__).resolve().parents[1] / "data" / "imaging-x-datasets.json"
REQUIRED_KEYS = set(FACT_KEYS) | {"section", "access"}

# The survey's tables are per modality; a row whose modality says only "Multi" is at least that.
SECTION_MODALITY = {
    "3d ct datasets": "CT",
    "ct datasets": "CT",
    "3d mr datasets": "MR",
    "mri datasets": "MR",
    "3d pet datasets": "PT",
    "pet": "PT",
    "x-ray datasets": "XR",
    "fundus photography": "FUNDUS",
    "oct": "OCT",
    "endoscopy": "ENDOSCOPY",
    "dermoscopy": "DERMOSCOPY",
    "histopathology": "HISTOPATHOLOGY",
    "microscopy": "MICROSCOPY",
    "ultrasound": "US",
    "3d ultrasound datasets": "US",
    "infrared": "INFRARED",
}
EYE_MODALITIES = {"FUNDUS", "OCT"}
EYE_ANATOMY = {"eye", "retina", "optic_nerve"}


class CatalogFileError(ValueError):
    """The catalog file cannot be imported; the message says where and why."""


@dataclass
class DatasetRecord:
    slug: str
    values: dict[str, Any]


@dataclass
class ImportPlan:
    records: list[DatasetRecord]
    rows: int
    text_distinct: int
    unmatched: dict[str, Counter[str]] = field(default_factory=dict)
    flags: Counter[str] = field(default_factory=Counter)
    inferred_modality: int = 0
    inferred_anatomy: int = 0


def load_rows(path: Path) -> list[dict[str, Any]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogFileError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(rows, list):
        raise CatalogFileError(f"{path}: expected a JSON list of dataset records")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise CatalogFileError(f"{path}: record {index} is not an object")
        missing = REQUIRED_KEYS - row.keys()
        if missing:
            raise CatalogFileError(f"{path}: record {index} lacks {', '.join(sorted(missing))}")
        if not clean_text(str(row.get("name") or "")):
            raise CatalogFileError(f"{path}: record {index} has no name")
    return rows


def _merge_key(row: dict[str, Any], facts: Normalised) -> tuple[Any, ...]:
    """Sorted tuples, not sets: the key is hashed into slugs, which must not change between processes."""
    return (
        clean_text(row["name"]).lower(),
        clean_url(row.get("url")).lower().rstrip("/"),
        facts.year,
        tuple(sorted(facts.dims)),
        tuple(sorted(facts.modalities)),
        tuple(sorted(facts.anatomies)),
        facts.images,
        bool(row.get("label")),
        tuple(sorted(facts.tasks)),
        tuple(d.lower() for d in facts.diseases),
    )


def _closure(anatomies: list[str]) -> list[str]:
    closure: list[str] = []
    for term in anatomies:
        for item in (term, *ANATOMY.ancestors(term)):
            if item not in closure:
                closure.append(item)
    return closure


def _parent(term: str) -> str | None:
    """The anatomy term one level up, None for a root."""
    ancestors = ANATOMY.ancestors(term)
    return ancestors[0] if ancestors else None


def _related(a: str, b: str) -> bool:
    """Same region, one inside the other, or neighbours within one organ (optic disc and retina)."""
    parent_a, parent_b = _parent(a), _parent(b)
    siblings = parent_a == parent_b and parent_a not in (None, "whole_body")
    return a == b or siblings or a in ANATOMY.ancestors(b) or b in ANATOMY.ancestors(a)


def _quality_flags(
    row: dict[str, Any],
    facts: Normalised,
    anatomies: list[str],
    sections: list[str],
    inferred: bool,
    url_shared: bool,
) -> list[str]:
    flags = []
    if facts.count_status != "ok":
        flags.append(f"count_{facts.count_status}")
    if not clean_text(row.get("url")):
        flags.append("url_missing")
    elif url_shared:
        flags.append("url_shared")
    if facts.year is None:
        flags.append("year_missing")
    if inferred or not facts.modalities:
        flags.append("modality_unknown")
    if not facts.anatomies:
        flags.append("anatomy_from_name" if anatomies else "anatomy_unknown")
    if not facts.tasks:
        flags.append("task_unknown")
        if row.get("label"):
            flags.append("labeled_without_task")
    if facts.task_ambiguous:
        flags.append("task_ambiguous")
    named_in_disease = anatomy_terms_in(" ".join(facts.diseases))
    if (
        facts.anatomies
        and named_in_disease
        and not any(_related(a, b) for a in facts.anatomies for b in named_in_disease)
    ):
        flags.append("disease_contradicts_anatomy")
    mods, anats = set(facts.modalities), set(facts.anatomies)
    if anats and (
        (mods and mods <= EYE_MODALITIES and not anats & EYE_ANATOMY)
        or (mods == {"DERMOSCOPY"} and "skin" not in anats)
        or (
            anats <= {"retina"}
            and mods
            and not mods & (EYE_MODALITIES | {"PHOTOGRAPHY", "INFRARED", "OTHER"})
        )
    ):
        flags.append("modality_contradicts_anatomy")
    section_modalities = {SECTION_MODALITY.get(s.lower()) for s in sections} - {None}
    if mods and not inferred and section_modalities and not section_modalities & mods:
        flags.append("section_contradicts_modality")
    dims = set(facts.dims)
    if any(s.lower().startswith("3d") for s in sections) and dims == {"2D"}:
        flags.append("section_contradicts_dim")
    if any(s.lower().startswith("video") for s in sections) and dims and "video" not in dims:
        flags.append("section_contradicts_dim")
    return list(dict.fromkeys(flags))


def _completeness(values: dict[str, Any]) -> float:
    known: list[bool] = [
        bool(values["url"]),
        values["year"] is not None,
        values["images"] is not None,
        bool(values["modalities"]) and "modality_unknown" not in values["quality_flags"],
        bool(values["anatomies"]),
        bool(values["tasks"]),
        bool(values["dims"]),
        values["access"] != "unknown",
        values["licence"] is not None,
        values["organisation"] is not None,
    ]
    return round(sum(known) / len(known), 2)


def search_document(values: dict[str, Any], sections: list[str]) -> str:
    """Everything a person might type to find this dataset, vocabulary synonyms included."""
    words: list[str] = [values["name"], *values["aliases"], *sections, *values["diseases"]]
    for kind, ids in (
        ("modality", values["modalities"]),
        ("anatomy", values["anatomy_closure"]),
        ("task", values["tasks"]),
        ("dim", values["dims"]),
    ):
        for term_id in ids:
            term = ALL[kind].term(term_id)
            words.extend([term.label, *term.synonyms])
    words.append(ALL["host"].term(values["host"]).label)
    return " ".join(dict.fromkeys(w for w in words if w))


def plan_import(rows: list[dict[str, Any]]) -> ImportPlan:
    groups: dict[tuple[Any, ...], list[tuple[dict[str, Any], Normalised]]] = {}
    unmatched: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        facts = normalise_row(row)
        for column, parts in facts.unmatched.items():
            unmatched[column].update(parts)
        groups.setdefault(_merge_key(row, facts), []).append((row, facts))

    names = Counter(key[0] for key in groups)
    names_by_url: dict[str, set[str]] = defaultdict(set)
    for key in groups:
        if key[1]:
            names_by_url[key[1]].add(key[0])

    plan = ImportPlan(
        records=[],
        rows=len(rows),
        text_distinct=len({tuple(str(r.get(k)) for k in FACT_KEYS) for r in rows}),
        unmatched=dict(unmatched),
    )
    for key, members in groups.items():
        row, facts = members[0]
        sections = list(dict.fromkeys(clean_text(r["section"]) for r, _ in members))
        modalities = list(facts.modalities)
        inferred = False
        if not modalities:
            modalities = [m for s in sections if (m := SECTION_MODALITY.get(s.lower()))]
            inferred = bool(modalities)
            plan.inferred_modality += inferred
        # 'NA' anatomy, but the name says where ('COVID-19 Chest X-ray DB'): take it from the name, flagged
        anatomies = list(facts.anatomies) or anatomy_terms_in(row["name"])
        if anatomies and not facts.anatomies:
            plan.inferred_anatomy += 1
        base_slug = slugify(row["name"])
        slug = base_slug if names[key[0]] == 1 else f"{base_slug}-{fact_hash(key)}"
        values: dict[str, Any] = {
            "slug": slug,
            "name": clean_text(row["name"]),
            "aliases": aliases_of(clean_text(row["name"])),
            "url": clean_url(row.get("url")) or None,
            "host": facts.host,
            "section": "; ".join(sections),
            "year": facts.year,
            "dims": facts.dims,
            "modalities": modalities,
            "anatomies": anatomies,
            "anatomy_closure": _closure(anatomies),
            "tasks": facts.tasks,
            "diseases": facts.diseases,
            "labeled": bool(row.get("label")),
            "access": facts.access,
            "licence": None,
            "organisation": None,
            "images": facts.images,
            "size_bucket": size_bucket(facts.images),
            "formats": [],
            "variant_group": base_slug if names[key[0]] > 1 else None,
            "raw_records": [r for r, _ in members],
        }
        values["quality_flags"] = _quality_flags(
            row, facts, anatomies, sections, inferred, url_shared=len(names_by_url.get(key[1], ())) > 1
        )
        values["completeness"] = _completeness(values)
        values["search_document"] = search_document(values, sections)
        plan.flags.update(values["quality_flags"])
        plan.records.append(DatasetRecord(slug, values))
    _check_unique_slugs(plan.records)
    return plan


def _check_unique_slugs(records: list[DatasetRecord]) -> None:
    seen = Counter(r.slug for r in records)
    clashes = [slug for slug, n in seen.items() if n > 1]
    if clashes:
        raise CatalogFileError(f"two datasets would share the slug(s) {', '.join(clashes)}")
