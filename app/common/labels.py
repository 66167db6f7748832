"""Label unification by name/concept, never by numeric id.

Ids mean nothing across sources (TotalSegmentator renumbered its classes between v1 and v2; "1" is liver in
one set and spleen in the next). Every source keeps its own local id -> concept map, the bundle gets one
global concept -> id table, and every case records which concepts its source annotated at all: a concept the
source never drew is *unknown* in that case, not background, so a trainer can mask its loss there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from app.common.structures import Code, structures
from app.common.vocabularies import ANATOMY

BACKGROUND = "background"
# Catalog anatomy terms that describe what a *dataset* covers, not one structure: the catalog folds "body",
# "bone marrow" or "gland" into them for faceting, but a label named "body" is a body outline and must not be
# merged with anything of that name. Such names stay their own concept.
_REGION_TERMS = {
    "whole_body",
    "head_and_neck",
    "abdomen",
    "thorax",
    "pelvis",
    "musculoskeletal",
    "soft_tissue",
    "blood",
    "cell",
    "non_anatomical",
}


def slug(name: str) -> str:
    """A name as written, lower case with single underscores: how an unknown name stays a concept."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def resolve_concept(name: str) -> tuple[str, bool]:
    """(concept id, known) for a label name in any spelling.

    The structures vocabulary first (app/common/structures.py: "Gray Matter" and "grey matter" -> grey_matter,
    "CSF" -> cerebrospinal_fluid, "Kidney L" -> kidney_left), then the catalog's anatomy vocabulary by a term's
    own id or label only (its synonyms are a dataset's coverage, too coarse for one structure: "trachea" is
    filed under lung there). A name neither knows is kept as written (its slug) and is not known: callers list
    it, nothing guesses what it means."""
    key = slug(name)
    if not key or key in {"0", BACKGROUND}:
        return BACKGROUND, True
    found = structures().resolve(name)
    if found is not None:
        return found.concept, True
    term_id = ANATOMY.resolve(name)
    if term_id is not None and term_id not in _REGION_TERMS:
        term = ANATOMY.term(term_id)
        if key in {slug(term.id), slug(term.label)}:
            return term_id, True
    return key, False


def normalise_concept(name: str) -> str:
    """The concept id for a label name in any spelling (see `resolve_concept`)."""
    return resolve_concept(name)[0]


def unknown_names(names: Iterable[str]) -> list[str]:
    """The names, as written, that no vocabulary knows: what a case lists as `unknown_labels`."""
    return sorted({name for name in names if not resolve_concept(name)[1]})


def concept_codes(concept: str) -> tuple[list[Code], Code | None]:
    """A concept's codes (SNOMED CT, UBERON) and laterality modifier from the structures vocabulary, else the
    catalog's anatomy vocabulary's UBERON id; nothing for an unknown concept."""
    codes, modifier = structures().codes(concept)
    if codes or modifier is not None:
        return codes, modifier
    # the anatomy terms `resolve_concept` will not take as one structure (regions) get no code either: a code
    # beside "not in the vocabulary" would contradict itself in labels.json and the datacard
    if concept in ANATOMY and concept not in _REGION_TERMS:
        term = ANATOMY.term(concept)
        if term.code and term.code_system == "UBERON":
            return [Code("UBERON", term.code, term.label)], None
    return [], None


def snomed_code(concept: str) -> tuple[str, str] | None:
    """(SNOMED CT code, meaning) of a concept, e.g. liver -> ("10200004", "Liver"): the structures
    vocabulary's (taken from DICOM's code dictionary, pydicom.sr.codedict), without its laterality."""
    for code in concept_codes(concept)[0]:
        if code.scheme == "SCT":
            return code.value, code.meaning
    return None


class Annotation(StrEnum):
    ANNOTATED = "annotated"
    UNKNOWN = "unknown"  # the source never drew this concept: do not treat its absence as background


@dataclass(frozen=True)
class LabelUnification:
    """The global table and each source's local -> global map."""

    table: dict[str, int]  # concept -> global id; background 0, then consecutive
    local_to_concept: dict[str, dict[int, str]]  # source -> local id -> concept (many-to-one allowed)
    local_to_global: dict[str, dict[int, int]]  # source -> local id -> global id

    def annotation_status(self, annotated: set[str] | frozenset[str]) -> dict[str, Annotation]:
        """Every global concept except background, annotated or unknown for one case."""
        return {
            concept: Annotation.ANNOTATED if concept in annotated else Annotation.UNKNOWN
            for concept in self.table
            if concept != BACKGROUND
        }

    def codes(self) -> dict[str, tuple[str, str] | None]:
        return {concept: snomed_code(concept) for concept in self.table if concept != BACKGROUND}


def unify_labels(sources: Mapping[str, Mapping[int, str]]) -> LabelUnification:
    """One global table from every source's local table.

    Concepts are numbered source by source in slug order, each source's in the order of its local ids: the
    first source keeps its own numbering wherever it is consecutive (a bundle of MSD Liver alone still has
    1 = liver, 2 = tumour, and its label files need no rewriting), and later sources' new concepts follow.
    Slug order, not arrival order, so the same set of sources gives the same ids whichever finished
    downloading first. Local id 0 is background in every source we know of; a source naming another id
    "background" is honoured too.
    """
    local_to_concept: dict[str, dict[int, str]] = {}
    for source, names in sorted(sources.items()):
        concepts = {0: BACKGROUND}
        concepts.update({int(local): normalise_concept(name) for local, name in names.items()})
        local_to_concept[source] = concepts
    table = {BACKGROUND: 0}
    for concepts in local_to_concept.values():
        for _local, concept in sorted(concepts.items()):
            table.setdefault(concept, len(table))
    local_to_global = {
        source: {local: table[concept] for local, concept in concepts.items()}
        for source, concepts in local_to_concept.items()
    }
    return LabelUnification(table, local_to_concept, local_to_global)


def annotated_concepts(local_table: Mapping[int, str]) -> frozenset[str]:
    """What a case's source annotated: every concept in its label table, whether or not it appears in this
    particular case's voxels (an annotated organ that is absent really is background there)."""
    return frozenset(normalise_concept(name) for name in local_table.values()) - {BACKGROUND}


class UnknownLabelValueError(ValueError):
    def __init__(self, values: list[int] | list[float]) -> None:
        super().__init__(f"label values {values} are not in the source's label table")
        self.values = values


# Label maps with values up to this are remapped through a lookup table indexed by the voxels themselves;
# larger values (rare: instance ids) take the slower np.unique path.
_LOOKUP_LIMIT = 1 << 16


def remap_labels(array: np.ndarray, local_to_global: Mapping[int, int]) -> np.ndarray:
    """A label array in global ids. A value the source's table does not name is an error, never silently 0:
    that would turn an unnamed structure into background.

    One pass through a lookup table indexed by the voxels (uint8/uint16 indices, no int64 copy): np.unique
    plus an int64 cast cost ~1 s on a 52 M voxel map, this ~0.1 s. A sentinel in the table finds unnamed
    values; only then is np.unique run, on those voxels alone, to name them in the error. A map whose ids all
    stay as they are comes back as it is (not a copy)."""
    if np.issubdtype(array.dtype, np.floating):
        if not np.array_equal(array, np.round(array)):
            # A float label with fractions is a probability map or was resampled with interpolation: not classes.
            raise UnknownLabelValueError(sorted({float(v) for v in np.unique(array) if v != round(v)})[:5])
        array = array.astype(np.int64)
    largest = max(local_to_global.values(), default=0)
    out_dtype = np.uint8 if largest <= np.iinfo(np.uint8).max else np.uint16
    if array.size == 0:
        return np.zeros(array.shape, dtype=out_dtype)
    low, high = int(array.min()), int(array.max())
    if low < 0:
        raise UnknownLabelValueError(sorted(int(v) for v in np.unique(array[array < 0])))
    if high >= _LOOKUP_LIMIT:
        present = np.unique(array)
        missing = sorted(int(v) for v in present if int(v) not in local_to_global)
        if missing:
            raise UnknownLabelValueError(missing)
        lookup = np.zeros(high + 1, dtype=out_dtype)
        for local, global_id in local_to_global.items():
            if 0 <= local <= high:
                lookup[local] = global_id
        looked_up: np.ndarray = lookup[array]  # integer-array indexing: an array of lookup's dtype
        return looked_up
    unnamed = np.iinfo(np.uint32).max  # no global id is this large
    lookup = np.full(high + 1, unnamed, dtype=np.uint32)
    for local, global_id in local_to_global.items():
        if 0 <= local <= high:
            lookup[local] = global_id
    # non-negative after the check above, so a same-width unsigned view indexes the same entries
    index = (
        array.view(array.dtype.str.replace("i", "u"))
        if array.dtype.kind == "i" and array.itemsize <= 2
        else array
    )
    if (lookup == unnamed).any():
        mapped: np.ndarray = lookup[index]
        unknown = mapped == unnamed
        if unknown.any():
            raise UnknownLabelValueError(sorted(int(v) for v in np.unique(array[unknown])))
        return mapped.astype(out_dtype)
    if array.dtype == out_dtype and np.array_equal(lookup, np.arange(high + 1)):
        return array  # every value keeps its id (one source alone, or the first by slug): nothing to rewrite
    remapped: np.ndarray = lookup.astype(out_dtype)[index]
    return remapped
