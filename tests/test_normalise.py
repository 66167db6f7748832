"""The normalisation tables: free-text survey spellings onto controlled vocabularies."""

import pytest

from app.catalog.normalise import (
    clean_url,
    host_of,
    parse_count,
    parse_year,
    resolve_anatomies,
    resolve_dims,
    resolve_modalities,
    resolve_tasks,
    size_bucket,
    split_diseases,
)
from app.common.vocabularies import ANATOMY, MODALITY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.7k", (2700, "ok")),
        ("33.1k", (33100, "ok")),
        ("1.5M", (1_500_000, "ok")),
        ("1,993", (1993, "ok")),
        ("640,000", (640_000, "ok")),
        ("200+", (200, "approximate")),
        ("303,001 images & 450,724 VQA entires", (303_001, "ok")),
        ("0", (0, "zero")),
        ("NA", (None, "missing")),
        ("Neck", (None, "unparseable")),
    ],
)
def test_counts_are_parsed(text: str, expected: tuple[int | None, str]) -> None:
    assert parse_count(text) == expected


def test_years_and_size_buckets() -> None:
    assert parse_year("2021") == 2021
    assert parse_year("NA") is None
    assert [size_bucket(n) for n in (None, 5, 150, 2700, 33_100, 1_500_000)] == [
        "unknown", "lt100", "100-1k", "1k-10k", "10k-100k", "100k+",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MR", ["MR"]),
        ("MRI", ["MR"]),
        ("CT/ PET", ["CT", "PT"]),
        ("PET/CT/ MR/ X-RAY", ["PT", "CT", "MR", "XR"]),
        ("Histopathology (WSI)", ["HISTOPATHOLOGY"]),
        ("CT, Histopathology (WSI), PET", ["CT", "HISTOPATHOLOGY", "PT"]),
        ("Fundus Photo (CFP)", ["FUNDUS"]),
        ("X-Ray", ["XR"]),
        ("US", ["US"]),
        ("\u200d OCT", ["OCT"]),
        ("MR/ RTDOSE/ RTPLAN/ RTSTRUCT", ["MR"]),
        ("CBCT/FBCT", ["CT"]),
        ("NA", []),
    ],
)
def test_modality_spellings(text: str, expected: list[str]) -> None:
    assert resolve_modalities(text)[0] == expected


def test_unknown_modality_text_is_reported_not_guessed() -> None:
    assert resolve_modalities("Multi") == ([], ["Multi"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3D", ["3D"]),
        ("2D/ 3D", ["2D", "3D"]),
        ("3D, 2D", ["3D", "2D"]),
        ("2D+Video", ["2D", "video"]),
        ("2D+Text", ["2D"]),
        ("video", ["video"]),
        ("4D", ["4D"]),
    ],
)
def test_dimension_spellings(text: str, expected: list[str]) -> None:
    assert resolve_dims(text)[0] == expected


def test_task_spellings_and_the_ambiguous_abbreviations_left_to_the_evidence() -> None:
    assert resolve_tasks("Seg/ Cls")[0] == ["segmentation", "classification"]
    assert resolve_tasks("Seg, Det, Cls")[0] == ["segmentation", "detection", "classification"]
    # 'Reg' and 'QA' have two meanings each: a row does not decide them, its dataset's evidence does
    assert resolve_tasks("Seg/ Reg") == (["segmentation"], [], ["reg"])
    assert resolve_tasks("QA") == ([], [], ["qa"])
    assert resolve_tasks("VQA") == (["vqa"], [], [])
    assert resolve_tasks("NA") == ([], [], [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Head and Neck Cancer", ["Head and Neck Cancer"]),
        ("Lung and Colon Cancer", ["Lung and Colon Cancer"]),
        ("Brain and Cervical Cancers", ["Brain and Cervical Cancers"]),
        ("Melanoma, Cerebral microbleed", ["Melanoma", "Cerebral microbleed"]),
        ("Respiratory motion/COPD", ["Respiratory motion", "COPD"]),
        ("Acute/ subacute ischemic stroke", ["Acute/subacute ischemic stroke"]),
        ("NA", []),
        ("Glaucoma; NA", ["Glaucoma"]),
    ],
)
def test_diseases_are_phrases(text: str, expected: list[str]) -> None:
    assert split_diseases(text) == expected


def test_anatomy_is_a_hierarchy() -> None:
    assert resolve_anatomies("Head and Neck")[0] == ["head_and_neck"]
    assert resolve_anatomies("Kidney, Pancreas,")[0] == ["kidney", "pancreas"]
    assert resolve_anatomies("Head\u2013Neck")[0] == ["head_and_neck"]
    assert "thorax" in ANATOMY.ancestors("lung")
    assert "thorax" in ANATOMY.ancestors("heart")
    for organ in ("liver", "kidney", "pancreas"):
        assert "abdomen" in ANATOMY.ancestors(organ)
    assert "head" in ANATOMY.ancestors("brain")
    assert "thorax" not in ANATOMY.ancestors("breast")  # chest searches must not return mammography


def test_synonyms_in_any_case() -> None:
    for spelling in ("MRI", "mri", "Mr", "magnetic resonance"):
        assert MODALITY.resolve(spelling) == "MR"
    for spelling in ("X-ray", "radiograph", "CXR"):
        assert MODALITY.resolve(spelling) == "XR"
    for spelling in ("WSI", "histopathology", "pathology"):
        assert MODALITY.resolve(spelling) == "HISTOPATHOLOGY"
    assert MODALITY.resolve("retinal photography") == "FUNDUS"
    assert ANATOMY.resolve("Chest") == "thorax"


def test_hosts() -> None:
    assert host_of("https://www.cancerimagingarchive.net/collection/x/") == "tcia"
    assert host_of("https://wiki.cancerimagingarchive.net/pages/viewpage.action?pageId=1") == "tcia"
    assert host_of("https://learn2reg.grand-challenge.org/") == "grand_challenge"
    assert host_of("https://zenodo.org/records/1") == "zenodo"
    assert host_of("") == "none"
    assert host_of("https://example.org/data") == "other"


def test_urls_lose_the_survey_tables_latex_escapes() -> None:
    assert (
        clean_url("https://www.synapse.org/\\#!Synapse:syn25313156")
        == "https://www.synapse.org/#!Synapse:syn25313156"
    )
    assert (
        clean_url("http://bioimlab.dei.unipd.it/Data\\%20Sets.htm")
        == "http://bioimlab.dei.unipd.it/Data%20Sets.htm"
    )
    assert clean_url(" http://x.org/A B.htm ") == "http://x.org/A%20B.htm"
