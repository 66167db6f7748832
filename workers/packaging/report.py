"""report.json and report.html: what is in the bundle (summary table per modality and dimensionality), what
was skipped and why, and how each source fared.

The HTML is a static page with no scripts or external assets, readable from inside the archive; both files
carry no timestamp (the caller passes one in if it wants it) so reruns produce identical bytes.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workers.packaging.cases import SkippedItem, SourceDataset
from workers.packaging.licences import combined_terms
from workers.packaging.manifest import ItemRecord

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"


def summary_rows(records: Sequence[ItemRecord]) -> list[dict[str, Any]]:
    """One row per (modality, dims): items, distinct subjects, sources, labelled items, stored bytes unknown."""
    groups: dict[tuple[str, int], list[ItemRecord]] = defaultdict(list)
    for record in records:
        groups[(record.modality, record.dims)].append(record)
    rows = []
    for (modality, dims), items in sorted(groups.items()):
        rows.append(
            {
                "modality": modality,
                "dims": dims,
                "items": len(items),
                "subjects": len({(r.source_dataset, r.subject_id) for r in items}),
                "sources": len({r.source_dataset for r in items}),
                "with_label_map": sum(1 for r in items if r.label_path),
                "with_class_label": sum(1 for r in items if r.class_label),
                "train": sum(1 for r in items if r.split == "train"),
                "val": sum(1 for r in items if r.split == "val"),
                "test": sum(1 for r in items if r.split == "test"),
            }
        )
    return rows


def report_document(
    *,
    bundle_name: str,
    records: Sequence[ItemRecord],
    skipped: Sequence[SkippedItem],
    sources: Sequence[SourceDataset],
    extra: dict[str, Any],
) -> dict[str, Any]:
    per_source_items: dict[str, int] = defaultdict(int)
    per_source_skipped: dict[str, int] = defaultdict(int)
    for record in records:
        per_source_items[record.source_dataset] += 1
    for item in skipped:
        per_source_skipped[item.source] += 1
    source_rows = []
    for source in sorted(sources, key=lambda s: s.slug):
        status = source.status
        if status == "ok" and per_source_skipped[source.slug]:
            status = "partial"
        if status == "ok" and not per_source_items[source.slug]:
            status = "failed"
        source_rows.append(
            {
                "slug": source.slug,
                "title": source.title,
                "licence": source.licence,
                "status": status,
                "detail": source.status_detail,
                "items": per_source_items[source.slug],
                "skipped": per_source_skipped[source.slug],
            }
        )
    return {
        "bundle": bundle_name,
        "items": len(records),
        "summary": summary_rows(records),
        "sources": source_rows,
        "skipped": [
            {"source": s.source, "item": s.item, "reason": s.reason}
            for s in sorted(skipped, key=lambda s: (s.source, s.item, s.reason))
        ],
        "licence_terms": combined_terms(list(sources)).statements(),
        **extra,
    }


def _table(rows: list[dict[str, Any]], empty: str) -> str:
    if not rows:
        return f"<p>{html.escape(empty)}</p>"
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row[c]))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report_html(document: dict[str, Any]) -> str:
    title = html.escape(f"Bundle report: {document['bundle']}")
    terms = "".join(f"<li>{html.escape(t)}</li>" for t in document["licence_terms"])
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2em .5em;text-align:left}</style>"
        f"</head><body><h1>{title}</h1><p>{document['items']} items.</p>"
        f"<h2>Summary</h2>{_table(document['summary'], 'No items.')}"
        f"<h2>Sources</h2>{_table(document['sources'], 'No sources.')}"
        f"<h2>Skipped</h2>{_table(document['skipped'], 'Nothing was skipped.')}"
        f"<h2>Licence terms</h2><ul>{terms}</ul></body></html>\n"
    )


def write_report(document: dict[str, Any], root: Path) -> None:
    (root / REPORT_JSON).write_text(
        json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (root / REPORT_HTML).write_text(report_html(document), encoding="utf-8")
