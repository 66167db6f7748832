"""What the parts of a filter select: its facet values and ranges as constraints (index bitmaps that a strict
match must all satisfy), and the datasets its text query matches with a relevance score (the query read as
concepts and words, each word widened to the catalog words it may mean: app/search/text_query.py)."""

from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from app.catalog.service import catalog_version
from app.search.index import CatalogIndex
from app.search.schemas import SearchFilter
from app.search.text_index import current_text_index
from app.search.text_query import TextMatch, evaluate


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


def text_matches(session: Session, q: str) -> TextMatch:
    """Datasets matching the text query `q` with their scores and how the query was read (app/search/
    text_query.py), over this catalog version's in-memory text index."""
    version = catalog_version(session)
    return evaluate(current_text_index(session, version), q)
