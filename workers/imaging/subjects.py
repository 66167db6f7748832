"""Who each case belongs to: subject ids for 2D sets from common file-name patterns, and how every layout
found its subjects (`Case.subject_from`), so splits keep a subject's images together and the report can say
how subjects were found.

A 2D set's file names often carry the patient: `patient001_slice12.png`, `sub-03_T1w_slice5.png`,
`P12_3.png`. A pattern counts for a source only when it names the subject of every image and brings images
together (fewer subjects than images); else each image is its own subject and the item says so. ISIC-style
ids (`ISIC_0024306`) name an image, not a patient: with them the set is one subject per image, said so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from workers.imaging.cases import Case, LayoutKind
from workers.imaging.layout_files import RASTER_SUFFIXES, split_suffix

ONE_PER_IMAGE = "none: one subject per image"
DESCRIPTOR_RULE = "descriptor rule"
RULE_MISSED = "; the descriptor rule did not match this case"


@dataclass(frozen=True)
class SubjectPattern:
    name: str  # for people: "file name pattern patient<id>"
    pattern: re.Pattern[str]  # searched in the file's stem; group `subject`


# tried in order; the first that names the subject of every image of a source (and groups some) wins
PATTERNS: tuple[SubjectPattern, ...] = (
    SubjectPattern("BIDS sub-<label>", re.compile(r"(?:^|[_/])(?P<subject>sub-[A-Za-z0-9]+)(?=[_.]|$)")),
    SubjectPattern(
        "file name pattern patient<id>",
        re.compile(
            r"(?i)(?:^|[_\-\s])(?P<subject>(?:patient|pat|subject|subj|case|pt)[_\-]?[A-Za-z]*\d+)(?=[_\-\s.]|$)"
        ),
    ),
    SubjectPattern(
        "file name pattern <id>_<n>",
        # an id with a digit (letters alone are a word: "img_001" is no patient img), then a running number
        re.compile(r"^(?P<subject>[A-Za-z]*\d[A-Za-z0-9\-]*)[_\-](?:slice|frame|img|image|s|f)?\d+$", re.I),
    ),
)
ISIC_ID = re.compile(r"^ISIC_\d{7}$")

# how each layout finds its subjects (the 3D conventions carry them in their folders or headers)
LAYOUT_SUBJECTS: dict[LayoutKind, str] = {
    LayoutKind.MSD: "none: one subject per case (MSD / nnU-Net names cases only)",
    LayoutKind.BIDS: "BIDS sub-<label> folder",
    LayoutKind.SUFFIX_PAIRS: "the first folder under the source, else the case",
    LayoutKind.DICOM_SERIES: "the first folder under the source",
    LayoutKind.DICOM_OBJECTS: "DICOM PatientID",
    LayoutKind.DICOM_UNLABELLED: "DICOM PatientID",
    LayoutKind.ID_PAIRS: "the subject or case folder, else the case",
    LayoutKind.NPZ_ARRAYS: ONE_PER_IMAGE + " (array sets name no patient)",
    LayoutKind.CLASS_FOLDERS: ONE_PER_IMAGE,
    LayoutKind.EXPLICIT: "none: one subject per case (the descriptor gives no subject rule)",
}


def is_2d_raster(path: Path) -> bool:
    return path.name.lower().endswith(RASTER_SUFFIXES)


def subject_by_pattern(stems: Sequence[str]) -> tuple[SubjectPattern, list[str]] | None:
    """The first pattern naming a subject in every stem, with fewer subjects than stems, and those subjects."""
    for candidate in PATTERNS:
        found = [match["subject"] if (match := candidate.pattern.search(stem)) else None for stem in stems]
        subjects = [s for s in found if s is not None]
        if len(subjects) == len(stems) and len(set(subjects)) < len(stems):
            return candidate, subjects
    return None


def with_subjects(
    kind: LayoutKind,
    cases: list[Case],
    *,
    descriptor_rule: bool = False,
    rule: re.Pattern[str] | None = None,
    root: Path | None = None,
) -> list[Case]:
    """The cases with `subject_from` said and, for 2D pictures whose layout gave each image its own subject,
    subject ids from their file names where a pattern names them.

    `rule` is a descriptor's source-level subject rule (group `subject`), searched in each case's first image
    path relative to `root`, whatever the layout: it wins over the layout's subjects and the file-name
    patterns. A case it does not match keeps what the layout (or a pattern) found, and its `subject_from`
    says the rule missed it, so a wrong rule shows in the report instead of silently splitting per image."""
    if not cases:
        return cases
    if descriptor_rule:
        return [replace(case, subject_from=DESCRIPTOR_RULE) for case in cases]
    if rule is not None:
        return _by_rule(kind, cases, rule, root)
    default = LAYOUT_SUBJECTS.get(kind, "")
    pictures = all(case.images and case.member is None and is_2d_raster(case.images[0]) for case in cases)
    if not pictures:
        return [replace(case, subject_from=case.subject_from or default) for case in cases]
    stems = [split_suffix(case.images[0])[0] for case in cases]
    if all(ISIC_ID.match(stem) for stem in stems):
        return [replace(case, subject_from=ONE_PER_IMAGE + " (ISIC ids name images)") for case in cases]
    own = [case.subject_id in (case.case_id, stem) for case, stem in zip(cases, stems, strict=True)]
    if not all(own):
        return [replace(case, subject_from=case.subject_from or default) for case in cases]
    found = subject_by_pattern(stems)
    if found is None:
        return [replace(case, subject_from=ONE_PER_IMAGE) for case in cases]
    pattern, subjects = found
    return [
        replace(case, subject_id=subject, subject_from=pattern.name)
        for case, subject in zip(cases, subjects, strict=True)
    ]


def _by_rule(kind: LayoutKind, cases: list[Case], rule: re.Pattern[str], root: Path | None) -> list[Case]:
    found: list[str | None] = []
    for case in cases:
        path = case.images[0] if case.images else Path(case.case_id)
        try:
            text = path.relative_to(root).as_posix() if root is not None else path.as_posix()
        except ValueError:
            text = path.as_posix()
        match = rule.search(text)
        found.append(match["subject"] if match and match["subject"] else None)
    missed = [i for i, subject in enumerate(found) if subject is None]
    # cases the rule missed get what the layout or a file-name pattern gives them (patterns look at them alone)
    fallback = dict(zip(missed, with_subjects(kind, [cases[i] for i in missed]), strict=True))
    out: list[Case] = []
    for i, (case, subject) in enumerate(zip(cases, found, strict=True)):
        if subject is not None:
            out.append(replace(case, subject_id=subject, subject_from=DESCRIPTOR_RULE))
            continue
        kept = fallback[i]
        out.append(replace(kept, subject_from=(kept.subject_from or "the case") + RULE_MISSED))
    return out
