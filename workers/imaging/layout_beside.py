"""Layouts where a label sits beside what it labels: DICOM series folders with a label volume in the same folder
or its parent (TCIA style), and suffix pairs (`X_seg.nii.gz` beside `X.nii.gz`, and `X_<channel>.nii.gz` as
BraTS ships them)."""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict
from pathlib import Path

from workers.imaging.cases import Case
from workers.imaging.layout_files import VOLUME_SUFFIXES, is_dicom_file, is_image_file, split_suffix

# `_seg`, `-mask`, `_label`, `_gt` at the end of a stem, any case; also `_labels`/`_masks` which people write too,
# and `.seg` (3D Slicer saves `X.seg.nrrd`).
LABEL_STEM = re.compile(r"^(?P<base>.+?)[_.-](?:seg|mask|masks|label|labels|gt)$", re.IGNORECASE)


# --- DICOM series + label file -------------------------------------------------------------------------------


def dicom_series_cases(root: Path) -> list[Case]:
    """Each folder holding DICOM slices is one case; its label is a volume file in that folder or its parent
    (TCIA-style `patient/series/*.dcm` + `patient/segmentation.nii.gz`). Without a label file anywhere this is
    not the layout: an unlabelled DICOM dump is left to an explicit layout."""
    series_dirs = sorted(
        {p.parent for p in root.rglob("*") if p.is_file() and not is_image_file(p) and is_dicom_file(p)}
    )
    cases: list[Case] = []
    for series_dir in series_dirs:
        candidates = [series_dir] + ([series_dir.parent] if series_dir != root else [])
        label = next(
            (
                p
                for folder in candidates
                for p in sorted(folder.iterdir())
                if p.name.lower().endswith(VOLUME_SUFFIXES) and p.is_file()
            ),
            None,
        )
        relative = series_dir.relative_to(root)
        subject = relative.parts[0] if relative.parts else root.name
        cases.append(Case(relative.as_posix() or root.name, subject, (series_dir,), label))
    if not any(c.label for c in cases):
        return []
    return cases


# --- image / mask pairs by suffix ----------------------------------------------------------------------------


def suffix_pair_cases(root: Path) -> list[Case]:
    """`X_seg.nii.gz` labels every image in its folder named `X.*` or `X_<anything>.*` (BraTS's channels)."""
    files = sorted(p for p in root.rglob("*") if is_image_file(p))
    labels: list[tuple[Path, str]] = []
    # per folder, its images' (stem, position in `files`) sorted by stem: a label finds its images by bisection,
    # not by a pass over the whole tree (which took minutes for 20k pairs)
    folders: dict[Path, list[tuple[str, int]]] = defaultdict(list)
    for position, path in enumerate(files):
        stem = split_suffix(path)[0]
        if match := LABEL_STEM.match(stem):
            labels.append((path, match["base"]))
        else:
            folders[path.parent].append((stem, position))
    for entries in folders.values():
        entries.sort()
    cases: list[Case] = []
    for label, base in labels:
        entries = folders.get(label.parent, [])
        found: list[int] = []
        for wanted, whole in ((base, True), (base + "_", False)):  # `X.*`, then `X_<anything>.*`
            index = bisect_left(entries, (wanted,))
            while index < len(entries) and (
                entries[index][0] == wanted if whole else entries[index][0].startswith(wanted)
            ):
                found.append(entries[index][1])
                index += 1
        images = tuple(files[position] for position in sorted(found))
        if not images:
            continue
        relative = label.parent.relative_to(root)
        subject = relative.parts[0] if relative.parts else base
        cases.append(Case(base, subject, images, label))
    return cases
