"""Exports of a search result, a selection or a plan's final list: CSV, JSON, BibTeX, JSON-LD and a manifest.

Every export streams. What to export is first reduced to an ordered list of keys: dataset ids for a search
(read from the in-memory search index, 8 bytes a dataset), slugs for a selection or a plan. Rows are then fetched
CHUNK_SIZE at a time, written out as they come and released before the next chunk, so exporting a
100,000-dataset catalog holds one chunk of rows in memory, never the catalog. Keyset paging on a column would
not do here: a search result's order is its ranking, which only the index knows.
"""

import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import Integer, Text, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app.catalog.models import Dataset
from app.catalog.service import access_next_step, catalog_version, describe, host_label, summarise
from app.common.vocabularies import ALL
from app.core.croissant import CROISSANT_CONTEXT, CROISSANT_SPEC
from app.core.urls import urls
from app.search.filters import filter_pairs
from app.search.schemas import SearchFilter
from app.selections.models import Selection
from app.selections.schemas import ExportFormat
from app.sources.citations import bibtex_escape, bibtex_url, citation_fields

CHUNK_SIZE = 500
FLUSH_BYTES = 64 * 1024
PORTAL = "Imaging-X Portal"


@dataclass(frozen=True)
class ExportSubject:
    """What is exported: named in the file name and described at the top of JSON and manifest exports."""

    kind: str  # search | selection | plan
    title: str
    filename: str  # ASCII stem, without the format suffix
    about: dict[str, Any] = field(default_factory=dict)
    catalog_version: int = 0


# -- what to export ---------------------------------------------------------------------------------------------
# The columns an export writes. Exports read plain rows, not ORM objects: at 100,000 datasets building and
# tracking an object per row costs more than the export itself. A row has the same attribute names, so the
# catalog's summarise/describe/access_next_step read it alike.
EXPORT_COLUMNS = (
    "id", "slug", "name", "url", "host", "year", "dims", "modalities", "anatomies", "tasks", "diseases",
    "labeled", "access", "licence", "fetch_method", "source_facts", "organisation", "images", "formats", "source", "quality_flags",
    "completeness",
)  # fmt: skip
# A dataset row as exports read it: a Dataset, or a row of EXPORT_COLUMNS (same attribute names).
DatasetRow = Any
_EXPORT_SELECT = select(*(Dataset.__table__.c[name] for name in EXPORT_COLUMNS))


def iter_datasets(
    session: Session, column: str, keys: Sequence[Any] | np.ndarray, chunk_size: int = CHUNK_SIZE
) -> Iterator[DatasetRow]:
    """The dataset rows whose `column` ("id" or "slug") is in `keys`, in key order, one query per chunk of keys.

    Keys the catalog no longer has are skipped. A chunk is let go before the next one is read.
    """
    key_column = Dataset.__table__.c[{"id": "id", "slug": "slug"}[column]]
    array_type = ARRAY(Integer) if column == "id" else ARRAY(Text)
    for start in range(0, len(keys), chunk_size):
        chunk = [int(k) if column == "id" else k for k in keys[start : start + chunk_size]]
        # one array parameter, not one bound parameter per key
        query = _EXPORT_SELECT.where(key_column == any_(bindparam("keys", chunk, type_=array_type)))
        by_key = {getattr(row, column): row for row in session.execute(query)}
        for key in chunk:
            row = by_key.get(key)
            if row is not None:
                yield row
        by_key.clear()


# -- subjects ---------------------------------------------------------------------------------------------------
def _file_stem(*parts: str) -> str:
    text = "-".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:100] or "export"


def search_subject(session: Session, search: SearchFilter) -> ExportSubject:
    pairs = filter_pairs(search)
    described = ", ".join(f"{k}={v}" for k, v in pairs)
    return ExportSubject(
        kind="search",
        title=f"Datasets matching {described}" if pairs else "All datasets",
        filename=_file_stem("imagingx-datasets", *(f"{k}-{v}" for k, v in pairs)),
        about={"filter": search.model_dump(mode="json")},
        catalog_version=catalog_version(session),
    )


def selection_subject(session: Session, selection: Selection) -> ExportSubject:
    return ExportSubject(
        kind="selection",
        title=f"Selection {selection.name!r}" if selection.name else "Selection",
        # the share id, never the owner key: an export is passed around
        filename=_file_stem("imagingx-selection", selection.name or selection.read_id[:8]),
        about={"selection": {"id": selection.read_id, "name": selection.name}},
        catalog_version=catalog_version(session),
    )


def plan_subject(session: Session, plan_id: str) -> ExportSubject:
    return ExportSubject(
        kind="plan",
        title=f"Final dataset list of plan {plan_id}",
        filename=_file_stem("imagingx-plan", plan_id[:12]),
        about={"plan": {"id": plan_id}},
        catalog_version=catalog_version(session),
    )


def filename(subject: ExportSubject, fmt: ExportFormat) -> str:
    return f"{subject.filename}.{fmt.suffix}"


# -- rendering --------------------------------------------------------------------------------------------------
def render(
    fmt: ExportFormat,
    rows: Iterable[DatasetRow],
    subject: ExportSubject,
    base_url: str,
) -> Iterator[bytes]:
    """The export as byte chunks of about FLUSH_BYTES (one per row would mean one network write per row)."""
    links = Links(base_url.rstrip("/"))
    renderers = {
        ExportFormat.csv: render_csv,
        ExportFormat.json: render_json,
        ExportFormat.bib: render_bibtex,
        ExportFormat.jsonld: render_json_ld,
        ExportFormat.manifest: render_manifest,
    }
    return _in_chunks(renderers[fmt](rows, subject, links))


def _in_chunks(pieces: Iterable[str]) -> Iterator[bytes]:
    buffer: list[str] = []
    size = 0
    for piece in pieces:
        buffer.append(piece)
        size += len(piece)
        if size >= FLUSH_BYTES:
            yield "".join(buffer).encode()
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer).encode()


@dataclass(frozen=True)
class Links:
    base_url: str

    def page(self, row: Dataset) -> str:
        return self.base_url + urls.page_dataset(row.slug)

    def api(self, row: Dataset) -> str:
        return self.base_url + urls.dataset(row.slug)


def _exported_at() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@lru_cache(maxsize=4096)
def _label(kind: str, value: str) -> str:
    vocabulary = ALL[kind]
    return vocabulary.term(value).label if value in vocabulary else value


# CSV ----------------------------------------------------------------------------------------------------------
CSV_COLUMNS = (
    "slug", "name", "year", "modalities", "dims", "anatomies", "tasks", "diseases", "labeled", "images",
    "access", "licence", "host", "organisation", "formats", "quality_flags", "completeness", "landing_page",
    "access_next_step", "portal_url", "api_url",
)  # fmt: skip
LIST_SEPARATOR = "; "


def csv_values(row: DatasetRow, links: Links) -> list[Any]:
    """One CSV row: lists joined with '; ', unknown values empty, booleans as true/false."""
    values: dict[str, Any] = {
        "slug": row.slug,
        "name": row.name,
        "year": row.year,
        "modalities": row.modalities,
        "dims": row.dims,
        "anatomies": row.anatomies,
        "tasks": row.tasks,
        "diseases": row.diseases,
        "labeled": None if row.labeled is None else str(row.labeled).lower(),
        "images": row.images,
        "access": row.access,
        "licence": row.licence,
        "host": row.host,
        "organisation": row.organisation,
        "formats": row.formats,
        "quality_flags": row.quality_flags,
        "completeness": round(row.completeness, 3),
        "landing_page": row.url,
        "access_next_step": access_next_step(row),
        "portal_url": links.page(row),
        "api_url": links.api(row),
    }
    return [_csv_cell(values[column]) for column in CSV_COLUMNS]


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        value = LIST_SEPARATOR.join(value)
    # A cell that starts like a formula would run as one in a spreadsheet (CSV injection): make it text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def render_csv(rows: Iterable[DatasetRow], subject: ExportSubject, links: Links) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180 line ends

    def flushed() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flushed()
    for row in rows:
        writer.writerow(csv_values(row, links))
        yield flushed()


# JSON ---------------------------------------------------------------------------------------------------------
def json_record(row: DatasetRow, links: Links) -> dict[str, Any]:
    return {
        **summarise(row).model_dump(mode="json"),
        "organisation": row.organisation,
        "formats": row.formats,
        "description": describe(row),
        "access_next_step": access_next_step(row),
        "portal_url": links.page(row),
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _json_document(
    head: dict[str, Any], key: str, items: Iterable[str], tail: dict[str, Any]
) -> Iterator[str]:
    """`{...head, key: [items...], ...tail}` written piece by piece; `tail` is read after the items are out."""
    yield _dumps(head)[:-1] + (", " if head else "") + f"{_dumps(key)}: [\n"
    for i, item in enumerate(items):
        yield ("" if i == 0 else ",\n") + item
    yield "\n]" + "".join(f", {_dumps(k)}: {_dumps(v)}" for k, v in tail.items()) + "}\n"


def _head(subject: ExportSubject) -> dict[str, Any]:
    return {
        "ok": True,
        "kind": subject.kind,
        "title": subject.title,
        **subject.about,
        "catalog_version": subject.catalog_version,
        "exported_at": _exported_at(),
    }


def render_json(rows: Iterable[DatasetRow], subject: ExportSubject, links: Links) -> Iterator[str]:
    tail: dict[str, Any] = {}

    def items() -> Iterator[str]:
        count = 0
        for row in rows:
            count += 1
            yield _dumps(json_record(row, links))
        tail["count"] = count

    return _json_document(_head(subject), "results", items(), tail)


# BibTeX -------------------------------------------------------------------------------------------------------
def bibtex_key(slug: str) -> str:
    """A citation key from the slug: the slug itself when it is a valid key, else a cleaned form plus a short
    hash of the slug (so two slugs that clean to the same text keep different keys). Stable across exports."""
    key = re.sub(r"[^A-Za-z0-9_:.-]+", "-", slug).strip("-")
    if key == slug:
        return key
    return f"{key or 'dataset'}-{hashlib.sha256(slug.encode()).hexdigest()[:6]}"


def _known_citation(row: DatasetRow) -> dict[str, str]:
    """Citation fields the dataset's source states (authors, year, title, publisher and DOI of an IDC data
    citation), overlaid by those a curator recorded in the source descriptor (`citation`: {field: value}, `doi`)."""
    source = row.source or {}
    citation = source.get("citation")
    fields: dict[Any, Any] = citation if isinstance(citation, dict) else {}
    # the source's authors, year, publisher and DOI; the entry keeps the catalog's name as its title, the name
    # people search and select it by
    known = {k: v for k, v in citation_fields(row.source_facts).items() if k != "title"}
    known |= {
        str(k).lower(): str(v) for k, v in fields.items() if isinstance(v, str | int) and str(v).strip()
    }
    if isinstance(source.get("doi"), str) and "doi" not in known:
        known["doi"] = source["doi"]
    return {k: v for k, v in known.items() if re.fullmatch(r"[a-z][a-z0-9_-]*", k)}


def bibtex_entry(row: DatasetRow, links: Links, description: str | None = None) -> str:
    """One `@misc` entry (the type every BibTeX style knows); title in double braces to keep its capitals."""
    fields: list[tuple[str, str]] = [("title", "{" + bibtex_escape(row.name) + "}")]
    if row.organisation:
        fields.append(("author", "{" + bibtex_escape(row.organisation) + "}"))  # a corporate author
    if row.year:
        fields.append(("year", str(row.year)))
    url = row.url or links.page(row)
    fields.append(("url", bibtex_url(url)))
    fields.append(("howpublished", r"\url{" + bibtex_url(url) + "}"))
    licence = _label("licence", row.licence) if row.licence else "not recorded"
    note = (
        f"Dataset. {description or describe(row)} Access: {_label('access', row.access).lower()}. Licence: {licence}. "
        f"Listed in the {PORTAL} as {row.slug} ({links.page(row)})."
    )
    fields.append(("note", bibtex_escape(note)))
    keywords = [_label("modality", m) for m in row.modalities] + [_label("anatomy", a) for a in row.anatomies]
    if keywords:
        fields.append(("keywords", bibtex_escape(", ".join(keywords))))
    known = _known_citation(row)
    if known:  # a recorded citation wins over what was built from the catalog facts
        built = dict(fields)
        for name, value in known.items():
            built[name] = bibtex_url(value) if name in ("url", "doi") else bibtex_escape(value)
        if "," not in known.get("author", ",") and " and " not in known["author"]:
            built["author"] = "{" + built["author"] + "}"  # one corporate author, kept whole
        fields = list(built.items())
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields)
    return f"@misc{{{bibtex_key(row.slug)},\n{body}\n}}\n"


def render_bibtex(rows: Iterable[DatasetRow], subject: ExportSubject, links: Links) -> Iterator[str]:
    yield f"% {subject.title}: exported from the {PORTAL} ({links.base_url}) on {_exported_at()}\n"
    yield f"% catalog version {subject.catalog_version}; one @misc entry per dataset, keyed by its slug\n\n"
    for row in rows:
        yield bibtex_entry(row, links) + "\n"


# JSON-LD: a schema.org DataCatalog whose datasets are Croissant dataset descriptions --------------------------
def croissant_dataset(row: DatasetRow, links: Links) -> dict[str, Any]:
    """A Croissant 1.0 description of one dataset's metadata (no file list: the portal does not host files)."""
    page = links.page(row)
    description = describe(row)
    data: dict[str, Any] = {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "@id": page,
        "conformsTo": CROISSANT_SPEC,
        "name": row.name,
        "description": description,
        "url": row.url or page,
        "sameAs": [page] if row.url else [],
        "identifier": row.slug,
        "keywords": [
            *(_label("modality", m) for m in row.modalities),
            *(_label("anatomy", a) for a in row.anatomies),
            *(_label("task", t) for t in row.tasks),
            *row.diseases,
        ],
        "measurementTechnique": [_label("modality", m) for m in row.modalities],
        "isAccessibleForFree": row.access == "open",
        "conditionsOfAccess": access_next_step(row),
        "citeAs": bibtex_entry(row, links, description),
        "includedInDataCatalog": {"@type": "sc:DataCatalog", "name": PORTAL, "url": links.base_url},
    }
    if row.licence and row.licence in ALL["licence"] and row.licence != "unknown":
        data["license"] = f"https://spdx.org/licenses/{row.licence}.html"
    if row.year:
        data["datePublished"] = str(row.year)
    if row.organisation:
        data["creator"] = {"@type": "sc:Organization", "name": row.organisation}
    if row.images is not None:
        data["size"] = f"{row.images} images or cases"
    if row.formats:
        data["encodingFormat"] = row.formats
    return data


def render_json_ld(rows: Iterable[DatasetRow], subject: ExportSubject, links: Links) -> Iterator[str]:
    head = {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:DataCatalog",
        "name": f"{PORTAL}: {subject.title}",
        "description": f"{subject.title}, exported from the {PORTAL} (catalog version {subject.catalog_version}).",
        "url": links.base_url,
        "dateCreated": _exported_at(),
    }
    return _json_document(head, "dataset", (_croissant_json(row, links) for row in rows), {})


_CONTEXT_JSON = _dumps(CROISSANT_CONTEXT)


def _croissant_json(row: DatasetRow, links: Links) -> str:
    """croissant_dataset() as JSON, with its (constant) context serialised once rather than once per dataset."""
    data = croissant_dataset(row, links)
    del data["@context"]
    return '{"@context": ' + _CONTEXT_JSON + ", " + _dumps(data)[1:]


# Download manifest --------------------------------------------------------------------------------------------
def manifest_entry(row: DatasetRow, links: Links) -> dict[str, Any]:
    return {
        "slug": row.slug,
        "name": row.name,
        "landing_page": row.url,
        "host": row.host,
        "host_label": host_label(row.host),
        "access": row.access,
        "access_next_step": access_next_step(row),
        "automatic": row.source is not None,
        "source": row.source,
        "licence": row.licence,
        "images": row.images,
        "formats": row.formats,
        "portal_url": links.page(row),
    }


def render_manifest(rows: Iterable[DatasetRow], subject: ExportSubject, links: Links) -> Iterator[str]:
    """What to fetch, from where, and what each dataset needs first; a summary closes the document."""
    head = {
        "manifest_version": 1,
        "generator": PORTAL,
        "kind": subject.kind,
        "title": subject.title,
        **subject.about,
        "catalog_version": subject.catalog_version,
        "exported_at": _exported_at(),
    }
    tail: dict[str, Any] = {}

    def items() -> Iterator[str]:
        access: Counter[str] = Counter()
        hosts: Counter[str] = Counter()
        automatic = 0
        for row in rows:
            access[row.access] += 1
            hosts[row.host] += 1
            automatic += row.source is not None
            yield _dumps(manifest_entry(row, links))
        tail["summary"] = {
            "datasets": sum(access.values()),
            "automatic": automatic,
            "manual": sum(access.values()) - automatic,
            "by_access": dict(access.most_common()),
            "by_host": dict(hosts.most_common()),
        }

    return _json_document(head, "datasets", items(), tail)
