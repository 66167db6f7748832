"""The in-memory text index: for every search token, which datasets have it and in which field (a weight).

Why in memory: a query word is widened to the catalog words it may mean (exact, prefix, close misspellings,
a concept's narrower terms), each with its own field weights; doing that as PostgreSQL full text took a
round trip per word and ranked every field alike. Here a token's datasets are a dense weight vector over the
same positions as the bitmap index (app/search/index.py), built once per catalog version from the database.

Fields and weights: a dataset's name and its aliases (the catalog's and the curated ones of
app/data/search/aliases.json) outweigh its diseases, which outweigh its modality, anatomy and task, which
outweigh the rest (dimensionality, host, survey section, organisation, year). Tokens of the controlled
vocabularies (modality, anatomy, task, dim, host labels and synonyms) are not stored per dataset: their
datasets are the facet bitmaps of the values they name.
"""

import bisect
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.common.vocabularies import ALL
from app.core.cache import on_forget
from app.search.concepts import ALIASES
from app.search.index import CatalogIndex, current_index, read_whole_catalog
from app.search.schemas import FACETS
from app.search.tokens import deletions, document_tokens, edit_budget, edit_distance, joined, split_runs

NAME, ALIAS, DISEASE, FACET, REST = 10.0, 8.0, 5.0, 4.0, 1.0
FACET_FIELD_WEIGHTS = {"modality": FACET, "anatomy": FACET, "task": FACET, "dim": REST, "host": REST}

TEXT_FIELDS = ("id", "slug", "name", "aliases", "diseases", "section", "organisation", "year")
_LOAD_SQL = text(f"SELECT {', '.join(TEXT_FIELDS)} FROM dataset ORDER BY id")

# dense vectors kept per term: about this many float32 values in all (4 MB), whatever the catalog size
_VECTOR_BUDGET = 1_000_000


class TextIndex:
    """Token -> weighted datasets, the vocabulary for prefix and misspelling lookups, exact names."""

    def __init__(
        self, catalog: CatalogIndex, rows: Sequence[Any], canonical: Callable[[str], str] = lambda s: s
    ) -> None:
        self.catalog = catalog
        self.size = catalog.size
        ids = np.fromiter((row.id for row in rows), np.int64, len(rows))
        if not np.array_equal(ids, catalog.ids):
            raise ValueError("text rows and the bitmap index disagree: rebuild both from one catalog version")
        position = {row.slug: i for i, row in enumerate(rows)}
        curated: dict[int, list[str]] = {}
        for entry in ALIASES:
            for slug in entry.slugs:
                target = position.get(canonical(slug), position.get(slug))
                if target is not None:
                    curated.setdefault(target, []).extend(entry.aliases)
        # (position, weight) pieces per token, gathered per distinct text: diseases, sections and organisations
        # repeat across records, so each is tokenised once and its records are added as one array
        pieces: dict[str, list[tuple[np.ndarray, float]]] = {}
        surface: dict[str, str] = {}
        # exact names as (hash of the name without separators, position), sorted by hash: a dict of strings
        # would cost about 100 bytes a name, these 12
        name_hashes: list[int] = []
        name_positions: list[int] = []
        self.name_length = np.ones(self.size, dtype=np.float32)
        shared: dict[tuple[str, float, bool], list[int]] = {}  # (text, weight, is a name) -> positions
        for i, row in enumerate(rows):
            names = [row.name, *(row.aliases or []), *curated.get(i, [])]
            for n, name in enumerate(names):
                name_hashes.append(hash(joined(name)))
                name_positions.append(i)
                shared.setdefault((name, NAME if n == 0 else ALIAS, True), []).append(i)
            self.name_length[i] = max(1, len(split_runs(row.name)))
            for disease in row.diseases or []:
                shared.setdefault((disease, DISEASE, False), []).append(i)
            for rest in (row.section, row.organisation, str(row.year) if row.year else None):
                if rest:
                    shared.setdefault((rest, REST, False), []).append(i)
        for (text_, weight, is_name), positions in shared.items():
            at = np.array(positions, dtype=np.int32)
            for token, form in _tokens(text_, is_name):
                pieces.setdefault(token, []).append((at, weight))
                surface.setdefault(token, form)
        self.postings = {term: _merge(parts) for term, parts in pieces.items()}
        hashes = np.array(name_hashes, dtype=np.int64)
        order = np.argsort(hashes, kind="stable")
        self._name_hashes = hashes[order]
        self._name_positions = np.array(name_positions, dtype=np.int32)[order]
        self.facet_terms = self._facet_terms(surface)
        self.df: dict[str, int] = {term: len(entry[0]) for term, entry in self.postings.items()}
        for term, values in self.facet_terms.items():
            self.df[term] = self.df.get(term, 0) + sum(
                int(catalog.count(self._facet_bitmap(f, v))) for f, v, _ in values
            )
        self.surface = surface  # a token as the catalog first wrote it (folded), for suggestions
        self.vocabulary = sorted(self.df)
        self._deletion_index: dict[str, list[str]] | None = None
        self._by_length: dict[int, list[str]] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._close: dict[tuple[str, int], list[tuple[int, str]]] = {}
        self._max_vectors = max(64, _VECTOR_BUDGET // max(1, self.size))
        self._lock = threading.Lock()

    def _facet_terms(self, surface: dict[str, str]) -> dict[str, list[tuple[str, str, float]]]:
        """Vocabulary tokens -> the (facet, value, weight) whose datasets they find."""
        out: dict[str, list[tuple[str, str, float]]] = {}
        for facet, weight in FACET_FIELD_WEIGHTS.items():
            vocabulary = ALL[FACETS[facet].vocabulary or facet]
            for value in self.catalog.facets[facet].values:
                words = [value]
                if value in vocabulary:
                    term = vocabulary.term(value)
                    words += [term.label, *term.synonyms]
                for token, form in {t for w in words for t in document_tokens(w)}:
                    out.setdefault(token, []).append((facet, value, weight))
                    surface.setdefault(token, form)
        return out

    def _facet_bitmap(self, facet: str, value: str) -> np.ndarray:
        bitmaps = self.catalog.facets[facet]
        row: np.ndarray = bitmaps.matrix[bitmaps.position[value]]
        return row

    # -- lookups ------------------------------------------------------------------------------------------------
    def __contains__(self, term: str) -> bool:
        return term in self.df

    def vector(self, term: str) -> np.ndarray:
        """The weight of `term` in each dataset (0 where it does not occur), read-only."""
        kept = self._vectors.get(term)
        if kept is not None:
            return kept
        vector = np.zeros(self.size, dtype=np.float32)
        if term in self.postings:
            positions, weights = self.postings[term]
            vector[positions] = weights
        for facet, value, weight in self.facet_terms.get(term, ()):
            flags = self.catalog.unpack(self._facet_bitmap(facet, value))
            np.maximum(vector, np.where(flags, np.float32(weight), np.float32(0)), out=vector)
        vector.setflags(write=False)
        with self._lock:
            if len(self._vectors) >= self._max_vectors:
                self._vectors.pop(next(iter(self._vectors)))
            self._vectors[term] = vector
        return vector

    def exact_name(self, text: str) -> np.ndarray:
        """Positions of the datasets whose name or an alias is `text` up to case and separators."""
        key = hash(joined(text))
        start, end = np.searchsorted(self._name_hashes, [key, key + 1]) if key < 2**63 - 1 else (0, 0)
        found: np.ndarray = self._name_positions[start:end]
        return found

    def text_only(self, term: str) -> bool:
        """Whether `term` is found only in records' own text (not through a facet value's vocabulary)."""
        return term in self.postings and term not in self.facet_terms

    def text_weights_at(self, term: str, positions: np.ndarray) -> np.ndarray:
        """The weight of `term` in the own text of the datasets at `positions` (ascending), 0 where absent."""
        entry = self.postings.get(term)
        if entry is None or positions.size == 0:
            return np.zeros(positions.size, dtype=np.float32)
        have, weights = entry
        at = np.minimum(np.searchsorted(have, positions), have.size - 1)
        return np.where(have[at] == positions, weights[at], np.float32(0))

    def weights_at(self, term: str, positions: np.ndarray) -> np.ndarray:
        """The weight of `term` (own text or facet values) in the datasets at `positions` (ascending)."""
        if term in self.facet_terms:
            weights: np.ndarray = self.vector(term)[positions]
            return weights
        return self.text_weights_at(term, positions)

    def text_positions(self, term: str) -> np.ndarray:
        """The datasets whose own text (name, aliases, diseases, the rest) has `term`, not its facet values."""
        entry = self.postings.get(term)
        return entry[0] if entry is not None else np.zeros(0, dtype=np.int32)

    def prefixed(self, prefix: str, limit: int) -> list[str]:
        """Vocabulary terms that begin with `prefix` (not itself), the most frequent first."""
        start = bisect.bisect_left(self.vocabulary, prefix)
        found = []
        for term in self.vocabulary[start:]:
            if not term.startswith(prefix):
                break
            if term != prefix:
                found.append(term)
        return sorted(found, key=lambda t: (-self.df[t], t))[:limit]

    def close(self, word: str, budget: int | None = None) -> list[tuple[int, str]]:
        """Vocabulary terms within `budget` edits of `word` (default: its length's budget), as (distance,
        term), nearest and most frequent first; the word itself is not included.

        Candidates come from a one-deletion index (every single-edit typo and many two-edit ones share a key
        with their word); a long word that finds none there is compared with the terms of about its length
        that share its first or second letter."""
        budget = edit_budget(word) if budget is None else budget
        if budget <= 0:
            return []
        kept = self._close.get((word, budget))
        if kept is None:
            kept = self._close_uncached(word, budget)
            with self._lock:
                if len(self._close) >= 4096:
                    self._close.pop(next(iter(self._close)))
                self._close[(word, budget)] = kept
        return list(kept)

    def _close_uncached(self, word: str, budget: int) -> list[tuple[int, str]]:
        index = self._deletions()
        candidates = {term for key in deletions(word, budget) for term in index.get(key, ())} - {word}
        found = self._within(word, candidates, budget)
        if not found and budget > 1:
            similar = (
                t for length in range(len(word) - budget, len(word) + budget + 1)
                for t in self._by_length.get(length, ())
                if t[0] == word[0] or t[1:2] == word[1:2]
            )  # fmt: skip
            found = self._within(word, set(similar) - {word}, budget)
        return sorted(found, key=lambda dt: (dt[0], -self.df[dt[1]], dt[1]))

    @staticmethod
    def _within(word: str, candidates: set[str], budget: int) -> list[tuple[int, str]]:
        distances = ((edit_distance(word, term, budget), term) for term in candidates)
        return [(d, term) for d, term in distances if d <= budget]

    def _deletions(self) -> dict[str, list[str]]:
        """One-deletion keys of every vocabulary term longer than 3 letters (built on first use)."""
        if self._deletion_index is None:
            index: dict[str, list[str]] = {}
            by_length: dict[int, list[str]] = {}
            for term in self.vocabulary:
                if not term.isdigit() and len(term) > 3:
                    by_length.setdefault(len(term), []).append(term)
                    for key in deletions(term, 1):
                        index.setdefault(key, []).append(term)
            self._by_length = by_length
            self._deletion_index = index
        return self._deletion_index


def _merge(parts: list[tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
    """One token's (positions ascending, weight) with the highest weight per position."""
    positions = np.concatenate([at for at, _ in parts])
    weights = np.concatenate([np.full(at.size, weight, dtype=np.float32) for at, weight in parts])
    order = np.lexsort((-weights, positions))
    positions, weights = positions[order], weights[order]
    first = np.ones(positions.size, dtype=bool)
    first[1:] = positions[1:] != positions[:-1]
    return positions[first], weights[first]


@lru_cache(maxsize=200_000)
def _tokens(text: str, name: bool) -> tuple[tuple[str, str], ...]:
    """document_tokens, remembered: diseases, sections and organisations repeat across records."""
    return tuple(document_tokens(text, name=name))


_lock = threading.Lock()
_current: TextIndex | None = None
_current_key: tuple[str, int] | None = None


def current_text_index(session: Session, version: int) -> TextIndex:
    """The text index of this database's catalog `version`, built on first use after a change."""
    global _current, _current_key
    key = (session.get_bind().engine.url.render_as_string(hide_password=True), version)
    if _current is not None and _current_key == key:
        return _current
    catalog = current_index(session, version)
    with _lock:
        if _current is None or _current_key != key:
            rows = read_whole_catalog(session, _LOAD_SQL)
            _current, _current_key = TextIndex(catalog, rows, _alias_slugs(session)), key
        return _current


def _alias_slugs(session: Session) -> Callable[[str], str]:
    """The slug each curated alias entry names now (a slug merged into another record reads as that record's)."""
    from app.catalog.service import canonical_slugs

    now = canonical_slugs(session, [slug for entry in ALIASES for slug in entry.slugs])
    return lambda slug: now.get(slug, slug)


@on_forget
def reset_text_index() -> None:
    """Forget the text index (with the bitmap index: a rolled-back test or a rewritten catalog repeats versions)."""
    global _current, _current_key
    with _lock:
        _current, _current_key = None, None
