"""Facet counts of a search: per facet, how many matching datasets have each value under every selection but
the facet's own (disjunctive counts), in the facet's order, each value with its label and the link that
toggles it."""

from functools import lru_cache
from urllib.parse import quote_plus

import numpy as np

from app.common.vocabularies import ALL
from app.search.filters import filter_pairs
from app.search.index import CatalogIndex
from app.search.matching import Constraint
from app.search.schemas import FACETS, Facet, FacetValue, SearchFilter


def facet_counts(
    index: CatalogIndex,
    search: SearchFilter,
    base: np.ndarray,
    constraints: list[Constraint],
    facet_size: int,
    base_path: str,
) -> list[Facet]:
    """Disjunctive counts: each facet is counted under every selection except its own."""
    toggle = _Toggler(search, base_path)
    facets = []
    for name, spec in FACETS.items():
        within = base.copy()
        for constraint in constraints:
            if constraint.key != name:
                within &= constraint.bitmap
        bitmaps = index.facets[name]
        counts = bitmaps.counts(within) if bitmaps.values else np.zeros(0, dtype=np.int64)
        selected = search.terms.get(name, [])
        entries = [(v, int(c)) for v, c in zip(bitmaps.values, counts, strict=True) if c > 0 or v in selected]
        entries += [(v, 0) for v in selected if v not in bitmaps.position]
        entries = _order_facet(spec.order, name, entries)
        shown = entries[:facet_size]
        shown += [e for e in entries[facet_size:] if e[0] in selected]
        vocabulary = ALL.get(spec.vocabulary or "")
        facets.append(
            Facet(
                name=name,
                label=spec.label,
                truncated=len(entries) > facet_size,
                results=[
                    FacetValue(
                        value=value,
                        label=value_label(name, value),
                        count=count,
                        selected=value in selected,
                        toggle_url=toggle.url(name, value),
                        parent=vocabulary.term(value).parent
                        if vocabulary is not None and name == "anatomy" and value in vocabulary
                        else None,
                    )
                    for value, count in shown
                ],
            )
        )
    return facets


class _Toggler:
    """Toggle links for every shown facet value. A link is the filter's query string with one value added or
    removed; the encoded `key=value` parts of everything else are computed once per response, so a link costs
    one join (`urlencode` per link cost more than the counting itself). Same strings as `query_string`."""

    def __init__(self, search: SearchFilter, base_path: str) -> None:
        pairs = filter_pairs(search)
        self.base_path = base_path
        head = _encoded([p for p in pairs if p[0] == "q"])
        tail = _encoded([p for p in pairs if p[0] != "q" and p[0] not in FACETS])
        self.terms = {facet: list(values) for facet, values in search.terms.items()}
        self.parts = {name: _encoded([(name, v) for v in self.terms.get(name, [])]) for name in FACETS}
        parts = self.parts
        names = list(FACETS)
        # the encoded parts before and after each facet's own values
        self.before = {
            name: [*head, *(p for other in names[:i] for p in parts[other])] for i, name in enumerate(names)
        }
        self.after = {
            name: [*(p for other in names[i + 1 :] for p in parts[other]), *tail]
            for i, name in enumerate(names)
        }

    def url(self, facet: str, value: str) -> str:
        values, parts = self.terms.get(facet, []), self.parts[facet]
        if value in values:
            own = [part for v, part in zip(values, parts, strict=True) if v != value]
        else:
            own = [*parts, _quoted(facet) + "=" + _quoted(value)]
        return self.base_path + "?" + "&".join([*self.before[facet], *own, *self.after[facet]])


def _encoded(pairs: list[tuple[str, str]]) -> list[str]:
    """`key=value` parts exactly as `urlencode` writes them (joined by '&' they are its output)."""
    return [_quoted(key) + "=" + _quoted(value) for key, value in pairs]


@lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    """quote_plus, remembered: nearly every link part is a facet name or value, the same on every request."""
    return quote_plus(text)


def _order_facet(order: str, name: str, entries: list[tuple[str, int]]) -> list[tuple[str, int]]:
    if order == "vocabulary":
        ids = ALL[FACETS[name].vocabulary or name].ids
        return sorted(entries, key=lambda e: ids.index(e[0]) if e[0] in ids else len(ids))
    if order == "value_desc":
        return sorted(entries, key=lambda e: (e[0] == "unknown", -int(e[0]) if e[0].isdigit() else 0))
    return sorted(entries, key=lambda e: (-e[1], e[0]))


def value_label(facet: str, value: str) -> str:
    vocabulary = ALL.get(FACETS[facet].vocabulary or "")
    if vocabulary is not None and value in vocabulary:
        return vocabulary.term(value).label
    return value.capitalize() if value == "unknown" else value
