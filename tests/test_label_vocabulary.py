"""The structures vocabulary (app/data/labels/structures.json): one concept per meaning, real codes only, names
it does not know kept as written and listed."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.sr.codedict import codes

from app.common.labels import concept_codes, resolve_concept, unify_labels, unknown_names
from app.common.structures import STRUCTURES_FILE, load_structures, name_key, structures
from app.common.vocabularies import ANATOMY

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "spellings, concept",
    [
        (("grey matter", "Gray Matter", "GM", "grey_matter", "GRAY-MATTER"), "grey_matter"),
        (("CSF", "cerebrospinal fluid", "Cerebrospinal Fluid", "csf"), "cerebrospinal_fluid"),
        (("left kidney", "kidney_left", "Kidney L", "Kidney (left)", "lt kidney", "L kidney"), "kidney_left"),
        (("right kidney", "kidney_right", "Kidney R", "rt. kidney"), "kidney_right"),
        (("edema", "Oedema", "peritumoral edema"), "oedema"),
        (("liver tumor", "Liver Tumour", "hepatic lesion"), "liver_tumour"),
        (("Kidneys", "kidney", "renal"), "kidney"),
        (("bladder", "urinary_bladder", "Urinary Bladder"), "urinary_bladder"),
        (("Axial", "axial", "transverse"), "axial"),
        (("cysts", "Cyst"), "cyst"),
    ],
)
def test_every_spelling_of_a_meaning_is_one_concept(spellings: tuple[str, ...], concept: str) -> None:
    assert {resolve_concept(name) for name in spellings} == {(concept, True)}


def test_unknown_names_are_kept_as_written_and_listed_never_guessed() -> None:
    # "polyp" is filed under colon by the catalog's dataset anatomy: a label named so is no colon
    names = ["liver", "Polyp", "Left Wobble", "vertebrae_L9", "left liver"]
    assert unknown_names(names) == ["Left Wobble", "Polyp", "left liver", "vertebrae_L9"]
    assert [resolve_concept(n) for n in names[1:]] == [
        ("polyp", False),
        ("left_wobble", False),
        ("vertebrae_l9", False),
        ("left_liver", False),  # liver has no sides: no concept is made up for it
    ]


def test_two_sources_with_different_spellings_share_one_global_id() -> None:
    unified = unify_labels(
        {
            "brain-a": {1: "grey matter", 2: "CSF", 3: "white matter"},
            "brain-b": {1: "Gray Matter", 2: "cerebrospinal fluid", 3: "Thing X"},
            "kidneys": {1: "left kidney", 2: "Kidney R"},
            "ts": {1: "kidney_left", 2: "kidney_right", 3: "Kidney L"},
        }
    )
    assert unified.table == {
        "background": 0,
        "grey_matter": 1,
        "cerebrospinal_fluid": 2,
        "white_matter": 3,
        "thing_x": 4,
        "kidney_left": 5,
        "kidney_right": 6,
    }
    assert unified.local_to_global["ts"] == {0: 0, 1: 5, 2: 6, 3: 5}


def _verhoeff_valid(number: str) -> bool:
    """SNOMED CT identifiers end in a Verhoeff check digit: a mistyped code fails it."""
    multiply = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ]
    permute = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ]
    check = 0
    for position, digit in enumerate(reversed(number)):
        check = multiply[check][permute[position % 8][int(digit)]]
    return check == 0


def test_every_snomed_code_is_the_one_its_stated_source_gives() -> None:
    """Codes from DICOM's dictionary are checked against it here; codes from TotalSegmentator's mapping (not
    shipped here) are checked as SNOMED CT concept identifiers (check digit, concept partition)."""
    assert _verhoeff_valid("64033007") and not _verhoeff_valid("64033008")  # the check itself can fail
    vocabulary = structures()
    from_dicom = from_tool = 0
    for term in vocabulary.terms:
        if term.snomed is None:
            continue
        assert (term.snomed.dicom_keyword is None) == term.snomed.totalsegmentator, (
            term.id
        )  # one stated source
        sct_ids = [term.snomed.code] + ([term.snomed.region.code] if term.snomed.region else [])
        for sct_id in sct_ids:
            assert _verhoeff_valid(sct_id) and sct_id[-3:-1] in ("00", "10"), (term.id, sct_id)
        if term.snomed.dicom_keyword is not None:
            code = getattr(codes.SCT, term.snomed.dicom_keyword)
            assert (term.snomed.code, term.snomed.meaning) == (str(code.value), str(code.meaning)), term.id
            from_dicom += 1
        else:
            from_tool += 1
    for side in vocabulary.sides.values():
        code = getattr(codes.SCT, side.snomed.dicom_keyword or "")
        assert side.snomed.code == str(code.value)
    assert from_dicom > 80 and from_tool > 60


def test_every_uberon_id_is_the_catalog_anatomy_vocabularys() -> None:
    uberon = {term.code for term in ANATOMY.terms if term.code}
    ids = [term.uberon for term in structures().terms if term.uberon]
    assert ids and set(ids) <= uberon


def test_a_sided_concept_carries_the_structures_code_and_dicoms_laterality_modifier() -> None:
    found, modifier = concept_codes("kidney_left")
    assert [(c.scheme, c.value) for c in found] == [("SCT", "64033007"), ("UBERON", "UBERON:0002113")]
    assert modifier is not None and (modifier.value, modifier.meaning) == ("7771000", "Left")
    assert concept_codes("left_wobble") == ([], None)


def test_totalsegmentator_names_resolve_to_the_terms_that_list_them() -> None:
    vocabulary = structures()
    names = 0
    for term in vocabulary.terms:
        for name in term.totalsegmentator:
            resolved = vocabulary.resolve(name)
            assert resolved is not None and resolved.term is term, name
            sides = [side for side in ("left", "right") if side in name.split("_")] if term.lateral else []
            assert resolved.concept == "_".join([term.id, *sides]), name
            assert vocabulary.concept(resolved.concept) == resolved  # a concept id is looked up as itself
            names += 1
    assert names >= 150  # TotalSegmentator's classes with a SNOMED CT code in its mapping
    for name in ("kidney_left", "rib_left_1", "vertebrae_L1", "heart_atrium_left", "liver_tumor"):
        assert resolve_concept(name)[1], name


def test_no_spelling_names_two_terms_and_a_bad_file_is_refused(tmp_path: Path) -> None:
    keys = [name_key(s) for t in structures().terms for s in (t.id, t.label, *t.synonyms)]
    owners: dict[str, set[str]] = {}
    for term in structures().terms:
        for spelling in (term.id, term.label, *term.synonyms):
            owners.setdefault(name_key(spelling), set()).add(term.id)
    assert keys and all(len(ids) == 1 for ids in owners.values())
    clash = STRUCTURES_FILE.read_text().replace('"gray matter"', '"csf"', 1)
    bad = tmp_path / "structures.json"
    bad.write_text(clash)
    with pytest.raises(ValueError, match="csf"):
        load_structures(bad)


def test_the_file_ships_with_the_package() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "app"
    ]
    relative = STRUCTURES_FILE.relative_to(ROOT / "app").as_posix()
    assert any(fnmatch(relative, p) and relative.count("/") == p.count("/") for p in patterns)


# -- properties: every way of writing a known name, against the vocabulary's own list ----------------------------

_LATERAL = [term for term in structures().terms if term.lateral]
_ALL = list(structures().terms)


def _written(text: str, case: int, separator: str) -> str:
    spaced = separator.join(text.replace("_", " ").split())
    return (spaced.lower(), spaced.upper(), spaced.title(), spaced)[case]


@settings(max_examples=300, deadline=None)
@given(
    term=st.sampled_from(_ALL),
    spelling=st.integers(min_value=0, max_value=50),
    case=st.integers(min_value=0, max_value=3),
    separator=st.sampled_from([" ", "_", "-", "  "]),
)
def test_any_case_and_separator_of_a_listed_spelling_is_its_term(
    term: Any, spelling: int, case: int, separator: str
) -> None:
    spellings = [term.id, term.label, *term.synonyms]
    written = _written(spellings[spelling % len(spellings)], case, separator)
    assert resolve_concept(written) == (term.id, True)


@settings(max_examples=300, deadline=None)
@given(
    term=st.sampled_from(_LATERAL),
    side=st.sampled_from(["left", "right"]),
    form=st.integers(min_value=0, max_value=3),
    before=st.booleans(),
    case=st.integers(min_value=0, max_value=3),
    separator=st.sampled_from([" ", "_", "-"]),
)
def test_every_laterality_form_of_a_lateral_term_is_one_concept_per_side(
    term: Any, side: str, form: int, before: bool, case: int, separator: str
) -> None:
    forms = structures().sides[side].forms
    side_word = forms[form % len(forms)]
    parts = [side_word, term.label] if before else [term.label, side_word]
    written = _written(" ".join(parts), case, separator)
    assert resolve_concept(written) == (f"{term.id}_{side}", True)


def test_labels_json_entries_carry_every_code_the_laterality_and_whether_the_name_is_known() -> None:
    from workers.packaging.cases import LabelConcept, LabelTable
    from workers.packaging.labels import labels_document

    table = LabelTable(
        concepts=(
            LabelConcept("background", 0),
            LabelConcept("kidney_left", 1),
            LabelConcept("grey_matter", 2),
            LabelConcept("thing_x", 3),
        )
    )
    entries = {entry["name"]: entry for entry in labels_document(table)["labels"]}
    assert entries["kidney_left"]["code"] == {"scheme": "SCT", "value": "64033007", "meaning": "Kidney"}
    assert entries["kidney_left"]["codes"][1] == {
        "scheme": "UBERON",
        "value": "UBERON:0002113",
        "meaning": "Kidney",
    }
    assert entries["kidney_left"]["laterality"] == {"scheme": "SCT", "value": "7771000", "meaning": "Left"}
    assert (
        entries["grey_matter"]["code"]["value"] == "389081007"
        and entries["grey_matter"]["laterality"] is None
    )
    assert (entries["thing_x"]["code"], entries["thing_x"]["codes"], entries["thing_x"]["known"]) == (
        None,
        [],
        False,
    )
    assert entries["background"]["code"] is None
    tumour = labels_document(
        LabelTable(concepts=(LabelConcept("background", 0), LabelConcept("liver_tumour", 1)))
    )
    (entry,) = [e for e in tumour["labels"] if e["name"] == "liver_tumour"]
    assert (entry["code"]["meaning"], entry["region"]["meaning"]) == ("Neoplasm", "Liver")


def test_a_concept_has_codes_only_when_the_vocabulary_knows_it() -> None:
    """labels.json and the datacard show a label's codes beside 'in the vocabulary': a coded concept must be
    a known one (the catalog's region terms, such as soft tissue, are neither)."""
    coded = [term for term in ANATOMY.ids if concept_codes(term)[0]]
    assert coded  # the anatomy vocabulary does give codes
    for term in coded:
        assert resolve_concept(term)[1], term
    assert concept_codes("soft_tissue") == ([], None)
    assert resolve_concept("Soft tissue") == ("soft_tissue", False)
