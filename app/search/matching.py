"""What the parts of a filter select: its facet values and ranges as constraints (index bitmaps that a strict
match must all satisfy), and the datasets its text query matches, each query word widened to the catalog
words it may mean (those it begins, else its misspellings), with a relevance score."""

import re
from dataclasses import dataclass

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.search.index import CatalogIndex
from app.search.schemas import SearchFilter


@dataclass
class Constraint:
    """One thing a strict match must satisfy; near matches are rows that miss one or two of these."""

    key: str
    bitmap: np.ndarray


def filter_constraints(index: CatalogIndex, search: SearchFilter) -> list[Constraint]:
    """One constraint per facet with selected values (any of them) and per range with a bound."""
    constraints = [
        Constraint(facet, index.facets[facet].union(values, index.words))
        for facet, values in search.terms.items()
        if values
    ]
    constraints += [
        Constraint(f"range:{name}", index.range_bitmap(name, bounds.gte, bounds.lte))
        for name, bounds in search.ranges.items()
        if bounds.gte is not None or bounds.lte is not None
    ]
    return constraints


_WORD = re.compile(r"[\w'-]+", re.UNICODE)

# Catalog words a query word may mean: the words it begins (cheap, an index range scan) or, when there are
# none, misspellings of it: trigram-similar words or words within two edits.
_PREFIX_WORDS = text("SELECT word FROM search_word WHERE word LIKE :prefix ORDER BY ndoc DESC LIMIT 50")
_CLOSE_WORDS = text(
    "SELECT word FROM (SELECT word FROM search_word WHERE word % :word "
    "UNION SELECT word FROM search_word WHERE length(:word) >= 5 AND word LIKE :start "
    "AND levenshtein_less_equal(word, :word, 2) <= 2) AS close "
    "ORDER BY similarity(word, :word) DESC LIMIT 20"
)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def text_matches(session: Session, q: str) -> dict[int, float]:
    """Datasets matching every word of `q`, each word also matching catalog words close to it, with a score."""
    words = [w.lower() for w in _WORD.findall(q)][:8]
    alternatives: list[list[str]] = []
    for word in words:
        params = {"word": word, "prefix": _escape_like(word) + "%", "start": _escape_like(word[:2]) + "%"}
        close = [row.word for row in session.execute(_PREFIX_WORDS, params)]
        close = close or [row.word for row in session.execute(_CLOSE_WORDS, params)]
        if not close:
            return {}
        alternatives.append(close)
    if not alternatives:
        return {}
    # to_tsquery syntax built from catalog words only, each quoted as a literal
    query = " & ".join("(" + " | ".join(_quote_lexeme(w) for w in alts) + ")" for alts in alternatives)
    sql = text(
        "SELECT id, ts_rank(search_vector, query) AS score "
        "FROM dataset, to_tsquery('simple', :query) AS query WHERE search_vector @@ query"
    )
    return {row.id: float(row.score) for row in session.execute(sql, {"query": query})}


def _quote_lexeme(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"
