"""The catalog snapshot a plan is computed on: one catalog version, column by column, held in memory.

The planner's phases are pure functions of (snapshot, spec). A snapshot reuses the search's bitmap index for
every vocabulary column (app/search/index.py, already warm in a server that has answered a search) and adds
the few columns planning needs that search does not: slug, name, organisation and how many survey rows were
merged into each dataset. It is built once per catalog version and shared by every plan on that version.
Tests build one from in-memory records with `PlanningSnapshot.from_records`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.search.index import CatalogIndex, current_index, reset_index

# Attributes a record must (or may) have; missing optional ones take these defaults.
RECORD_DEFAULTS: dict[str, Any] = {
    "modalities": [],
    "anatomy_closure": [],
    "tasks": [],
    "dims": [],
    "access": "unknown",
    "labeled": None,
    "host": "other",
    "year": None,
    "size_bucket": "unknown",
    "licence": None,
    "fetch_method": "manual",
    "quality_flags": [],
    "images": None,
    "completeness": 0.0,
    "organisation": None,
    "raw_records": None,
}


@dataclass
class PlanningSnapshot:
    version: int
    index: CatalogIndex
    slugs: list[str]
    names: list[str]
    organisations: np.ndarray  # object: str or None
    merged_rows: np.ndarray  # int64: survey rows merged into the dataset (1 = listed once)
    slug_rank: np.ndarray = field(init=False)  # int64: position in slug order (a deterministic tie-breaker)
    organisation_codes: np.ndarray = field(
        init=False
    )  # int64: one code per distinct organisation, -1 unknown
    _masks: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        order = np.argsort(np.asarray(self.slugs, dtype=object), kind="stable")
        self.slug_rank = np.empty(self.size, dtype=np.int64)
        self.slug_rank[order] = np.arange(self.size)
        codes: dict[str, int] = {}
        self.organisation_codes = np.fromiter(
            (-1 if o is None else codes.setdefault(o, len(codes)) for o in self.organisations),
            np.int64,
            self.size,
        )

    # -- columns ----------------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.index.size

    @property
    def images(self) -> np.ndarray:
        """int64 image (or case) counts; -1 = unknown."""
        return self.index.images

    @property
    def year(self) -> np.ndarray:
        """int64 release years; -1 = unknown."""
        return self.index.year

    def values(self, facet: str) -> list[str]:
        """The values of a facet present in this catalog (facet names as in app/search/schemas.FACETS)."""
        return list(self.index.facets[facet].values)

    def mask(self, facet: str, value: str) -> np.ndarray:
        """Boolean array: which datasets have `value` in `facet` (all False when nobody has it)."""
        key = (facet, value)
        cached = self._masks.get(key)
        if cached is not None:
            return cached
        bitmaps = self.index.facets[facet]
        row = bitmaps.position.get(value)
        result = np.zeros(self.size, dtype=bool) if row is None else self.index.unpack(bitmaps.matrix[row])
        self._masks[key] = result  # benign race: every thread computes the same array
        return result

    def any_of(self, facet: str, values: Iterable[str]) -> np.ndarray:
        result = np.zeros(self.size, dtype=bool)
        for value in values:
            result |= self.mask(facet, value)
        return result

    def values_at(
        self, facet: str, positions: np.ndarray, only: Sequence[str] | None = None
    ) -> list[list[str]]:
        """For each position, its values of `facet` (in `only`'s order, or the facet's sorted order).

        Rows with the same combination of values share one list (do not mutate them): a catalog has few
        combinations, so each row costs one lookup instead of one test per value.
        """
        values = list(only) if only is not None else self.values(facet)
        if len(positions) == 0:
            return []
        if len(values) > 62:  # too many for a bit code (anatomy): one pass per value
            out: list[list[str]] = [[] for _ in range(len(positions))]
            for value in values:
                for i in np.flatnonzero(self.mask(facet, value)[positions]).tolist():
                    out[i].append(value)
            return out
        codes = np.zeros(len(positions), dtype=np.int64)
        for bit, value in enumerate(values):
            codes |= self.mask(facet, value)[positions].astype(np.int64) << bit
        distinct, inverse = np.unique(codes, return_inverse=True)
        combos = [[v for bit, v in enumerate(values) if (int(code) >> bit) & 1] for code in distinct]
        return [combos[i] for i in inverse.tolist()]

    # -- building ---------------------------------------------------------------------------------------------
    @classmethod
    def from_records(cls, version: int, records: Iterable[Any]) -> PlanningSnapshot:
        """A snapshot of in-memory records (Dataset objects or anything with the same attributes)."""
        rows = sorted((_complete(r) for r in records), key=lambda r: r.id)
        index = CatalogIndex(version, rows)
        return cls(
            version=version,
            index=index,
            slugs=[r.slug for r in rows],
            names=[r.name for r in rows],
            organisations=np.array([r.organisation or None for r in rows], dtype=object),
            merged_rows=np.fromiter((len(r.raw_records or [None]) for r in rows), np.int64, len(rows)),
        )


def _complete(record: Any) -> Any:
    values = {"id": record.id, "slug": record.slug, "name": record.name}
    for name, default in RECORD_DEFAULTS.items():
        value = getattr(record, name, None)
        values[name] = default if value is None else value
    return SimpleNamespace(**values)


_EXTRA_SQL = text(
    "SELECT id, slug, name, organisation, coalesce(jsonb_array_length(raw_records), 1) AS merged "
    "FROM dataset ORDER BY id"
)
_lock = threading.Lock()
_current: PlanningSnapshot | None = None


def load_snapshot(session: Session, version: int) -> PlanningSnapshot:
    """The snapshot of catalog `version`, built on first use (one build at a time, then shared)."""
    global _current
    # valid while built on the search index currently cached for this database and version
    snapshot = _current
    if snapshot is not None and snapshot.index is current_index(session, version):
        return snapshot
    with _lock:
        if _current is not None and _current.index is current_index(session, version):
            return _current
        for attempt in range(2):
            index = current_index(session, version)
            extras = session.execute(_EXTRA_SQL).all()
            ids = np.fromiter((r.id for r in extras), np.int64, len(extras))
            if ids.size == index.ids.size and np.array_equal(ids, index.ids):
                break
            # the catalog changed between the two reads: rebuild the index from what is there now
            reset_index()
            if attempt == 1:
                raise RuntimeError("the catalog kept changing while a planning snapshot was loaded")
        _current = PlanningSnapshot(
            version=version,
            index=index,
            slugs=[r.slug for r in extras],
            names=[r.name for r in extras],
            organisations=np.array([r.organisation or None for r in extras], dtype=object),
            merged_rows=np.fromiter((r.merged for r in extras), np.int64, len(extras)),
        )
        return _current


def reset_snapshot() -> None:
    """Forget the cached snapshot (tests and bench loaders that rewrite the catalog call this)."""
    global _current
    with _lock:
        _current = None
