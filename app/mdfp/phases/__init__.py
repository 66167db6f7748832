"""The four MDFP phases, as in the survey's figure: pure functions of (catalog snapshot, spec).

Each phase returns a JSON-ready dict shaped like `app.mdfp.schemas.Phase`: headline facts, tables (rows keyed
by column) and chart data (categories and series, independent of the drawing library). Plain dicts rather than
pydantic objects because the final list and the rejected list hold one row per dataset (tens of thousands on a
large catalog) and are only ever serialised. Every list is in a defined order (vocabulary order for terms,
rank or rule-then-slug for datasets), so the same inputs give byte-identical plans.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np

from app.common.vocabularies import ALL
from app.mdfp.rules import (
    DATASET_RULES,
    NOT_REJECTED,
    RULE_INDEX,
    RULES,
    Evaluation,
    evaluate,
    labeled_state,
    organisations_of,
)
from app.mdfp.schemas import PlanSpec
from app.mdfp.snapshot import PlanningSnapshot

# Modality families of the harmonisation landscape (the survey groups its tables the same way).
FAMILIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("cross_sectional", "Cross-sectional radiology", ("CT", "MR", "PT", "NM")),
    ("projection", "Projection radiography", ("XR", "MG", "XA", "RTIMAGE")),
    ("ultrasound", "Ultrasound", ("US",)),
    ("ophthalmic", "Ophthalmic imaging", ("FUNDUS", "OCT")),
    ("pathology", "Pathology and microscopy", ("HISTOPATHOLOGY", "MICROSCOPY")),
    ("optical", "Endoscopy and surface optical", ("ENDOSCOPY", "DERMOSCOPY", "PHOTOGRAPHY", "INFRARED")),
    ("other", "Other", ("OTHER",)),
)
FAMILY_OF = {m: label for _, label, members in FAMILIES for m in members}
COUNTING_NOTE = (
    "A dataset with several target modalities counts in full in each of them (the catalog does not split a "
    "dataset's images by modality, and a split would be a guess): such rows overlap, and the total row "
    "counts each dataset once."
)
FINAL_LIST_CHART_SIZE = 20
_LABELED = {"true": True, "false": False}


_LABELS = {kind: {t.id: t.label for t in vocabulary.terms} for kind, vocabulary in ALL.items()}


def label(kind: str, term_id: str) -> str:
    return _LABELS[kind].get(term_id, term_id)


def labels(kind: str, term_ids: Sequence[str]) -> str:
    return _joined_labels(kind, tuple(term_ids))


@lru_cache(maxsize=4096)
def _joined_labels(kind: str, term_ids: tuple[str, ...]) -> str:
    return ", ".join(label(kind, t) for t in term_ids)


def _table(
    table_id: str,
    title: str,
    columns: Sequence[tuple[str, str, str]],
    rows: list[dict[str, Any]] | list[list[Any]],
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


def _chart(
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


def _series(name: str, values: Sequence[float | int | None], stack: str | None = None) -> dict[str, Any]:
    return {"name": name, "values": list(values), "stack": stack}


def _fact(text: str, value: int | float | str) -> dict[str, Any]:
    return {"label": text, "value": value}


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 5) if whole else None


def _count(mask: np.ndarray) -> int:
    return int(np.count_nonzero(mask))


# -- phase 1 ------------------------------------------------------------------------------------------------
def harmonisation(snapshot: PlanningSnapshot, spec: PlanSpec) -> dict[str, Any]:
    """The landscape of the whole catalog once every record is on the shared vocabularies."""
    labeled, unlabeled, unknown_label = labeled_state(snapshot)
    present = set(snapshot.values("modality"))
    modalities = [m for m in ALL["modality"].ids if m in present]
    targets = set(spec.target_modalities)
    rows = []
    for modality in modalities:
        has = snapshot.mask("modality", modality)
        rows.append(
            {
                "modality": modality,
                "label": label("modality", modality),
                "family": FAMILY_OF.get(modality, "Other"),
                "datasets": _count(has),
                "labeled": _count(has & labeled),
                "unlabeled": _count(has & unlabeled),
                "labels_unknown": _count(has & unknown_label),
                "target": modality in targets,
            }
        )
    family_rows = []
    for family_id, family_label, members in FAMILIES:
        has = snapshot.any_of("modality", [m for m in members if m in present])
        if not has.any():
            continue
        family_rows.append(
            {
                "family": family_id,
                "label": family_label,
                "modalities": [m for m in members if m in present],
                "datasets": _count(has),
                "labeled": _count(has & labeled),
                "unlabeled": _count(has & unlabeled),
            }
        )
    n = snapshot.size
    merged = _count(snapshot.merged_rows > 1)
    facts = [
        _fact("Datasets in the catalog", n),
        _fact("Survey rows they were built from", int(snapshot.merged_rows.sum())),
        _fact("Datasets merged from duplicate rows", merged),
        _fact(
            "'Multi' modality rows given their table's modality",
            _count(snapshot.mask("quality", "modality_unknown")),
        ),
        _fact("Organisation unknown", int(sum(1 for o in snapshot.organisations if o is None))),
        _fact("Licence unknown", _count(snapshot.mask("licence", "unknown"))),
        _fact("Image count unknown", _count(snapshot.images < 0)),
        _fact("Label status unknown", _count(unknown_label)),
    ]
    label_rows = [
        {"status": "labeled", "label": "Labeled", "datasets": _count(labeled)},
        {"status": "unlabeled", "label": "Unlabeled", "datasets": _count(unlabeled)},
        {"status": "unknown", "label": "Unknown", "datasets": _count(unknown_label)},
    ]
    categories = [r["label"] + (" ★" if r["target"] else "") for r in rows]
    return {
        "number": 1,
        "id": "harmonisation",
        "name": "Harmonisation",
        "description": "Every record's free-text metadata mapped onto the shared vocabularies (modality, task, "
        "dimensionality, anatomy, labels), and the landscape that results. Target modalities are starred.",
        "facts": facts,
        "tables": [
            _table(
                "landscape",
                "Datasets by modality and label status",
                [
                    ("label", "Modality", "text"),
                    ("family", "Family", "text"),
                    ("datasets", "Datasets", "int"),
                    ("labeled", "Labeled", "int"),
                    ("unlabeled", "Unlabeled", "int"),
                    ("labels_unknown", "Label status unknown", "int"),
                    ("target", "Target", "bool"),
                ],
                rows,
                note="A dataset with several modalities counts once in each.",
            ),
            _table(
                "families",
                "Modality families",
                [
                    ("label", "Family", "text"),
                    ("modalities", "Modalities", "list"),
                    ("datasets", "Datasets", "int"),
                    ("labeled", "Labeled", "int"),
                    ("unlabeled", "Unlabeled", "int"),
                ],
                family_rows,
                note="A dataset counts once per family it touches.",
            ),
            _table(
                "label_availability",
                "Label availability",
                [("label", "Labels", "text"), ("datasets", "Datasets", "int")],
                label_rows,
            ),
        ],
        "charts": [
            _chart(
                "landscape",
                "Datasets by modality and label status",
                "stacked_bar",
                categories,
                [
                    _series("Labeled", [r["labeled"] for r in rows], "labels"),
                    _series("Unlabeled", [r["unlabeled"] for r in rows], "labels"),
                    _series("Unknown", [r["labels_unknown"] for r in rows], "labels"),
                ],
                "datasets",
            ),
            _chart(
                "families",
                "Modality family distribution",
                "pie",
                [r["label"] for r in family_rows],
                [_series("Datasets", [r["datasets"] for r in family_rows])],
                "datasets",
            ),
            _chart(
                "label_availability",
                "Label availability",
                "pie",
                [r["label"] for r in label_rows],
                [_series("Datasets", [r["datasets"] for r in label_rows])],
                "datasets",
            ),
        ],
        "notes": [],
    }


# -- phase 2 ------------------------------------------------------------------------------------------------
def alignment(
    snapshot: PlanningSnapshot, spec: PlanSpec, evaluation: Evaluation | None = None
) -> dict[str, Any]:
    """The candidates that cover the target task types and dimensionality."""
    ev = evaluation or evaluate(snapshot, spec)
    candidate, aligned = ev.candidate, ev.aligned
    labeled, unlabeled, unknown_label = labeled_state(snapshot)
    target_tasks = set(spec.target_task_types)
    present_tasks = {t for t in snapshot.values("task") if (snapshot.mask("task", t) & candidate).any()}
    task_rows = [
        {
            "task": task,
            "label": label("task", task),
            "candidates": _count(candidate & snapshot.mask("task", task)),
            "aligned": _count(aligned & snapshot.mask("task", task)),
            "target": not target_tasks or task in target_tasks,
        }
        for task in ALL["task"].ids
        if task in present_tasks
    ]
    matrix_tasks = list(spec.target_task_types) or [r["task"] for r in task_rows]
    matrix_rows = []
    for modality in ev.target_modalities:
        in_modality = aligned & snapshot.mask("modality", modality)
        row: dict[str, Any] = {"modality": modality, "label": label("modality", modality)}
        row["aligned"] = _count(in_modality)
        for task in matrix_tasks:
            row[task] = _count(in_modality & snapshot.mask("task", task))
        matrix_rows.append(row)
    dim_rows = []
    for dim in ALL["dim"].ids:
        has = candidate & snapshot.mask("dim", dim)
        if not has.any():
            continue
        if not spec.target_dims or dim in spec.target_dims:
            role = "target"
        elif dim == "3D" and spec.allow_3d_as_2d_sources and "2D" in spec.target_dims:
            role = "3D as 2D source"
        else:
            role = "not targeted"
        dim_rows.append(
            {
                "dim": dim,
                "label": label("dim", dim),
                "candidates": _count(has),
                "aligned": _count(has & aligned),
                "role": role,
            }
        )
    label_rows = []
    for modality in ev.target_modalities:
        in_modality = aligned & snapshot.mask("modality", modality)
        label_rows.append(
            {
                "modality": modality,
                "label": label("modality", modality),
                "aligned": _count(in_modality),
                "labeled": _count(in_modality & labeled),
                "unlabeled": _count(in_modality & unlabeled),
                "labels_unknown": _count(in_modality & unknown_label),
            }
        )
    rejected_tasks = _count(candidate & (ev.first_rule == RULE_INDEX["target_task_types"]))
    rejected_dims = _count(candidate & (ev.first_rule == RULE_INDEX["target_dims"]))
    modality_labels = [r["label"] for r in matrix_rows]
    return {
        "number": 2,
        "id": "alignment",
        "name": "Alignment",
        "description": "Candidates are the datasets with a target modality; they align when they also cover a "
        "target task type and dimensionality"
        + (
            " (3D volumes may feed the 2D goal)"
            if spec.allow_3d_as_2d_sources and "2D" in spec.target_dims
            else ""
        )
        + ".",
        "facts": [
            _fact("Candidates (a target modality)", _count(candidate)),
            _fact("Aligned", _count(aligned)),
            _fact("Rejected: no target task type", rejected_tasks),
            _fact("Rejected: dimensionality not targeted", rejected_dims),
            _fact("Aligned only as 3D volumes for a 2D goal", _count(aligned & ev.via_3d)),
        ],
        "tables": [
            _table(
                "tasks",
                "Candidates per task type",
                [
                    ("label", "Task type", "text"),
                    ("candidates", "Candidates", "int"),
                    ("aligned", "Aligned", "int"),
                    ("target", "Target", "bool"),
                ],
                task_rows,
                note="A dataset with several task types counts once in each.",
            ),
            _table(
                "tasks_by_modality",
                "Target task types per modality (aligned datasets)",
                [("label", "Modality", "text"), ("aligned", "Aligned", "int")]
                + [(t, label("task", t), "int") for t in matrix_tasks],
                matrix_rows,
            ),
            _table(
                "dims",
                "Dimensionality of the candidates",
                [
                    ("label", "Dimensionality", "text"),
                    ("candidates", "Candidates", "int"),
                    ("aligned", "Aligned", "int"),
                    ("role", "Role", "text"),
                ],
                dim_rows,
            ),
            _table(
                "labels",
                "Label availability among aligned datasets",
                [
                    ("label", "Modality", "text"),
                    ("aligned", "Aligned", "int"),
                    ("labeled", "Labeled", "int"),
                    ("unlabeled", "Unlabeled", "int"),
                    ("labels_unknown", "Label status unknown", "int"),
                ],
                label_rows,
            ),
        ],
        "charts": [
            _chart(
                "tasks",
                "Candidates per task type",
                "stacked_bar",
                [r["label"] + (" ★" if r["target"] and target_tasks else "") for r in task_rows],
                [
                    _series("Aligned", [r["aligned"] for r in task_rows], "candidates"),
                    _series("Not aligned", [r["candidates"] - r["aligned"] for r in task_rows], "candidates"),
                ],
                "datasets",
            ),
            _chart(
                "tasks_by_modality",
                "Target task types per modality",
                "grouped_bar",
                modality_labels,
                [_series(label("task", t), [r[t] for r in matrix_rows]) for t in matrix_tasks],
                "aligned datasets",
            ),
            _chart(
                "labels",
                "Label availability among aligned datasets",
                "stacked_bar",
                [r["label"] for r in label_rows],
                [
                    _series("Labeled", [r["labeled"] for r in label_rows], "labels"),
                    _series("Unlabeled", [r["unlabeled"] for r in label_rows], "labels"),
                    _series("Unknown", [r["labels_unknown"] for r in label_rows], "labels"),
                ],
                "datasets",
            ),
        ],
        "notes": [],
    }


# -- phase 3 ------------------------------------------------------------------------------------------------
def modality_rows(snapshot: PlanningSnapshot, ev: Evaluation, rows_mask: np.ndarray) -> list[dict[str, Any]]:
    """Per target modality: the survey's columns over `rows_mask`, with the unknowns that qualify them."""
    labeled, _, unknown_label = labeled_state(snapshot)
    status = {c.modality: c.status for c in ev.checks}
    images = snapshot.images
    out = []
    for modality in ev.target_modalities:
        rows = rows_mask & snapshot.mask("modality", modality)
        n = _count(rows)
        known_images = rows & (images >= 0)
        orgs_known, orgs_unknown = organisations_of(snapshot, rows)
        n_labeled = _count(rows & labeled)
        labels_unknown = _count(rows & unknown_label)
        out.append(
            {
                "modality": modality,
                "label": label("modality", modality),
                "n_datasets": n,
                "sum_images": int(images[known_images].sum()),
                "images_unknown": n - _count(known_images),
                "n_orgs": orgs_known,
                "orgs_unknown": orgs_unknown,
                "labeled_ratio": _ratio(n_labeled, n - labels_unknown),
                "labeled": n_labeled,
                "labels_unknown": labels_unknown,
                "shared": _count(rows & (ev.target_count > 1)),
                "status": status.get(modality, "kept"),
            }
        )
    return out


def total_row(snapshot: PlanningSnapshot, rows: np.ndarray) -> dict[str, Any]:
    labeled, _, unknown_label = labeled_state(snapshot)
    n = _count(rows)
    known_images = rows & (snapshot.images >= 0)
    orgs_known, orgs_unknown = organisations_of(snapshot, rows)
    n_labeled = _count(rows & labeled)
    labels_unknown = _count(rows & unknown_label)
    return {
        "modality": "total",
        "label": "Total (each dataset once)",
        "n_datasets": n,
        "sum_images": int(snapshot.images[known_images].sum()),
        "images_unknown": n - _count(known_images),
        "n_orgs": orgs_known,
        "orgs_unknown": orgs_unknown,
        "labeled_ratio": _ratio(n_labeled, n - labels_unknown),
        "labeled": n_labeled,
        "labels_unknown": labels_unknown,
        "shared": 0,
        "status": "kept",
    }


def _rule_setting(spec: PlanSpec, rule_id: str) -> str:
    selection = spec.selection
    values: dict[str, str] = {
        "target_task_types": labels("task", spec.target_task_types) or "any",
        "target_dims": (labels("dim", spec.target_dims) or "any")
        + (
            " (3D volumes allowed as 2D sources)"
            if spec.allow_3d_as_2d_sources and "2D" in spec.target_dims
            else ""
        ),
        "anatomy_whitelist": labels("anatomy", spec.anatomy_whitelist or []) or "any",
        "access_allowlist": labels("access", spec.access_allowlist or []) or "any",
        "licence_allowlist": labels("licence", spec.licence_allowlist or []) or "any",
        "include_unlabeled": "unlabeled allowed" if spec.include_unlabeled else "labeled only",
        "min_valid_images_per_dataset": f"{spec.min_valid_images_per_dataset:,}"
        if spec.min_valid_images_per_dataset
        else "off",
        "release_year_min": str(spec.release_year_min) if spec.release_year_min is not None else "off",
    }
    if not selection.enable:
        return values.get(rule_id, "off (selection disabled)")
    selection_values = {
        "selection.min_datasets_per_modality": selection.min_datasets_per_modality,
        "selection.min_orgs_per_modality": selection.min_orgs_per_modality,
        "selection.max_datasets": selection.max_datasets,
        "selection.max_total_images": selection.max_total_images,
    }
    if rule_id in selection_values:
        value = selection_values[rule_id]
        return f"{value:,}" if value is not None else "off"
    return values[rule_id]


def blueprint(
    snapshot: PlanningSnapshot, spec: PlanSpec, evaluation: Evaluation | None = None
) -> dict[str, Any]:
    """The rules and selection constraints applied; what the selection holds per modality."""
    ev = evaluation or evaluate(snapshot, spec)
    aligned = ev.aligned
    rule_rows = []
    for rule in RULES:
        index = RULE_INDEX[rule.id]
        failing = ev.fails.get(rule.id)
        rule_rows.append(
            {
                "rule": rule.id,
                "label": rule.label,
                "phase": rule.phase,
                "setting": _rule_setting(spec, rule.id),
                "rejected": _count(ev.candidate & (ev.first_rule == index)),
                "failing": _count(ev.candidate & failing) if failing is not None else 0,
            }
        )
    selection = modality_rows(snapshot, ev, ev.final)
    eligible = modality_rows(snapshot, ev, ev.eligible)
    for row, before in zip(selection, eligible, strict=True):
        row["eligible"] = before["n_datasets"]
    check_rows = [
        {
            "modality": c.modality,
            "label": label("modality", c.modality),
            "eligible": c.eligible,
            "orgs_known": c.orgs_known,
            "orgs_unknown": c.orgs_unknown,
            "datasets_check": c.datasets_check,
            "orgs_check": c.orgs_check,
            "status": c.status,
        }
        for c in ev.checks
    ]
    tables = [
        _table(
            "rules",
            "Rules, in the order they apply",
            [
                ("label", "Rule", "text"),
                ("rule", "Id", "text"),
                ("phase", "Phase", "text"),
                ("setting", "Setting", "text"),
                ("rejected", "Rejected by it", "int"),
                ("failing", "Candidates failing it", "int"),
            ],
            rule_rows,
            note="Each candidate is rejected by the first rule it fails, in this order; 'failing' counts every "
            "candidate that fails the rule, whatever rejected it first.",
        ),
    ]
    if spec.selection.enable:
        tables.append(
            _table(
                "constraints",
                "Selection constraints per modality",
                [
                    ("label", "Modality", "text"),
                    ("eligible", "Eligible datasets", "int"),
                    ("orgs_known", "Known organisations", "int"),
                    ("orgs_unknown", "Organisation unknown", "int"),
                    ("datasets_check", "Min datasets", "text"),
                    ("orgs_check", "Min organisations", "text"),
                    ("status", "Modality", "text"),
                ],
                check_rows,
                note="'unverified': known organisations are too few, but the datasets of unknown organisation "
                "could make up the difference; the modality is kept and the gap is reported, not assumed away.",
            )
        )
    tables.append(
        _table(
            "selection",
            "The selection per modality",
            [
                ("label", "Modality", "text"),
                ("eligible", "Eligible", "int"),
                ("n_datasets", "Selected", "int"),
                ("sum_images", "Images (known)", "int"),
                ("images_unknown", "Count unknown", "int"),
                ("labeled_ratio", "Labeled ratio", "ratio"),
                ("n_orgs", "Orgs (known)", "int"),
                ("orgs_unknown", "Org unknown", "int"),
                ("shared", "In another row too", "int"),
            ],
            selection,
            note=COUNTING_NOTE,
        )
    )
    categories = [r["label"] for r in selection]
    return {
        "number": 3,
        "id": "blueprint",
        "name": "Blueprint",
        "description": "The per-dataset rules (anatomy, access, licence, labels, size, year) and the selection "
        "constraints applied to the aligned datasets.",
        "facts": [
            _fact("Aligned", _count(aligned)),
            _fact("Eligible after the rules", _count(ev.eligible)),
            _fact("Selected", _count(ev.final)),
            _fact("Dropped by the selection constraints", _count(ev.eligible & ~ev.final)),
        ],
        "tables": tables,
        "charts": [
            _chart(
                "images",
                "Summed images per modality (selection)",
                "bar",
                categories,
                [_series("Images (known counts)", [r["sum_images"] for r in selection])],
                "images or cases",
                note="Datasets with an unknown count add nothing here; the table says how many there are.",
            ),
            _chart(
                "labeled_ratio",
                "Labeled ratio per modality (selection)",
                "bar",
                categories,
                [_series("Labeled ratio", [r["labeled_ratio"] for r in selection])],
                "labeled datasets / datasets",
            ),
            _chart(
                "organisations",
                "Organisations per modality (selection)",
                "grouped_bar",
                categories,
                [
                    _series("Known organisations", [r["n_orgs"] for r in selection]),
                    _series("Datasets of unknown organisation", [r["orgs_unknown"] for r in selection]),
                ],
                "count",
                note="Organisations are never guessed: a dataset whose organisation the catalog does not record "
                "is counted apart.",
            ),
        ],
        "notes": [],
    }


# -- phase 4 ------------------------------------------------------------------------------------------------
def _single(snapshot: PlanningSnapshot, facet: str, positions: np.ndarray) -> list[str | None]:
    values = snapshot.values_at(facet, positions)
    return [v[0] if v else None for v in values]


class _Why:
    """Why a dataset is in: the rules it passed, in words. The row's other fields already say which target
    modalities and task types it matched and how many images it has, so the sentence does not repeat them.
    A sentence depends only on the dimensionality combination, the label status and the rank: each one is
    built once per combination."""

    LABELS = {"true": "labeled", "false": "unlabeled (allowed)"}

    def __init__(self, spec: PlanSpec, ranked: bool) -> None:
        self.spec = spec
        self.ranked = ranked
        tail = []
        if spec.min_valid_images_per_dataset:
            tail.append(f"≥ {spec.min_valid_images_per_dataset:,} images")
        if spec.anatomy_whitelist:
            tail.append("anatomy in the whitelist")
        if spec.access_allowlist:
            tail.append("access allowed")
        if spec.licence_allowlist:
            tail.append("licence allowed")
        if spec.release_year_min is not None:
            tail.append(f"released ≥ {spec.release_year_min}")
        self.tail = "".join(f"; {t}" for t in tail)
        self.sentences: dict[tuple[int, bool, str | None], str] = {}

    def __call__(self, dims: list[str], via_3d: bool, labeled: str | None, rank: int) -> str:
        # values_at shares one list per combination, so the list's identity names the combination
        key = (id(dims), via_3d, labeled)
        sentence = self.sentences.get(key)
        if sentence is None:
            parts = [self.LABELS.get(labeled or "", "label status unknown (allowed)")]
            if self.spec.target_dims:
                targets = [d for d in dims if d in self.spec.target_dims]
                parts.insert(0, "3D volumes as a 2D source" if via_3d else labels("dim", targets))
            sentence = self.sentences[key] = "; ".join(parts) + self.tail
        return f"{sentence}; ranked #{rank:,}" if self.ranked else sentence


FINAL_FIELDS = [
    "slug", "name", "rank", "modalities", "tasks", "images", "labeled", "access", "licence", "organisation",
    "why",
]  # fmt: skip
REJECTED_FIELDS = ["slug", "name", "modalities", "rule", "reason", "also"]


def final_list(snapshot: PlanningSnapshot, spec: PlanSpec, ev: Evaluation) -> list[list[Any]]:
    """The final list, best ranked first: one array per dataset, in FINAL_FIELDS order."""
    positions = ev.final_order
    modalities = snapshot.values_at("modality", positions, ev.target_modalities)
    task_order = list(spec.target_task_types) or ALL["task"].ids
    tasks = snapshot.values_at("task", positions, task_order)
    dims = snapshot.values_at("dim", positions, ALL["dim"].ids)
    access = _single(snapshot, "access", positions)
    licence = _single(snapshot, "licence", positions)
    labeled = _single(snapshot, "labeled", positions)
    ranked = spec.selection.enable and (
        spec.selection.max_datasets is not None or spec.selection.max_total_images is not None
    )
    why = _Why(spec, ranked)
    images = snapshot.images[positions].tolist()
    via_3d = ev.via_3d[positions].tolist()
    organisations = snapshot.organisations[positions].tolist()
    slugs, names, rank_of = snapshot.slugs, snapshot.names, ev.rank_of
    rows = []
    for i, position in enumerate(positions.tolist()):
        count = images[i]
        rows.append(
            [
                slugs[position],
                names[position],
                i + 1,
                modalities[i],
                tasks[i],
                count if count >= 0 else None,
                _LABELED.get(labeled[i] or ""),
                access[i],
                None if licence[i] == "unknown" else licence[i],
                organisations[i],
                why(dims[i], via_3d[i], labeled[i], rank_of[position]),
            ]
        )
    return rows


def _leaves(closure: list[str]) -> list[str]:
    """The most specific regions of an anatomy closure (drop every region that contains another listed one)."""
    anatomy = ALL["anatomy"]
    inner = {a for region in closure if region in anatomy.ids for a in anatomy.ancestors(region)}
    return [r for r in closure if r not in inner]


def _rejection_reasons(
    snapshot: PlanningSnapshot, spec: PlanSpec, ev: Evaluation, rule_id: str, positions: np.ndarray
) -> list[str]:
    """One sentence per rejected dataset saying what the rule found."""
    count = len(positions)
    if rule_id == "target_task_types":
        tasks = snapshot.values_at("task", positions, ALL["task"].ids)
        return [
            f"task types {labels('task', t)} are not targeted" if t else "no task type recorded"
            for t in tasks
        ]
    if rule_id == "target_dims":
        dims = snapshot.values_at("dim", positions, ALL["dim"].ids)
        out = []
        for d in dims:
            if not d:
                out.append("dimensionality unknown")
            elif "3D" in d and "2D" in spec.target_dims and not spec.allow_3d_as_2d_sources:
                out.append(f"{labels('dim', d)} not targeted (3D volumes are not allowed as 2D sources)")
            else:
                out.append(f"{labels('dim', d)} not targeted")
        return out
    if rule_id == "anatomy_whitelist":
        closures = snapshot.values_at("anatomy", positions)
        return [
            f"anatomy {labels('anatomy', _leaves(c))} is outside the whitelist" if c else "anatomy unknown"
            for c in closures
        ]
    if rule_id == "access_allowlist":
        return [
            f"access {label('access', a or 'unknown')} is not allowed"
            for a in _single(snapshot, "access", positions)
        ]
    if rule_id == "licence_allowlist":
        return [
            "licence unknown: not assumed to be allowed"
            if lic in (None, "unknown")
            else f"licence {label('licence', lic)} is not allowed"
            for lic in _single(snapshot, "licence", positions)
        ]
    if rule_id == "include_unlabeled":
        return [
            "unlabeled" if state == "false" else "label status unknown"
            for state in _single(snapshot, "labeled", positions)
        ]
    if rule_id == "min_valid_images_per_dataset":
        minimum = spec.min_valid_images_per_dataset
        return [
            f"{int(i):,} images < {minimum:,}" if i >= 0 else "image count unknown"
            for i in snapshot.images[positions]
        ]
    if rule_id == "release_year_min":
        return [
            f"released {int(y)}, before {spec.release_year_min}" if y >= 0 else "release year unknown"
            for y in snapshot.year[positions]
        ]
    if rule_id in ("selection.min_datasets_per_modality", "selection.min_orgs_per_modality"):
        dropped = {c.modality: c for c in ev.checks if c.status == "dropped"}
        modalities = snapshot.values_at("modality", positions, ev.target_modalities)
        out = []
        for ms in modalities:
            parts = []
            for m in ms:
                check = dropped.get(m)
                if check is None:
                    continue
                if check.datasets_check == "not met":
                    parts.append(
                        f"{label('modality', m)} has {check.eligible} eligible datasets "
                        f"(< {spec.selection.min_datasets_per_modality})"
                    )
                else:
                    parts.append(
                        f"{label('modality', m)} has {check.orgs_known} known organisations and "
                        f"{check.orgs_unknown} datasets of unknown organisation "
                        f"(< {spec.selection.min_orgs_per_modality})"
                    )
            out.append("its modality was dropped: " + "; ".join(parts))
        return out
    if rule_id == "selection.max_datasets":
        return [
            f"ranked #{ev.rank_of[int(p)]:,}, beyond the cap of {spec.selection.max_datasets:,} datasets"
            for p in positions
        ]
    if rule_id == "selection.max_total_images":
        cap = spec.selection.max_total_images or 0
        return [
            f"{int(snapshot.images[p]):,} images would exceed the cap of {cap:,} in total"
            if snapshot.images[p] >= 0
            else "image count unknown: cannot be counted against the cap"
            for p in positions
        ]
    return [""] * count


def rejected_list(snapshot: PlanningSnapshot, spec: PlanSpec, ev: Evaluation) -> list[list[Any]]:
    """Every rejected candidate, by rule (in the order rules apply) then slug: arrays in REJECTED_FIELDS order."""
    rejected = ev.candidate & (ev.first_rule != NOT_REJECTED)
    positions = np.flatnonzero(rejected)
    order = np.lexsort((snapshot.slug_rank[positions], ev.first_rule[positions]))
    positions = positions[order]
    also: dict[int, list[str]] = {}
    for rule in DATASET_RULES:
        failing = ev.fails.get(rule.id)
        if failing is None:
            continue
        # rules after the one that rejected the dataset, that it fails too
        for p in np.flatnonzero(failing & rejected & (ev.first_rule < RULE_INDEX[rule.id])).tolist():
            also.setdefault(p, []).append(rule.id)
    rows: list[list[Any]] = []
    slugs, names = snapshot.slugs, snapshot.names
    modalities = snapshot.values_at("modality", positions, ev.target_modalities)
    rules = ev.first_rule[positions]
    for rule_index in np.unique(rules):
        group = positions[rules == rule_index]
        offset = int(np.searchsorted(rules, rule_index))
        rule = RULES[int(rule_index)]
        reasons = _rejection_reasons(snapshot, spec, ev, rule.id, group)
        for j, position in enumerate(group.tolist()):
            rows.append(
                [
                    slugs[position],
                    names[position],
                    modalities[offset + j],
                    rule.id,
                    reasons[j],
                    also.get(position, []),
                ]
            )
    return rows


def indexing(
    snapshot: PlanningSnapshot,
    spec: PlanSpec,
    evaluation: Evaluation | None = None,
    comparison: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The final curated list (why each dataset is in), every rejected candidate (why not), the summary."""
    ev = evaluation or evaluate(snapshot, spec)
    summary = modality_rows(snapshot, ev, ev.final)
    total = total_row(snapshot, ev.final)
    final = final_list(snapshot, spec, ev)
    rejected = rejected_list(snapshot, spec, ev)
    labeled, unlabeled, unknown_label = labeled_state(snapshot)
    # final rows are in rank order: a stable sort by images keeps rank order among equal counts
    by_images = np.argsort(-snapshot.images[ev.final_order], kind="stable")[:FINAL_LIST_CHART_SIZE]
    top = [final[i] for i in by_images.tolist()][::-1]
    tables = [
        _table(
            "summary",
            "Curated summary",
            [
                ("label", "Modality", "text"),
                ("n_datasets", "n_datasets", "int"),
                ("sum_images", "sum_image", "int"),
                ("n_orgs", "n_orgs", "int"),
                ("labeled_ratio", "labeled", "ratio"),
                ("images_unknown", "Image count unknown", "int"),
                ("orgs_unknown", "Organisation unknown", "int"),
                ("shared", "Also in another row", "int"),
            ],
            [*summary, total],
            note=COUNTING_NOTE,
        ),
        _table(
            "final",
            "Final curated list",
            [
                ("rank", "#", "int"),
                ("name", "Dataset", "dataset"),
                ("modalities", "Modalities", "list"),
                ("tasks", "Task types", "list"),
                ("images", "Images", "int"),
                ("labeled", "Labeled", "bool"),
                ("access", "Access", "text"),
                ("organisation", "Organisation", "text"),
                ("why", "Why it is in", "text"),
            ],
            final,
            fields=FINAL_FIELDS,
        ),
        _table(
            "rejected",
            "Rejected candidates",
            [
                ("name", "Dataset", "dataset"),
                ("modalities", "Modalities", "list"),
                ("rule", "Rule", "text"),
                ("reason", "Why not", "text"),
                ("also", "Also fails", "list"),
            ],
            rejected,
            note="Ordered by rule (in the order rules apply), then slug.",
            fields=REJECTED_FIELDS,
        ),
    ]
    notes = [COUNTING_NOTE]
    if comparison is not None:
        tables.append(comparison["table"])
        notes += comparison["notes"]
    categories = [r["label"] for r in summary]
    final_rows_by_modality = [ev.final & snapshot.mask("modality", m) for m in ev.target_modalities]
    return {
        "number": 4,
        "id": "indexing",
        "name": "Indexing",
        "description": "The final curated list, each dataset with why it is in; every rejected candidate with "
        "the rule that rejected it; the curated summary table.",
        "facts": [
            _fact("Datasets in the final list", total["n_datasets"]),
            _fact("Images (known counts)", total["sum_images"]),
            _fact("Rejected candidates", len(rejected)),
        ],
        "tables": tables,
        "charts": [
            _chart(
                "final_by_modality",
                "Final list per modality and label status",
                "stacked_bar",
                categories,
                [
                    _series("Labeled", [_count(r & labeled) for r in final_rows_by_modality], "labels"),
                    _series("Unlabeled", [_count(r & unlabeled) for r in final_rows_by_modality], "labels"),
                    _series("Unknown", [_count(r & unknown_label) for r in final_rows_by_modality], "labels"),
                ],
                "datasets",
            ),
            _chart(
                "final_largest",
                f"The {len(top)} largest datasets of the final list",
                "horizontal_bar",
                [r[FINAL_FIELDS.index("name")] for r in top],
                [_series("Images", [r[FINAL_FIELDS.index("images")] for r in top])],
                "images or cases",
            ),
        ],
        "notes": notes,
    }


def plan_phases(
    snapshot: PlanningSnapshot, spec: PlanSpec, with_comparison: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(the four phases, the curated summary rows, the final list's slugs) for one spec on one snapshot."""
    from app.mdfp.survey import survey_comparison

    with _collector_paused():
        return _plan_phases(snapshot, spec, with_comparison, survey_comparison)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a plan is built.

    A large plan allocates one container per dataset row (about 60,000 at 100,000 datasets); each burst of
    allocations triggers a collection that walks every live object, which doubled the planning time in
    bench/mdfp. Nothing built here forms a cycle, so deferring collection loses nothing.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _plan_phases(
    snapshot: PlanningSnapshot, spec: PlanSpec, with_comparison: bool, survey_comparison: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    ev = evaluate(snapshot, spec)
    comparison = survey_comparison(snapshot, spec, ev) if with_comparison else None
    phases = [
        harmonisation(snapshot, spec),
        alignment(snapshot, spec, ev),
        blueprint(snapshot, spec, ev),
        indexing(snapshot, spec, ev, comparison),
    ]
    summary = modality_rows(snapshot, ev, ev.final)
    slugs = [snapshot.slugs[p] for p in ev.final_order.tolist()]
    return phases, summary, slugs
