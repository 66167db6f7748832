"""What NCI Imaging Data Commons says about its collections, read from the `idc-index-data` package's Parquet.

IDC holds most of The Cancer Imaging Archive's collections as DICOM in public buckets, and the
`idc-index-data` wheel ships its indices: one row per collection (`collections_index`), per analysis result
(`analysis_results_index`: segmentations and annotations published on top of collections) and per series
(`idc_index`, about a million rows). This module turns them into one `IdcEntry` per collection and per analysis
result, with the facts the catalog shows beside the survey's: licences by series count, DOI, citation,
subjects, series, instances, bytes, modalities and body parts as the DICOM headers say.

Reading the series index costs ~0.3 s and ~150 MB while it runs; it happens only when sources are resolved
(catalog import, `imagingx catalog resolve-sources`, or a start after an upgrade of the package), never on a
search or page request.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

# IDC's short licence names -> SPDX ids (LicenseRef-* for terms SPDX does not list)
IDC_LICENCES = {
    "CC BY 4.0": "CC-BY-4.0",
    "CC BY 3.0": "CC-BY-3.0",
    "CC BY-NC 4.0": "CC-BY-NC-4.0",
    "CC BY-NC 3.0": "CC-BY-NC-3.0",
    "CC BY-SA 4.0": "CC-BY-SA-4.0",
    "CC BY-NC-SA 4.0": "CC-BY-NC-SA-4.0",
    "CC BY-NC-ND 4.0": "CC-BY-NC-ND-4.0",
    "CC0 1.0": "CC0-1.0",
    "TCIA NLM": "LicenseRef-TCIA-NLM",
    "NLM": "LicenseRef-TCIA-NLM",
}
# Which licence binds a whole made of parts under different terms: the first of these that any part has.
# Non-commercial and no-derivatives terms bind every use of the whole; plain attribution binds least.
RESTRICTIVENESS = (
    "LicenseRef-TCIA-NLM",
    "CC-BY-NC-ND-4.0",
    "CC-BY-NC-SA-4.0",
    "CC-BY-NC-4.0",
    "CC-BY-NC-3.0",
    "CC-BY-SA-4.0",
    "CC-BY-4.0",
    "CC-BY-3.0",
    "CC0-1.0",
)


def spdx_licence(short_name: str | None) -> str | None:
    """IDC's short licence name as an SPDX id; None for a name we do not know (never guessed)."""
    if not short_name:
        return None
    name = short_name.strip()
    nlm = "NLM" in name.split() or "national library of medicine" in name.lower()
    return IDC_LICENCES.get(name) or ("LicenseRef-TCIA-NLM" if nlm else None)


def binding_licence(licences: dict[str, int]) -> str | None:
    """The licence whose terms bind the whole when parts carry different ones (e.g. CC BY 4.0 and CC BY-NC 3.0:
    the whole can only be used non-commercially). None when any part's licence is unknown."""
    if not licences or any(spdx is None or spdx not in RESTRICTIVENESS for spdx in licences):
        return None
    return min(licences, key=RESTRICTIVENESS.index)


@dataclass
class IdcEntry:
    """One IDC collection or analysis result, with what its series say."""

    kind: str  # "collection" | "analysis_result"
    id: str  # IDC's lowercase id, e.g. "lidc_idri"
    name: str  # e.g. "LIDC-IDRI" (collections) or the result's title
    dois: list[str]  # lowercase, without https://doi.org/
    citation: str | None
    description: str | None
    subjects: int = 0
    series: int = 0
    instances: int = 0
    bytes: int = 0
    licences: dict[str, int] = field(default_factory=dict)  # SPDX id -> series
    modalities: dict[str, int] = field(default_factory=dict)  # DICOM Modality -> series
    body_parts: dict[str, int] = field(default_factory=dict)  # BodyPartExamined -> series
    label_series: int = 0  # SEG + RTSTRUCT series
    collections: list[str] = field(default_factory=list)  # for analysis results: the collections annotated

    def facts(self, index_version: str) -> dict[str, Any]:
        """The facts as the catalog stores them (JSON), with where they come from."""
        return {
            "source": "NCI Imaging Data Commons",
            "index": f"idc-index-data {index_version}",
            "kind": self.kind,
            "id": self.id,
            "name": self.name,
            "doi": self.dois[0] if self.dois else None,
            "dois": self.dois,
            "citation": self.citation,
            "subjects": self.subjects,
            "series": self.series,
            "instances": self.instances,
            "bytes": self.bytes,
            "licences": self.licences,
            "licence": binding_licence(self.licences),
            "modalities": self.modalities,
            "body_parts": self.body_parts,
            "label_series": self.label_series,
        }


def index_version() -> str:
    """The installed idc-index-data version, e.g. '25.0.5' (names the index the facts come from)."""
    return metadata.version("idc-index-data")


def _index_dir() -> Path:
    import idc_index_data

    index_file = idc_index_data.IDC_INDEX_PARQUET_FILEPATH
    if index_file is None:  # typed optional, but the package raises on import when its index is missing
        raise FileNotFoundError("idc-index-data has no idc_index.parquet")
    return Path(index_file).parent


def plain_citation(text: str | None) -> str | None:
    """IDC's citations carry HTML (`<i>`, `&amp;`) and hard line breaks: one plain line."""
    if not text:
        return None
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", text))).strip()


def _doi(value: str | None) -> str | None:
    if not value:
        return None
    doi = re.sub(r"^(https?://)?(dx\.)?doi\.org/", "", value.strip(), flags=re.IGNORECASE).lower()
    return doi or None


@cache
def load_entries() -> tuple[IdcEntry, ...]:
    """Every collection and analysis result of the installed index, with series aggregates (cached)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = _index_dir()
    entries: dict[tuple[str, str], IdcEntry] = {}
    for row in pq.read_table(folder / "collections_index.parquet").to_pylist():
        # a collection's sources also list the analysis results published on it: its own DOIs are those of its
        # original data, so an analysis result's DOI finds the result, not the collection
        sources = [s for s in row.get("sources") or [] if s.get("source_type") in (None, "original_data")]
        dois = [d for d in (_doi(s.get("source_doi")) for s in sources) if d]
        citation = next((plain_citation(s.get("citation")) for s in sources if s.get("citation")), None)
        entries["collection", row["collection_id"]] = IdcEntry(
            "collection", row["collection_id"], row["collection_name"], dois, citation, row.get("description")
        )
    for row in pq.read_table(folder / "analysis_results_index.parquet").to_pylist():
        doi = _doi(row.get("source_DOI"))
        entries["analysis_result", row["analysis_result_id"]] = IdcEntry(
            "analysis_result",
            row["analysis_result_id"],
            row.get("analysis_result_title") or row["analysis_result_id"],
            [doi] if doi else [],
            plain_citation(row.get("citation")),
            row.get("description"),
            collections=[c.strip() for c in (row.get("collections") or "").split(",") if c.strip()],
        )
    columns = [
        "collection_id",
        "analysis_result_id",
        "PatientID",
        "Modality",
        "BodyPartExamined",
        "license_short_name",
        "instanceCount",
        "series_size_MB",
    ]
    table = pq.read_table(folder / "idc_index.parquet", columns=columns)
    # A collection counts all its series, the analysis results published on it included (a job fetching the
    # collection gets them too); an analysis result counts its own.
    for kind, key, rows in (
        ("collection", "collection_id", table),
        ("analysis_result", "analysis_result_id", table.filter(pc.is_valid(table["analysis_result_id"]))),
    ):
        _aggregate(entries, kind, key, rows)
    for entry in entries.values():
        entry.label_series = entry.modalities.get("SEG", 0) + entry.modalities.get("RTSTRUCT", 0)
        for name in ("licences", "modalities", "body_parts"):
            setattr(entry, name, dict(Counter(getattr(entry, name)).most_common()))
    return tuple(entries.values())


def _aggregate(entries: dict[tuple[str, str], IdcEntry], kind: str, key: str, table: Any) -> None:
    """Add the series of `table`, grouped by `key`, to the entries of that kind."""
    totals = table.group_by([key]).aggregate(
        [("PatientID", "count_distinct"), ("instanceCount", "sum"), ("series_size_MB", "sum"), (key, "count")]
    )
    for row in totals.to_pylist():
        entry = entries.get((kind, row[key]))
        if entry is None:
            continue
        entry.subjects = row["PatientID_count_distinct"]
        entry.instances = row["instanceCount_sum"] or 0
        entry.bytes = round((row["series_size_MB_sum"] or 0) * 1_000_000)
        entry.series = row[f"{key}_count"]
    for column in ("license_short_name", "Modality", "BodyPartExamined"):
        for row in table.group_by([key, column]).aggregate([(key, "count")]).to_pylist():
            entry = entries.get((kind, row[key]))
            value = row[column]
            if entry is None or not value or not str(value).strip():
                continue
            if column == "license_short_name":
                # a name we do not know stays visible, and binding_licence() then says unknown
                bucket, value = entry.licences, spdx_licence(value) or f"unknown: {value}"
            elif column == "Modality":
                bucket = entry.modalities
            else:
                bucket, value = entry.body_parts, str(value).strip().upper()
            bucket[value] = bucket.get(value, 0) + row[f"{key}_count"]
