"""Baseline (a): a linear scan in Python over the JSON list of records, as the survey's discovery script does.

What one `search` call computes, over the records held in memory as plain dicts (the JSON is parsed once, at
load time, and nothing else is precomputed):

- the strict matches: every selected facet (OR within a facet, AND across facets), every range
  (`year__gte` ...; an unknown year or count never matches a range) and, when `q` is given, every word of `q`
  occurring as a substring of the lower-cased search document (no typo tolerance, no ranking by text);
- disjunctive counts for all eleven facets, as our API defines them: a record counts toward facet F's values
  when it matches every constraint except F's own. One pass: a record that misses nothing counts in every
  facet; a record that misses exactly one facet constraint counts in that facet only;
- the page: the top `page_size` records after `offset` by the API's default relevance prior (labeled, size,
  year, completeness: the same formula as app/search/index.py) or by images/year/name;
- each facet's values ordered by count, cut to `facet_size`, selected values kept.

It does not compute near matches or typo-tolerant text matches, and builds no toggle URLs.
"""

from __future__ import annotations

import heapq
import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.search.schemas import FACETS, SearchFilter, Sort

Record = dict[str, Any]


def load_records(path: Path) -> list[Record]:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def facet_values(name: str, record: Record) -> list[str]:
    """A record's values in one facet, spelled as the API spells them (see CatalogIndex.facet_values_of)."""
    spec = FACETS[name]
    raw = record[spec.column]
    if spec.multi:
        return list(raw) or (["none"] if name == "quality" else [])
    if raw is None:
        return ["unknown"]
    if isinstance(raw, bool):
        return ["true" if raw else "false"]
    return [str(raw)]


def prior(record: Record) -> float:
    images = record["images"] if record["images"] is not None else -1
    year = record["year"] if record["year"] is not None else -1
    size_score = min(math.log10(max(images, 0) + 1) / 6, 1.0)
    year_score = min(max(((year if year > 0 else 2000) - 2000) / 25, 0.0), 1.0)
    return (
        (1.0 if record["labeled"] else 0.0)
        + 0.6 * size_score
        + 0.3 * year_score
        + 0.1 * (record["completeness"] or 0.0)
    )


def _constraints(search: SearchFilter) -> list[tuple[str | None, Callable[[Record], bool]]]:
    """(facet name or None, predicate) pairs; None marks a constraint that is not a facet (ranges, text)."""
    out: list[tuple[str | None, Callable[[Record], bool]]] = []
    for name, selected in search.terms.items():
        if selected:
            wanted = set(selected)
            out.append((name, lambda r, n=name, w=wanted: not w.isdisjoint(facet_values(n, r))))
    for name, bounds in search.ranges.items():
        low, high = bounds.gte, bounds.lte
        if low is None and high is None:
            continue

        def in_range(r: Record, field: str = name, lo: int | None = low, hi: int | None = high) -> bool:
            value = r[field]
            return value is not None and (lo is None or value >= lo) and (hi is None or value <= hi)

        out.append((None, in_range))
    return out


def search(
    records: list[Record],
    search_filter: SearchFilter,
    page_size: int = 25,
    offset: int = 0,
    facet_size: int = 30,
) -> dict[str, Any]:
    constraints = _constraints(search_filter)
    words = [w.lower() for w in (search_filter.q or "").split() if w]
    counts: dict[str, Counter[str]] = {name: Counter() for name in FACETS}
    matched: list[int] = []
    for position, record in enumerate(records):
        if words:
            document = record["search_document"].lower()
            if not all(w in document for w in words):
                continue
        missed: str | None = None
        misses = 0
        for facet, predicate in constraints:
            if not predicate(record):
                misses += 1
                if misses > 1 or facet is None:
                    break
                missed = facet
        else:
            if misses == 0:
                matched.append(position)
                for name in FACETS:
                    counts[name].update(facet_values(name, record))
            elif missed is not None:
                counts[missed].update(facet_values(missed, record))

    page = _page(records, matched, search_filter.sort, offset + page_size)[offset:]
    facets = {}
    for name, counter in counts.items():
        selected = search_filter.terms.get(name, [])
        entries = sorted(counter.items(), key=lambda e: (-e[1], e[0]))
        shown = entries[:facet_size] + [e for e in entries[facet_size:] if e[0] in selected]
        shown += [(v, 0) for v in selected if v not in counter]
        facets[name] = shown
    return {
        "count": len(matched),
        "results": [records[p]["slug"] for p in page],
        "facets": facets,
        "full_counts": {name: dict(counter) for name, counter in counts.items()},
    }


def _page(records: list[Record], matched: list[int], sort: Sort, k: int) -> list[int]:
    if sort == Sort.images:
        key = lambda p: (-(records[p]["images"] if records[p]["images"] is not None else -1), p)  # noqa: E731
    elif sort == Sort.year:
        key = lambda p: (-(records[p]["year"] if records[p]["year"] is not None else -1), p)  # noqa: E731
    elif sort == Sort.name:
        key = lambda p: (records[p]["name"].lower(), p)  # noqa: E731
    else:
        key = lambda p: (-prior(records[p]), p)  # noqa: E731
    return heapq.nsmallest(k, matched, key=key)
