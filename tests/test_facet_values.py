"""Facet values as people type them (issue 11, item 5): hostnames and URLs for `host`, the survey's own
abbreviations, and an ambiguous abbreviation answered with both meanings and a note saying so."""

from typing import Any

import pytest

from app.common.errors import InvalidInput
from app.common.vocabularies import ALL, HOST
from app.search.filters import filter_pairs, normalise_filter, parse_filter
from app.search.schemas import SearchFilter


@pytest.mark.parametrize(
    ("typed", "host"),
    [
        ("zenodo.org", "zenodo"),
        ("www.kaggle.com", "kaggle"),
        ("https://zenodo.org/records/1", "zenodo"),
        ("HTTPS://WWW.KAGGLE.COM/datasets/x", "kaggle"),
        ("wiki.cancerimagingarchive.net", "tcia"),
        ("https://github.com/MIC-DKFZ/nnUNet", "github"),
        ("Kaggle", "kaggle"),  # the label still works
    ],
)
def test_host_accepts_domains_and_urls(typed: str, host: str) -> None:
    assert parse_filter([("host", typed)]).terms == {"host": [host]}


def test_every_host_with_a_domain_is_found_by_it() -> None:
    for term in HOST.terms:
        if term.code and "." in term.code.strip("."):
            domain = term.code.strip(".")
            assert parse_filter([("host", f"https://www.{domain}/x")]).terms["host"] == [term.id], domain


@pytest.mark.parametrize(
    ("facet", "typed", "value"),
    [("task", "Seg", "segmentation"), ("task", "cls", "classification"), ("task", "Det", "detection"),
     ("task", "Est", "regression"), ("modality", "US", "US"), ("modality", "X-Ray", "XR"),
     ("task", "IQA", "quality_assessment")],
)  # fmt: skip
def test_the_surveys_abbreviations_are_values(facet: str, typed: str, value: str) -> None:
    search = parse_filter([(facet, typed)])
    assert search.terms == {facet: [value]} and search.notes == []


def test_an_ambiguous_abbreviation_answers_with_both_meanings_and_says_so() -> None:
    search = parse_filter([("task", "reg")])
    assert search.terms == {"task": ["registration", "regression"]}
    assert len(search.notes) == 1 and "ambiguous" in search.notes[0]
    assert "Registration" in search.notes[0] and "Regression" in search.notes[0]
    qa = parse_filter([("task", "QA"), ("task", "qa")])
    assert qa.terms == {"task": ["quality_assessment", "vqa"]} and len(qa.notes) == 1
    # the same from a JSON body; a note sent by the client is replaced
    body = normalise_filter(SearchFilter(terms={"task": ["Reg"]}, notes=["made up"]))
    assert body.terms == {"task": ["registration", "regression"]}
    assert body.notes == search.notes
    # its links name both meanings, not the abbreviation
    assert ("task", "registration") in filter_pairs(search) and ("task", "reg") not in filter_pairs(search)


def test_every_ambiguous_abbreviation_names_known_terms_and_no_spelling_of_one() -> None:
    for vocabulary in ALL.values():
        for abbreviation, meanings in vocabulary.ambiguous.items():
            assert vocabulary.resolve(abbreviation) is None
            assert len(meanings) > 1 and all(m in vocabulary for m in meanings)


@pytest.mark.parametrize(("facet", "typed"), [("host", "not a host"), ("host", "localhost"), ("task", "xyz")])
def test_anything_else_is_still_a_clear_422(facet: str, typed: str) -> None:
    with pytest.raises(InvalidInput, match="allowed values"):
        parse_filter([(facet, typed)])


def test_the_note_is_in_the_json_and_on_the_page(client: Any) -> None:
    body = client.get("/api/v1/datasets", params={"task": "reg"}).json()
    assert body["filter"]["terms"]["task"] == ["registration", "regression"]
    assert body["filter"]["notes"] and "ambiguous" in body["filter"]["notes"][0]
    both = client.get("/api/v1/datasets", params=[("task", "registration"), ("task", "regression")]).json()
    assert body["count"] == both["count"] > 0
    page = client.get("/datasets", params={"task": "reg"}, headers={"Accept": "text/html"}).text
    assert 'class="value-notes"' in page and "is ambiguous" in page
    host = client.get("/api/v1/datasets", params={"host": "https://zenodo.org/records/1"}).json()
    assert host["count"] == client.get("/api/v1/datasets", params={"host": "zenodo"}).json()["count"] > 0


def test_every_task_modality_and_dim_spelling_of_the_survey_is_a_facet_value() -> None:
    """What the survey writes ('Seg', 'Cls', 'Reg/lmk', 'PET/CT', '2D, 3D') is what its readers type."""
    import json

    from app.catalog.importer import SEED_FILE
    from app.catalog.normalise import is_unknown, split_terms
    from app.common.vocabularies import NON_IMAGE_DICOM

    rows = json.loads(SEED_FILE.read_text())
    for facet, column in (("task", "task"), ("modality", "modality"), ("dim", "dim")):
        spellings = {
            part
            for row in rows
            for part in split_terms(row[column])
            if not is_unknown(part) and part.lower() not in NON_IMAGE_DICOM | {"multi", "text"}
        }
        assert len(spellings) >= 5
        for spelling in spellings:
            assert parse_filter([(facet, spelling)]).terms[facet], (facet, spelling)
