"""Layout detection: turn an unpacked source folder into a list of cases.

Public sets ship in a handful of conventions (docs/bundles.md). `detect_layout` tries them from the most
self-describing to the least, so a folder that happens to satisfy two rules gets the one that carries more
information:

1. MSD / nnU-Net raw: `dataset.json` + `imagesTr/` (`labelsTr/`, `imagesTs/`);
2. BIDS: `sub-*/[ses-*/]anat/` with labels under `derivatives/`;
3. array sets: MedMNIST's `.npz` (`train_images`, `train_labels`, ...), one case per element;
4. DICOM trees whose SEG / RTSTRUCT objects name the series they label (workers/imaging/dicom_objects.py);
5. DICOM series folders with a label volume beside them or in their parent (TCIA style);
6. suffix pairs: `X_seg.nii.gz` beside `X.nii.gz` (and `X_<channel>.nii.gz`, BraTS);
7. id pairs: images and labels anywhere in the tree paired by case or subject id (`images/` vs `masks/`,
   `seg_X`, `Case7` vs `case007`), volumes (NIfTI, NRRD, MHA/MHD, DICOM series) and 2D image/mask pictures;
8. class folders: `[split/]class/*.png` (just folders of pictures);
9. last resort, a DICOM tree without labels: every image series, unlabelled.

An explicit layout from the source descriptor always wins: it is the operator's statement about the data.

This module holds that order, the explicit layout and the label table a source descriptor gives. The finders
live beside it: layout_described.py (1-3), dicom_objects.py (4 and 9), layout_beside.py (5, 6), layout_ids.py
(7) and layout_classes.py (8); layout_files.py says which files are images.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from workers.imaging.cases import Case, Layout, LayoutKind, Split
from workers.imaging.classes import with_canonical_classes
from workers.imaging.dicom_objects import dicom_image_cases, dicom_object_cases
from workers.imaging.errors import LayoutNotRecognisedError
from workers.imaging.layout_beside import dicom_series_cases, suffix_pair_cases
from workers.imaging.layout_classes import class_folder_cases
from workers.imaging.layout_described import bids_cases, msd_cases, name_classes, npz_cases
from workers.imaging.layout_ids import id_pair_cases
from workers.imaging.subjects import with_subjects

# ExplicitLayout's pairing when a descriptor names none: the case is the file name less a label suffix
DEFAULT_PAIRING = (
    r"(?P<case>[^/]+?)(?:[_-](?:seg|mask|label|gt|\d{4}))?\.(?:nii\.gz|nii|nrrd|mha|mhd|png|jpe?g)$"
)


@dataclass(frozen=True)
class ExplicitLayout:
    """An operator's description of a source that `auto` cannot (or should not) guess.

    Globs are relative to the source root. `pairing` is a regex with a named group `case` applied to each
    image and label path (relative, POSIX); images and labels with the same `case` pair up, and several images
    for one case become channels in sorted order. `subject` (optional regex group on the image path) names
    the patient when one patient has several cases. `test_cases` is the official test set, by case or subject.
    """

    image_glob: str
    label_glob: str | None = None
    pairing: str = DEFAULT_PAIRING
    subject: str | None = None
    label_table: dict[int, str] = field(default_factory=dict)
    test_cases: frozenset[str] = frozenset()


def detect_layout(
    folder: Path | str,
    explicit: ExplicitLayout | None = None,
    label_table: dict[int, str] | None = None,
    subject_rule: str | None = None,
) -> Layout:
    """The cases in `folder`, by the explicit layout if given, else by the first known convention that fits.

    `label_table` is the source descriptor's `labels` (local id -> name). It replaces whatever the files say:
    layouts such as image/mask pairs carry no names at all, and where a dataset.json exists the operator who
    wrote a table did so to correct it. For array sets (MedMNIST) it names the classes instead. What
    detection noticed but would not guess is in the layout's `warnings`. `subject_rule` is the descriptor's
    source-level subject regex (group `subject`, on each case's image path relative to `folder`): it names
    the patients whatever layout is found.
    """
    found = _find_layout(Path(folder), explicit)
    # subjects: said for every layout, found in 2D pictures' file names where the layout gave none
    layout = Layout(
        found.kind,
        found.root,
        with_subjects(
            found.kind,
            with_canonical_classes(found.cases),
            descriptor_rule=explicit is not None and bool(explicit.subject),
            rule=re.compile(subject_rule) if subject_rule else None,
            root=Path(folder),
        ),
        found.warnings,
    )
    if layout.kind == LayoutKind.NPZ_ARRAYS:
        # there the table names classes: it is no segmentation label table, and no case gets it as one
        if label_table:
            table = {int(k): v for k, v in label_table.items()}
            named = with_canonical_classes(name_classes(layout.cases, table))
            layout = Layout(layout.kind, layout.root, named, layout.warnings)
        return layout
    if label_table:
        table = {int(k): v for k, v in label_table.items()}
        layout = Layout(
            layout.kind,
            layout.root,
            [replace(c, label_table=dict(table)) for c in layout.cases],
            layout.warnings,
        )
    return layout


def _find_layout(root: Path, explicit: ExplicitLayout | None) -> Layout:
    if explicit is not None:
        return Layout(LayoutKind.EXPLICIT, root, _explicit_cases(root, explicit))
    root = _single_subfolder(root)
    warnings: list[str] = []
    for kind, finder in (
        (LayoutKind.MSD, msd_cases),
        (LayoutKind.BIDS, bids_cases),
        (LayoutKind.NPZ_ARRAYS, npz_cases),
        (LayoutKind.DICOM_OBJECTS, dicom_object_cases),
        (LayoutKind.DICOM_SERIES, dicom_series_cases),
        (LayoutKind.SUFFIX_PAIRS, suffix_pair_cases),
        (LayoutKind.ID_PAIRS, lambda folder: id_pair_cases(folder, warnings)),
        (LayoutKind.CLASS_FOLDERS, class_folder_cases),
        (LayoutKind.DICOM_UNLABELLED, dicom_image_cases),
    ):
        cases = finder(root)
        if cases:
            return Layout(kind, root, cases, warnings)
    raise LayoutNotRecognisedError(
        f"{root}: no known layout (MSD/nnU-Net, BIDS, npz arrays, DICOM series + label, image/label pairs by "
        "suffix or id, class folders); give an explicit layout"
    )


def _single_subfolder(root: Path) -> Path:
    """Archives often unpack into one top folder (`Task04_Hippocampus/`); look through it."""
    entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        return _single_subfolder(entries[0])
    return root


# --- explicit ------------------------------------------------------------------------------------------------


def _explicit_cases(root: Path, layout: ExplicitLayout) -> list[Case]:
    pairing = re.compile(layout.pairing)
    subject_rule = re.compile(layout.subject) if layout.subject else None

    def key(path: Path) -> str | None:
        match = pairing.search(path.relative_to(root).as_posix())
        return match["case"] if match else None

    images: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.glob(layout.image_glob)):
        if (case_id := key(path)) is not None:
            images[case_id].append(path)
    labels: dict[str, Path] = {}
    for path in sorted(root.glob(layout.label_glob)) if layout.label_glob else []:
        if (case_id := key(path)) is not None:
            labels.setdefault(case_id, path)
    cases: list[Case] = []
    for case_id, paths in sorted(images.items()):
        paths = [p for p in paths if p not in labels.values()]
        if not paths:
            continue
        subject = case_id
        if subject_rule and (match := subject_rule.search(paths[0].relative_to(root).as_posix())):
            subject = match["subject"]
        split = Split.TEST if {case_id, subject} & layout.test_cases else None
        cases.append(
            Case(case_id, subject, tuple(paths), labels.get(case_id), dict(layout.label_table), split)
        )
    return cases
