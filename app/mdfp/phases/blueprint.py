"""Phase 3 of the MDFP planner, blueprint: the rules and selection constraints applied to the aligned
datasets, each rule's setting and effect, and what the selection holds per modality."""

from __future__ import annotations

from typing import Any

from app.mdfp.phases.common import count, label, labels, make_chart, make_fact, make_series, make_table
from app.mdfp.phases.summary import COUNTING_NOTE, modality_rows
from app.mdfp.rules import RULE_INDEX, RULES, Evaluation, evaluate
from app.mdfp.schemas import PlanSpec
from app.mdfp.snapshot import PlanningSnapshot


def _rule_setting(spec: PlanSpec, rule_id: str) -> str:
    """How `spec` sets the rule `rule_id`, in words ("any" or "off" when it does not)."""
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
                "rejected": count(ev.candidate & (ev.first_rule == index)),
                "failing": count(ev.candidate & failing) if failing is not None else 0,
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
        make_table(
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
            make_table(
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
        make_table(
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
            make_fact("Aligned", count(aligned)),
            make_fact("Eligible after the rules", count(ev.eligible)),
            make_fact("Selected", count(ev.final)),
            make_fact("Dropped by the selection constraints", count(ev.eligible & ~ev.final)),
        ],
        "tables": tables,
        "charts": [
            make_chart(
                "images",
                "Summed images per modality (selection)",
                "bar",
                categories,
                [make_series("Images (known counts)", [r["sum_images"] for r in selection])],
                "images or cases",
                note="Datasets with an unknown count add nothing here; the table says how many there are.",
            ),
            make_chart(
                "labeled_ratio",
                "Labeled ratio per modality (selection)",
                "bar",
                categories,
                [make_series("Labeled ratio", [r["labeled_ratio"] for r in selection])],
                "labeled datasets / datasets",
            ),
            make_chart(
                "organisations",
                "Organisations per modality (selection)",
                "grouped_bar",
                categories,
                [
                    make_series("Known organisations", [r["n_orgs"] for r in selection]),
                    make_series("Datasets of unknown organisation", [r["orgs_unknown"] for r in selection]),
                ],
                "count",
                note="Organisations are never guessed: a dataset whose organisation the catalog does not record "
                "is counted apart.",
            ),
        ],
        "notes": [],
    }
