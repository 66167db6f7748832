"""Phase 4 of the MDFP planner, indexing: the final curated list (why each dataset is in), every rejected
candidate (the rule that rejected it, and why), and the curated summary.

The two lists hold one row per dataset (tens of thousands on a large catalog), so their rows are arrays in
FINAL_FIELDS / REJECTED_FIELDS order rather than objects, and their sentences are built per group.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.common.vocabularies import ALL
from app.mdfp.phases.common import count, label, labels, make_chart, make_fact, make_series, make_table
from app.mdfp.phases.summary import COUNTING_NOTE, modality_rows, total_row
from app.mdfp.rules import DATASET_RULES, NOT_REJECTED, RULE_INDEX, RULES, Evaluation, evaluate, labeled_state
from app.mdfp.schemas import PlanSpec
from app.mdfp.snapshot import PlanningSnapshot

FINAL_LIST_CHART_SIZE = 20
_LABELED = {"true": True, "false": False}


def _single(snapshot: PlanningSnapshot, facet: str, positions: np.ndarray) -> list[str | None]:
    """Per position, the value of a single-valued facet (access, licence, labeled); None when it has none."""
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
        n_images = images[i]
        rows.append(
            [
                slugs[position],
                names[position],
                i + 1,
                modalities[i],
                tasks[i],
                n_images if n_images >= 0 else None,
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
    return [""] * len(positions)


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
        make_table(
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
        make_table(
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
        make_table(
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
            make_fact("Datasets in the final list", total["n_datasets"]),
            make_fact("Images (known counts)", total["sum_images"]),
            make_fact("Rejected candidates", len(rejected)),
        ],
        "tables": tables,
        "charts": [
            make_chart(
                "final_by_modality",
                "Final list per modality and label status",
                "stacked_bar",
                categories,
                [
                    make_series("Labeled", [count(r & labeled) for r in final_rows_by_modality], "labels"),
                    make_series(
                        "Unlabeled", [count(r & unlabeled) for r in final_rows_by_modality], "labels"
                    ),
                    make_series(
                        "Unknown", [count(r & unknown_label) for r in final_rows_by_modality], "labels"
                    ),
                ],
                "datasets",
            ),
            make_chart(
                "final_largest",
                f"The {len(top)} largest datasets of the final list",
                "horizontal_bar",
                [r[FINAL_FIELDS.index("name")] for r in top],
                [make_series("Images", [r[FINAL_FIELDS.index("images")] for r in top])],
                "images or cases",
            ),
        ],
        "notes": notes,
    }
