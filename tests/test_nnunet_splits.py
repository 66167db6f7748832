"""splits_final.json's folds, against a brute-force reading of what nnU-Net needs from each fold: something to
train on, something to validate on, every training case in some validation set, and no subject on both sides
of a fold unless there is only one subject (then train and validation are the same cases, as nnU-Net's
fold `all`)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from workers.packaging.nnunet import splits_final

_SUBJECT_SPLITS = st.lists(st.sampled_from(["train", "val", "test"]), min_size=1, max_size=6)


@st.composite
def _case_splits(draw: st.DrawFn) -> dict[str, tuple[str, str]]:
    """case -> (split, subject), one split per subject as the bundle's subject-level split gives them."""
    subjects = draw(_SUBJECT_SPLITS)
    owners = draw(st.lists(st.integers(0, len(subjects) - 1), max_size=25))
    return {f"c{i}": (subjects[owner], f"s{owner}") for i, owner in enumerate(owners)}


@settings(max_examples=300, deadline=None)
@given(case_splits=_case_splits())
def test_every_fold_can_be_trained_and_keeps_subjects_apart(case_splits: dict[str, tuple[str, str]]) -> None:
    folds = splits_final(case_splits)
    training = {c for c, (split, _) in case_splits.items() if split != "test"}
    if not training:
        assert folds == []
        return
    assert folds
    subject = {c: s for c, (_, s) in case_splits.items()}
    for fold in folds:
        assert fold["train"] and fold["val"]
        assert set(fold["train"]) | set(fold["val"]) <= training
        trained = {subject[c] for c in fold["train"]}
        validated = {subject[c] for c in fold["val"]}
        if fold["train"] == fold["val"]:
            continue  # the one-fold fallback: said in the docstring, checked below
        assert not trained & validated
    if all(fold["train"] == fold["val"] for fold in folds):
        # only when no split can keep the sides apart: one subject, or the bundle's split left none to train
        has_val = any(s == "val" for c, (s, _) in case_splits.items())
        trains = {c for c, (s, _) in case_splits.items() if s == "train"}
        assert len({subject[c] for c in training}) == 1 or (has_val and not trains)
    if not any(split == "val" for split, _ in case_splits.values()):
        # cross-validation: every training case is validated in some fold
        assert set().union(*(set(f["val"]) for f in folds)) == training


def test_a_single_subject_trains_and_validates_on_its_cases() -> None:
    folds = splits_final({"a": ("train", "s1"), "b": ("train", "s1"), "t": ("test", "s2")})
    assert folds == [{"train": ["a", "b"], "val": ["a", "b"]}]
