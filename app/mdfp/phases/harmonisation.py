"""Phase 1 of the MDFP planner, harmonisation: the whole catalog's landscape on the shared vocabularies
(datasets by modality, modality family and label status), whatever the spec targets."""

from __future__ import annotations

from typing import Any, TypedDict

from app.common.vocabularies import ALL
from app.mdfp.phases.common import count, label, make_chart, make_fact, make_series, make_table
from app.mdfp.rules import labeled_state
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
FAMILY_OF = {m: family_label for _, family_label, members in FAMILIES for m in members}


class _ModalityRow(TypedDict):
    """A row of the landscape table: one modality's datasets by label status."""

    modality: str
    label: str
    family: str
    datasets: int
    labeled: int
    unlabeled: int
    labels_unknown: int
    target: bool


class _FamilyRow(TypedDict):
    """A row of the families table."""

    family: str
    label: str
    modalities: list[str]
    datasets: int
    labeled: int
    unlabeled: int


class _LabelRow(TypedDict):
    """A row of the label availability table."""

    status: str
    label: str
    datasets: int


def harmonisation(snapshot: PlanningSnapshot, spec: PlanSpec) -> dict[str, Any]:
    """The landscape of the whole catalog once every record is on the shared vocabularies."""
    labeled, unlabeled, unknown_label = labeled_state(snapshot)
    present = set(snapshot.values("modality"))
    modalities = [m for m in ALL["modality"].ids if m in present]
    targets = set(spec.target_modalities)
    rows: list[_ModalityRow] = []
    for modality in modalities:
        has = snapshot.mask("modality", modality)
        rows.append(
            {
                "modality": modality,
                "label": label("modality", modality),
                "family": FAMILY_OF.get(modality, "Other"),
                "datasets": count(has),
                "labeled": count(has & labeled),
                "unlabeled": count(has & unlabeled),
                "labels_unknown": count(has & unknown_label),
                "target": modality in targets,
            }
        )
    family_rows: list[_FamilyRow] = []
    for family_id, family_label, members in FAMILIES:
        has = snapshot.any_of("modality", [m for m in members if m in present])
        if not has.any():
            continue
        family_rows.append(
            {
                "family": family_id,
                "label": family_label,
                "modalities": [m for m in members if m in present],
                "datasets": count(has),
                "labeled": count(has & labeled),
                "unlabeled": count(has & unlabeled),
            }
        )
    n = snapshot.size
    merged = count(snapshot.merged_rows > 1)
    facts = [
        make_fact("Datasets in the catalog", n),
        make_fact("Survey rows they were built from", int(snapshot.merged_rows.sum())),
        make_fact("Datasets merged from duplicate rows", merged),
        make_fact(
            "'Multi' modality rows given their table's modality",
            count(snapshot.mask("quality", "modality_unknown")),
        ),
        make_fact("Organisation unknown", int(sum(1 for o in snapshot.organisations if o is None))),
        make_fact("Licence unknown", count(snapshot.mask("licence", "unknown"))),
        make_fact("Image count unknown", count(snapshot.images < 0)),
        make_fact("Label status unknown", count(unknown_label)),
    ]
    label_rows: list[_LabelRow] = [
        {"status": "labeled", "label": "Labeled", "datasets": count(labeled)},
        {"status": "unlabeled", "label": "Unlabeled", "datasets": count(unlabeled)},
        {"status": "unknown", "label": "Unknown", "datasets": count(unknown_label)},
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
            make_table(
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
            make_table(
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
            make_table(
                "label_availability",
                "Label availability",
                [("label", "Labels", "text"), ("datasets", "Datasets", "int")],
                label_rows,
            ),
        ],
        "charts": [
            make_chart(
                "landscape",
                "Datasets by modality and label status",
                "stacked_bar",
                categories,
                [
                    make_series("Labeled", [r["labeled"] for r in rows], "labels"),
                    make_series("Unlabeled", [r["unlabeled"] for r in rows], "labels"),
                    make_series("Unknown", [r["labels_unknown"] for r in rows], "labels"),
                ],
                "datasets",
            ),
            make_chart(
                "families",
                "Modality family distribution",
                "pie",
                [r["label"] for r in family_rows],
                [make_series("Datasets", [r["datasets"] for r in family_rows])],
                "datasets",
            ),
            make_chart(
                "label_availability",
                "Label availability",
                "pie",
                [r["label"] for r in label_rows],
                [make_series("Datasets", [r["datasets"] for r in label_rows])],
                "datasets",
            ),
        ],
        "notes": [],
    }
