"""The controlled vocabularies: the term classes, their loader, and every vocabulary the catalog uses.

The terms themselves (label, synonyms, parent, public code, in display order) are data, one JSON file per
vocabulary in `app/data/vocabularies/<kind>.json`; they are the project's own normalisation of the survey's
free text. They are loaded into the `vocabulary` table by the importer; search and the importer resolve any
spelling through `resolve()`. Codes: DICOM modality codes (PS3.3 C.7.3.1.1.1), UBERON / Cell Ontology ids
for anatomy, SPDX ids for licences; a host's code is the hostname suffix that identifies it.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, ValidationError


@dataclass(frozen=True)
class Term:
    id: str
    label: str
    synonyms: tuple[str, ...] = ()
    parent: str | None = None
    code: str | None = None
    code_system: str | None = None
    description: str | None = None


@dataclass
class Vocabulary:
    kind: str
    label: str
    terms: list[Term]
    # abbreviations that stand for more than one term ('reg': registration or regression); resolve() answers
    # None for them, meanings() answers every term they may stand for
    ambiguous: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _by_key: dict[str, str] = field(default_factory=dict, repr=False)
    _by_id: dict[str, Term] = field(default_factory=dict, repr=False)
    _ancestors: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # lookups run per facet value on every search: index them once
        self._by_id = {term.id: term for term in self.terms}
        for term in self.terms:
            for key in (term.id, term.label, *term.synonyms):
                self._by_key.setdefault(normalise_key(key), term.id)
        for term in self.terms:
            chain: list[str] = []
            current = term.parent
            while current is not None and current not in chain:
                chain.append(current)
                current = self._by_id[current].parent
            self._ancestors[term.id] = chain

    def resolve(self, text: str) -> str | None:
        """The term id for any spelling (id, label or synonym, any case and spacing), or None."""
        return self._by_key.get(normalise_key(text))

    def meanings(self, text: str) -> list[str]:
        """Every term id a spelling may stand for: one for a known spelling, several for an ambiguous
        abbreviation, none for an unknown word."""
        resolved = self.resolve(text)
        if resolved is not None:
            return [resolved]
        return list(self.ambiguous.get(normalise_key(text), ()))

    def term(self, term_id: str) -> Term:
        return self._by_id[term_id]

    def __contains__(self, term_id: object) -> bool:
        return term_id in self._by_id

    @property
    def ids(self) -> list[str]:
        return list(self._by_id)

    def ancestors(self, term_id: str) -> list[str]:
        """Parents of a term up to the root (anatomy is a hierarchy; other vocabularies are flat)."""
        return list(self._ancestors.get(term_id, []))

    def descendants(self, term_id: str) -> list[str]:
        return [t.id for t in self.terms if term_id in self.ancestors(t.id)]


def normalise_key(text: str) -> str:
    """Case-, accent- and punctuation-insensitive key: 'X-Ray', 'x ray' and 'XRAY' meet."""
    text = text.replace("\u200d", "").replace("\u200b", "").strip().lower()
    return re.sub(r"[\s\-\u2013\u2014_.]+", "", text)


VOCABULARY_DIR = Path(__file__).resolve().parents[1] / "data" / "vocabularies"


class VocabularyFileError(ValueError):
    """A vocabulary data file that does not hold a well-formed vocabulary; the message names the file."""


class _TermRecord(BaseModel):
    # strict, closed schema: a misspelt key ("synonym", "parnet") must fail, not silently drop data
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: str
    label: str
    synonyms: tuple[str, ...] = ()
    parent: str | None = None
    code: str | None = None
    code_system: str | None = None
    description: str | None = None


class _VocabularyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: str
    label: str
    terms: list[_TermRecord]
    ambiguous: dict[str, list[str]] = {}


def load_vocabulary(kind: str, directory: Path = VOCABULARY_DIR) -> Vocabulary:
    """The vocabulary in `<directory>/<kind>.json`, terms in file order (the order facets are shown in)."""
    path = directory / f"{kind}.json"
    try:
        record = _VocabularyRecord.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as error:
        raise VocabularyFileError(f"{path}: {error}") from error
    if record.kind != kind:
        raise VocabularyFileError(f"{path}: holds kind {record.kind!r}, expected {kind!r}")
    ids: set[str] = set()
    for term in record.terms:
        if term.id in ids:
            raise VocabularyFileError(f"{path}: duplicate term id {term.id!r}")
        ids.add(term.id)
    parents = {term.id: term.parent for term in record.terms}
    for term in record.terms:
        if term.parent is not None and term.parent not in ids:
            raise VocabularyFileError(
                f"{path}: term {term.id!r} has parent {term.parent!r}, which is not a term"
            )
        seen = {term.id}
        current = term.parent
        while current is not None:
            # Vocabulary stops quietly at a cycle; a file with one is a mistake worth failing on
            if current in seen:
                raise VocabularyFileError(f"{path}: parent cycle through term {term.id!r}")
            seen.add(current)
            current = parents[current]
    ambiguous: dict[str, tuple[str, ...]] = {}
    for abbreviation, meanings in record.ambiguous.items():
        unknown = [m for m in meanings if m not in ids]
        if unknown or len(meanings) < 2:
            raise VocabularyFileError(
                f"{path}: ambiguous {abbreviation!r} must name two or more terms (unknown: {unknown})"
            )
        ambiguous[normalise_key(abbreviation)] = tuple(meanings)
    vocabulary = Vocabulary(
        record.kind, record.label, [Term(**term.model_dump()) for term in record.terms], ambiguous
    )
    clashes = [a for a in ambiguous if a in vocabulary._by_key]
    if clashes:
        raise VocabularyFileError(f"{path}: {clashes} are both ambiguous and a term's spelling")
    return vocabulary


MODALITY = load_vocabulary("modality")
ANATOMY = load_vocabulary("anatomy")
TASK = load_vocabulary("task")
DIM = load_vocabulary("dim")
ACCESS = load_vocabulary("access")
LABELED = load_vocabulary("labeled")
SIZE = load_vocabulary("size")
HOST = load_vocabulary("host")  # `code` holds the matching hostname suffix: where a dataset lives
LICENCE = load_vocabulary("licence")
FETCH = load_vocabulary("fetch")
QUALITY = load_vocabulary("quality")

# DICOM objects that hold annotations or plans, not images: they say what a collection contains, not a modality.
# A rule of the modality parser rather than a vocabulary, so it stays here.
NON_IMAGE_DICOM = {"seg", "sr", "rtstruct", "rtdose", "rtplan", "pr", "ko", "reg"}


def host_in(text: str) -> str | None:
    """The host term of a URL or hostname as people type it ('https://zenodo.org/records/1', 'www.kaggle.com',
    'zenodo.org'), matched on the hostname suffix each host term's code holds; None when it names no host."""
    cleaned = text.strip().lower()
    if not cleaned or " " in cleaned:
        return None
    netloc = urlparse(cleaned if "://" in cleaned else f"//{cleaned}").netloc.removeprefix("www.")
    netloc = netloc.rsplit("@", 1)[-1].split(":", 1)[0]
    if "." not in netloc:
        return None
    for term in HOST.terms:
        suffix = term.code
        if suffix and (netloc == suffix or netloc.endswith("." + suffix.lstrip(".")) or suffix in netloc):
            return term.id
    return None


ALL: dict[str, Vocabulary] = {
    v.kind: v for v in (MODALITY, ANATOMY, TASK, DIM, ACCESS, LABELED, SIZE, HOST, LICENCE, FETCH, QUALITY)
}
