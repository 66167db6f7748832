"""The curated summary's rows (the survey's columns per target modality), shared by phase 3 (the selection
table), phase 4 (the curated summary) and the survey comparison."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.mdfp.phases.common import count, label
from app.mdfp.rules import Evaluation, labeled_state, organisations_of
from app.mdfp.snapshot import PlanningSnapshot

COUNTING_NOTE = (
    "A dataset with several target modalities counts in full in each of them (the catalog does not split a "
    "dataset's images by modality, and a split would be a guess): such rows overlap, and the total row "
    "counts each dataset once."
)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 5) if whole else None


def modality_rows(snapshot: PlanningSnapshot, ev: Evaluation, rows_mask: np.ndarray) -> list[dict[str, Any]]:
    """Per target modality: the survey's columns over `rows_mask`, with the unknowns that qualify them."""
    labeled, _, unknown_label = labeled_state(snapshot)
    status = {c.modality: c.status for c in ev.checks}
    images = snapshot.images
    out = []
    for modality in ev.target_modalities:
        rows = rows_mask & snapshot.mask("modality", modality)
        n = count(rows)
        known_images = rows & (images >= 0)
        orgs_known, orgs_unknown = organisations_of(snapshot, rows)
        n_labeled = count(rows & labeled)
        labels_unknown = count(rows & unknown_label)
        out.append(
            {
                "modality": modality,
                "label": label("modality", modality),
                "n_datasets": n,
                "sum_images": int(images[known_images].sum()),
                "images_unknown": n - count(known_images),
                "n_orgs": orgs_known,
                "orgs_unknown": orgs_unknown,
                "labeled_ratio": _ratio(n_labeled, n - labels_unknown),
                "labeled": n_labeled,
                "labels_unknown": labels_unknown,
                "shared": count(rows & (ev.target_count > 1)),
                "status": status.get(modality, "kept"),
            }
        )
    return out


def total_row(snapshot: PlanningSnapshot, rows: np.ndarray) -> dict[str, Any]:
    """The summary's total row over `rows`, in `modality_rows`' columns: each dataset counted once."""
    labeled, _, unknown_label = labeled_state(snapshot)
    n = count(rows)
    known_images = rows & (snapshot.images >= 0)
    orgs_known, orgs_unknown = organisations_of(snapshot, rows)
    n_labeled = count(rows & labeled)
    labels_unknown = count(rows & unknown_label)
    return {
        "modality": "total",
        "label": "Total (each dataset once)",
        "n_datasets": n,
        "sum_images": int(snapshot.images[known_images].sum()),
        "images_unknown": n - count(known_images),
        "n_orgs": orgs_known,
        "orgs_unknown": orgs_unknown,
        "labeled_ratio": _ratio(n_labeled, n - labels_unknown),
        "labeled": n_labeled,
        "labels_unknown": labels_unknown,
        "shared": 0,
        "status": "kept",
    }
