"""Subject ids from 2D file names and modality from names, as pure functions: properties against the names the
test itself builds (it knows every subject), and the cases where no rule may apply."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.common.descriptors import SourceError, parse_source
from workers.imaging.cases import Case, LayoutKind
from workers.imaging.layout import detect_layout
from workers.imaging.modality import bids_modality, channel_modality, vocabulary_modality
from workers.imaging.splits import split_cases
from workers.imaging.subjects import (
    DESCRIPTOR_RULE,
    ONE_PER_IMAGE,
    RULE_MISSED,
    subject_by_pattern,
    with_subjects,
)

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


# -- a descriptor's source-level subject rule, whatever layout is detected ---------------------------------------


def _png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), color=value).save(path)


def test_a_source_level_subject_rule_names_the_patients_of_an_auto_detected_class_folder_set(
    tmp_path: Path,
) -> None:
    # names no common pattern reads as a patient ("scan-..." has no id before a running number)
    names = {
        "axial/scan-Q17-x1.png": "Q17",
        "axial/scan-Q17-x2.png": "Q17",
        "coronal/scan-Q17-y1.png": "Q17",
        "axial/scan-Q4-x1.png": "Q4",
        "coronal/scan-Q4-y9.png": "Q4",
        "coronal/unnamed.png": None,  # the rule misses it: kept as its own subject, said so
    }
    for index, name in enumerate(names):
        _png(tmp_path / name, index * 20)
    without = detect_layout(tmp_path)
    assert without.kind == LayoutKind.CLASS_FOLDERS
    assert {case.subject_from for case in without.cases} == {ONE_PER_IMAGE}
    layout = detect_layout(tmp_path, subject_rule=r"scan-(?P<subject>Q\d+)-")
    assert (
        layout.kind == LayoutKind.CLASS_FOLDERS
    )  # the rule changes no layout, only who each case belongs to
    by_image = {case.images[0].relative_to(tmp_path).as_posix(): case for case in layout.cases}
    assert set(by_image) == set(names)
    for name, subject in names.items():
        case = by_image[name]
        if subject is None:
            assert case.subject_from.endswith(RULE_MISSED) and case.subject_id != "Q17"
        else:
            assert (case.subject_id, case.subject_from) == (subject, DESCRIPTOR_RULE)
    # and the splits keep each patient's images together
    splits = split_cases(layout.cases, seed="s", test_fraction=0.4, val_fraction=0.2)
    for subject in ("Q17", "Q4"):
        assert len({splits[c.case_id] for c in layout.cases if c.subject_id == subject}) == 1


@settings(max_examples=100, deadline=None)
@given(patients=st.lists(st.integers(0, 30), min_size=1, max_size=30))
def test_a_subject_rule_gives_each_case_what_the_regex_finds_in_its_path(patients: list[int]) -> None:
    rule = re.compile(r"/(?P<subject>pt\d+)~")
    cases = [
        Case(f"c{i}", f"c{i}", (Path(f"root/sub{p % 3}/pt{p}~{i}.png" if p % 5 else f"root/x{i}.png"),))
        for i, p in enumerate(patients)
    ]
    named = with_subjects(LayoutKind.CLASS_FOLDERS, cases, rule=rule, root=Path("root"))
    for case, p in zip(named, patients, strict=True):
        expected = f"pt{p}" if p % 5 else None  # brute force: what the test wrote into the path
        if expected is None:
            assert case.subject_from.endswith(RULE_MISSED)
        else:
            assert (case.subject_id, case.subject_from) == (expected, DESCRIPTOR_RULE)


def test_descriptors_take_a_subject_rule_beside_any_layout_and_refuse_a_bad_or_doubled_one() -> None:
    source = parse_source({"kind": "local", "path": "/data/x", "subject": r"(?P<subject>P\d+)"})
    assert source.layout == "auto" and source.subject == r"(?P<subject>P\d+)"
    with pytest.raises(SourceError, match="named group"):
        parse_source({"kind": "local", "path": "/data/x", "subject": r"P\d+"})
    with pytest.raises(SourceError, match="give it once"):
        parse_source(
            {
                "kind": "local",
                "path": "/data/x",
                "subject": r"(?P<subject>P\d+)",
                "layout": {"images": "*.png", "subject": r"(?P<subject>P\d+)"},
            }
        )
