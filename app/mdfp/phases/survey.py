"""The survey's published MDFP example, and why a plan's numbers differ from it.

The survey (Project Imaging-X, arXiv 2603.27460) shows the curated table its portal produced for the goal
"pretrain a 2D medical foundation model over CT, MR and Fundus", computed on its internal database. Our
catalog is built from the survey's published tables, so the numbers are comparable but not meant to match;
this module says, row by row, which facts of our catalog make them differ.
"""

from __future__ import annotations

from typing import Any

from app.mdfp.phases.common import count, label
from app.mdfp.phases.summary import modality_rows
from app.mdfp.presets import SURVEY_PRESET, get_preset
from app.mdfp.rules import Evaluation
from app.mdfp.schemas import PlanSpec
from app.mdfp.snapshot import PlanningSnapshot

# modality, n_datasets, sum_image, n_orgs, labeled (the survey's table, in its order)
SURVEY_TABLE: tuple[tuple[str, int, int, int, float], ...] = (
    ("CT", 10, 1_173_965, 4, 1.0),
    ("FUNDUS", 42, 280_311, 17, 0.95238),
    ("MR", 5, 681_025, 2, 1.0),
)
SURVEY_SOURCE = (
    "Project Imaging-X survey (arXiv 2603.27460), MDFP example, computed on the survey's internal database"
)


def _sentence(head: str, parts: list[tuple[int, str]]) -> str:
    """'head. Among ours: x 3; y 1.' with the parts that apply (a count of 0 is left out)."""
    shown = [f"{text}: {k:,}" for k, text in parts if k]
    return f"{head}." + (f" Among ours, {'; '.join(shown)}." if shown else "")


def rule_differences(spec: PlanSpec) -> list[str]:
    """The rules of `spec` that differ from the survey example's (the goal text aside)."""
    survey = get_preset(SURVEY_PRESET).spec.model_dump(exclude={"goal"})
    mine = spec.model_dump(exclude={"goal"})
    return [key for key in survey if survey[key] != mine[key]]


def survey_comparison(snapshot: PlanningSnapshot, spec: PlanSpec, ev: Evaluation) -> dict[str, Any] | None:
    """A table (ours next to the survey's, with reasons) and notes, when the plan targets a survey modality."""
    compared = [row for row in SURVEY_TABLE if row[0] in ev.target_modalities]
    if not compared:
        return None
    ours = {r["modality"]: r for r in modality_rows(snapshot, ev, ev.final)}
    volumes = snapshot.mask("dim", "3D")
    approximate = snapshot.mask("quality", "count_approximate")
    multi = snapshot.mask("quality", "modality_unknown")
    merged = snapshot.merged_rows > 1
    unlabeled = snapshot.mask("labeled", "false")
    rows = []
    for modality, n_datasets, sum_image, n_orgs, labeled in compared:
        row = ours[modality]
        selected = ev.final & snapshot.mask("modality", modality)
        n = row["n_datasets"]
        reasons = []
        if n != n_datasets:
            reasons.append(
                _sentence(
                    f"n_datasets {n:,} here, {n_datasets:,} in the survey",
                    [
                        (count(selected & ev.via_3d), "3D volumes admitted as 2D sources"),
                        (row["shared"], "also counted in another modality's row"),
                        (count(selected & merged), "merged from duplicate survey rows (listed once here)"),
                        (count(selected & multi), "'Multi' rows given their survey table's modality"),
                    ],
                )
            )
        if row["sum_images"] != sum_image:
            reasons.append(
                _sentence(
                    f"sum_image {row['sum_images']:,} here, {sum_image:,} in the survey; both count images or "
                    "cases as the survey's tables give them",
                    [
                        (
                            count(selected & volumes),
                            "3D datasets counted in cases (volumes), not in the slices they yield",
                        ),
                        (count(selected & approximate), "approximate counts ('2.7k', '200+')"),
                        (row["images_unknown"], "unknown counts, left out of the sum"),
                    ],
                )
            )
        if row["n_orgs"] != n_orgs:
            if row["orgs_unknown"] == 0:
                why = "every organisation is known here: the sets of datasets differ"
            else:
                where = (
                    f"all {n:,} datasets (the seed catalog records no organisation)"
                    if row["orgs_unknown"] == n
                    else f"{row['orgs_unknown']:,} of {n:,} datasets"
                )
                why = f"the organisation is unknown for {where}, and an unknown organisation is never guessed"
            reasons.append(f"n_orgs {row['n_orgs']:,} known here, {n_orgs:,} in the survey: {why}.")
        if row["labeled_ratio"] is None or abs(row["labeled_ratio"] - labeled) > 5e-6:
            shown = "n/a" if row["labeled_ratio"] is None else f"{row['labeled_ratio']:.5g}"
            reasons.append(
                _sentence(
                    f"labeled {shown} here, {labeled:.5g} in the survey: the same measure (labeled datasets / "
                    "datasets) over a different set of datasets",
                    [(count(selected & unlabeled), "unlabeled (include_unlabeled admits them)")],
                )
            )
        rows.append(
            {
                "modality": modality,
                "label": label("modality", modality),
                "n_datasets": n,
                "survey_n_datasets": n_datasets,
                "sum_images": row["sum_images"],
                "survey_sum_images": sum_image,
                "n_orgs": row["n_orgs"],
                "orgs_unknown": row["orgs_unknown"],
                "survey_n_orgs": n_orgs,
                "labeled_ratio": row["labeled_ratio"],
                "survey_labeled": labeled,
                "reasons": reasons or ["Same numbers as the survey."],
            }
        )
    differences = rule_differences(spec)
    notes = [
        "The survey computed its table on its internal database; ours is built from the survey's published "
        "tables, so the numbers are comparable, not meant to match. "
        "The survey's published table: "
        + "; ".join(
            f"{label('modality', m)} {d:,} / {i:,} / {o:,} / {lab:.5g}" for m, d, i, o, lab in SURVEY_TABLE
        )
        + " (n_datasets / sum_image / n_orgs / labeled).",
        f"Our catalog: {snapshot.size:,} datasets built from {int(snapshot.merged_rows.sum()):,} survey rows "
        f"(duplicate rows merged: {count(merged):,} datasets; 'Multi' modality rows normalised to their "
        f"table's modality: {count(multi):,}).",
    ]
    if differences:
        notes.append(
            "This plan's rules differ from the survey example's in: " + ", ".join(differences) + "; the "
            "comparison is shown for reference only."
        )
    table = {
        "id": "survey_comparison",
        "title": "Compared with the survey's published table",
        "columns": [
            {"key": "label", "label": "Modality", "kind": "text"},
            {"key": "n_datasets", "label": "n_datasets", "kind": "int"},
            {"key": "survey_n_datasets", "label": "survey", "kind": "int"},
            {"key": "sum_images", "label": "sum_image", "kind": "int"},
            {"key": "survey_sum_images", "label": "survey", "kind": "int"},
            {"key": "n_orgs", "label": "n_orgs (known)", "kind": "int"},
            {"key": "survey_n_orgs", "label": "survey", "kind": "int"},
            {"key": "labeled_ratio", "label": "labeled", "kind": "ratio"},
            {"key": "survey_labeled", "label": "survey", "kind": "ratio"},
            {"key": "reasons", "label": "Why the numbers differ", "kind": "notes"},
        ],
        "fields": None,
        "rows": rows,
        "total_rows": len(rows),
        "note": SURVEY_SOURCE,
    }
    return {"table": table, "notes": notes}
