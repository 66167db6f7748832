"""An in-memory bitmap index over the catalog's facet columns, rebuilt whenever the catalog version changes.

Why it exists: disjunctive facet counts need one differently-filtered count per facet. In PostgreSQL each is a
scan with `unnest` (about 50 ms per facet at 100,000 datasets on 2 cores, see bench/README.md), so eleven facets
cannot answer in 100 ms. Here every (facet, value) is a bitmap of the datasets that have it; a search ANDs and ORs
bitmaps and counts bits, which takes a few milliseconds even at a million datasets. PostgreSQL stays the system
of record and still does the full-text matching; this index holds nothing that a rebuild cannot restore.
"""

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.search.schemas import FACETS

Bitmap = np.ndarray  # uint64 words, bit i = the dataset at position i


@dataclass
class FacetBitmaps:
    values: list[str]
    position: dict[str, int]
    matrix: np.ndarray  # (len(values), words) uint64

    def union(self, selected: list[str], words: int) -> Bitmap:
        rows = [self.position[v] for v in selected if v in self.position]
        if not rows:
            return np.zeros(words, dtype=np.uint64)
        return np.bitwise_or.reduce(self.matrix[rows], axis=0)

    def counts(self, within: Bitmap) -> np.ndarray:
        return np.bitwise_count(self.matrix & within).sum(axis=1, dtype=np.int64)


class CatalogIndex:
    """Facet bitmaps, range columns and precomputed orderings for one catalog version."""

    def __init__(self, version: int, rows: list[Any]) -> None:
        self.version = version
        self.size = len(rows)
        self.words = max(1, (self.size + 63) // 64)
        self.ids = np.fromiter((r.id for r in rows), dtype=np.int64, count=self.size)
        self.year = np.fromiter((r.year if r.year is not None else -1 for r in rows), np.int64, self.size)
        self.images = np.fromiter(
            (r.images if r.images is not None else -1 for r in rows), np.int64, self.size
        )
        self.facets = {name: self._bitmaps(name, rows) for name in FACETS}
        self.all = self.pack(np.ones(self.size, dtype=bool))
        self.orderings = self._orderings(rows)

    # -- building -------------------------------------------------------------------------------------------
    @staticmethod
    def facet_values_of(name: str, row: Any) -> list[str]:
        """The facet values of one row, as the index and the API spell them."""
        spec = FACETS[name]
        raw = getattr(row, spec.column)
        if spec.multi:
            values = list(raw or [])
            return values or (["none"] if name == "quality" else [])
        if raw is None:
            return ["unknown"]
        if isinstance(raw, bool):
            return ["true" if raw else "false"]
        return [str(raw)]

    def _bitmaps(self, name: str, rows: list[Any]) -> FacetBitmaps:
        value_rows: dict[str, list[int]] = {}
        for position, row in enumerate(rows):
            for value in self.facet_values_of(name, row):
                value_rows.setdefault(value, []).append(position)
        values = sorted(value_rows)
        matrix = np.zeros((len(values), self.words), dtype=np.uint64)
        for i, value in enumerate(values):
            matrix[i] = self.pack_positions(np.asarray(value_rows[value], dtype=np.int64))
        return FacetBitmaps(values, {v: i for i, v in enumerate(values)}, matrix)

    def _orderings(self, rows: list[Any]) -> dict[str, np.ndarray]:
        """Dataset positions in each sort order, computed once per catalog version."""
        labeled = np.fromiter((1.0 if r.labeled else 0.0 for r in rows), np.float64, self.size)
        is_open = np.fromiter((1.0 if r.access == "open" else 0.0 for r in rows), np.float64, self.size)
        completeness = np.fromiter((r.completeness or 0.0 for r in rows), np.float64, self.size)
        size_score = np.minimum(np.log10(np.maximum(self.images, 0) + 1) / 6, 1.0)
        year_score = np.clip((np.where(self.year > 0, self.year, 2000) - 2000) / 25, 0, 1)
        # labeled first, then larger, then newer; completeness breaks ties between otherwise equal records
        self.base_score = 1.0 * labeled + 0.6 * size_score + 0.3 * year_score + 0.1 * completeness
        self.open_score = self.base_score + 2.0 * is_open
        names = np.array([r.name.lower() for r in rows], dtype=object)
        position = np.arange(self.size)
        return {
            "relevance": np.lexsort((position, -self.base_score)),
            "relevance_open": np.lexsort((position, -self.open_score)),
            "images": np.lexsort((position, -self.images)),
            "year": np.lexsort((position, -self.year)),
            "name": np.argsort(names, kind="stable"),
        }

    # -- bit helpers ----------------------------------------------------------------------------------------
    def pack(self, flags: np.ndarray) -> Bitmap:
        padded = np.zeros(self.words * 64, dtype=bool)
        padded[: flags.size] = flags
        return np.packbits(padded, bitorder="little").view(np.uint64)

    def pack_positions(self, positions: np.ndarray) -> Bitmap:
        flags = np.zeros(self.size, dtype=bool)
        flags[positions] = True
        return self.pack(flags)

    def unpack(self, bitmap: Bitmap) -> np.ndarray:
        return np.unpackbits(bitmap.view(np.uint8), bitorder="little")[: self.size].astype(bool)

    @staticmethod
    def count(bitmap: Bitmap) -> int:
        return int(np.bitwise_count(bitmap).sum())

    def positions_of_ids(self, ids: np.ndarray) -> np.ndarray:
        positions = np.searchsorted(self.ids, ids)
        positions = positions[positions < self.size]
        return positions[self.ids[positions] == ids[: positions.size]] if positions.size else positions

    def range_bitmap(self, field: str, low: int | None, high: int | None) -> Bitmap:
        column = self.year if field == "year" else self.images
        flags = column >= 0  # a dataset whose count or year is unknown never satisfies a range
        if low is not None:
            flags &= column >= low
        if high is not None:
            flags &= column <= high
        return self.pack(flags)


_LOAD_SQL = text(
    "SELECT id, name, modalities, anatomy_closure, tasks, dims, access, labeled, host, year, size_bucket, "
    "licence, quality_flags, images, completeness FROM dataset ORDER BY id"
)

_lock = threading.Lock()
_current: CatalogIndex | None = None
_current_key: tuple[str, int] | None = None


def current_index(session: Session, version: int) -> CatalogIndex:
    """The index of this database's catalog `version`, built on first use after a change (one build at a time).

    Keyed by database and version: two databases at the same version (tests, bench) must not share an index.
    """
    global _current, _current_key
    key = (session.get_bind().url.render_as_string(hide_password=True), version)
    index = _current
    if index is not None and _current_key == key:
        return index
    with _lock:
        if _current is None or _current_key != key:
            rows = session.execute(_LOAD_SQL).all()
            _current, _current_key = CatalogIndex(version, rows), key
        return _current


def reset_index() -> None:
    """Forget the cached index (tests and bench loaders that rewrite the catalog call this)."""
    global _current, _current_key
    with _lock:
        _current, _current_key = None, None
