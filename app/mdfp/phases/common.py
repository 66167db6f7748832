"""What every MDFP phase uses: vocabulary labels and the JSON shapes of a phase's facts, tables and charts.

The builders return plain dicts shaped like `app.mdfp.schemas.Phase`'s parts (see the package docstring for
why dicts). They are shared by the phase modules of this package and are not re-exported by it, except
`label`, `labels` and `table_rows`, which the pages and the CLI use too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from app.common.vocabularies import ALL

_LABELS = {kind: {t.id: t.label for t in vocabulary.terms} for kind, vocabulary in ALL.items()}


def label(kind: str, term_id: str) -> str:
    return _LABELS[kind].get(term_id, term_id)


def labels(kind: str, term_ids: Sequence[str]) -> str:
    return _joined_labels(kind, tuple(term_ids))


@lru_cache(maxsize=4096)
def _joined_labels(kind: str, term_ids: tuple[str, ...]) -> str:
    return ", ".join(label(kind, t) for t in term_ids)


def make_table(
    table_id: str,
    title: str,
    columns: Sequence[tuple[str, str, str]],
    rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
    note: str | None = None,
    fields: list[str] | None = None,
) -> dict[str, Any]:
    """A table; with `fields`, each row is an array of those fields (the long lists: half the JSON)."""
    return {
        "id": table_id,
        "title": title,
        "columns": [{"key": k, "label": lab, "kind": kind} for k, lab, kind in columns],
        "fields": fields,
        "rows": rows,
        "total_rows": len(rows),
        "note": note,
    }


def table_rows(table: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
    """A table's rows (the first `limit`) as objects keyed by field, whatever shape they are stored in."""
    rows = table["rows"] if limit is None else table["rows"][:limit]
    fields = table.get("fields")
    return [dict(zip(fields, row, strict=True)) for row in rows] if fields else list(rows)


def make_chart(
    chart_id: str,
    title: str,
    kind: str,
    categories: list[str],
    series: list[dict[str, Any]],
    value_label: str,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "id": chart_id,
        "title": title,
        "kind": kind,
        "categories": categories,
        "series": series,
        "value_label": value_label,
        "note": note,
    }


def make_series(name: str, values: Sequence[float | int | None], stack: str | None = None) -> dict[str, Any]:
    return {"name": name, "values": list(values), "stack": stack}


def make_fact(text: str, value: int | float | str) -> dict[str, Any]:
    return {"label": text, "value": value}


def count(mask: np.ndarray) -> int:
    return int(np.count_nonzero(mask))
