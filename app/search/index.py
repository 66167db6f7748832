"""An in-memory bitmap index over the catalog's facet columns, rebuilt whenever the catalog version changes.

Why it exists: disjunctive facet counts need one differently-filtered count per facet. In PostgreSQL each is a
scan with `unnest` (about 50 ms per facet at 100,000 datasets on 2 cores, see bench/README.md), so eleven facets
cannot answer in 100 ms. Here every (facet, value) is a bitmap of the datasets that have it; a search ANDs and ORs
bitmaps and counts bits, which takes a few milliseconds even at a million datasets. PostgreSQL stays the system
of record; text matching uses the text index built beside this one (app/search/text_index.py); neither holds
anything that a rebuild cannot restore.
"""

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from sqlalchemy import TextClause, text
from sqlalchemy.orm import Session

from app.core.cache import on_forget
from app.core.config import get_settings
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
        union: Bitmap = np.bitwise_or.reduce(self.matrix[rows], axis=0)
        return union

    def counts(self, within: Bitmap) -> np.ndarray:
        counts: np.ndarray = np.bitwise_count(self.matrix & within).sum(axis=1, dtype=np.int64)
        return counts


class CatalogIndex:
    """Facet bitmaps, range columns and precomputed orderings for one catalog version."""

    def __init__(self, version: int, rows: Sequence[Any]) -> None:
        self.version = version
        self.size = len(rows)
        self.words = max(1, (self.size + 63) // 64)
        columns = _columns(rows)
        self.ids = np.fromiter(columns["id"], dtype=np.int64, count=self.size)
        self.year = np.fromiter((-1 if v is None else v for v in columns["year"]), np.int64, self.size)
        self.images = np.fromiter((-1 if v is None else v for v in columns["images"]), np.int64, self.size)
        self.facets = {name: self._bitmaps(name, columns) for name in FACETS}
        self.all = self.pack(np.ones(self.size, dtype=bool))
        self.orderings = self._orderings(columns)

    # -- building -------------------------------------------------------------------------------------------
    @staticmethod
    def facet_values_of(name: str, row: Any) -> list[str]:
        """The facet values of one row, as the index and the API spell them."""
        spec = FACETS[name]
        raw = getattr(row, spec.column)
        if spec.multi:
            values = list(raw or [])
            return values or (["none"] if name == "quality" else [])
        return [_scalar_value(raw)]

    def _bitmaps(self, name: str, columns: dict[str, Sequence[Any]]) -> FacetBitmaps:
        """One bitmap per value, built column-wise: (value code, row position) pairs set in one numpy step."""
        spec = FACETS[name]
        column = columns[spec.column]
        if spec.multi:
            if name == "quality":  # a dataset without flags is counted under "none"
                column = [values or ["none"] for values in column]
            lengths = np.fromiter((len(values or ()) for values in column), np.int64, self.size)
            flat = list(chain.from_iterable(values or () for values in column))
            positions = np.repeat(np.arange(self.size, dtype=np.int64), lengths)
        else:
            flat = [_scalar_value(value) for value in column]
            positions = np.arange(self.size, dtype=np.int64)
        values = sorted(set(flat))
        code = {value: i for i, value in enumerate(values)}
        codes = np.fromiter(map(code.__getitem__, flat), np.int64, len(flat))
        flags = np.zeros((len(values), self.words * 64), dtype=bool)
        flags[codes, positions] = True
        matrix = (
            np.packbits(flags, axis=1, bitorder="little").view(np.uint64).reshape(len(values), self.words)
        )
        return FacetBitmaps(values, code, matrix)

    def _orderings(self, columns: dict[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        """Dataset positions in each sort order, computed once per catalog version."""
        labeled = np.fromiter((1.0 if v else 0.0 for v in columns["labeled"]), np.float64, self.size)
        is_open = np.fromiter((1.0 if v == "open" else 0.0 for v in columns["access"]), np.float64, self.size)
        completeness = np.fromiter((v or 0.0 for v in columns["completeness"]), np.float64, self.size)
        size_score = np.minimum(np.log10(np.maximum(self.images, 0) + 1) / 6, 1.0)
        year_score = np.clip((np.where(self.year > 0, self.year, 2000) - 2000) / 25, 0, 1)
        # labeled first, then larger, then newer; completeness breaks ties between otherwise equal records
        self.base_score = 1.0 * labeled + 0.6 * size_score + 0.3 * year_score + 0.1 * completeness
        self.open_score = self.base_score + 2.0 * is_open
        names = np.array([name.lower() for name in columns["name"]], dtype=object)
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


def _scalar_value(raw: Any) -> str:
    """A single-valued column as a facet value: None is 'unknown', booleans 'true'/'false'."""
    if raw is None:
        return "unknown"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


LOAD_FIELDS = (
    "id", "name", "modalities", "anatomy_closure", "tasks", "dims", "access", "labeled", "host", "year",
    "size_bucket", "licence", "fetch_method", "quality_flags", "images", "completeness",
)  # fmt: skip


def _columns(rows: Sequence[Any]) -> dict[str, Sequence[Any]]:
    """The rows as columns. Database rows are tuples (transposed in C); other records are read by name."""
    if rows and hasattr(rows[0], "_fields"):
        return dict(zip(rows[0]._fields, zip(*rows, strict=True), strict=True))
    return {field: [getattr(row, field) for row in rows] for field in LOAD_FIELDS}


_LOAD_SQL = text(f"SELECT {', '.join(LOAD_FIELDS)} FROM dataset ORDER BY id")

_lock = threading.Lock()
_current: CatalogIndex | None = None
_current_key: tuple[str, int] | None = None


def read_whole_catalog(session: Session, query: TextClause) -> Sequence[Any]:
    """Every row `query` reads, without the search time limit: reading the whole catalog is an index rebuild,
    not a search (at 100,000 records it can take longer than a search may), and the limit is set back after."""
    session.execute(text("SET LOCAL statement_timeout = 0"))
    rows = session.execute(query).all()
    session.execute(text(f"SET LOCAL statement_timeout = {int(get_settings().query_timeout_ms)}"))
    return rows


def current_index(session: Session, version: int) -> CatalogIndex:
    """The index of this database's catalog `version`, built on first use after a change (one build at a time).

    Keyed by database and version: two databases at the same version (tests, bench) must not share an index.
    """
    global _current, _current_key
    key = (session.get_bind().engine.url.render_as_string(hide_password=True), version)
    index = _current
    if index is not None and _current_key == key:
        return index
    with _lock:
        if _current is None or _current_key != key:
            _current, _current_key = CatalogIndex(version, read_whole_catalog(session, _LOAD_SQL)), key
        return _current


@on_forget
def reset_index() -> None:
    """Forget the cached index (tests and bench loaders that rewrite the catalog call this)."""
    global _current, _current_key
    with _lock:
        _current, _current_key = None, None
