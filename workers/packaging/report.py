"""report.json and report.html: what is in the bundle (summary table per modality and dimensionality), the
bundle's complete account (every item skipped or altered, at which stage and why: workers/packaging/account.py),
and how each source fared.

The HTML is a static page with no scripts or external assets, readable from inside the archive; both files
carry no timestamp (the caller passes one in if it wants it) so reruns produce identical bytes.
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workers.packaging.account import (
    ALTERED,
    NOTED,
    SKIPPED,
    account_counts,
    is_whole_source,
    per_source_skipped,
)
from workers.packaging.cases import SourceDataset
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


def source_rows(
    sources: Sequence[SourceDataset],
    records: Sequence[ItemRecord],
    account: Sequence[dict[str, str]],
    notes: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per source, fetched or not: its items and skips counted from the manifest and the account (so
    "partial" always comes with a non-zero `skipped`), the licences it states, and how harmonising read it."""
    per_source_items: dict[str, int] = defaultdict(int)
    for record in records:
        per_source_items[record.source_dataset] += 1
    skipped = per_source_skipped(account)
    rows = []
    for source in sorted(sources, key=lambda s: s.slug):
        status, detail = "ok", ""
        if skipped[source.slug]:
            status, detail = "partial", f"{skipped[source.slug]} item(s) skipped: see the account"
        if not per_source_items[source.slug]:
            # say where its items went: "failed" alone reads as a broken source when they were duplicates
            stages = Counter(
                r["stage"] for r in account if r["source"] == source.slug and r["outcome"] == SKIPPED
            )
            where = ", ".join(f"{stage} {n}" for stage, n in stages.items())
            status, detail = "failed", f"no item packaged ({where or 'none found'}): see the account"
        note = notes.get(source.slug, {})
        rows.append(
            {
                "slug": source.slug,
                "title": source.title,
                "licence": source.licence,
                "stated_licences": [f"{licence} ({where})" for licence, where in source.stated_licences],
                "doi": source.doi,
                "status": status,
                "detail": detail,
                "items": per_source_items[source.slug],
                "skipped": skipped[source.slug],
                "modality_from": note.get("modality_from", {}),
                "subject_from": note.get("subject_from", {}),
                "unknown_labels": note.get("unknown_labels", []),
            }
        )
    known = {s.slug for s in sources}
    for row in account:
        if is_whole_source(row) and row["source"] not in known:
            known.add(row["source"])
            rows.append(
                {
                    "slug": row["source"],
                    "title": "",
                    "licence": "",
                    "stated_licences": [],
                    "doi": "",
                    "status": "not fetched",
                    "detail": f"{row['stage']}: {row['reason']}",
                    "items": 0,
                    "skipped": 0,
                    "modality_from": {},
                    "subject_from": {},
                    "unknown_labels": [],
                }
            )
    return sorted(rows, key=lambda r: r["slug"])


def _rows_of(account: Sequence[dict[str, str]], outcome: str, **columns: str) -> list[dict[str, str]]:
    """The account's rows of one outcome as the report lists them: source, the file (`item`) and the item id,
    then `columns` (report key = account column)."""
    return [
        {"source": r["source"], "item": r["file"], "item_id": r["item_id"]}
        | {key: r[column] for key, column in columns.items()}
        for r in account
        if r["outcome"] == outcome
    ]


def report_document(
    *,
    bundle_name: str,
    records: Sequence[ItemRecord],
    account: Sequence[dict[str, str]],
    sources: Sequence[SourceDataset],
    notes: dict[str, dict[str, Any]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """report.json: the summary, every source's outcome, and the whole account (`skipped`, `altered`,
    `noted`), with the counts the API, the pages and the datacard repeat."""
    return {
        "bundle": bundle_name,
        "items": len(records),
        "counts": {"items": len(records), **account_counts(account)},
        "summary": summary_rows(records),
        "sources": source_rows(sources, records, account, notes),
        "skipped": _rows_of(account, SKIPPED, stage="stage", reason="reason"),
        "altered": _rows_of(account, ALTERED, stage="stage", kind="kind", detail="reason"),
        "noted": _rows_of(account, NOTED, kind="kind", detail="reason"),
        "licence_terms": combined_terms(list(sources)).statements(),
        **extra,
    }


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "; ".join(str(v) for v in value)
    return str(value)


def _table(rows: list[dict[str, Any]], empty: str) -> str:
    if not rows:
        return f"<p>{html.escape(empty)}</p>"
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row[c]))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report_html(document: dict[str, Any]) -> str:
    title = html.escape(f"Bundle report: {document['bundle']}")
    terms = "".join(f"<li>{html.escape(t)}</li>" for t in document["licence_terms"])
    counts = document["counts"]
    by_stage = ", ".join(f"{stage} {n}" for stage, n in counts["skipped_by_stage"].items()) or "none"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2em .5em;text-align:left;"
        # long file paths and DICOM UIDs wrap inside their cell instead of pushing the table off the page
        "overflow-wrap:anywhere;max-width:40em}th{white-space:nowrap}td{min-width:4.5em}</style>"
        f"</head><body><h1>{title}</h1><p>{counts['items']} items; {counts['skipped']} skipped (by stage: "
        f"{html.escape(by_stage)}); {counts['sources_not_fetched']} source(s) not fetched; {counts['altered']} "
        f"altered. Every row is also in account.csv.</p>"
        f"<h2>Summary</h2>{_table(document['summary'], 'No items.')}"
        f"<h2>Sources</h2>{_table(document['sources'], 'No sources.')}"
        f"<h2>Skipped</h2>{_table(document['skipped'], 'Nothing was skipped.')}"
        f"<h2>Altered</h2>{_table(document['altered'], 'Nothing was altered beyond the reorientation to RAS.')}"
        f"<h2>Notes</h2>{_table(document['noted'], 'No notes.')}"
        f"<h2>Licence terms</h2><ul>{terms}</ul></body></html>\n"
    )


def write_report(document: dict[str, Any], root: Path) -> None:
    (root / REPORT_JSON).write_text(
        json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (root / REPORT_HTML).write_text(report_html(document), encoding="utf-8")
