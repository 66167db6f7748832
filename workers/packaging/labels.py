"""labels.json: the global label table with codes, and each source's local id -> concept map.

Codes come from the table when the label unifier set them; otherwise a SNOMED CT code is looked up in the DICOM
code dictionary that ships with pydicom (`pydicom.sr.codedict`), when pydicom is installed. The lookup is by the
concept's name in CamelCase ("left kidney" -> `codes.SCT.LeftKidney`), which is how that dictionary names them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workers.packaging.cases import LabelConcept, LabelTable

LABELS_NAME = "labels.json"


def dicom_snomed_code(concept: str) -> tuple[str, str, str] | None:
    """(scheme, value, meaning) for a concept name from pydicom's DICOM subset of SNOMED CT, if any."""
    try:
        from pydicom.sr.codedict import codes
    except ImportError:
        return None
    keyword = "".join(part.capitalize() for part in concept.replace("-", " ").replace("_", " ").split())
    try:
        code = getattr(codes.SCT, keyword)
    except AttributeError:
        return None
    return str(code.scheme_designator), str(code.value), str(code.meaning)


def concept_entry(concept: LabelConcept) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": concept.name, "value": concept.value, "code": None}
    if concept.code_value:
        entry["code"] = {
            "scheme": concept.code_scheme,
            "value": concept.code_value,
            "meaning": concept.code_meaning or concept.name,
        }
    elif concept.value != 0 and (found := dicom_snomed_code(concept.name)):
        entry["code"] = {"scheme": found[0], "value": found[1], "meaning": found[2]}
    return entry


def labels_document(table: LabelTable) -> dict[str, Any]:
    return {
        "background": 0,
        "labels": [concept_entry(c) for c in sorted(table.concepts, key=lambda c: c.value)],
        "sources": {
            slug: {str(local): concept for local, concept in sorted(mapping.items())}
            for slug, mapping in sorted(table.source_maps.items())
        },
        "partial_labels": (
            "A concept missing from an item's annotated_labels (manifest) was not annotated in that item: "
            "treat it as unknown there, not as background."
        ),
    }


def write_labels(table: LabelTable, root: Path) -> None:
    text = json.dumps(labels_document(table), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (root / LABELS_NAME).write_text(text, encoding="utf-8")
