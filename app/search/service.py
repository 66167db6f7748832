"""Searching the catalog: one function per operation, called alike by pages, the JSON API and the CLI.

This module runs a search: what a filter matches (`Match`), in which order, the page of results with its near
matches and facet counts, and the answers kept as JSON per catalog version. The parts live beside it:
filters.py (reading and writing filters, cursors), matching.py (constraints, text matches), facets.py (facet
counts, value labels), near.py (near matches and their reasons), statistics.py (statistics, taxonomy).

The steps of a search are called through this module's names (`text_matches`, `facet_counts`,
`missed_reasons`, `search_datasets`...): a test that replaces `app.search.service.X`, and bench/search/phases.py
which times each step by wrapping it here, reach every call.
"""

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app.catalog.models import Dataset
from app.catalog.service import SUMMARY_COLUMNS, catalog_key, catalog_version, summarise
from app.common.errors import InvalidInput
from app.core.cache import VersionedCache
from app.core.config import get_settings
from app.core.urls import urls
from app.search.facets import facet_counts, value_label
from app.search.filters import (
    decode_cursor,
    encode_cursor,
    filter_pairs,
    normalise_filter,
    query_string,
    toggled,
)
from app.search.index import CatalogIndex, current_index
from app.search.matching import Constraint, filter_constraints, text_matches
from app.search.near import closest, missed_reasons
from app.search.schemas import FACETS, FacetList, NearMatch, Order, SearchFilter, SearchResponse, Sort
from app.search.statistics import catalog_statistics
from app.search.text_query import TextMatch
from app.search.zero_results import zero_result_help

# What pages and routes call as `service.X`: this module's operations and, from the modules beside it, the
# filter helpers, value labels and statistics they use alongside them.
__all__ = [
    "catalog_key",
    "catalog_statistics",
    "decode_cursor",
    "facets_json",
    "filter_pairs",
    "normalise_filter",
    "ordered_dataset_ids",
    "query_string",
    "search_datasets",
    "search_json",
    "toggled",
    "value_label",
]


# -- the search itself ------------------------------------------------------------------------------------------
# The same words come back with other facets: their matches are kept per catalog version (never changed).
_text_matches: VersionedCache[TextMatch] = VersionedCache(maxsize=2000)

# Relevance order with a text query: the text score (app/search/text_query.py; one field-weight step is worth
# 1 or more) plus this share of the ranking prior (labeled, larger, newer: 0 to about 2), plus, when open
# access is preferred, OPEN_SHARE for an open dataset (so open ones come first, each group by relevance).
PRIOR_SHARE = 0.4
OPEN_SHARE = 100.0


@dataclass
class Match:
    """What a filter selects: the text matches (`base`), the facet and range constraints, the strict result."""

    base: np.ndarray
    constraints: list[Constraint]
    strict: np.ndarray
    text: TextMatch | None

    def ordered_positions(self, index: CatalogIndex, search: SearchFilter) -> np.ndarray:
        return _ordered_positions(index, self.strict, search, self.text)


def _match(session: Session, index: CatalogIndex, search: SearchFilter) -> Match:
    base = index.all
    matched: TextMatch | None = None
    if q := search.q:
        matched = _text_matches.get_or_compute(
            (session.get_bind().engine.url, index.version, q), lambda: text_matches(session, q)
        )
        base = index.pack_positions(matched.positions)
    constraints = filter_constraints(index, search)
    strict = base.copy()
    for constraint in constraints:
        strict &= constraint.bitmap
    return Match(base, constraints, strict, matched)


def ordered_dataset_ids(session: Session, search: SearchFilter) -> np.ndarray:
    """Every dataset id a search matches, in the order its pages list them (exports stream these)."""
    index = current_index(session, catalog_version(session))
    ids: np.ndarray = index.ids[_match(session, index, search).ordered_positions(index, search)]
    return ids


def search_datasets(
    session: Session,
    search: SearchFilter,
    *,
    page_size: int | None = None,
    cursor: str | None = None,
    facet_size: int | None = None,
    base_path: str = urls.page_search_path,
    with_facets: bool = True,
) -> SearchResponse:
    started = time.perf_counter()
    settings = get_settings()
    page_size = settings.page_size_default if page_size is None else page_size
    if not 1 <= page_size <= settings.page_size_max:
        raise InvalidInput(
            ["query", "page_size"], f"page_size must be between 1 and {settings.page_size_max}"
        )
    offset = decode_cursor(cursor)
    version = catalog_version(session)
    response = _search(
        session, version, search, page_size, offset, facet_size or settings.facet_size, base_path, with_facets
    )
    response.timing_ms = round((time.perf_counter() - started) * 1000, 2)
    return response


# -- JSON answers kept per catalog version ------------------------------------------------------------------------
# The same searches come back (the landing page, a popular facet, the next page). Their JSON is kept as bytes,
# which the garbage collector never scans: keeping the response objects themselves (a few thousand tracked
# objects each) made full collections pause a web process for most of a second.

_json_answers: VersionedCache[bytes] = VersionedCache(maxsize=5000, max_bytes=64 * 2**20)


def search_json(
    session: Session,
    search: SearchFilter,
    *,
    page_size: int | None = None,
    cursor: str | None = None,
    facet_size: int | None = None,
    base_path: str = urls.page_search_path,
) -> bytes:
    """`search_datasets(...)` as JSON, from memory when this catalog version gave it before. `timing_ms` is
    this call's own time (the field is written last, after the kept part)."""
    started = time.perf_counter()
    key = ("search", catalog_key(session), search.model_dump_json(), page_size, cursor, facet_size, base_path)
    kept = _json_answers.get_or_compute(
        key,
        lambda: (
            search_datasets(
                session,
                search,
                page_size=page_size,
                cursor=cursor,
                facet_size=facet_size,
                base_path=base_path,
            )
            .model_dump_json(exclude={"timing_ms"})
            .encode()
        ),
    )
    return kept[:-1] + b',"timing_ms":%.2f}' % ((time.perf_counter() - started) * 1000)


def facets_json(session: Session, search: SearchFilter, *, facet_size: int | None, base_path: str) -> bytes:
    """Only the facets of a search, as JSON, kept like `search_json`."""
    key = ("facets", catalog_key(session), search.model_dump_json(), facet_size, base_path)
    return _json_answers.get_or_compute(
        key,
        lambda: (
            FacetList(
                facets=search_datasets(
                    session, search, page_size=1, facet_size=facet_size, base_path=base_path
                ).facets
            )
            .model_dump_json()
            .encode()
        ),
    )


def _search(
    session: Session,
    version: int,
    search: SearchFilter,
    page_size: int,
    offset: int,
    facet_size: int,
    base_path: str,
    with_facets: bool,
) -> SearchResponse:
    index = current_index(session, version)
    match = _match(session, index, search)
    base, constraints = match.base, match.constraints
    ordered = match.ordered_positions(index, search)
    page_ids = index.ids[ordered[offset : offset + page_size]]
    near_ids = (
        index.ids[_near_match_positions(index, search, base, constraints)] if offset == 0 else page_ids[:0]
    )
    rows = _fetch_by_id(session, np.concatenate((page_ids, near_ids)), version)  # one round trip for both
    results = [summarise(rows[i]) for i in page_ids.tolist() if i in rows]
    near = [
        NearMatch(dataset=summarise(rows[i]), missed=missed_reasons(rows[i], search))
        for i in near_ids.tolist()
        if i in rows
    ]
    next_offset = offset + page_size
    next_pairs = [*filter_pairs(search), ("page_size", str(page_size)), ("_next", encode_cursor(next_offset))]
    next_url = f"{base_path}{query_string(next_pairs)}" if next_offset < ordered.size else None

    facets = facet_counts(index, search, base, constraints, facet_size, base_path) if with_facets else []
    help_ = None
    if ordered.size == 0 and offset == 0 and (search.q or constraints):
        help_ = zero_result_help(session, index, search, base, constraints, base_path)
    return SearchResponse(
        count=int(ordered.size),
        results=results,
        facets=facets,
        near_matches=near,
        next_url=next_url,
        filter=search,
        catalog_version=version,
        timing_ms=0.0,
        interpretation=match.text.interpretation if match.text is not None else None,
        zero_results=help_,
    )


def _ordered_positions(
    index: CatalogIndex, bitmap: np.ndarray, search: SearchFilter, text: TextMatch | None
) -> np.ndarray:
    flags = index.unpack(bitmap)
    if search.sort == Sort.relevance and text is not None:
        positions = np.flatnonzero(flags)
        text_score = text.dense(index.size)[positions].astype(np.float64)
        prior = PRIOR_SHARE * index.base_score[positions]
        if search.prefer_open:  # open access first when asked, then text relevance
            prior = prior + OPEN_SHARE * (index.open_score - index.base_score)[positions]
        # text relevance leads (a field weight step is 1 or more); the prior (labeled, larger, newer: 0 to
        # about 2, times PRIOR_SHARE) orders matches of near-equal text score
        return positions[np.lexsort((positions, -(text_score + prior)))]
    key = "relevance_open" if search.sort == Sort.relevance and search.prefer_open else search.sort.value
    ordering = index.orderings[key]
    ordered: np.ndarray = ordering[flags[ordering]]
    default_descending = search.sort != Sort.name
    if search.order is not None and (search.order == Order.desc) != default_descending:
        ordered = ordered[::-1]
    return ordered


# What a result summary and the near-match reasons read: not raw_records or the search vector, which would
# be parsed for every row of every page for nothing.
_RESULT_COLUMNS = [Dataset.id, *SUMMARY_COLUMNS, *(getattr(Dataset, spec.column) for spec in FACETS.values())]
# `= ANY(:ids)` with one array parameter: one statement text whatever the number of ids (so PostgreSQL and
# psycopg can reuse its plan) instead of an IN list rendered anew for each length.
_RESULT_SELECT = select(*dict.fromkeys(_RESULT_COLUMNS)).where(
    Dataset.id == func.any(bindparam("ids", type_=ARRAY(BigInteger)))
)


def _fetch_by_id(session: Session, ids: np.ndarray, version: int) -> dict[int, Any]:
    """Result rows (plain rows with Dataset's attribute names) by id: those of this catalog version already
    read come from memory, the rest in one query. A row deleted since the index was built is missing from the
    answer: callers skip it."""
    if ids.size == 0:
        return {}
    database = session.get_bind().engine.url
    wanted = ids.tolist()
    cached = _result_rows.get_many([(database, version, i) for i in wanted])
    rows = {i: cached[(database, version, i)] for i in wanted if (database, version, i) in cached}
    missing = [i for i in wanted if i not in rows]
    if missing:
        fetched = {row.id: row for row in session.execute(_RESULT_SELECT, {"ids": missing})}
        _result_rows.put_many({(database, version, i): row for i, row in fetched.items()})
        rows.update(fetched)
    return rows


# Rows that result lists show, per catalog version: a search that is not cached itself mostly lists datasets
# that other searches listed already. Rows are immutable tuples (about 2 KB each).
_result_rows: VersionedCache[Any] = VersionedCache(maxsize=10_000)


def _near_match_positions(
    index: CatalogIndex, search: SearchFilter, base: np.ndarray, constraints: list[Constraint]
) -> np.ndarray:
    """Datasets that miss exactly one or two constraints, closest first (fewer misses, then the ranking
    prior, then catalog position): at most `near_matches_max` index positions."""
    if not constraints:
        return np.zeros(0, dtype=np.int64)
    misses = np.zeros(index.size, dtype=np.uint8)
    for constraint in constraints:
        misses += ~index.unpack(constraint.bitmap)
    candidates = index.unpack(base) & (misses >= 1) & (misses <= 2)
    positions = np.flatnonzero(candidates)
    score = index.open_score if search.prefer_open else index.base_score
    return closest(positions, misses, score, get_settings().near_matches_max)
