"""Patient-level, deterministic train/val/test splits that honour official test sets.

Splitting by case leaks a patient's second scan into the test set; splitting by a random generator gives a
different bundle on every run. A seeded hash of the subject id gives each subject a fixed position in [0, 1)
that does not depend on which other subjects are present, so adding a source never moves existing subjects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from workers.imaging.cases import Case, Split


def subject_score(subject_id: str, seed: str) -> float:
    """A stable number in [0, 1) for a subject under a seed."""
    digest = hashlib.sha256(f"{seed}\x00{subject_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(
    subject_ids: Iterable[str],
    *,
    seed: str = "imagingx",
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    official: Mapping[str, Split] | None = None,
) -> dict[str, Split]:
    """Split per subject. An official split is kept as published: the source's test subjects stay test (their
    labels may be withheld or their results are what papers report), its training subjects are never drawn
    into our test set."""
    if not 0 <= test_fraction + val_fraction <= 1:
        raise ValueError("test_fraction + val_fraction must be within [0, 1]")
    official = official or {}
    result: dict[str, Split] = {}
    for subject in sorted(set(subject_ids)):
        score = subject_score(subject, seed)
        if subject in official:
            fixed = official[subject]
            if fixed == Split.TEST:
                result[subject] = Split.TEST
                continue
            # Officially training: may still serve as our validation, never as test.
            result[subject] = Split.VAL if score < val_fraction else Split.TRAIN
            continue
        if score < test_fraction:
            result[subject] = Split.TEST
        elif score < test_fraction + val_fraction:
            result[subject] = Split.VAL
        else:
            result[subject] = Split.TRAIN
    return result


def split_cases(
    cases: Iterable[Case], *, seed: str = "imagingx", test_fraction: float = 0.2, val_fraction: float = 0.0
) -> dict[str, Split]:
    """Case id -> split, all cases of a subject together. A subject with any officially-test case is test
    throughout, so no scan of a test patient is ever trained on."""
    cases = list(cases)
    official: dict[str, Split] = {}
    for case in cases:
        if case.split is not None and official.get(case.subject_id) != Split.TEST:
            official[case.subject_id] = case.split
    by_subject = assign_splits(
        (c.subject_id for c in cases),
        seed=seed,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        official=official,
    )
    return {case.case_id: by_subject[case.subject_id] for case in cases}
