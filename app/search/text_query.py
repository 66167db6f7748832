"""Reading a text query and scoring datasets against it.

A query becomes slots, every one of which a dataset must match (soft words such as 'dataset' only add to the
score). A slot is either a concept the query names ('brain tumor'), matched by any of the concept's phrases
or, a little lower, by any phrase of a narrower concept ('glioma', 'meningioma'), or a single word, matched by
the catalog word itself, else by the words it begins, and, only when those find fewer than FUZZY_BELOW
datasets, by words within its edit budget (none up to 3 letters, 1 up to 7, 2 beyond); a word that is itself
a word of a dataset's name or alias is no misspelling, so only other editions of it (the same letters, another
number: 'brats2020' for 'brats2021') are added, never look-alike names ('ICDC' for 'ACDC').

A dataset's score is the sum over slots of the best (field weight x match quality) of the slot's
alternatives, each slot weighted by its rarity (log(1 + datasets / datasets matching it)), plus a bonus for a query that covers a short name and a large one for a query that is a
dataset's exact name or alias ('kits 19' = 'KiTS19'), so an exact name ranks first.
"""

from dataclasses import dataclass, field
from functools import cache

import numpy as np

from app.search.concepts import CONCEPTS
from app.search.schemas import TextInterpretation
from app.search.text_index import ALIAS, TextIndex
from app.search.tokens import SOFT_WORDS, query_words, split_runs

EXACT, PREFIX, NARROWER, FUZZY = 1.0, 0.7, 0.5, 0.45
# a concept (a disease or finding) named only by a facet value's synonym, not in the record's own text
FACET_ONLY_CONCEPT = 0.5
FUZZY_BELOW = 3  # a word whose exact and prefix matches find fewer datasets is also matched by misspellings
PREFIX_LIMIT = 30
EXACT_NAME_BONUS = 100.0
NAME_COVERAGE = 4.0
SOFT_SHARE = 0.3
MAX_WORDS = 12


@dataclass(frozen=True)
class Alternative:
    terms: tuple[str, ...]
    quality: float
    concept: str | None = None  # the narrower concept this alternative stands for


@dataclass
class Slot:
    words: list[str]
    alternatives: list[Alternative]
    soft: bool = False
    concept: str | None = None
    fuzzy_of: str | None = None  # the word whose misspellings may be added


@dataclass
class TextMatch:
    """The datasets a text query matches (index positions, ascending) with their scores."""

    positions: np.ndarray
    scores: np.ndarray
    interpretation: TextInterpretation = field(default_factory=TextInterpretation)

    def dense(self, size: int) -> np.ndarray:
        out = np.zeros(size, dtype=np.float32)
        out[self.positions] = self.scores
        return out


@cache
def _phrases() -> dict[tuple[str, ...], str]:
    """Every concept phrase as query words -> its concept (a phrase naming two concepts keeps the first)."""
    table: dict[tuple[str, ...], str] = {}
    for concept in CONCEPTS.entries:
        for phrase in (*concept.phrases, concept.label):
            table.setdefault(tuple(query_words(phrase)), concept.id)
    return table


def plan(index: TextIndex, q: str) -> list[Slot]:
    """The slots of a query (see the module's docstring)."""
    words = query_words(q)[:MAX_WORDS]
    phrases = _phrases()
    longest = max(map(len, phrases))
    # a misspelt word is read as its nearest catalog word when that completes a concept ('brain tumr')
    known = [w if w in index or _in_phrases(w) else _nearest(index, w) or w for w in words]
    slots: list[Slot] = []
    i = 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            concept = phrases.get(tuple(known[i : i + n]))
            if concept is not None and not (n == 1 and words[i] in SOFT_WORDS):
                slots.append(_concept_slot(index, concept, words[i : i + n]))
                i += n
                break
        else:
            slots.append(_word_slot(index, words[i]))
            i += 1
    if slots and all(slot.soft for slot in slots):
        for slot in slots:
            slot.soft = False
    return slots


@cache
def _phrase_words() -> frozenset[str]:
    return frozenset(word for phrase in _phrases() for word in phrase)


def _in_phrases(word: str) -> bool:
    return word in _phrase_words()


def _nearest(index: TextIndex, word: str) -> str | None:
    close = index.close(word)
    return close[0][1] if close else None


@cache
def _concept_phrases(concept_id: str) -> tuple[tuple[tuple[str, ...], str | None], ...]:
    """A concept's phrases as query words, then those of every narrower concept (with its id)."""
    out: list[tuple[tuple[str, ...], str | None]] = []
    for narrower in (None, *CONCEPTS.descendants(concept_id)):
        entry = CONCEPTS.by_id[narrower or concept_id]
        out += [(tuple(query_words(phrase)), narrower) for phrase in (*entry.phrases, entry.label)]
    return tuple(dict.fromkeys(out))


def _concept_slot(index: TextIndex, concept_id: str, words: list[str]) -> Slot:
    alternatives = [Alternative(tuple(words), EXACT)] if all(w in index for w in words) else []
    for terms, narrower in _concept_phrases(concept_id):
        if terms and all(t in index for t in terms):
            alternatives.append(Alternative(terms, EXACT if narrower is None else NARROWER, narrower))
    return Slot(words, list(dict.fromkeys(alternatives)), concept=concept_id)


def _word_slot(index: TextIndex, word: str) -> Slot:
    alternatives = [Alternative((word,), EXACT)] if word in index else []
    if len(word) >= 3 and not word.isdigit():
        alternatives += [Alternative((t,), PREFIX) for t in index.prefixed(word, PREFIX_LIMIT)]
    return Slot([word], alternatives, soft=word in SOFT_WORDS, fuzzy_of=word)


def _alternative_scores(
    index: TextIndex, alternative: Alternative, concept: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, scores) of the datasets that have every term of the alternative. Sparse when a term is
    found only in records' own text (most disease words): only its datasets are looked at."""
    terms = alternative.terms
    sparse = [t for t in terms if index.text_only(t)]
    if sparse:
        candidates = index.text_positions(min(sparse, key=lambda t: index.df[t]))
    else:
        candidates = np.flatnonzero(index.vector(terms[0]))
    weights = [index.weights_at(t, candidates) for t in terms]
    every = np.logical_and.reduce([w > 0 for w in weights])
    positions = candidates[every]
    scores = np.add.reduce([w[every] for w in weights]) * np.float32(alternative.quality / len(terms))
    if concept:  # "polyp" is also a synonym of the anatomy "colon": a colon dataset is not a polyp dataset
        in_text = np.logical_or.reduce([index.text_weights_at(t, positions) > 0 for t in terms])
        scores = np.where(in_text, scores, scores * np.float32(FACET_ONLY_CONCEPT))
    return positions, scores.astype(np.float32)


def slot_scores(index: TextIndex, slot: Slot, interpretation: TextInterpretation | None = None) -> np.ndarray:
    """Each dataset's best score for one slot; misspellings are tried only when the rest finds little."""
    best = np.zeros(index.size, dtype=np.float32)
    matched_concepts: list[str] = []
    names_a_dataset = False  # the word as typed is a word of some dataset's name or alias
    for alternative in slot.alternatives:
        positions, scores = _alternative_scores(index, alternative, slot.concept is not None)
        if alternative.concept is not None and alternative.concept not in matched_concepts and positions.size:
            matched_concepts.append(alternative.concept)
        if alternative.terms == (slot.fuzzy_of,) and scores.size and scores.max() >= ALIAS * EXACT:
            names_a_dataset = True
        best[positions] = np.maximum(best[positions], scores)
    if slot.fuzzy_of is not None and int(np.count_nonzero(best)) < FUZZY_BELOW:
        close = [term for _, term in index.close(slot.fuzzy_of)]
        if names_a_dataset:  # no misspelling: only other editions ('brats2020'), not 'ACDC' -> 'ICDC'
            close = [term for term in close if _letters(term) == _letters(slot.fuzzy_of)]
        for term in close:
            positions, scores = _alternative_scores(index, Alternative((term,), FUZZY), False)
            best[positions] = np.maximum(best[positions], scores)
        if close and interpretation is not None:
            interpretation.spelling[slot.fuzzy_of] = [index.surface.get(t, t) for t in close[:5]]
    if interpretation is not None and matched_concepts:
        interpretation.also_matching.extend(CONCEPTS.by_id[c].label for c in matched_concepts)
    return best


def _letters(word: str) -> str:
    return "".join(c for c in word if not c.isdigit())


def evaluate(index: TextIndex, q: str, slots: list[Slot] | None = None) -> TextMatch:
    """The datasets matching every hard slot of `q`, scored (see the module's docstring)."""
    slots = plan(index, q) if slots is None else slots
    interpretation = TextInterpretation()
    if not slots:
        return TextMatch(np.zeros(0, np.int64), np.zeros(0, np.float32), interpretation)
    total = np.zeros(index.size, dtype=np.float32)
    required = np.ones(index.size, dtype=bool)
    name_hits = np.zeros(index.size, dtype=np.float32)
    for slot in slots:
        scores = slot_scores(index, slot, None if slot.soft else interpretation)
        if slot.soft:
            total += np.float32(SOFT_SHARE) * scores
            interpretation.optional.extend(slot.words)
            continue
        found = scores > 0
        required &= found
        # rarer slots weigh more: a match on "polyp" says more than one on "segmentation"
        total += scores * np.float32(np.log1p(index.size / max(1, int(np.count_nonzero(found)))))
        name_hits += scores >= ALIAS * PREFIX
        if slot.concept is not None:
            interpretation.concepts.append(CONCEPTS.by_id[slot.concept].label)
    total += np.float32(NAME_COVERAGE) * np.minimum(name_hits / index.name_length, 1)
    exact = index.exact_name(q) if split_runs(q) else np.zeros(0, dtype=np.int32)
    total[exact] += np.float32(EXACT_NAME_BONUS)
    positions = np.flatnonzero(required)
    scores = total[positions]
    positions.setflags(write=False)  # kept per catalog version and shared by every search with this text
    scores.setflags(write=False)
    interpretation.also_matching = list(dict.fromkeys(interpretation.also_matching))[:12]
    return TextMatch(positions, scores, interpretation)
