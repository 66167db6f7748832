"""The vocabulary of structures and findings that label maps draw and 2D class folders name, loaded from
`app/data/labels/structures.json`.

One term per meaning: "grey matter" and "Gray Matter", "CSF" and "cerebrospinal fluid", "left kidney",
"kidney_left" and "Kidney L" each resolve to one concept. A name the vocabulary does not know resolves to
nothing: callers keep it as written and list it, they never guess. Codes are the ones the data file states
(SNOMED CT as DICOM's code dictionary gives them, UBERON as the catalog's anatomy vocabulary gives them);
laterality is a DICOM modifier beside the structure's code, not a code of its own.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

STRUCTURES_FILE = Path(__file__).resolve().parent.parent / "data" / "labels" / "structures.json"
Side = Literal["left", "right"]


@dataclass(frozen=True)
class Code:
    scheme: str  # "SCT" (SNOMED CT) or "UBERON"
    value: str
    meaning: str
    role: str = "type"  # "type": what the concept is; "region": where it is (a tumour's organ)


class _Region(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(pattern=r"^[0-9]{6,18}$")
    meaning: str


class _Snomed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(pattern=r"^[0-9]{6,18}$")
    meaning: str
    # where the code was taken from: the keyword of pydicom.sr.codedict's SCT dictionary, or TotalSegmentator's
    # SNOMED CT mapping of its classes (resources/totalsegmentator_snomed_mapping.csv)
    dicom_keyword: str | None = None
    totalsegmentator: bool = False
    # a finding or tissue in one place ("Neoplasm" in the Liver): DICOM's anatomic region beside the type
    region: _Region | None = None


class StructureTerm(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9]+(_[a-z0-9]+)*$")
    label: str
    kind: Literal["background", "structure", "finding", "plane"]
    synonyms: tuple[str, ...] = ()
    lateral: bool = False  # has left and right forms ("kidney_left"), each its own concept
    snomed: _Snomed | None = None
    uberon: str | None = Field(default=None, pattern=r"^UBERON:[0-9]{7}$")
    totalsegmentator: tuple[str, ...] = ()  # TotalSegmentator's class names of this meaning

    def codes(self) -> list[Code]:
        found = []
        if self.snomed is not None:
            found.append(Code("SCT", self.snomed.code, self.snomed.meaning))
            if self.snomed.region is not None:
                found.append(Code("SCT", self.snomed.region.code, self.snomed.region.meaning, role="region"))
        if self.uberon is not None:
            found.append(Code("UBERON", self.uberon, self.label))
        return found


class _Side(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    snomed: _Snomed
    forms: tuple[str, ...]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    laterality: dict[Side, _Side]
    terms: tuple[StructureTerm, ...]


@dataclass(frozen=True)
class Resolved:
    """What a name means: the concept id (a term's id, with `_left` / `_right` for a lateral form), the term,
    and the side when the name stated one."""

    concept: str
    term: StructureTerm
    side: Side | None = None

    @property
    def label(self) -> str:
        return f"{self.side.capitalize()} {self.term.label.lower()}" if self.side else self.term.label


def name_key(name: str) -> str:
    """A name compared without case, punctuation or spacing: "Kidney L", "kidney-l" -> "kidney l"."""
    return " ".join(re.findall(r"[a-z0-9]+", name.lower()))


class StructureVocabulary:
    def __init__(self, document: _File) -> None:
        self.terms = document.terms
        self.sides = document.laterality
        self._by_id = {term.id: term for term in self.terms}
        self._by_key: dict[str, StructureTerm] = {}
        for term in self.terms:
            for spelling in (term.id, term.label, *term.synonyms):
                key = name_key(spelling)
                if self._by_key.setdefault(key, term) is not term:
                    raise ValueError(f"{spelling!r} names both {self._by_key[key].id} and {term.id}")
        # TotalSegmentator's names, with the side they state when the term has sides ("rib_left_1")
        self._by_tool_name: dict[str, Resolved] = {}
        for term in self.terms:
            for tool_name in term.totalsegmentator:
                tokens = name_key(tool_name).split()
                side: Side | None = None
                if term.lateral:
                    side = "left" if "left" in tokens else "right" if "right" in tokens else None
                concept = f"{term.id}_{side}" if side else term.id
                key = " ".join(tokens)
                if self._by_key.get(key, term) is not term:
                    raise ValueError(
                        f"TotalSegmentator's {tool_name!r} of {term.id} spells {self._by_key[key].id}"
                    )
                self._by_tool_name.setdefault(key, Resolved(concept, term, side))
        self._side_of = {form: side for side, entry in self.sides.items() for form in entry.forms}

    def term(self, term_id: str) -> StructureTerm:
        return self._by_id[term_id]

    def resolve(self, name: str) -> Resolved | None:
        """The meaning of `name`, or None when the vocabulary does not know it (never a guess).

        Tried in order: the whole name; the name less a plural ending; a laterality form at either end
        ("left kidney", "kidney_left", "Kidney L", "lt kidney") around a lateral term."""
        key = name_key(name)
        if not key:
            return None
        if key in self._by_tool_name:
            return self._by_tool_name[key]
        whole = self._lookup(key)
        if whole is not None:
            return Resolved(whole.id, whole)
        tokens = key.split()
        if len(tokens) < 2:
            return None
        for side_token, rest in ((tokens[0], tokens[1:]), (tokens[-1], tokens[:-1])):
            side = self._side_of.get(side_token)
            if side is None:
                continue
            term = self._lookup(" ".join(rest))
            if term is not None and term.lateral:
                return Resolved(f"{term.id}_{side}", term, side)
        return None

    def concept(self, concept: str) -> Resolved | None:
        """The term (and side) of a concept id, looked up by id, never by spelling."""
        if concept in self._by_id:
            return Resolved(concept, self._by_id[concept])
        base, _, side = concept.rpartition("_")
        term = self._by_id.get(base)
        if term is not None and term.lateral and side in ("left", "right"):
            return Resolved(concept, term, "left" if side == "left" else "right")
        return None

    def _lookup(self, key: str) -> StructureTerm | None:
        if key in self._by_key:
            return self._by_key[key]
        # plurals not listed: "cysts", "masses"; a listed spelling always wins ("pancreas" is not a plural)
        for ending in ("es", "s"):
            if key.endswith(ending) and len(key) > len(ending) + 2 and key[: -len(ending)] in self._by_key:
                return self._by_key[key[: -len(ending)]]
        return None

    def codes(self, concept: str) -> tuple[list[Code], Code | None]:
        """The codes of a concept id (as `resolve` gives them: a term's id, or a lateral term's id with `_left`
        or `_right`) and its laterality modifier, if any."""
        resolved = self.concept(concept)
        if resolved is None:
            return [], None
        modifier = None
        if resolved.side is not None:
            snomed = self.sides[resolved.side].snomed
            modifier = Code("SCT", snomed.code, snomed.meaning)
        return resolved.term.codes(), modifier


def load_structures(path: Path = STRUCTURES_FILE) -> StructureVocabulary:
    """The vocabulary in `path`; a malformed file is a ValueError naming what is wrong."""
    return StructureVocabulary(_File.model_validate(json.loads(path.read_text(encoding="utf-8"))))


@functools.cache
def structures() -> StructureVocabulary:
    """The shipped vocabulary, loaded once per process."""
    return load_structures()
