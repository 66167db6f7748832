"""From survey rows to dataset records: one record per real dataset, every raw row kept. No database.

Each row is normalised (app/catalog/normalise.py); rows of one real dataset are clustered by explainable rules
and a hand-checked file (app/catalog/merge.py); each cluster becomes one record whose facts are the union of
its rows' facts, whose ambiguous values are decided by its own evidence (app/catalog/evidence.py), and which
lists its parts (the records the survey's rows made before merging, with the slugs they were published under)
and the facts its parts disagree on. Slugs that no longer name a record become redirects.
"""

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from app.catalog.evidence import Note, decide_abbreviations, decide_modalities
from app.catalog.flags import FlagInput, quality_flags
from app.catalog.merge import Cluster, cluster_name, cluster_rows, keys_by_row, landing_page
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
LEGACY_SLUGS_FILE = Path(__file__).resolve().parents[1] / "data" / "catalog" / "legacy_slugs.json"
REQUIRED_KEYS = set(FACT_KEYS) | {"section", "access"}
# Worst first: the count status a merged record reports when none of its rows states a usable count
_COUNT_STATUS_ORDER = ("unparseable", "zero", "missing", "approximate", "ok")


class CatalogFileError(ValueError):
    """The catalog file cannot be imported; the message says where and why."""


@dataclass
class DatasetRecord:
    slug: str
    values: dict[str, Any]


@dataclass
class Redirect:
    old_slug: str
    slug: str
    reason: str


@dataclass
class ImportPlan:
    records: list[DatasetRecord]
    rows: int
    text_distinct: int
    parts: int = 0  # the records the rows made before merging (one per published slug)
    unmatched: dict[str, Counter[str]] = field(default_factory=dict)
    flags: Counter[str] = field(default_factory=Counter)
    redirects: list[Redirect] = field(default_factory=list)
    merges_by_rule: Counter[str] = field(default_factory=Counter)
    merge_lines: list[str] = field(default_factory=list)
    modality_notes: Counter[str] = field(default_factory=Counter)
    task_notes: Counter[str] = field(default_factory=Counter)
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


@cache
def legacy_slugs() -> dict[str, str]:
    """Row fingerprint -> the slug the row's record was published under before merging."""
    data = json.loads(LEGACY_SLUGS_FILE.read_text(encoding="utf-8"))
    return {key: slug for slug, keys in data["slugs"].items() for key in keys}


def _fact_key(row: dict[str, Any], facts: Normalised) -> tuple[Any, ...]:
    """Rows equal on every normalised fact; sorted tuples, not sets, so the hash is stable across processes."""
    return (
        clean_text(row["name"]).lower(),
        clean_url(row.get("url")).lower().rstrip("/"),
        facts.year,
        tuple(sorted(facts.dims)),
        tuple(sorted(facts.modalities)),
        tuple(sorted(facts.anatomies)),
        facts.images,
        bool(row.get("label")),
        tuple(sorted(facts.tasks + facts.task_abbreviations)),
        tuple(d.lower() for d in facts.diseases),
    )


def _closure(anatomies: list[str]) -> list[str]:
    closure: list[str] = []
    for term in anatomies:
        for item in (term, *ANATOMY.ancestors(term)):
            if item not in closure:
                closure.append(item)
    return closure


def _union(lists: Any) -> list[str]:
    return list(dict.fromkeys(item for values in lists for item in values))


def _union_ci(lists: Any) -> list[str]:
    """Union that treats 'Lung cancer' and 'Lung Cancer' as one, keeping the first spelling."""
    seen: dict[str, str] = {}
    for values in lists:
        for item in values:
            seen.setdefault(item.lower(), item)
    return list(seen.values())


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


@dataclass
class _Part:
    """The rows one published slug stood for (or, for rows new to the catalog, one set of equal facts)."""

    slug: str
    rows: list[int]


def _parts(
    cluster: Cluster, rows: list[dict[str, Any]], facts: list[Normalised], keys: list[str]
) -> list[_Part]:
    legacy = legacy_slugs()
    parts: dict[str, _Part] = {}
    for index in cluster.rows:
        slug = (
            legacy.get(keys[index])
            or f"{slugify(rows[index]['name'])}-{fact_hash(_fact_key(rows[index], facts[index]))}"
        )
        parts.setdefault(slug, _Part(slug, [])).rows.append(index)
    return list(parts.values())


def _primary_url(rows: list[dict[str, Any]], members: list[int]) -> str | None:
    """The landing page most rows give; a tie goes to a current page over an old wiki page, then file order."""
    urls = [clean_url(rows[i].get("url")) for i in members if clean_url(rows[i].get("url"))]
    if not urls:
        return None
    counts = Counter(landing_page(u) for u in urls)
    return min(
        urls,
        key=lambda u: (-counts[landing_page(u)], "viewpage.action" in u or "/display/" in u, urls.index(u)),
    )


def _contradictions(
    parts: list[_Part], rows: list[dict[str, Any]], facts: list[Normalised]
) -> list[dict[str, Any]]:
    """Facts the parts state differently: year, count, labelled, access; each value with the parts saying it."""
    found = []
    readers: dict[str, Callable[[int], Any]] = {
        "year": lambda i: facts[i].year,
        "images": lambda i: facts[i].images or None,  # a zero count is no count, flagged on its own
        "labeled": lambda i: bool(rows[i].get("label")),
        "access": lambda i: facts[i].access if facts[i].access != "unknown" else None,
    }
    for name, read in readers.items():
        by_value: dict[Any, list[str]] = defaultdict(list)
        for part in parts:
            for value in dict.fromkeys(read(i) for i in part.rows):
                if value is not None and part.slug not in by_value[value]:
                    by_value[value].append(part.slug)
        if len(by_value) > 1:
            found.append({"field": name, "values": [{"value": v, "parts": p} for v, p in by_value.items()]})
    return found


def plan_import(rows: list[dict[str, Any]]) -> ImportPlan:
    facts = [normalise_row(row) for row in rows]
    keys = keys_by_row(rows)
    unmatched: dict[str, Counter[str]] = defaultdict(Counter)
    for fact in facts:
        for column, values in fact.unmatched.items():
            unmatched[column].update(values)
    clusters = cluster_rows(rows, facts)
    plan = ImportPlan(
        records=[],
        rows=len(rows),
        text_distinct=len({tuple(str(r.get(k)) for k in FACT_KEYS) for r in rows}),
        unmatched=dict(unmatched),
    )
    all_parts = [_parts(c, rows, facts, keys) for c in clusters]
    plan.parts = sum(len(p) for p in all_parts)
    taken = {part.slug for parts in all_parts for part in parts}
    pages: Counter[str] = Counter()
    for cluster in clusters:
        pages.update({landing_page(rows[i].get("url")) for i in cluster.rows} - {""})
    for cluster, parts in zip(clusters, all_parts, strict=True):
        record = _record(cluster, parts, rows, facts, taken, plan)
        page = landing_page(record.values["url"])
        shared = bool(page) and pages[page] > 1
        _finish(record, cluster, parts, rows, facts, shared, plan)
        plan.records.append(record)
    _check_unique_slugs(plan.records)
    return plan


def _slug_for(name: str, parts: list[_Part], taken: set[str], used: set[str]) -> str:
    """A one-part record keeps its slug; a merged one takes its name's, unless another record had it."""
    if len(parts) == 1:
        return parts[0].slug
    own = {p.slug for p in parts}
    slug = slugify(name)
    if (slug in taken and slug not in own) or slug in used:
        slug = f"{slug}-{fact_hash(tuple(sorted(own)))}"
    return slug


def _record(
    cluster: Cluster,
    parts: list[_Part],
    rows: list[dict[str, Any]],
    facts: list[Normalised],
    taken: set[str],
    plan: ImportPlan,
) -> DatasetRecord:
    members = cluster.rows
    name = cluster_name(rows, cluster)
    slug = _slug_for(name, parts, taken, {r.slug for r in plan.records})
    names = list(dict.fromkeys(clean_text(rows[i]["name"]) for i in members))
    aliases = _union([aliases_of(name), *[[n, *aliases_of(n)] for n in names if n != name]])
    url = _primary_url(rows, members)
    primary = next((i for i in members if clean_url(rows[i].get("url")) == url), members[0])
    member_facts = [facts[i] for i in members]
    modalities, modality_note = decide_modalities(
        _union(f.modalities for f in member_facts if not f.modality_multi),
        any(f.modality_multi for f in member_facts),
        [name, *names],
    )
    diseases = _union_ci(f.diseases for f in member_facts)
    abbreviations = _union(f.task_abbreviations for f in member_facts)
    decided, task_notes, undecided = decide_abbreviations(
        abbreviations, [name, *names], diseases, [str(rows[i].get("task") or "") for i in members]
    )
    anatomies = _union(f.anatomies for f in member_facts)
    from_name = not anatomies and bool(anatomy_terms_in(name))
    if from_name:  # 'NA' anatomy, but the name says where ('COVID-19 Chest X-ray DB'): flagged
        anatomies = anatomy_terms_in(name)
        plan.inferred_anatomy += 1
    known_counts = [f.images for f in member_facts if f.images is not None]
    images = max(known_counts) if known_counts else None
    statuses = [f.count_status for f in member_facts if f.images == images and images is not None]
    count_status = (
        "ok"
        if "ok" in statuses
        else min((f.count_status for f in member_facts), key=_COUNT_STATUS_ORDER.index)
    )
    if images == 0:
        count_status = "zero"
    years = [f.year for f in member_facts if f.year is not None]
    notes = [n for n in (modality_note, *task_notes) if n is not None]
    sections = list(dict.fromkeys(clean_text(rows[i]["section"]) for i in members))
    values: dict[str, Any] = {
        "slug": slug,
        "name": name,
        "aliases": [a for a in aliases if a != name],
        "url": url,
        "host": facts[primary].host,
        "section": "; ".join(sections),
        "year": min(years) if years else None,
        "dims": _union(f.dims for f in member_facts),
        "modalities": modalities,
        "anatomies": anatomies,
        "anatomy_closure": _closure(anatomies),
        "tasks": _union([*(f.tasks for f in member_facts), decided]),
        "diseases": diseases,
        "labeled": any(bool(rows[i].get("label")) for i in members),
        "access": facts[primary].access,
        "licence": None,
        "organisation": None,
        "images": images,
        "size_bucket": size_bucket(images),
        "formats": [],
        "variant_group": None,
        "raw_records": [rows[i] for i in members],
        "notes": [n.as_dict() for n in notes],
        "_count_status": count_status,
        "_sections": sections,
        "_modality_unknown": modality_note is not None and not modalities,
        "_anatomy_from_name": from_name,
        "_task_ambiguous": undecided,
    }
    for note in notes:
        (plan.modality_notes if note.field == "modality" else plan.task_notes)[_note_kind(note)] += 1
    return DatasetRecord(slug, values)


def _note_kind(note: Note) -> str:
    """A note's kind for the import report: what was decided and by which kind of evidence."""
    evidence = note.reason.split(":")[0].split(" (")[0]
    if evidence.startswith("the record says") or evidence.startswith("named in the dataset's name"):
        evidence = "a word of the name or disease"
    if note.field == "modality":
        return f"'{note.raw}' modality {'resolved' if note.value else 'left unknown'}: {evidence}"
    return f"'{note.raw}' task read as {' and '.join(note.value)}: {evidence}"


def _finish(
    record: DatasetRecord,
    cluster: Cluster,
    parts: list[_Part],
    rows: list[dict[str, Any]],
    facts: list[Normalised],
    url_shared: bool,
    plan: ImportPlan,
) -> None:
    """Parts, contradictions, flags, completeness and the search document; redirects and the merge report."""
    values = record.values
    contradictions = _contradictions(parts, rows, facts) if len(parts) > 1 else []
    values["parts"] = [_part_summary(p, rows, facts) for p in parts] if len(parts) > 1 else []
    values["contradictions"] = contradictions
    # the joins between parts (not between two rows of one part, which were one record already), each once
    part_of = {i: p.slug for p in parts for i in p.rows}
    between = [j for j in cluster.joins if part_of[j.rows[0]] != part_of[j.rows[1]]]
    reasons = {json.dumps(j.as_dict(), sort_keys=True): j.as_dict() for j in between}
    values["merge_reasons"] = list(reasons.values())
    sections = values.pop("_sections")
    values["quality_flags"] = quality_flags(
        FlagInput(
            url=values["url"],
            url_shared=url_shared,
            count_status=values.pop("_count_status"),
            year=values["year"],
            modalities=values["modalities"],
            modality_unknown=values.pop("_modality_unknown"),
            anatomies=values["anatomies"],
            anatomy_from_name=values.pop("_anatomy_from_name"),
            tasks=values["tasks"],
            task_ambiguous=values.pop("_task_ambiguous"),
            labeled=values["labeled"],
            diseases=values["diseases"],
            dims=values["dims"],
            sections=sections,
            parts_disagree=bool(contradictions),
        )
    )
    values["completeness"] = _completeness(values)
    values["search_document"] = search_document(values, sections)
    plan.flags.update(values["quality_flags"])
    if len(parts) > 1:
        rules = sorted({j.rule for j in between})
        for rule in rules:
            plan.merges_by_rule[rule] += 1
        plan.merge_lines.append(
            f"{record.slug}: {len(parts)} records merged ({', '.join(rules)}): "
            + ", ".join(dict.fromkeys(clean_text(rows[p.rows[0]]["name"]) for p in parts))
        )
        for part in parts:
            if part.slug != record.slug:
                plan.redirects.append(
                    Redirect(part.slug, record.slug, f"merged into {record.slug}: {', '.join(rules)}")
                )


def _part_summary(part: _Part, rows: list[dict[str, Any]], facts: list[Normalised]) -> dict[str, Any]:
    first = rows[part.rows[0]]
    return {
        "slug": part.slug,
        "name": clean_text(first["name"]),
        "sections": list(dict.fromkeys(clean_text(rows[i]["section"]) for i in part.rows)),
        "url": clean_url(first.get("url")) or None,
        "year": facts[part.rows[0]].year,
        "images": facts[part.rows[0]].images,
        "modalities": _union(facts[i].modalities for i in part.rows),
        "tasks": _union(
            [*(facts[i].tasks for i in part.rows), *(facts[i].task_abbreviations for i in part.rows)]
        ),
        "rows": len(part.rows),
    }


def _check_unique_slugs(records: list[DatasetRecord]) -> None:
    seen = Counter(r.slug for r in records)
    clashes = [slug for slug, n in seen.items() if n > 1]
    if clashes:
        raise CatalogFileError(f"two datasets would share the slug(s) {', '.join(clashes)}")
