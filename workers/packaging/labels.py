"""labels.json: the global label table with codes, and each source's local id -> concept map.

Codes come from the structures vocabulary (app/data/labels/structures.json, loaded by app/common/structures.py):
SNOMED CT as DICOM's code dictionary states it and UBERON as the catalog's anatomy vocabulary states it, with
DICOM's laterality modifier for a sided concept ("kidney_left": Kidney + Left) and, for a finding in one place,
its anatomic region ("liver_tumour": Neoplasm in the Liver). A concept the vocabulary does
not know has no code (`code` null, `codes` empty) and `known` false: it is the source's name kept as written.
Codes the label table itself carries (set by whoever built it) are kept when the vocabulary has none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.common.labels import BACKGROUND, concept_codes, resolve_concept
from workers.packaging.cases import LabelConcept, LabelTable

LABELS_NAME = "labels.json"


def concept_entry(concept: LabelConcept) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": concept.name, "value": concept.value, "code": None, "codes": []}
    if concept.name == BACKGROUND:
        return entry
    codes, modifier = concept_codes(concept.name)
    entry["codes"] = [
        {"scheme": c.scheme, "value": c.value, "meaning": c.meaning} for c in codes if c.role == "type"
    ]
    # where a finding is ("Neoplasm" in the Liver): DICOM SEG's anatomic region beside the segment's type
    entry["region"] = next(
        ({"scheme": c.scheme, "value": c.value, "meaning": c.meaning} for c in codes if c.role == "region"),
        None,
    )
    if not entry["codes"] and concept.code_value:
        entry["codes"] = [
            {
                "scheme": concept.code_scheme,
                "value": concept.code_value,
                "meaning": concept.code_meaning or concept.name,
            }
        ]
    # `code`: the one code a DICOM SEG segment would carry (SNOMED CT first)
    entry["code"] = next((c for c in entry["codes"] if c["scheme"] == "SCT"), None) or next(
        iter(entry["codes"]), None
    )
    entry["laterality"] = (
        {"scheme": modifier.scheme, "value": modifier.value, "meaning": modifier.meaning}
        if modifier
        else None
    )
    entry["known"] = resolve_concept(concept.name)[1]
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
