"""Deciding a dataset's ambiguous values from its own evidence, with the reason recorded. No database.

The survey writes 'Multi' where a table section stood in for the modality, and 'Reg' / 'QA' for tasks that
have two meanings (registration or regression; quality assessment or visual question answering). Neither can
be read from the row alone, nor from its table section: a dataset's other rows, its name, its disease text and
a small hand-checked file of decisions (`app/data/catalog/decisions.json`) decide, in that order of trust, and
every decision says which evidence made it. With no evidence, a 'Multi' modality stays unknown and an
abbreviation keeps both meanings, flagged.
"""

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from app.common.vocabularies import MODALITY, TASK

DECISIONS_FILE = Path(__file__).resolve().parents[1] / "data" / "catalog" / "decisions.json"


@dataclass(frozen=True)
class Note:
    """Why a field holds what it holds: the raw text, the value decided and the evidence."""

    field: str
    raw: str
    value: list[str]
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"field": self.field, "raw": self.raw, "value": self.value, "reason": self.reason}


def compact_name(name: str) -> str:
    """The name as a key: lower case, letters and digits only, without the survey's '(Duplicate)' mark."""
    return re.sub(r"[^a-z0-9]", "", re.sub(r"\(duplicate\)", "", name.lower()))


@cache
def decisions() -> dict[str, dict[str, dict[str, str]]]:
    """Hand-checked decisions: {"task": {compact name: {abbreviation: term id, "reason": why}}}."""
    data: dict[str, dict[str, dict[str, str]]] = json.loads(DECISIONS_FILE.read_text(encoding="utf-8"))
    for name, decision in data["task"].items():
        for abbreviation, term in decision.items():
            if abbreviation != "reason" and term not in TASK.ambiguous.get(abbreviation, ()):
                raise ValueError(f"{DECISIONS_FILE}: {name}: {abbreviation!r} cannot mean {term!r}")
    return data


# Modality words a dataset's name may carry ('Prostate-MRI', 'CT-ORG', 'PET-CT Lymphoma'), matched as words
_NAME_WORDS = re.compile(r"[A-Za-z]+")


def modality_from_name(name: str) -> list[str]:
    """Modality ids named as a word in a dataset name (not inside a longer word: 'CTC' is no 'CT')."""
    found: list[str] = []
    for word in _NAME_WORDS.findall(name):
        if len(word) < 2:
            continue
        term = MODALITY.resolve(word)
        if term is not None and term not in found and term != "OTHER":
            found.append(term)
    return found


def decide_modalities(stated: list[str], multi: bool, names: list[str]) -> tuple[list[str], Note | None]:
    """The modalities a dataset's rows state; when some row says only 'Multi' and none states one, the
    modalities its name states; else none (unknown). The note says which evidence decided."""
    if not multi:
        return stated, None
    if stated:
        return stated, Note("modality", "Multi", stated, "stated by the dataset's other survey rows")
    for name in names:
        named = modality_from_name(name)
        if named:
            return named, Note("modality", "Multi", named, f"named in the dataset's name {name!r}")
    return [], Note("modality", "Multi", [], "no row states a modality and the name names none: unknown")


# Words that say what an ambiguous abbreviation stands for, with the meaning they point to
_EVIDENCE: dict[str, list[tuple[re.Pattern[str], str]]] = {
    "reg": [
        (
            re.compile(
                r"regist|learn2reg|\breg\b|regpro|\bdir\b|anhir|acrobat|curious|empire|p2ilf|atlas|"
                r"motion|alignment",
                re.I,
            ),
            "registration",
        ),
        (
            re.compile(
                r"score|grading|count|quality|angle|outcome|survival|progression|predict|thickness|"
                r"tortuosity|\bavr\b|ratio|\bdose\b|estimat|measure|\btils?\b",
                re.I,
            ),
            "regression",
        ),
    ],
    "qa": [
        (re.compile(r"\bvqa\b|question|answer", re.I), "vqa"),
        (re.compile(r"quality|phantom|\bqa\b", re.I), "quality_assessment"),
    ],
}
# Task parts that come with registration in challenge tables: landmarks ('Reg/lmk') and tracking ('Reg/Trk')
_WITH_REGISTRATION = re.compile(r"\b(lmk|landmarks?|trk|tracking)\b", re.I)


def decide_abbreviations(
    abbreviations: list[str], names: list[str], diseases: list[str], task_texts: list[str]
) -> tuple[list[str], list[Note], bool]:
    """Task ids for the ambiguous abbreviations of one dataset, the notes that say why, and whether any
    stayed undecided (then it keeps every meaning and the dataset is flagged `task_ambiguous`)."""
    curated = {}
    for name in names:
        curated.update(decisions()["task"].get(compact_name(name), {}))
    tasks: list[str] = []
    notes: list[Note] = []
    undecided = False
    for abbreviation in dict.fromkeys(a.lower() for a in abbreviations):
        raw = abbreviation.capitalize() if abbreviation == "reg" else abbreviation.upper()
        value: str | None
        if abbreviation in curated:
            value, reason = curated[abbreviation], f"hand-checked: {curated.get('reason', '')}".rstrip(": ")
        elif abbreviation == "reg" and any(_WITH_REGISTRATION.search(t) for t in task_texts):
            value, reason = "registration", "listed with landmarks or tracking, as registration tasks are"
        else:
            value, reason = _by_words(abbreviation, [*names, *diseases])
        if value is None:
            meanings = list(TASK.ambiguous[abbreviation])
            undecided = True
            tasks.extend(meanings)
            notes.append(Note("task", raw, meanings, "nothing in the record decides: listed under both"))
            continue
        tasks.append(value)
        notes.append(Note("task", raw, [value], reason))
    return list(dict.fromkeys(tasks)), notes, undecided


def _by_words(abbreviation: str, texts: list[str]) -> tuple[str | None, str]:
    for pattern, meaning in _EVIDENCE.get(abbreviation, []):
        for text in texts:
            match = pattern.search(text)
            if match:
                return meaning, f"the record says {match.group(0)!r} ({text!r})"
    return None, ""
