"""The search lexicon, loaded once from app/data/search/: spellings, translations, the disease and finding
concepts with their hierarchy, and the curated aliases of datasets and challenges.

The files are data the project maintains by hand (the tests check every alias names a catalog record and every
concept's parent exists); this module only validates and indexes them. Keys are folded text (lower case,
without accents), as app/search/tokens.py folds what people type.
"""

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "search"


class ConceptEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    label: str
    parent: str | None = None
    phrases: tuple[str, ...]

    @field_validator("phrases")
    @classmethod
    def _lower(cls, phrases: tuple[str, ...]) -> tuple[str, ...]:
        if not phrases:
            raise ValueError("a concept needs at least one phrase")
        return tuple(p.lower() for p in phrases)


class ConceptFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    about: str
    spellings: dict[str, str]
    translations: dict[str, str]
    concepts: list[ConceptEntry]

    @model_validator(mode="after")
    def _parents_exist(self) -> "ConceptFile":
        ids = [c.id for c in self.concepts]
        if len(set(ids)) != len(ids):
            raise ValueError("concept ids must be unique")
        missing = {c.parent for c in self.concepts if c.parent is not None} - set(ids)
        if missing:
            raise ValueError(f"unknown parent concept(s): {sorted(missing)}")
        return self


class AliasEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slugs: tuple[str, ...]
    aliases: tuple[str, ...]


class AliasFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    about: str
    entries: list[AliasEntry]


@dataclass(frozen=True)
class Concepts:
    """The concept hierarchy: each concept's phrases, and for any concept every descendant."""

    entries: tuple[ConceptEntry, ...]

    @cached_property
    def by_id(self) -> dict[str, ConceptEntry]:
        return {c.id: c for c in self.entries}

    @cached_property
    def children(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {c.id: [] for c in self.entries}
        for c in self.entries:
            if c.parent is not None:
                out[c.parent].append(c.id)
        return out

    def descendants(self, concept_id: str) -> list[str]:
        """Every concept below `concept_id`, nearest first (breadth first)."""
        found: list[str] = []
        frontier = list(self.children[concept_id])
        while frontier:
            found.extend(c for c in frontier if c not in found)
            frontier = [child for c in frontier for child in self.children[c] if child not in found]
        return found


def _load_concepts() -> ConceptFile:
    return ConceptFile.model_validate_json((DATA_DIR / "concepts.json").read_text(encoding="utf-8"))


def _load_aliases() -> AliasFile:
    return AliasFile.model_validate_json((DATA_DIR / "aliases.json").read_text(encoding="utf-8"))


_CONCEPT_FILE = _load_concepts()
SPELLINGS: dict[str, str] = dict(_CONCEPT_FILE.spellings)
TRANSLATIONS: dict[str, str] = dict(_CONCEPT_FILE.translations)
CONCEPTS = Concepts(tuple(_CONCEPT_FILE.concepts))
ALIASES: tuple[AliasEntry, ...] = tuple(_load_aliases().entries)
