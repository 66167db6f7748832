"""Quality flags of a dataset record: what is missing, and which of its facts contradict each other. No database.

A flag must be worth a reader's attention: a disease text that names another organ than the anatomy is a
contradiction only when the two cannot both hold. Cells, lymph nodes and phantoms come from (or stand in for)
the organ a cancer is named after; metastases travel; a 'sperm head' is no head.
"""

import re
from dataclasses import dataclass

from app.catalog.normalise import anatomy_terms_in
from app.common.vocabularies import ANATOMY

# The survey's tables are per modality; a table's modality checks the dataset's (it never replaces it)
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
# Samples taken from an organ (cells, lymph nodes) or standing in for one (phantoms): a cancer named after an
# organ is where they come from, not a contradiction
_SAMPLED = {"cell", "lymphatic", "non_anatomical", "blood"}
_CANCER = re.compile(r"cancer|carcinoma|adenocarcinoma|cytology|neoplasm|metasta|lymph node", re.I)
# Organ words that are not the organ in these phrases
_NOT_ORGANS = re.compile(r"\b(sperm|femoral|humeral|nerve|optic nerve|muscle) head\b", re.I)
# Diseases of one organ that name no organ word ('Diabetic retinopathy' on a chest X-ray set is a survey error).
# Only diseases that stay in their organ: not cancers, which travel (melanoma in a lymph node or the brain)
_ORGAN_OF_DISEASE = (
    (re.compile(r"retinopath|maculopath|macular degeneration|glaucoma", re.I), "retina"),
    (re.compile(r"pneumothorax|pneumonia|emphysema", re.I), "lung"),
)


@dataclass(frozen=True)
class FlagInput:
    """The merged facts the flags read."""

    url: str | None
    url_shared: bool
    count_status: str
    year: int | None
    modalities: list[str]
    modality_unknown: bool
    anatomies: list[str]
    anatomy_from_name: bool
    tasks: list[str]
    task_ambiguous: bool
    labeled: bool
    diseases: list[str]
    dims: list[str]
    sections: list[str]
    parts_disagree: bool


def _parent(term: str) -> str | None:
    ancestors = ANATOMY.ancestors(term)
    return ancestors[0] if ancestors else None


def related(a: str, b: str) -> bool:
    """Same region, one inside the other, or neighbours within one organ (optic disc and retina)."""
    parent_a, parent_b = _parent(a), _parent(b)
    siblings = parent_a == parent_b and parent_a not in (None, "whole_body")
    return a == b or siblings or a in ANATOMY.ancestors(b) or b in ANATOMY.ancestors(a)


def disease_contradicts_anatomy(anatomies: list[str], diseases: list[str]) -> bool:
    """The disease text names an organ the anatomy cannot be related to (MED-NODE: skin, disease 'Brain')."""
    text = _NOT_ORGANS.sub(" ", " ; ".join(diseases))
    named = anatomy_terms_in(text) + [organ for pattern, organ in _ORGAN_OF_DISEASE if pattern.search(text)]
    if not anatomies or not named or any(related(a, b) for a in anatomies for b in named):
        return False
    if "metasta" in text.lower():  # metastases are found far from the organ they are named after
        return False
    return not (set(anatomies) <= _SAMPLED and _CANCER.search(text))


def quality_flags(facts: FlagInput) -> list[str]:
    flags = []
    if facts.count_status != "ok":
        flags.append(f"count_{facts.count_status}")
    if not facts.url:
        flags.append("url_missing")
    elif facts.url_shared:
        flags.append("url_shared")
    if facts.year is None:
        flags.append("year_missing")
    if facts.modality_unknown or not facts.modalities:
        flags.append("modality_unknown")
    if facts.anatomy_from_name:
        flags.append("anatomy_from_name")
    elif not facts.anatomies:
        flags.append("anatomy_unknown")
    if not facts.tasks:
        flags.append("task_unknown")
        if facts.labeled:
            flags.append("labeled_without_task")
    if facts.task_ambiguous:
        flags.append("task_ambiguous")
    if disease_contradicts_anatomy(facts.anatomies, facts.diseases):
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
    section_modalities = {SECTION_MODALITY.get(s.lower()) for s in facts.sections} - {None}
    if mods and section_modalities and not section_modalities & mods:
        flags.append("section_contradicts_modality")
    dims = set(facts.dims)
    if any(s.lower().startswith("3d") for s in facts.sections) and dims == {"2D"}:
        flags.append("section_contradicts_dim")
    if any(s.lower().startswith("video") for s in facts.sections) and dims and "video" not in dims:
        flags.append("section_contradicts_dim")
    if facts.parts_disagree:
        flags.append("parts_disagree")
    return list(dict.fromkeys(flags))
