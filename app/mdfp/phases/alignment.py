"""Phase 2 of the MDFP planner, alignment: which candidates (the datasets with a target modality) also cover a
target task type and dimensionality, seen per task type, per modality and per dimensionality."""

from __future__ import annotations

from typing import Any

from app.common.vocabularies import ALL
from app.mdfp.phases.common import count, label, make_chart, make_fact, make_series, make_table
from app.mdfp.rules import RULE_INDEX, Evaluation, evaluate, labeled_state
from app.mdfp.schemas import PlanSpec
from app.mdfp.snapshot import PlanningSnapshot


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
            "candidates": count(candidate & snapshot.mask("task", task)),
            "aligned": count(aligned & snapshot.mask("task", task)),
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
        row["aligned"] = count(in_modality)
        for task in matrix_tasks:
            row[task] = count(in_modality & snapshot.mask("task", task))
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
                "candidates": count(has),
                "aligned": count(has & aligned),
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
                "aligned": count(in_modality),
                "labeled": count(in_modality & labeled),
                "unlabeled": count(in_modality & unlabeled),
                "labels_unknown": count(in_modality & unknown_label),
            }
        )
    rejected_tasks = count(candidate & (ev.first_rule == RULE_INDEX["target_task_types"]))
    rejected_dims = count(candidate & (ev.first_rule == RULE_INDEX["target_dims"]))
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
            make_fact("Candidates (a target modality)", count(candidate)),
            make_fact("Aligned", count(aligned)),
            make_fact("Rejected: no target task type", rejected_tasks),
            make_fact("Rejected: dimensionality not targeted", rejected_dims),
            make_fact("Aligned only as 3D volumes for a 2D goal", count(aligned & ev.via_3d)),
        ],
        "tables": [
            make_table(
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
            make_table(
                "tasks_by_modality",
                "Target task types per modality (aligned datasets)",
                [("label", "Modality", "text"), ("aligned", "Aligned", "int")]
                + [(t, label("task", t), "int") for t in matrix_tasks],
                matrix_rows,
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
                dim_rows,
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
                label_rows,
            ),
        ],
        "charts": [
            make_chart(
                "tasks",
                "Candidates per task type",
                "stacked_bar",
                [r["label"] + (" ★" if r["target"] and target_tasks else "") for r in task_rows],
                [
                    make_series("Aligned", [r["aligned"] for r in task_rows], "candidates"),
                    make_series(
                        "Not aligned", [r["candidates"] - r["aligned"] for r in task_rows], "candidates"
                    ),
                ],
                "datasets",
            ),
            make_chart(
                "tasks_by_modality",
                "Target task types per modality",
                "grouped_bar",
                modality_labels,
                [make_series(label("task", t), [r[t] for r in matrix_rows]) for t in matrix_tasks],
                "aligned datasets",
            ),
            make_chart(
                "labels",
                "Label availability among aligned datasets",
                "stacked_bar",
                [r["label"] for r in label_rows],
                [
                    make_series("Labeled", [r["labeled"] for r in label_rows], "labels"),
                    make_series("Unlabeled", [r["unlabeled"] for r in label_rows], "labels"),
                    make_series("Unknown", [r["labels_unknown"] for r in label_rows], "labels"),
                ],
                "datasets",
            ),
        ],
        "notes": [],
    }
