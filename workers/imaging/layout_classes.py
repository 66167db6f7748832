"""Class-per-folder 2D sets: `[split/]class/*.png`, folders of pictures whose folder names are the classes."""

from __future__ import annotations

from pathlib import Path

from workers.imaging.cases import Case
from workers.imaging.layout_files import RASTER_SUFFIXES, SPLIT_FOLDER_NAMES, is_image_file, split_suffix


def class_folder_cases(root: Path) -> list[Case]:
    """`[split/]class/*.png`. Every raster must sit exactly one (or two, under a split folder) levels down, and
    there must be at least two classes: one folder of pictures says nothing about classes."""
    rasters = sorted(p for p in root.rglob("*") if is_image_file(p))
    if not rasters or any(not p.name.lower().endswith(RASTER_SUFFIXES) for p in rasters):
        return []
    cases: list[Case] = []
    for path in rasters:
        parts = path.relative_to(root).parts
        if len(parts) == 2:
            split, class_name = None, parts[0]
        elif len(parts) == 3 and parts[0].lower() in SPLIT_FOLDER_NAMES:
            split, class_name = SPLIT_FOLDER_NAMES[parts[0].lower()], parts[1]
        else:
            return []
        stem, _ = split_suffix(path)
        cases.append(Case(f"{class_name}/{stem}", stem, (path,), None, {}, split, class_name))
    if len({c.class_name for c in cases}) < 2:
        return []
    return cases
