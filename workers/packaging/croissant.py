"""croissant.json: MLCommons Croissant 1.0 JSON-LD describing the whole bundle.

Every small file is a FileObject with its sha256 (mlcroissant rejects a FileObject without a checksum); the
many volumes and PNGs are FileSets by glob (their sha256 is in SHA256SUMS and the manifest). The manifest is a
RecordSet, so `mlcroissant` can iterate items. Each source dataset appears under `prov:wasDerivedFrom`.
The @context is the official 1.0 one plus the `prov` prefix; anything else draws a warning from mlcroissant.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from app.core.croissant import CROISSANT_CONTEXT, CROISSANT_SPEC
from workers.packaging.cases import SourceDataset
from workers.packaging.manifest import COLUMN_DESCRIPTIONS, COLUMNS, MANIFEST_CSV

CROISSANT_NAME = "croissant.json"


_FORMATS = {
    ".csv": "text/csv",
    ".json": "application/json",
    ".parquet": "application/x-parquet",
    ".md": "text/markdown",
    ".bib": "application/x-bibtex",
    ".html": "text/html",
    ".png": "image/png",
    ".tiff": "image/tiff",
    ".gz": "application/gzip",
}
_INTEGER_COLUMNS = {"dims", "intensity_offset"}


def encoding_format(relative: str) -> str:
    return _FORMATS.get(Path(relative).suffix, "application/octet-stream")


def croissant_document(
    *,
    name: str,
    description: str,
    url: str,
    version: str,
    date_published: str,
    sources: Sequence[SourceDataset],
    files: Mapping[str, str],
    file_sets: Sequence[tuple[str, str, str]],
) -> dict[str, Any]:
    """`files`: bundle-relative path -> sha256 of each FileObject; `file_sets`: (id, glob, encoding format)."""
    ordered_sources = sorted(sources, key=lambda s: s.slug)
    licences = sorted({s.licence_url or s.licence for s in ordered_sources})
    distribution: list[dict[str, Any]] = [
        {
            "@type": "cr:FileObject",
            "@id": relative,
            "name": relative,
            "contentUrl": relative,
            "encodingFormat": encoding_format(relative),
            "sha256": digest,
        }
        for relative, digest in sorted(files.items())
    ]
    distribution += [
        {
            "@type": "cr:FileSet",
            "@id": set_id,
            "name": set_id,
            "description": f"The files matching {glob}: each is one item's image_path or label_path in the "
            "manifest, with its sha256 there and in SHA256SUMS",
            "encodingFormat": fmt,
            "includes": glob,
        }
        for set_id, glob, fmt in file_sets
    ]
    fields = [
        {
            "@type": "cr:Field",
            "@id": f"manifest/{column}",
            "name": column,
            "description": COLUMN_DESCRIPTIONS[column],
            "dataType": "sc:Integer" if column in _INTEGER_COLUMNS else "sc:Text",
            "source": {"fileObject": {"@id": MANIFEST_CSV}, "extract": {"column": column}},
        }
        for column in COLUMNS
    ]
    record_sets: list[dict[str, Any]] = [
        {
            "@type": "cr:RecordSet",
            "@id": "manifest",
            "name": "manifest",
            "description": "One record per item; see manifest.parquet for typed list columns.",
            "key": {"@id": "manifest/item_id"},
            "field": fields,
        }
    ]
    # pictures get a record set each (path and image, which mlcroissant decodes); it reads neither .nii.gz
    # volumes nor float TIFFs without extra packages, so those sets are tied to the manifest by description
    record_sets += [_file_set_records(set_id, fmt) for set_id, _glob, fmt in file_sets if fmt == "image/png"]
    document: dict[str, Any] = {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "name": name,
        "description": description,
        "conformsTo": CROISSANT_SPEC,
        "url": url,
        "version": version,
        "license": licences[0] if len(licences) == 1 else licences,
        "citeAs": "; ".join(f"{s.title} ({s.url})" for s in ordered_sources),
        "isAccessibleForFree": True,
        "prov:wasDerivedFrom": [
            # Untyped on purpose: a nested node typed sc:Dataset is taken by mlcroissant for the bundle itself.
            {"@id": s.url, "name": s.slug, "url": s.url, "license": s.licence_url or s.licence}
            for s in ordered_sources
        ],
        "distribution": distribution,
        "recordSet": record_sets,
    }
    if date_published:
        document["datePublished"] = date_published
    return document


def _file_set_records(set_id: str, fmt: str) -> dict[str, Any]:
    """A record per picture of a FileSet: its path (the manifest's `image_path` / `label_path` name it too)
    and the image itself."""
    record_id = f"{set_id}-files"

    def field(name: str, data_type: str, file_property: str, description: str) -> dict[str, Any]:
        return {
            "@type": "cr:Field",
            "@id": f"{record_id}/{name}",
            "name": name,
            "description": description,
            "dataType": data_type,
            "source": {"fileSet": {"@id": set_id}, "extract": {"fileProperty": file_property}},
        }

    fields = [
        field("path", "sc:Text", "filepath", "The file's path"),
        field("image", "sc:ImageObject", "content", f"The picture ({fmt})"),
    ]
    return {
        "@type": "cr:RecordSet",
        "@id": record_id,
        "name": record_id,
        "description": f"One record per file of {set_id} ({fmt}); the manifest says what each one is.",
        "field": fields,
    }


def write_croissant(document: dict[str, Any], root: Path) -> None:
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    (root / CROISSANT_NAME).write_text(text, encoding="utf-8")
