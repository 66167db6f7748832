"""Subject ids from 2D file names and modality from names, as pure functions: properties against the names the
test itself builds (it knows every subject), and the cases where no rule may apply."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from workers.imaging.cases import Case, LayoutKind
from workers.imaging.modality import bids_modality, channel_modality, vocabulary_modality
from workers.imaging.splits import split_cases
from workers.imaging.subjects import ONE_PER_IMAGE, subject_by_pattern, with_subjects

_IDS = st.integers(min_value=0, max_value=9999)
_STYLES = st.sampled_from(["patient{p:03d}_slice{n}", "patient_{p}_{n}", "P{p}_{n}", "sub-{p:02d}_T1w_{n}"])


@settings(max_examples=200, deadline=None)
@given(
    style=_STYLES,
    images=st.lists(
        st.tuples(_IDS, st.integers(min_value=0, max_value=300)), min_size=2, max_size=40, unique=True
    ),
)
def test_a_pattern_finds_exactly_the_subjects_the_names_were_made_from(
    style: str, images: list[tuple[int, int]]
) -> None:
    stems = [style.format(p=patient, n=index) for patient, index in images]
    patients = [patient for patient, _ in images]
    found = subject_by_pattern(stems)
    if len(set(patients)) == len(patients):
        assert found is None  # every image its own patient: no pattern brings any together, none is claimed
        return
    assert found is not None
    _rule, subjects = found
    # the same patient gives the same subject, different patients different subjects: brute force over pairs
    for one, subject_one in zip(patients, subjects, strict=True):
        for other, subject_other in zip(patients, subjects, strict=True):
            assert (one == other) == (subject_one == subject_other)


@settings(max_examples=100, deadline=None)
@given(
    images=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 99)), min_size=4, max_size=60, unique=True),
    test_fraction=st.floats(min_value=0.1, max_value=0.5),
)
def test_2d_splits_never_put_one_subject_in_two_splits(
    images: list[tuple[int, int]], test_fraction: float
) -> None:
    cases = [
        Case(
            f"views/patient{p}_{n}",
            f"patient{p}_{n}",
            (Path(f"views/patient{p}_{n}.png"),),
            class_name="views",
        )
        for p, n in images
    ]
    named = with_subjects(LayoutKind.CLASS_FOLDERS, cases)
    splits = split_cases(named, seed="s", test_fraction=test_fraction, val_fraction=0.1)
    seen: dict[str, set[str]] = {}
    for case in named:
        seen.setdefault(case.subject_id, set()).add(splits[case.case_id])
    assert all(len(found) == 1 for found in seen.values())
    if len({p for p, _ in images}) < len(images):
        assert {case.subject_from for case in named} == {"file name pattern patient<id>"}
    else:
        assert {case.subject_from for case in named} == {ONE_PER_IMAGE}


def test_names_without_a_patient_id_keep_one_subject_per_image() -> None:
    for stems in (["img_001", "img_002", "img_003"], ["a", "b", "a_copy"], ["scan", "scan2"]):
        assert subject_by_pattern(stems) is None, stems


def test_modality_from_channel_names_and_bids_suffixes() -> None:
    assert channel_modality(["CT"]) == "CT"
    assert channel_modality(["MRI"]) == "MR"
    assert channel_modality(["T2", "ADC"]) == "MR"  # MSD prostate
    assert channel_modality(["FLAIR", "T1w", "t1gd", "T2w"]) == "MR"  # MSD brain tumour
    assert channel_modality(["CT", "PET"]) is None  # mixed: no single modality
    assert channel_modality(["zscore"]) is None  # a normalisation scheme, not a modality
    assert bids_modality(Path("sub-01_ses-2_T1w.nii.gz")) == "MR"
    assert bids_modality(Path("sub-01_task-rest_bold.nii.gz")) == "MR"
    assert bids_modality(Path("sub-01_ct.nii.gz")) == "CT"
    assert bids_modality(Path("sub-01_trc-FDG_pet.nii.gz")) == "PT"
    assert bids_modality(Path("scan_T1w.nii.gz")) is None  # not a BIDS name
    # DICOM's "other" says nothing
    assert vocabulary_modality("OT") is None and vocabulary_modality("PT") == "PT"
