"""Phase 2 of the MDFP planner, alignment: which candidates (the datasets with a target modality) also cover a
target task type and dimensionality, seen per task type, per modality and per dimensionality.

`alignment` assembles the phase from named steps: the rows of each table first (`_Rows`), then the
tables and the charts as two views of the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.common.vocabularies import ALL
from app.mdfp.phases.common import count, label, make_chart, make_fact, make_series, make_table
from app.mdfp.rules import RULE_INDEX, Evaluation, evaluate, labeled_state
from app.mdfp.schemas import PlanSpec
from app.mdfp.snapshot import PlanningSnapshot


@dataclass(frozen=True)
class _Rows:
    """The rows of the phase's tables; the charts draw the same rows."""

    tasks: list[dict[str, Any]]  # per task type held by a candidate
    matrix_tasks: list[str]  # the task columns of the per-modality table
    by_modality: list[dict[str, Any]]  # per target modality: aligned datasets per task column
    dims: list[dict[str, Any]]  # per dimensionality held by a candidate
    labels: list[dict[str, Any]]  # per target modality: label status of the aligned datasets


def alignment(
    snapshot: PlanningSnapshot, spec: PlanSpec, evaluation: Evaluation | None = None
) -> dict[str, Any]:
    """The candidates that cover the target task types and dimensionality."""
    ev = evaluation or evaluate(snapshot, spec)
    task_rows = _task_rows(snapshot, spec, ev)
    # with no target task type, every task a candidate holds gets a column
    matrix_tasks = list(spec.target_task_types) or [r["task"] for r in task_rows]
    rows = _Rows(
        tasks=task_rows,
        matrix_tasks=matrix_tasks,
        by_modality=_tasks_by_modality_rows(snapshot, ev, matrix_tasks),
        dims=_dim_rows(snapshot, spec, ev),
        labels=_label_rows(snapshot, ev),
    )
    return {
        "number": 2,
        "id": "alignment",
        "name": "Alignment",
        "description": _description(spec),
        "facts": _facts(ev),
        "tables": _tables(rows),
        "charts": _charts(rows, stars=bool(spec.target_task_types)),
        "notes": [],
    }


def _task_rows(snapshot: PlanningSnapshot, spec: PlanSpec, ev: Evaluation) -> list[dict[str, Any]]:
    """One row per task type that at least one candidate holds, in vocabulary order: its candidates, its
    aligned datasets, and whether it is a target (every task type is when the spec targets none)."""
    candidate, aligned = ev.candidate, ev.aligned
    target_tasks = set(spec.target_task_types)
    present_tasks = {t for t in snapshot.values("task") if (snapshot.mask("task", t) & candidate).any()}
    return [
        {
            "task": task,
            "label": label("task", task),
            "candidates": count(candidate & snapshot.mask("task", task)),
            "aligned": count(aligned & snapshot.mask("task", task)),
            "target": not target_tasks or task in target_tasks,
        }
        for task in ALL["task"].ids
        if task in present_tasks
    ]


def _tasks_by_modality_rows(
    snapshot: PlanningSnapshot, ev: Evaluation, matrix_tasks: list[str]
) -> list[dict[str, Any]]:
    """One row per target modality (in `ev.target_modalities` order): its aligned datasets, then one key per
    task of `matrix_tasks` counting its aligned datasets with that task."""
    rows = []
    for modality in ev.target_modalities:
        in_modality = ev.aligned & snapshot.mask("modality", modality)
        row: dict[str, Any] = {"modality": modality, "label": label("modality", modality)}
        row["aligned"] = count(in_modality)
        for task in matrix_tasks:
            row[task] = count(in_modality & snapshot.mask("task", task))
        rows.append(row)
    return rows


def _dim_role(spec: PlanSpec, dim: str) -> str:
    """What the spec makes of a dimensionality: a target, a 3D source for a 2D goal, or not targeted."""
    if not spec.target_dims or dim in spec.target_dims:
        return "target"
    if dim == "3D" and spec.allow_3d_as_2d_sources and "2D" in spec.target_dims:
        return "3D as 2D source"
    return "not targeted"


def _dim_rows(snapshot: PlanningSnapshot, spec: PlanSpec, ev: Evaluation) -> list[dict[str, Any]]:
    """One row per dimensionality that at least one candidate holds, in vocabulary order: its candidates,
    its aligned datasets and its role in the spec (`_dim_role`)."""
    rows = []
    for dim in ALL["dim"].ids:
        has = ev.candidate & snapshot.mask("dim", dim)
        if not has.any():
            continue
        rows.append(
            {
                "dim": dim,
                "label": label("dim", dim),
                "candidates": count(has),
                "aligned": count(has & ev.aligned),
                "role": _dim_role(spec, dim),
            }
        )
    return rows


def _label_rows(snapshot: PlanningSnapshot, ev: Evaluation) -> list[dict[str, Any]]:
    """One row per target modality (in `ev.target_modalities` order): its aligned datasets split by label
    status (labeled, unlabeled, unknown)."""
    labeled, unlabeled, unknown_label = labeled_state(snapshot)
    rows = []
    for modality in ev.target_modalities:
        in_modality = ev.aligned & snapshot.mask("modality", modality)
        rows.append(
            {
                "modality": modality,
                "label": label("modality", modality),
                "aligned": count(in_modality),
                "labeled": count(in_modality & labeled),
                "unlabeled": count(in_modality & unlabeled),
                "labels_unknown": count(in_modality & unknown_label),
            }
        )
    return rows


def _description(spec: PlanSpec) -> str:
    """The phase's description; it mentions 3D sources only when the spec lets them feed a 2D goal."""
    return (
        "Candidates are the datasets with a target modality; they align when they also cover a "
        "target task type and dimensionality"
        + (
            " (3D volumes may feed the 2D goal)"
            if spec.allow_3d_as_2d_sources and "2D" in spec.target_dims
            else ""
        )
        + "."
    )


def _facts(ev: Evaluation) -> list[dict[str, Any]]:
    """The headline counts: candidates, aligned, rejected by each alignment rule, aligned only via 3D."""
    candidate, aligned = ev.candidate, ev.aligned
    rejected_tasks = count(candidate & (ev.first_rule == RULE_INDEX["target_task_types"]))
    rejected_dims = count(candidate & (ev.first_rule == RULE_INDEX["target_dims"]))
    return [
        make_fact("Candidates (a target modality)", count(candidate)),
        make_fact("Aligned", count(aligned)),
        make_fact("Rejected: no target task type", rejected_tasks),
        make_fact("Rejected: dimensionality not targeted", rejected_dims),
        make_fact("Aligned only as 3D volumes for a 2D goal", count(aligned & ev.via_3d)),
    ]


def _tables(rows: _Rows) -> list[dict[str, Any]]:
    """The four tables: per task type, task types per modality, per dimensionality, labels per modality."""
    return [
        make_table(
            "tasks",
            "Candidates per task type",
            [
                ("label", "Task type", "text"),
                ("candidates", "Candidates", "int"),
                ("aligned", "Aligned", "int"),
                ("target", "Target", "bool"),
            ],
            rows.tasks,
            note="A dataset with several task types counts once in each.",
        ),
        make_table(
            "tasks_by_modality",
            "Target task types per modality (aligned datasets)",
            [("label", "Modality", "text"), ("aligned", "Aligned", "int")]
            + [(t, label("task", t), "int") for t in rows.matrix_tasks],
            rows.by_modality,
        ),
        make_table(
            "dims",
            "Dimensionality of the candidates",
            [
                ("label", "Dimensionality", "text"),
                ("candidates", "Candidates", "int"),
                ("aligned", "Aligned", "int"),
                ("role", "Role", "text"),
            ],
            rows.dims,
        ),
        make_table(
            "labels",
            "Label availability among aligned datasets",
            [
                ("label", "Modality", "text"),
                ("aligned", "Aligned", "int"),
                ("labeled", "Labeled", "int"),
                ("unlabeled", "Unlabeled", "int"),
                ("labels_unknown", "Label status unknown", "int"),
            ],
            rows.labels,
        ),
    ]


def _charts(rows: _Rows, stars: bool) -> list[dict[str, Any]]:
    """The three charts (task types, task types per modality, labels per modality); with `stars`, the
    targeted task types are starred (a star on every bar would say nothing when none are targeted)."""
    return [
        make_chart(
            "tasks",
            "Candidates per task type",
            "stacked_bar",
            [r["label"] + (" ★" if r["target"] and stars else "") for r in rows.tasks],
            [
                make_series("Aligned", [r["aligned"] for r in rows.tasks], "candidates"),
                make_series(
                    "Not aligned", [r["candidates"] - r["aligned"] for r in rows.tasks], "candidates"
                ),
            ],
            "datasets",
        ),
        make_chart(
            "tasks_by_modality",
            "Target task types per modality",
            "grouped_bar",
            [r["label"] for r in rows.by_modality],
            [make_series(label("task", t), [r[t] for r in rows.by_modality]) for t in rows.matrix_tasks],
            "aligned datasets",
        ),
        make_chart(
            "labels",
            "Label availability among aligned datasets",
            "stacked_bar",
            [r["label"] for r in rows.labels],
            [
                make_series("Labeled", [r["labeled"] for r in rows.labels], "labels"),
                make_series("Unlabeled", [r["unlabeled"] for r in rows.labels], "labels"),
                make_series("Unknown", [r["labels_unknown"] for r in rows.labels], "labels"),
            ],
            "datasets",
        ),
    ]
