"""Which datasets a spec admits: the rules of docs/mdfp.md evaluated over a snapshot, column-wise.

`evaluate(snapshot, spec)` is the one place where rules are applied; the four phases only arrange what it
finds. It is pure and deterministic: the same snapshot and spec give the same arrays.

Decisions (also shown on the plan page):
- A *candidate* is a dataset with at least one target modality (every dataset when no modality is targeted).
  Each candidate ends up either selected or rejected by exactly one rule: the first that fails, in RULES order
  (later failing rules are listed too, as `also`).
- A dataset with several target modalities is selected once; in per-modality tables it counts in full in each
  of its target modalities (the catalog does not split a dataset's images by modality, and splitting them
  would be a guess). Such rows overlap; the total row counts each dataset once.
- Unknown values are never guessed: an unknown licence fails a licence allowlist unless 'unknown' is listed,
  an unknown image count fails a minimum above 0, an unknown year fails release_year_min, an unknown label
  status fails include_unlabeled=false; an unknown organisation makes min_orgs_per_modality unverifiable
  (the modality is kept and marked unverified) rather than failing or passing it.
- Ranking (used by the caps and to order the final list): labeled first when prefer_labeled, then more images
  (unknown last), then newer (unknown last), then slug.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from app.common.vocabularies import ALL
from app.mdfp.schemas import PlanSpec
from app.mdfp.snapshot import PlanningSnapshot


@dataclass(frozen=True)
class Rule:
    id: str
    phase: Literal["alignment", "blueprint"]
    label: str


RULES: tuple[Rule, ...] = (
    Rule("target_task_types", "alignment", "Target task types"),
    Rule("target_dims", "alignment", "Target dimensionality"),
    Rule("anatomy_whitelist", "blueprint", "Anatomy whitelist"),
    Rule("access_allowlist", "blueprint", "Access allowlist"),
    Rule("licence_allowlist", "blueprint", "Licence allowlist"),
    Rule("include_unlabeled", "blueprint", "Labels required"),
    Rule("min_valid_images_per_dataset", "blueprint", "Minimum images per dataset"),
    Rule("release_year_min", "blueprint", "Released in or after"),
    Rule("selection.min_datasets_per_modality", "blueprint", "Minimum datasets per modality"),
    Rule("selection.min_orgs_per_modality", "blueprint", "Minimum organisations per modality"),
    Rule("selection.max_datasets", "blueprint", "Maximum datasets"),
    Rule("selection.max_total_images", "blueprint", "Maximum total images"),
)
RULE_INDEX = {rule.id: i for i, rule in enumerate(RULES)}
DATASET_RULES = RULES[:8]  # checked on each dataset alone; the rest constrain the selection as a whole
NOT_REJECTED = -1


@dataclass
class ModalityCheck:
    """The selection constraints checked on one target modality, before the caps."""

    modality: str
    eligible: int
    orgs_known: int
    orgs_unknown: int
    datasets_check: str  # met | not met | off
    orgs_check: str  # met | not met | unverified | off
    status: Literal["kept", "dropped", "unverified"]


@dataclass
class Evaluation:
    """Everything the phases show, as arrays over the snapshot's positions."""

    target_modalities: list[str]  # the rows of per-modality tables, in vocabulary order
    candidate: np.ndarray  # bool
    fails: dict[str, np.ndarray]  # rule id -> bool, for the per-dataset rules that are set
    first_rule: np.ndarray  # int16 index into RULES, NOT_REJECTED for selected and non-candidates
    aligned: np.ndarray  # bool: candidates passing the alignment rules
    eligible: np.ndarray  # bool: aligned and passing every per-dataset rule
    final: np.ndarray  # bool
    final_order: np.ndarray  # positions of the final list, best ranked first
    via_3d: np.ndarray  # bool: admitted only as 3D volumes feeding a 2D goal
    target_count: np.ndarray  # int: how many target modalities each dataset has
    checks: list[ModalityCheck] = field(default_factory=list)
    rank_of: dict[int, int] = field(default_factory=dict)  # position -> 1-based rank among eligible
    cap_total_images: int = 0  # summed known images of the final list when a cap applied


def target_modalities(snapshot: PlanningSnapshot, spec: PlanSpec) -> list[str]:
    if spec.target_modalities:
        return list(spec.target_modalities)
    present = set(snapshot.values("modality"))
    return [m for m in ALL["modality"].ids if m in present]


def labeled_state(snapshot: PlanningSnapshot) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        snapshot.mask("labeled", "true"),
        snapshot.mask("labeled", "false"),
        snapshot.mask("labeled", "unknown"),
    )


def organisations_of(snapshot: PlanningSnapshot, rows: np.ndarray) -> tuple[int, int]:
    """(distinct known organisations, datasets with an unknown organisation) among the `rows` mask."""
    codes = snapshot.organisation_codes[rows]
    known = codes[codes >= 0]
    return int(np.unique(known).size), int(codes.size - known.size)


def evaluate(snapshot: PlanningSnapshot, spec: PlanSpec) -> Evaluation:
    n = snapshot.size
    targets = target_modalities(snapshot, spec)
    candidate = snapshot.any_of("modality", targets) if spec.target_modalities else np.ones(n, dtype=bool)
    target_count = np.zeros(n, dtype=np.int64)
    for modality in targets:
        target_count += snapshot.mask("modality", modality)

    fails: dict[str, np.ndarray] = {}
    via_3d = np.zeros(n, dtype=bool)
    if spec.target_task_types:
        fails["target_task_types"] = ~snapshot.any_of("task", spec.target_task_types)
    if spec.target_dims:
        native = snapshot.any_of("dim", spec.target_dims)
        admitted = native.copy()
        if spec.allow_3d_as_2d_sources and "2D" in spec.target_dims:
            volumes = snapshot.mask("dim", "3D")
            via_3d = volumes & ~native
            admitted |= volumes
        fails["target_dims"] = ~admitted
    if spec.anatomy_whitelist:
        fails["anatomy_whitelist"] = ~snapshot.any_of("anatomy", spec.anatomy_whitelist)
    if spec.access_allowlist:
        fails["access_allowlist"] = ~snapshot.any_of("access", spec.access_allowlist)
    if spec.licence_allowlist:
        fails["licence_allowlist"] = ~snapshot.any_of("licence", spec.licence_allowlist)
    if not spec.include_unlabeled:
        fails["include_unlabeled"] = ~snapshot.mask("labeled", "true")
    if spec.min_valid_images_per_dataset > 0:
        fails["min_valid_images_per_dataset"] = snapshot.images < spec.min_valid_images_per_dataset
    if spec.release_year_min is not None:
        fails["release_year_min"] = snapshot.year < spec.release_year_min

    first_rule = np.full(n, NOT_REJECTED, dtype=np.int16)
    for rule in reversed(DATASET_RULES):
        if rule.id in fails:
            first_rule[fails[rule.id] & candidate] = RULE_INDEX[rule.id]
    aligned = candidate.copy()
    for rule_id in ("target_task_types", "target_dims"):
        if rule_id in fails:
            aligned &= ~fails[rule_id]
    eligible = candidate & (first_rule == NOT_REJECTED)

    order = _ranking(snapshot, spec, eligible)
    rank_of = {int(p): i + 1 for i, p in enumerate(order)}
    evaluation = Evaluation(
        target_modalities=targets,
        candidate=candidate,
        fails=fails,
        first_rule=first_rule,
        aligned=aligned,
        eligible=eligible,
        final=eligible.copy(),
        final_order=order,
        via_3d=via_3d & candidate,
        target_count=target_count,
        rank_of=rank_of,
    )
    if spec.selection.enable:
        _apply_selection(snapshot, spec, evaluation)
    return evaluation


def _ranking(snapshot: PlanningSnapshot, spec: PlanSpec, rows: np.ndarray) -> np.ndarray:
    positions = np.flatnonzero(rows)
    if spec.prefer_labeled:
        labeled, unlabeled, _ = labeled_state(snapshot)
        label_key = np.where(labeled, 0, np.where(unlabeled, 1, 2))[positions]
    else:
        label_key = np.zeros(positions.size, dtype=np.int64)
    # np.lexsort sorts by the last key first; unknown counts and years (-1) sort after every known one
    keys = (
        snapshot.slug_rank[positions],
        -snapshot.year[positions],
        -snapshot.images[positions],
        label_key,
    )
    return positions[np.lexsort(keys)]


def _apply_selection(snapshot: PlanningSnapshot, spec: PlanSpec, evaluation: Evaluation) -> None:
    selection = spec.selection
    eligible = evaluation.eligible
    dropped_for: dict[str, str] = {}
    for modality in evaluation.target_modalities:
        rows = eligible & snapshot.mask("modality", modality)
        count = int(rows.sum())
        known, unknown = organisations_of(snapshot, rows)
        datasets_check = orgs_check = "off"
        status: Literal["kept", "dropped", "unverified"] = "kept"
        if selection.min_datasets_per_modality is not None:
            datasets_check = "met" if count >= selection.min_datasets_per_modality else "not met"
        if selection.min_orgs_per_modality is not None:
            if known >= selection.min_orgs_per_modality:
                orgs_check = "met"
            elif known + unknown >= selection.min_orgs_per_modality:
                orgs_check = "unverified"
            else:
                orgs_check = "not met"
        if datasets_check == "not met":
            status, dropped_for[modality] = "dropped", "selection.min_datasets_per_modality"
        elif orgs_check == "not met":
            status, dropped_for[modality] = "dropped", "selection.min_orgs_per_modality"
        elif orgs_check == "unverified":
            status = "unverified"
        evaluation.checks.append(
            ModalityCheck(modality, count, known, unknown, datasets_check, orgs_check, status)
        )

    kept = [m for m in evaluation.target_modalities if m not in dropped_for]
    survivors = eligible.copy()
    if dropped_for:
        # a dataset stays while one of its target modalities is kept (or when it has none to drop it by)
        survivors &= snapshot.any_of("modality", kept) | (evaluation.target_count == 0)
    for rule_id in ("selection.min_orgs_per_modality", "selection.min_datasets_per_modality"):
        # a dataset loses to the datasets rule if any of its modalities was dropped for it, else to orgs
        lost = np.zeros(snapshot.size, dtype=bool)
        for modality, reason in dropped_for.items():
            if reason == rule_id:
                lost |= snapshot.mask("modality", modality)
        evaluation.first_rule[eligible & ~survivors & lost] = RULE_INDEX[rule_id]

    ranked = evaluation.final_order[survivors[evaluation.final_order]]
    chosen = np.zeros(snapshot.size, dtype=bool)
    total = 0
    taken = 0
    for position in ranked.tolist():
        if selection.max_datasets is not None and taken >= selection.max_datasets:
            evaluation.first_rule[position] = RULE_INDEX["selection.max_datasets"]
            continue
        if selection.max_total_images is not None:
            images = int(snapshot.images[position])
            if images < 0 or total + images > selection.max_total_images:
                evaluation.first_rule[position] = RULE_INDEX["selection.max_total_images"]
                continue
            total += images
        chosen[position] = True
        taken += 1
    evaluation.final = chosen
    evaluation.final_order = ranked[chosen[ranked]]
    evaluation.cap_total_images = total
