"""Proposed speed-ups for app/search/service.py, kept here so they can be measured without editing the app.

`apply()` monkeypatches them into app.search.service; `bench.search.phases --proposed near` times the query
mix with them after checking that every response is identical (minus timing_ms) to the unpatched one.

(Two earlier proposals measured here, result rows without raw_records/search_vector and toggle URLs from
query pairs built once, were adopted in commit 9d402c7.)

near: `_near_matches` orders *every* candidate (each dataset that misses one or two constraints) with a
full `np.lexsort` to keep the first 10. At 1,000,000 datasets a one-facet query has 675,000 candidates and the
sort costs 130-200 ms, most of the request. Selecting the 10 with a partition (O(n)) and sorting only those
gives the same 10 in the same order (ties broken by position, as the stable lexsort does).
"""

from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.search import service
from app.search.index import CatalogIndex
from app.search.schemas import NearMatch, SearchFilter


def closest(positions: np.ndarray, misses: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """The first k of `positions` ordered by (misses, -score, position), without sorting them all.

    `positions` ascending; `misses` and `score` indexed by position. Same result as
    `positions[np.lexsort((-score[positions], misses[positions]))][:k]`.
    """
    chosen: list[np.ndarray] = []
    need = k
    for level in (1, 2):
        if need <= 0:
            break
        at_level = positions[misses[positions] == level]
        if at_level.size > need:
            keys = -score[at_level]
            kth = np.partition(keys, need - 1)[need - 1]
            at_level = at_level[keys <= kth]  # every tie of the k-th value; cut after the exact sort below
        ordered = at_level[np.lexsort((at_level, -score[at_level]))][:need]
        chosen.append(ordered)
        need -= ordered.size
    return np.concatenate(chosen) if chosen else positions[:0]


def near_matches(
    session: Session,
    index: CatalogIndex,
    search: SearchFilter,
    base: np.ndarray,
    constraints: list[service.Constraint],
    api_prefix: str,
) -> list[NearMatch]:
    """service._near_matches with the full sort replaced by `closest`."""
    if not constraints:
        return []
    misses = np.zeros(index.size, dtype=np.uint8)
    for constraint in constraints:
        misses += ~index.unpack(constraint.bitmap)
    candidates = index.unpack(base) & (misses >= 1) & (misses <= 2)
    positions = np.flatnonzero(candidates)
    if positions.size == 0:
        return []
    score = index.open_score if search.prefer_open else index.base_score
    chosen = closest(positions, misses, score, get_settings().near_matches_max)
    rows = service._fetch(session, index.ids[chosen])
    return [
        NearMatch(dataset=service.summarise(row, api_prefix), missed=service.missed_reasons(row, search))
        for row in rows
    ]


_originals: dict[str, object] = {}


def apply(which: str = "near") -> None:
    if "near" in which:
        _originals.setdefault("_near_matches", service._near_matches)
        service._near_matches = near_matches


def restore() -> None:
    for name, fn in _originals.items():
        setattr(service, name, fn)
